//! The `opal._opal` extension module behind the `opal` Python package: sessions with an
//! onnxruntime-style API, deployments with plugin reloads, and the exceptions, all over the
//! runtime library.
//!
//! - [`session`]: `InferenceSession` and `NodeArg`.
//! - [`deployment`]: `Deployment`, and the engine a session without one gets.
//! - [`arrays`]: NumPy arrays in (read in place) and out (copied) of runs.
//! - [`stats`]: the statistics block as a dict.
//! - [`errors`]: `OpalError` and its subclasses.

mod arrays;
mod deployment;
mod errors;
mod feed;
mod session;
mod stats;

use pyo3::prelude::*;
use std::path::PathBuf;

/// Where the build that made this module put the workspace's plugins and the `opal` binary.
const BUILD_DIR: &str = env!("OPAL_BUILD_DIR");

/// The directories bare plugin file names are searched in: `$OPAL_PLUGIN_PATH`, then the
/// workspace build this package came from.
#[pyfunction]
fn plugin_search_path() -> Vec<PathBuf> {
    opal_runtime::config::plugin_search_path()
}

#[pymodule]
fn _opal(module: &Bound<'_, PyModule>) -> PyResult<()> {
    let build_dir = PathBuf::from(BUILD_DIR);
    // Plugins are tried in a child `opal` first where the build has one, so a plugin that
    // crashes while loading is refused instead of taking Python down.
    let opal = build_dir.join("opal");
    if opal.is_file() {
        opal_runtime::plugin::probe::probe_plugins_with(opal);
    }
    opal_runtime::config::search_plugins_in(build_dir);
    let py = module.py();
    module.add_class::<session::InferenceSession>()?;
    module.add_class::<session::NodeArg>()?;
    module.add_class::<deployment::Deployment>()?;
    module.add_function(wrap_pyfunction!(plugin_search_path, module)?)?;
    module.add("OpalError", py.get_type::<errors::OpalError>())?;
    module.add("ConfigError", py.get_type::<errors::ConfigError>())?;
    module.add("PluginError", py.get_type::<errors::PluginError>())?;
    module.add("ModelError", py.get_type::<errors::ModelError>())?;
    module.add("InputError", py.get_type::<errors::InputError>())?;
    module.add("RunError", py.get_type::<errors::RunError>())?;
    Ok(())
}
