//! Replacing a plugin while the engine serves. The deployed file is loaded again through a new
//! shadow copy; the candidate registry must keep every operator the served models use, and the
//! models that use the plugin must give the same outputs with the candidate as with the current
//! kernels on sample inputs. Only then is the candidate published. Runs in flight finish on the
//! snapshot they hold, and the old library is unloaded when the last of them drops it.

use crate::{
    compare::{compare, Tolerance},
    engine::Engine,
    onnx::Model,
    plan::Plan,
    plugin::{load_shadow_copy, OperatorEntry, PluginError, Registry, RegistryError},
    run_state::RunState,
    tensor::{Shape, TensorRef},
};
use opal_plugin_api::DType;
use parking_lot::Mutex;
use std::{path::PathBuf, sync::Arc};

/// A served model and inputs to try a replacement on.
pub struct SampleRun<'a> {
    pub name: &'a str,
    pub model: &'a Arc<Model>,
    pub inputs: &'a [TensorRef<'a>],
}

/// What a reload replaced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reloaded {
    pub plugin: String,
    pub old_version: String,
    pub new_version: String,
    pub file: PathBuf,
    /// Models whose outputs were compared before the switch.
    pub models_checked: Vec<String>,
}

/// Why a replacement was refused; the current plugin keeps serving.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("no loaded plugin is named '{0}'")]
    UnknownPlugin(String),
    #[error(transparent)]
    Load(#[from] PluginError),
    #[error("{file} now holds plugin '{found}', not '{expected}'")]
    Renamed {
        file: PathBuf,
        expected: String,
        found: String,
    },
    #[error("the replacement of plugin '{plugin}' conflicts: {cause}")]
    Registry {
        plugin: String,
        cause: Box<RegistryError>,
    },
    #[error("the replacement of plugin '{plugin}' does not provide {operator} (opset {opset}), which model '{model}' uses in node '{node}'")]
    MissingOperator {
        plugin: String,
        model: String,
        node: String,
        operator: String,
        opset: i64,
    },
    #[error("model '{model}' fails with the replacement of plugin '{plugin}': {reason}")]
    SampleFailed {
        plugin: String,
        model: String,
        reason: String,
    },
    #[error("model '{model}' gives different results with the replacement of plugin '{plugin}': output '{output}': {detail}")]
    ResultsDiffer {
        plugin: String,
        model: String,
        output: String,
        detail: String,
    },
}

/// Serialises reloads: two at once would each build a candidate from the same snapshot.
static RELOADING: Mutex<()> = Mutex::new(());

/// How close a replacement's outputs must be to the current kernels'.
const SAME_RESULTS: Tolerance = Tolerance {
    rtol: 1e-4,
    atol: 1e-5,
};

impl Engine {
    /// Reloads plugin `name` from its deployed file, checks it against `samples`, and publishes
    /// it. On any error the current registry stays.
    pub fn reload_plugin(
        &self,
        name: &str,
        samples: &[SampleRun<'_>],
    ) -> Result<Reloaded, ReloadError> {
        let _one_at_a_time = RELOADING.lock();
        let current = self.registry();
        let old = current
            .plugins()
            .iter()
            .find(|p| p.name() == name)
            .ok_or_else(|| ReloadError::UnknownPlugin(name.to_owned()))?
            .clone();
        let fresh = load_shadow_copy(old.source())?;
        if fresh.name() != name {
            return Err(ReloadError::Renamed {
                file: old.source().to_owned(),
                expected: name.to_owned(),
                found: fresh.name().to_owned(),
            });
        }
        let plugins = current
            .plugins()
            .iter()
            .map(|p| {
                if p.name() == name {
                    fresh.clone()
                } else {
                    p.clone()
                }
            })
            .collect();
        let candidate = Arc::new(Registry::build(plugins, self.winners()).map_err(|source| {
            ReloadError::Registry {
                plugin: name.to_owned(),
                cause: Box::new(source),
            }
        })?);
        let mut models_checked = Vec::new();
        for sample in samples {
            if !uses_plugin(sample, &current, &candidate, name)? {
                continue;
            }
            compare_outputs(self, sample, &current, &candidate, name)?;
            models_checked.push(sample.name.to_owned());
        }
        let reloaded = Reloaded {
            plugin: name.to_owned(),
            old_version: old.version().to_owned(),
            new_version: fresh.version().to_owned(),
            file: old.source().to_owned(),
            models_checked,
        };
        self.publish(candidate);
        Ok(reloaded)
    }
}

/// Whether the model runs kernels of plugin `name`, in its graph or its subgraphs; an error if
/// the candidate lacks one.
fn uses_plugin(
    sample: &SampleRun<'_>,
    current: &Registry,
    candidate: &Registry,
    name: &str,
) -> Result<bool, ReloadError> {
    let mut uses = false;
    for (graph, node) in sample.model.all_nodes() {
        let opset = graph.opset(&node.domain).unwrap_or(0);
        let served_by_plugin = current
            .lookup(&node.domain, &node.op_type, opset)
            .is_some_and(|e| e.plugin_name() == name);
        if !served_by_plugin {
            continue;
        }
        uses = true;
        if candidate
            .lookup(&node.domain, &node.op_type, opset)
            .is_none()
        {
            return Err(ReloadError::MissingOperator {
                plugin: name.to_owned(),
                model: sample.name.to_owned(),
                node: node.name.clone(),
                operator: node.describe(),
                opset,
            });
        }
    }
    Ok(uses)
}

/// Whether a node of the model, in its graph or its subgraphs, draws at random with `registry`.
fn draws_at_random(sample: &SampleRun<'_>, registry: &Registry) -> bool {
    sample.model.all_nodes().into_iter().any(|(graph, node)| {
        let opset = graph.opset(&node.domain).unwrap_or(0);
        registry
            .lookup(&node.domain, &node.op_type, opset)
            .is_some_and(OperatorEntry::draws_at_random)
    })
}

/// Runs the sample with both registries and compares every output, unless the model draws at
/// random (then both runs must only succeed).
fn compare_outputs(
    engine: &Engine,
    sample: &SampleRun<'_>,
    current: &Arc<Registry>,
    candidate: &Arc<Registry>,
    name: &str,
) -> Result<(), ReloadError> {
    let failed = |reason: String| ReloadError::SampleFailed {
        plugin: name.to_owned(),
        model: sample.name.to_owned(),
        reason,
    };
    let types: Vec<(DType, Shape)> = sample
        .inputs
        .iter()
        .map(|t| (t.dtype, Shape::from_slice(t.shape)))
        .collect();
    let run = |registry: &Arc<Registry>| -> Result<RunState, String> {
        let plan = Plan::compile_with(engine, sample.model, &types, registry.clone())
            .map_err(|e| e.to_string())?;
        let mut state = RunState::new(engine, Arc::new(plan));
        state
            .run(engine, sample.inputs)
            .map_err(|e| e.to_string())?;
        Ok(state)
    };
    let mut before = run(current).map_err(|e| failed(format!("with the current plugin: {e}")))?;
    let mut after = run(candidate).map_err(failed)?;
    let random = draws_at_random(sample, current) || draws_at_random(sample, candidate);
    let result = before
        .outputs()
        .zip(after.outputs())
        .enumerate()
        .try_for_each(|(k, (b, a))| match compare(a, b, SAME_RESULTS) {
            Err(detail) if !random => Err(ReloadError::ResultsDiffer {
                plugin: name.to_owned(),
                model: sample.name.to_owned(),
                output: sample.model.outputs.get(k).map_or_else(
                    || k.to_string(),
                    |&id| sample.model.value_name(id).to_owned(),
                ),
                detail,
            }),
            _ => Ok(()),
        });
    before.release(engine);
    after.release(engine);
    result
}
