//! What the server shares between requests: the engine, the served models (each with a pool of
//! sessions, a limit on concurrent runs and a bounded queue), the metrics, the deployment as
//! last applied, and plugin reloads.

use super::{metrics::Metrics, model_store::ModelStore, repository::ModelRepository};
use opal_plugin_api::DType;
use opal_runtime::{
    config::{AdminToken, ModelSpec, ServerSettings},
    hot_swap::{ReloadError, Reloaded},
    memory::Owner,
    onnx::Model,
    plugin::ContentDigest,
    session_pool::{reload_plugin, SessionPool},
    tensor::Shape,
    Deployment, Engine, RunControl, SessionError, TensorRef,
};
use parking_lot::Mutex;
use std::sync::{
    atomic::{AtomicUsize, Ordering},
    Arc,
};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// An output of a run, copied out of the session.
pub(crate) struct OutputTensor {
    pub(crate) name: String,
    pub(crate) dtype: DType,
    pub(crate) shape: Shape,
    pub(crate) bytes: Vec<u8>,
}

/// One model the server answers for.
pub(crate) struct ServedModel {
    /// The model's sessions; a request checks one out and gives it back. Shared with the
    /// model's next version when only its serving settings change.
    pub(crate) pool: Arc<SessionPool>,
    /// How it is served: `max_concurrent` and `max_queue` may differ from the pool's spec.
    spec: ModelSpec,
    /// At most `spec.max_concurrent` runs at once. A run holds its permit until it returns,
    /// also when its request timed out before.
    permits: Arc<Semaphore>,
    /// Requests waiting for a permit; at most `spec.max_queue`.
    waiting: AtomicUsize,
    /// The account request tensors are copied into.
    requests: Owner,
    /// What the model file held when it was loaded, to tell a replaced file on a reload.
    pub(crate) digest: Option<ContentDigest>,
    /// Files sent inline for this model, removed once it is dropped (after the pool).
    pub(crate) files: Option<Arc<super::model_store::StoredFiles>>,
}

impl ServedModel {
    pub(crate) fn new(
        engine: &Arc<Engine>,
        pool: SessionPool,
        files: Option<Arc<super::model_store::StoredFiles>>,
    ) -> Self {
        let spec = pool.spec().clone();
        let digest = ContentDigest::of_file(&spec.path).ok();
        ServedModel {
            permits: Arc::new(Semaphore::new(spec.max_concurrent)),
            waiting: AtomicUsize::new(0),
            pool: Arc::new(pool),
            spec,
            requests: engine.tracker().owner("requests"),
            digest,
            files,
        }
    }

    /// The same model and sessions served with `spec`'s `max_concurrent` and `max_queue`.
    /// Runs admitted by this one keep their permits; new requests queue for the new ones.
    pub(crate) fn with_settings(&self, spec: &ModelSpec) -> Self {
        let mut settings = self.spec.clone();
        settings.max_concurrent = spec.max_concurrent;
        settings.max_queue = spec.max_queue;
        ServedModel {
            pool: self.pool.clone(),
            permits: Arc::new(Semaphore::new(settings.max_concurrent)),
            spec: settings,
            waiting: AtomicUsize::new(0),
            requests: self.requests.clone(),
            digest: self.digest,
            files: self.files.clone(),
        }
    }

    pub(crate) fn spec(&self) -> &ModelSpec {
        &self.spec
    }

    pub(crate) fn model(&self) -> &Arc<Model> {
        self.pool.model()
    }

    /// The account request tensors are copied into.
    pub(crate) fn request_owner(&self) -> &Owner {
        &self.requests
    }

    /// A permit to run: at once if one of the `max_concurrent` is free, else after waiting in
    /// the queue until `deadline`.
    pub(crate) async fn admit(
        &self,
        deadline: tokio::time::Instant,
    ) -> Result<OwnedSemaphorePermit, Refusal> {
        if let Ok(permit) = self.permits.clone().try_acquire_owned() {
            return Ok(permit);
        }
        let place =
            QueuePlace::take(&self.waiting, self.spec().max_queue).ok_or(Refusal::QueueFull)?;
        let permit = tokio::time::timeout_at(deadline, self.permits.clone().acquire_owned()).await;
        drop(place);
        match permit {
            Ok(Ok(permit)) => Ok(permit),
            Ok(Err(_)) => Err(Refusal::Closed),
            Err(_) => Err(Refusal::TimedOut),
        }
    }

    /// Requests waiting in the queue now.
    pub(crate) fn queued(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }

    /// Runs going on now (some may belong to requests that already timed out).
    pub(crate) fn running(&self) -> usize {
        self.spec().max_concurrent - self.permits.available_permits()
    }

    /// Runs the model on `inputs` (graph inputs in order) on the calling thread, stopping at a
    /// kernel boundary once `control` is cancelled.
    pub(crate) fn run(
        &self,
        inputs: &[TensorRef<'_>],
        control: &RunControl,
    ) -> Result<Vec<OutputTensor>, SessionError> {
        let model = self.model();
        let mut session = self.pool.checkout();
        let state = session.run_with(inputs, control)?;
        state
            .outputs()
            .enumerate()
            .map(|(k, t)| {
                let name = model.value_name(model.outputs[k]).to_owned();
                // A string tensor's bytes are views: it is sent in the BYTES layout.
                let bytes = match t.dtype {
                    DType::STRING => opal_runtime::kserve::bytes::encode(t).map_err(|reason| {
                        SessionError::Output {
                            name: name.clone(),
                            reason,
                        }
                    })?,
                    _ => t.data.to_vec(),
                };
                Ok(OutputTensor {
                    name,
                    dtype: t.dtype,
                    shape: Shape::from_slice(t.shape),
                    bytes,
                })
            })
            .collect()
    }
}

/// Why a request did not get to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// `max_queue` requests were already waiting.
    QueueFull,
    /// The request's deadline passed while it waited.
    TimedOut,
    /// The server is shutting down.
    Closed,
}

/// A place in a model's queue, given back when dropped (also when the client goes away).
struct QueuePlace<'a>(&'a AtomicUsize);

impl<'a> QueuePlace<'a> {
    /// A place, if fewer than `limit` requests are waiting.
    fn take(waiting: &'a AtomicUsize, limit: usize) -> Option<Self> {
        waiting
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < limit).then_some(n + 1)
            })
            .ok()
            .map(|_| QueuePlace(waiting))
    }
}

impl Drop for QueuePlace<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Everything a request handler sees.
pub(crate) struct AppState {
    pub(crate) engine: Arc<Engine>,
    pub(crate) models: ModelRepository,
    pub(crate) metrics: Metrics,
    pub(crate) settings: ServerSettings,
    /// The token admin endpoints require (see [`super::admin`]).
    pub(crate) admin_token: Option<AdminToken>,
    /// The deployment as last applied; held while a change (a model load or unload, a
    /// configuration or plugin reload) is made, so changes happen one at a time.
    pub(crate) deployment: Mutex<Deployment>,
    /// What the deployment file held when a reload last read it (or the server started).
    pub(crate) deployment_seen: Mutex<Option<ContentDigest>>,
    /// Where models sent inline are stored.
    pub(crate) store: ModelStore,
}

impl AppState {
    /// Reloads plugin `name`, trying it on every served model that has sample inputs.
    pub(crate) fn reload(&self, name: &str) -> Result<Reloaded, ReloadError> {
        let _one_change_at_a_time = self.deployment.lock();
        let serving = self.models.serving();
        let pools: Vec<&SessionPool> = serving.iter().map(|(_, m)| m.pool.as_ref()).collect();
        let result = reload_plugin(&self.engine, &pools, name);
        self.metrics.record_reload(name, result.is_ok());
        match &result {
            Ok(r) => tracing::info!(
                plugin = %r.plugin,
                old = %r.old_version,
                new = %r.new_version,
                checked = ?r.models_checked,
                "plugin reloaded"
            ),
            Err(e) => {
                tracing::warn!(plugin = name, error = %e, "plugin reload refused; the current plugin keeps serving")
            }
        }
        result
    }
}
