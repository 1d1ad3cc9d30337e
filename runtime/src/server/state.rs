//! What the server shares between requests: the engine, the served models (each with a pool of
//! sessions, a limit on concurrent runs and a bounded queue), the metrics, and plugin reloads.

use super::metrics::Metrics;
use opal_plugin_api::DType;
use opal_runtime::{
    config::{AdminToken, ModelSpec, ServerSettings},
    hot_swap::{ReloadError, Reloaded, SampleRun},
    memory::Owner,
    onnx::{Constant, Model},
    synthetic::synthetic_tensor,
    tensor::Shape,
    Engine, RunControl, Session, SessionError, TensorRef,
};
use parking_lot::Mutex;
use std::{
    collections::BTreeMap,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
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
    pub(crate) spec: ModelSpec,
    pub(crate) model: Arc<Model>,
    /// Idle sessions; a request takes one (or makes one) and gives it back.
    sessions: Mutex<Vec<Session>>,
    /// At most `spec.max_concurrent` runs at once. A run holds its permit until it returns,
    /// also when its request timed out before.
    permits: Arc<Semaphore>,
    /// Requests waiting for a permit; at most `spec.max_queue`.
    waiting: AtomicUsize,
    /// Inputs of the declared shapes, to try a reloaded plugin on; `None` if the model leaves
    /// input shapes open.
    sample: Option<Vec<Constant>>,
    /// The account request tensors are copied into.
    requests: Owner,
}

impl ServedModel {
    pub(crate) fn new(engine: &Arc<Engine>, spec: ModelSpec, model: Arc<Model>) -> Self {
        let session = Session::new(engine.clone(), model.clone(), spec.dims.clone())
            .with_shapes(spec.shapes.clone());
        let owner = engine.tracker().owner("samples");
        let sample = session.declared_input_types().ok().and_then(|types| {
            types
                .iter()
                .enumerate()
                .map(|(k, (dtype, shape))| {
                    synthetic_tensor(*dtype, shape, k as u64 + 1, &owner).map(Constant::from)
                })
                .collect()
        });
        ServedModel {
            permits: Arc::new(Semaphore::new(spec.max_concurrent)),
            waiting: AtomicUsize::new(0),
            sessions: Mutex::new(vec![session]),
            spec,
            model,
            sample,
            requests: engine.tracker().owner("requests"),
        }
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
            QueuePlace::take(&self.waiting, self.spec.max_queue).ok_or(Refusal::QueueFull)?;
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
        self.spec.max_concurrent - self.permits.available_permits()
    }

    /// Runs the model on `inputs` (graph inputs in order) on the calling thread, stopping at a
    /// kernel boundary once `control` is cancelled.
    pub(crate) fn run(
        &self,
        engine: &Arc<Engine>,
        inputs: &[TensorRef<'_>],
        control: &RunControl,
    ) -> Result<Vec<OutputTensor>, SessionError> {
        let mut session = self.sessions.lock().pop().unwrap_or_else(|| {
            Session::new(engine.clone(), self.model.clone(), self.spec.dims.clone())
                .with_shapes(self.spec.shapes.clone())
        });
        let result = session.run_with(inputs, control).map(|state| {
            state
                .outputs()
                .enumerate()
                .map(|(k, t)| OutputTensor {
                    name: self.model.value_name(self.model.outputs[k]).to_owned(),
                    dtype: t.dtype,
                    shape: Shape::from_slice(t.shape),
                    // A string tensor's bytes are views: it is sent in the BYTES layout.
                    bytes: match t.dtype {
                        DType::STRING => opal_runtime::kserve::bytes::encode(t).unwrap_or_default(),
                        _ => t.data.to_vec(),
                    },
                })
                .collect()
        });
        // A session compiled before a plugin reload would keep the old library loaded.
        if session.is_current() {
            self.sessions.lock().push(session);
        }
        result
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
    pub(crate) models: BTreeMap<String, ServedModel>,
    pub(crate) metrics: Metrics,
    pub(crate) settings: ServerSettings,
    /// The token admin endpoints require (see [`super::admin`]).
    pub(crate) admin_token: Option<AdminToken>,
}

impl AppState {
    /// Reloads plugin `name`, trying it on every served model that has sample inputs.
    pub(crate) fn reload(&self, name: &str) -> Result<Reloaded, ReloadError> {
        let inputs: Vec<(&ServedModel, Vec<TensorRef<'_>>)> = self
            .models
            .values()
            .filter_map(|m| Some((m, m.sample.as_ref()?.iter().map(Constant::as_ref).collect())))
            .collect();
        let samples: Vec<SampleRun<'_>> = inputs
            .iter()
            .map(|(m, inputs)| SampleRun {
                name: &m.spec.name,
                model: &m.model,
                inputs,
            })
            .collect();
        let result = self.engine.reload_plugin(name, &samples);
        self.metrics.record_reload(name, result.is_ok());
        if result.is_ok() {
            // Idle sessions hold plans of the old snapshot; busy ones are dropped when returned.
            for model in self.models.values() {
                model.sessions.lock().clear();
            }
        }
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
