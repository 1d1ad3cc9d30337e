//! The exceptions the package raises: every one is an `opal.OpalError`, and carries the
//! runtime's own message, which names the file, plugin, model, node or input at fault.

use opal_runtime::{
    config::ConfigError as DeploymentFileError, engine::EngineError, hot_swap::ReloadError,
    session_pool::DeploymentModelError, RunError as RuntimeRunError, SessionError,
};
use pyo3::{create_exception, exceptions::PyException, PyErr};

create_exception!(
    opal,
    OpalError,
    PyException,
    "Base class of every error opal raises."
);
create_exception!(
    opal,
    ConfigError,
    OpalError,
    "A deployment file, or a setting given instead of one, that cannot be used."
);
create_exception!(
    opal,
    PluginError,
    OpalError,
    "A plugin that cannot be loaded, conflicts with another, or whose reload was refused."
);
create_exception!(
    opal,
    ModelError,
    OpalError,
    "A model that cannot be loaded or compiled with the loaded plugins."
);
create_exception!(
    opal,
    InputError,
    OpalError,
    "Inputs or output names a run cannot take: a wrong name, element type or shape, or an array that is not C-contiguous."
);
create_exception!(
    opal,
    RunError,
    OpalError,
    "A run that failed in a kernel, or ran out of memory."
);

pub(crate) fn config_error(e: DeploymentFileError) -> PyErr {
    ConfigError::new_err(e.to_string())
}

pub(crate) fn engine_error(e: EngineError) -> PyErr {
    match e {
        EngineError::Plugin(_) | EngineError::Registry { .. } => {
            PluginError::new_err(e.to_string())
        }
        EngineError::Preallocate { .. } | EngineError::Threads { .. } | EngineError::Isa(_) => {
            ConfigError::new_err(e.to_string())
        }
    }
}

pub(crate) fn deployment_model_error(e: DeploymentModelError) -> PyErr {
    ModelError::new_err(e.to_string())
}

pub(crate) fn reload_error(e: ReloadError) -> PyErr {
    PluginError::new_err(e.to_string())
}

pub(crate) fn session_error(e: SessionError) -> PyErr {
    match e {
        SessionError::Plan(_) => ModelError::new_err(e.to_string()),
        SessionError::Run(RuntimeRunError::Input { .. }) => InputError::new_err(e.to_string()),
        SessionError::Run(_) | SessionError::Output { .. } => RunError::new_err(e.to_string()),
    }
}
