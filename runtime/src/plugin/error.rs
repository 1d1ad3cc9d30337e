//! Errors of loading a plugin library, each naming the file.

use std::path::PathBuf;

/// Why a plugin library could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    #[error("plugin file {path} does not exist; check the path in the deployment or build the plugin (cargo build --release --workspace)")]
    NotFound { path: PathBuf },
    #[error("plugin file {name} does not exist in any of the directories searched for it ({searched}); put it in one of them, add its directory to OPAL_PLUGIN_PATH, or build the plugin (cargo build --release --workspace)")]
    NotInSearchPath { name: String, searched: String },
    #[error("plugin {path} is not a loadable shared library: {reason}")]
    NotALibrary { path: PathBuf, reason: String },
    #[error("plugin {path} is an ELF file for {found}, but this opal runs on {host}; build the plugin for {host} (for example cargo build --release --target {host}-unknown-linux-gnu)")]
    WrongArchitecture {
        path: PathBuf,
        found: String,
        host: String,
    },
    #[error("{path} is a shared library but not an opal plugin: it does not export the symbol OPAL_PLUGIN_DESCRIPTOR (use opal_plugin_api::export_plugin!)")]
    MissingDescriptor { path: PathBuf },
    #[error("{path} exports OPAL_PLUGIN_DESCRIPTOR but its magic bytes are wrong; it was not built with opal_plugin_api")]
    BadMagic { path: PathBuf },
    #[error("plugin {path} was built against opal plugin ABI {plugin_major}.{plugin_minor}, but this host speaks ABI {host_major}.{host_minor}; rebuild the plugin against opal-plugin-api {host_major}.x")]
    IncompatibleAbi {
        path: PathBuf,
        plugin_major: u32,
        plugin_minor: u32,
        host_major: u32,
        host_minor: u32,
    },
    #[error("plugin {path} (ABI {plugin_major}.{plugin_minor}) uses an abi_stable version incompatible with this host's (ABI {host_major}.{host_minor})")]
    IncompatibleAbiStable {
        path: PathBuf,
        plugin_major: u32,
        plugin_minor: u32,
        host_major: u32,
        host_minor: u32,
    },
    #[error("plugin {path} (ABI {plugin_major}.{plugin_minor}) does not match this host's layout (ABI {host_major}.{host_minor}): {differences}; rebuild the plugin against an unmodified opal-plugin-api {host_major}.x. abi_stable's report:\n{report}")]
    LayoutMismatch {
        path: PathBuf,
        plugin_major: u32,
        plugin_minor: u32,
        host_major: u32,
        host_minor: u32,
        /// The differing fields, one clause each.
        differences: String,
        /// abi_stable's full report.
        report: String,
    },
    #[error("plugin {path} has an invalid operator table: {reason}")]
    BadOperator { path: PathBuf, reason: String },
    #[error("plugin {path} crashed while a probe process loaded it, so it was not loaded here: {cause}. Its initialisers or its operator table fail; a panic there aborts, as no panic may cross the plugin ABI")]
    CrashedWhileLoading { path: PathBuf, cause: String },
    #[error("cannot copy plugin {path} to a shadow path: {cause}")]
    Shadow {
        path: PathBuf,
        cause: std::io::Error,
    },
}
