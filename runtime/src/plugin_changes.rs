//! Adding and removing plugins while the engine serves: a candidate registry of the current
//! plugins, less those removed and with new libraries loaded (each through a shadow copy), is
//! built aside, checked by the caller against the models that will run on it, and only then
//! published. Runs in flight keep the snapshot they hold; a removed plugin's library unloads
//! when the last of them drops it.

use crate::{
    engine::Engine,
    onnx::Model,
    plugin::{load_shadow_copy, PluginError, Registry, RegistryError},
};
use std::{path::PathBuf, sync::Arc};

/// Why a plugin change was refused; the current plugins keep serving.
#[derive(Debug, thiserror::Error)]
pub enum PluginChangeError {
    #[error(transparent)]
    Load(#[from] PluginError),
    #[error("no loaded plugin is named '{0}'")]
    UnknownPlugin(String),
    #[error("{file} holds plugin '{plugin}', which is already loaded from {loaded}")]
    AlreadyLoaded {
        plugin: String,
        file: PathBuf,
        loaded: PathBuf,
    },
    #[error("the plugins after the change conflict: {0}")]
    Registry(Box<RegistryError>),
    #[error("model '{model}' needs {operator} (opset {opset}), which no plugin would provide after the change")]
    Unresolved {
        model: String,
        operator: String,
        opset: i64,
    },
}

impl Engine {
    /// `base` with the plugins deployed at `added` loaded beside its own, not published.
    pub fn registry_adding(
        &self,
        base: &Registry,
        added: &[PathBuf],
    ) -> Result<Arc<Registry>, PluginChangeError> {
        let mut plugins = base.plugins().to_vec();
        for file in added {
            let fresh = load_shadow_copy(file)?;
            if let Some(loaded) = plugins.iter().find(|p| p.name() == fresh.name()) {
                return Err(PluginChangeError::AlreadyLoaded {
                    plugin: fresh.name().to_owned(),
                    file: file.clone(),
                    loaded: loaded.source().to_owned(),
                });
            }
            plugins.push(fresh);
        }
        self.registry_of(plugins)
    }

    /// `base` without the plugins named `removed`, not published.
    pub fn registry_removing(
        &self,
        base: &Registry,
        removed: &[String],
    ) -> Result<Arc<Registry>, PluginChangeError> {
        if let Some(name) = removed
            .iter()
            .find(|name| !base.plugins().iter().any(|p| p.name() == name.as_str()))
        {
            return Err(PluginChangeError::UnknownPlugin(name.clone()));
        }
        let kept = base
            .plugins()
            .iter()
            .filter(|p| !removed.iter().any(|name| name == p.name()))
            .cloned()
            .collect();
        self.registry_of(kept)
    }

    fn registry_of(
        &self,
        plugins: Vec<Arc<crate::plugin::PluginLibrary>>,
    ) -> Result<Arc<Registry>, PluginChangeError> {
        Registry::build(plugins, self.winners())
            .map(Arc::new)
            .map_err(|e| PluginChangeError::Registry(Box::new(e)))
    }
}

/// An error naming the first node of `model` (in its graph or a subgraph) that no kernel of
/// `registry` serves.
pub fn check_resolves(
    name: &str,
    model: &Model,
    registry: &Registry,
) -> Result<(), PluginChangeError> {
    for (graph, node) in model.all_nodes() {
        let opset = graph.opset(&node.domain).unwrap_or(0);
        if registry
            .lookup(&node.domain, &node.op_type, opset)
            .is_none()
        {
            return Err(PluginChangeError::Unresolved {
                model: name.to_owned(),
                operator: node.describe(),
                opset,
            });
        }
    }
    Ok(())
}
