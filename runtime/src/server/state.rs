//! What the server shares between requests: the engine, the served models (each with a pool of
//! sessions and a limit on concurrent runs), the metrics, and plugin reloads.

use super::metrics::Metrics;
use opal_plugin_api::DType;
use opal_runtime::{
    config::{AdminToken, ModelSpec, ServerSettings},
    hot_swap::{ReloadError, Reloaded, SampleRun},
    memory::Owner,
    onnx::{Constant, Model},
    synthetic::synthetic_tensor,
    tensor::Shape,
    Engine, Session, SessionError, TensorRef,
};
use parking_lot::Mutex;
use std::{collections::BTreeMap, sync::Arc};

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
    /// At most `spec.max_concurrent` runs at once.
    pub(crate) permits: tokio::sync::Semaphore,
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
            permits: tokio::sync::Semaphore::new(spec.max_concurrent),
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

    /// Runs the model on `inputs` (graph inputs in order) on the calling thread.
    pub(crate) fn run(
        &self,
        engine: &Arc<Engine>,
        inputs: &[TensorRef<'_>],
    ) -> Result<Vec<OutputTensor>, SessionError> {
        let mut session = self.sessions.lock().pop().unwrap_or_else(|| {
            Session::new(engine.clone(), self.model.clone(), self.spec.dims.clone())
                .with_shapes(self.spec.shapes.clone())
        });
        let result = session.run(inputs).map(|state| {
            state
                .outputs()
                .enumerate()
                .map(|(k, t)| OutputTensor {
                    name: self.model.value_name(self.model.outputs[k]).to_owned(),
                    dtype: t.dtype,
                    shape: Shape::from_slice(t.shape),
                    bytes: t.data.to_vec(),
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
