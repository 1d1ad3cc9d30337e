//! A model's sessions shared by callers on several threads: a run checks out an idle session
//! (or makes one) and gives it back, unless a plugin reload made its plan stale. The pool also
//! keeps inputs of the declared shapes, on which a plugin reload tries the model before the
//! switch. `opal serve` keeps one pool per served model, and so does the Python package.

use crate::{
    config::{Deployment, ModelSpec},
    engine::Engine,
    hot_swap::{ReloadError, Reloaded, SampleRun},
    onnx::{Constant, Model, ModelError},
    session::{Session, SessionError},
    synthetic::synthetic_tensor,
    tensor::TensorRef,
};
use parking_lot::Mutex;
use std::{
    collections::BTreeMap,
    ops::{Deref, DerefMut},
    path::PathBuf,
    sync::Arc,
};

/// Sessions of one model on one engine.
pub struct SessionPool {
    engine: Arc<Engine>,
    spec: ModelSpec,
    model: Arc<Model>,
    idle: Mutex<Vec<Session>>,
    /// Inputs of the declared shapes, to try a reloaded plugin on; `None` if the model leaves
    /// input shapes open.
    sample: Option<Vec<Constant>>,
}

/// A model of a deployment that could not be loaded.
#[derive(Debug, thiserror::Error)]
#[error("model '{name}' of deployment {deployment}: {cause}")]
pub struct DeploymentModelError {
    pub name: String,
    pub deployment: PathBuf,
    pub cause: Box<ModelError>,
}

impl SessionPool {
    /// A pool for `model`, run with the dims and shapes `spec` gives, holding one session.
    pub fn new(engine: &Arc<Engine>, spec: ModelSpec, model: Arc<Model>) -> Self {
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
        SessionPool {
            engine: engine.clone(),
            spec,
            model,
            idle: Mutex::new(vec![session]),
            sample,
        }
    }

    /// A pool for each model `deployment` declares, by name, loaded on `engine`.
    pub fn for_deployment(
        engine: &Arc<Engine>,
        deployment: &Deployment,
    ) -> Result<BTreeMap<String, SessionPool>, DeploymentModelError> {
        deployment
            .models
            .iter()
            .map(|spec| {
                let model =
                    engine
                        .load_model(&spec.path)
                        .map_err(|cause| DeploymentModelError {
                            name: spec.name.clone(),
                            deployment: deployment.source.clone(),
                            cause: Box::new(cause),
                        })?;
                Ok((
                    spec.name.clone(),
                    SessionPool::new(engine, spec.clone(), model),
                ))
            })
            .collect()
    }

    pub fn spec(&self) -> &ModelSpec {
        &self.spec
    }

    pub fn model(&self) -> &Arc<Model> {
        &self.model
    }

    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    /// An idle session, or a new one; it returns to the pool when dropped.
    pub fn checkout(&self) -> PooledSession<'_> {
        let session = self.idle.lock().pop().unwrap_or_else(|| {
            Session::new(
                self.engine.clone(),
                self.model.clone(),
                self.spec.dims.clone(),
            )
            .with_shapes(self.spec.shapes.clone())
        });
        PooledSession {
            pool: self,
            session: Some(session),
        }
    }

    /// Runs the model once on its sample inputs, so the first request finds a compiled plan and
    /// a warm run state; nothing to do when the model leaves its input shapes open.
    pub fn warm(&self) -> Result<(), SessionError> {
        let Some(inputs) = self.sample_inputs() else {
            return Ok(());
        };
        self.checkout().run(&inputs)?;
        Ok(())
    }

    /// Drops the idle sessions: after a new registry snapshot their plans hold the old one,
    /// and with it the libraries of plugins replaced or removed.
    pub fn drop_idle(&self) {
        self.idle.lock().clear();
    }

    /// The sample inputs as views, if the model declares its input shapes.
    fn sample_inputs(&self) -> Option<Vec<TensorRef<'_>>> {
        Some(self.sample.as_ref()?.iter().map(Constant::as_ref).collect())
    }
}

/// A session checked out of a [`SessionPool`].
pub struct PooledSession<'a> {
    pool: &'a SessionPool,
    session: Option<Session>,
}

impl Deref for PooledSession<'_> {
    type Target = Session;

    fn deref(&self) -> &Session {
        self.session.as_ref().expect("present until dropped")
    }
}

impl DerefMut for PooledSession<'_> {
    fn deref_mut(&mut self) -> &mut Session {
        self.session.as_mut().expect("present until dropped")
    }
}

impl Drop for PooledSession<'_> {
    fn drop(&mut self) {
        // A session compiled before a plugin reload would keep the old library loaded.
        if let Some(session) = self.session.take().filter(Session::is_current) {
            self.pool.idle.lock().push(session);
        }
    }
}

/// Reloads plugin `name` of `engine`, trying it first on the model of every pool that has
/// sample inputs. Once the new plugin is published, the pools' idle sessions (whose plans hold
/// the old one) are dropped; sessions running now are dropped when they return.
pub fn reload_plugin(
    engine: &Engine,
    pools: &[&SessionPool],
    name: &str,
) -> Result<Reloaded, ReloadError> {
    let inputs: Vec<(&SessionPool, Vec<TensorRef<'_>>)> = pools
        .iter()
        .filter_map(|pool| Some((*pool, pool.sample_inputs()?)))
        .collect();
    let samples: Vec<SampleRun<'_>> = inputs
        .iter()
        .map(|(pool, inputs)| SampleRun {
            name: &pool.spec.name,
            model: &pool.model,
            inputs,
        })
        .collect();
    let reloaded = engine.reload_plugin(name, &samples)?;
    for pool in pools {
        pool.drop_idle();
    }
    Ok(reloaded)
}
