//! `opal.Deployment`: a deployment file's engine (its plugins) and models, with sessions on
//! them, the loaded plugins, plugin reloads tried on its models before they are published, and
//! the memory statistics. Also how an `InferenceSession` without one gets its engine.

use crate::{
    errors::{config_error, deployment_model_error, engine_error, reload_error, ConfigError},
    session::InferenceSession,
    stats::report_dict,
};
use opal_runtime::{
    config::{resolve_plugin_path, PluginSpec},
    session_pool::{reload_plugin, SessionPool},
    Deployment as DeploymentFile, Engine,
};
use pyo3::{prelude::*, types::PyDict};
use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::Arc,
};

/// A deployment loaded: its engine, and a pool of sessions per model it declares.
#[pyclass(module = "opal", frozen)]
pub(crate) struct Deployment {
    file: DeploymentFile,
    engine: Arc<Engine>,
    pools: BTreeMap<String, Arc<SessionPool>>,
}

impl Deployment {
    pub(crate) fn source(&self) -> &Path {
        &self.file.source
    }

    pub(crate) fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }
}

#[pymethods]
impl Deployment {
    /// Loads the deployment file at `path` (the embedded default when absent): its plugins,
    /// and every model it declares unless `models` is false (sessions made with
    /// `InferenceSession(model, config=deployment)` then use its plugins alone).
    #[new]
    #[pyo3(signature = (path = None, *, models = true))]
    fn new(py: Python<'_>, path: Option<PathBuf>, models: bool) -> PyResult<Self> {
        let mut file = read_deployment(path)?;
        if !models {
            file.models.clear();
        }
        let engine = py.detach(|| Engine::new(&file)).map_err(engine_error)?;
        let pools = py
            .detach(|| SessionPool::for_deployment(&engine, &file))
            .map_err(deployment_model_error)?
            .into_iter()
            .map(|(name, pool)| (name, Arc::new(pool)))
            .collect();
        Ok(Deployment {
            file,
            engine,
            pools,
        })
    }

    /// The file the deployment was read from.
    #[getter]
    fn path(&self) -> PathBuf {
        self.file.source.clone()
    }

    /// The names of the models the deployment declares.
    fn models(&self) -> Vec<String> {
        self.pools.keys().cloned().collect()
    }

    /// A session on model `name` of the deployment; sessions of one model share its pool.
    fn session(&self, name: &str) -> PyResult<InferenceSession> {
        let pool = self.pools.get(name).ok_or_else(|| {
            ConfigError::new_err(format!(
                "deployment {} has no model '{name}'; its models are {:?}",
                self.file.source.display(),
                self.pools.keys().collect::<Vec<_>>()
            ))
        })?;
        Ok(InferenceSession::from_pool(pool.clone()))
    }

    /// The loaded plugins, each a dict: `name`, `version`, `abi` (`"1.6"`), `file` (the file
    /// the deployment names) and `operators` (`"domain:op_type"`, the default domain as
    /// `ai.onnx`).
    fn plugins<'py>(&self, py: Python<'py>) -> PyResult<Vec<Bound<'py, PyDict>>> {
        let registry = self.engine.registry();
        let operators = registry.all();
        registry
            .plugins()
            .iter()
            .map(|plugin| {
                let (major, minor) = plugin.abi_version();
                let dict = PyDict::new(py);
                dict.set_item("name", plugin.name())?;
                dict.set_item("version", plugin.version())?;
                dict.set_item("abi", format!("{major}.{minor}"))?;
                dict.set_item("file", plugin.source())?;
                let provided: Vec<String> = operators
                    .iter()
                    .filter(|(_, entry)| entry.plugin_name() == plugin.name())
                    .map(|(key, _)| {
                        let domain = if key.domain.is_empty() {
                            "ai.onnx"
                        } else {
                            &key.domain
                        };
                        format!("{domain}:{}", key.op_type)
                    })
                    .collect();
                dict.set_item("operators", provided)?;
                Ok(dict)
            })
            .collect()
    }

    /// Reloads plugin `name` from its file while sessions keep running: the new build is
    /// tried on every model of the deployment that declares its input shapes and must give the
    /// same outputs; only then is it published (runs in flight finish on the old one). Returns
    /// a dict: `plugin`, `old_version`, `new_version`, `file`, `models_checked`.
    fn reload_plugin<'py>(&self, py: Python<'py>, name: &str) -> PyResult<Bound<'py, PyDict>> {
        let pools: Vec<&SessionPool> = self.pools.values().map(Arc::as_ref).collect();
        let reloaded = py
            .detach(|| reload_plugin(&self.engine, &pools, name))
            .map_err(reload_error)?;
        let dict = PyDict::new(py);
        dict.set_item("plugin", reloaded.plugin)?;
        dict.set_item("old_version", reloaded.old_version)?;
        dict.set_item("new_version", reloaded.new_version)?;
        dict.set_item("file", reloaded.file)?;
        dict.set_item("models_checked", reloaded.models_checked)?;
        Ok(dict)
    }

    /// The engine's statistics block, as a dict.
    fn memory_stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        report_dict(py, &self.engine.report())
    }

    fn __repr__(&self) -> String {
        format!("Deployment('{}')", self.file.source.display())
    }
}

/// The deployment at `path`, or the embedded default.
fn read_deployment(path: Option<PathBuf>) -> PyResult<DeploymentFile> {
    match path {
        Some(path) => DeploymentFile::from_file(&path),
        None => DeploymentFile::embedded_default(),
    }
    .map_err(config_error)
}

/// An engine for a session without an `opal.Deployment`: the plugins of `config` (or of the
/// embedded default) and `plugins` besides (relative paths from the working directory, bare
/// file names searched for as a deployment's are), with `threads` if given.
pub(crate) fn engine_for(
    py: Python<'_>,
    config: Option<PathBuf>,
    plugins: Vec<PathBuf>,
    threads: Option<usize>,
) -> PyResult<Arc<Engine>> {
    let mut file = read_deployment(config)?;
    match threads {
        Some(0) => return Err(ConfigError::new_err("threads must be at least 1")),
        Some(n) => file.engine.threads = n,
        None => {}
    }
    let cwd = std::env::current_dir()
        .map_err(|e| ConfigError::new_err(format!("cannot read the working directory: {e}")))?;
    for plugin in plugins {
        let path = plugin.to_string_lossy().into_owned();
        let resolved = resolve_plugin_path(&path, &cwd);
        if file.plugins.iter().all(|p| p.resolved != resolved) {
            file.plugins.push(PluginSpec {
                path,
                resolved,
                watch: false,
            });
        }
    }
    py.detach(|| Engine::new(&file)).map_err(engine_error)
}
