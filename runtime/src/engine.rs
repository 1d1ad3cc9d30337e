//! The engine: what a deployment sets up once and every run shares: the memory tracker and
//! tensor pool, the loaded plugins and the current registry snapshot, and the thread pool lent
//! to kernels.

use crate::{
    config::{opal_dtype, Deployment, EngineConfig, PluginSpec},
    instruction_set::{IsaChoice, IsaError},
    memory::{MemoryReport, MemoryTracker, Owner, OwnerReport, PoolConfig, TensorPool},
    onnx::{Model, ModelError},
    plugin::{
        load_shadow_copy, KernelThreads, OperatorKey, PluginError, PluginLibrary, Registry,
        RegistryError,
    },
};
use parking_lot::RwLock;
use std::{
    collections::HashMap,
    path::Path,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
};

/// Host-side owners every engine has, in the order the statistics block lists them.
const HOST_OWNERS: [&str; 4] = ["tensors", "pool", "scratch", "weights"];

/// Why an engine could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Plugin(#[from] PluginError),
    #[error("deployment {deployment}: {cause}")]
    Registry {
        deployment: String,
        cause: Box<RegistryError>,
    },
    #[error("deployment {deployment}: cannot preallocate {count} × {dtype} {shape:?}: {reason}")]
    Preallocate {
        deployment: String,
        dtype: String,
        shape: Vec<usize>,
        count: usize,
        reason: String,
    },
    #[error("cannot start {threads} kernel threads: {reason}")]
    Threads { threads: usize, reason: String },
    #[error(transparent)]
    Isa(#[from] IsaError),
}

/// Everything runs share.
pub struct Engine {
    config: EngineConfig,
    tracker: Arc<MemoryTracker>,
    pool: TensorPool,
    tensors: Owner,
    scratch: Owner,
    weights: Owner,
    registry: RwLock<Arc<Registry>>,
    /// Bumped each time a new registry snapshot is published.
    generation: AtomicU64,
    /// Which plugin wins where two provide an operator, as the deployment says.
    winners: HashMap<OperatorKey, String>,
    threads: Option<KernelThreads>,
    /// The instruction set lent to every kernel call.
    isa: IsaChoice,
}

impl Engine {
    /// Loads the deployment's plugins (each through a shadow copy, so the deployed files can be
    /// replaced while loaded), builds the registry, and preallocates the pool.
    pub fn new(deployment: &Deployment) -> Result<Arc<Self>, EngineError> {
        // Side by side: each load may first wait for a probe process (see `plugin::probe`).
        let plugins = std::thread::scope(|scope| {
            let loads: Vec<_> = deployment
                .plugins
                .iter()
                .map(|spec| scope.spawn(|| load_plugin(spec)))
                .collect();
            loads
                .into_iter()
                .map(|load| load.join().expect("loading a plugin does not panic"))
                .collect::<Result<Vec<_>, _>>()
        })?;
        let winners: HashMap<OperatorKey, String> = deployment
            .operators
            .iter()
            .map(|(op, plugin)| {
                let key = match op.rsplit_once(':') {
                    Some((domain, op_type)) => OperatorKey::new(domain, op_type),
                    None => OperatorKey::new("", op),
                };
                (key, plugin.clone())
            })
            .collect();
        let registry =
            Registry::build(plugins, &winners).map_err(|source| EngineError::Registry {
                deployment: deployment.source.display().to_string(),
                cause: Box::new(source),
            })?;
        let mut engine =
            Engine::with_registry(deployment.engine.clone(), pool_config(deployment), registry)?;
        engine.winners = winners;
        for p in &deployment.pool.preallocate {
            let fail = |reason: String| EngineError::Preallocate {
                deployment: deployment.source.display().to_string(),
                dtype: p.dtype.clone(),
                shape: p.shape.clone(),
                count: p.count,
                reason,
            };
            let dtype = opal_dtype(&p.dtype).ok_or_else(|| fail("unknown dtype".into()))?;
            engine
                .pool
                .preallocate(dtype, &p.shape, p.count)
                .map_err(|e| fail(e.to_string()))?;
        }
        Ok(Arc::new(engine))
    }

    /// An engine over an already built registry.
    pub fn with_registry(
        config: EngineConfig,
        pool: PoolConfig,
        registry: Registry,
    ) -> Result<Self, EngineError> {
        let isa = IsaChoice::choose(config.isa)?;
        let tracker = MemoryTracker::new();
        let [tensors, pooled, scratch, weights] = HOST_OWNERS.map(|name| tracker.owner(name));
        for plugin in registry.plugins() {
            tracker.owner(&plugin_owner_name(plugin.name()));
        }
        let threads = match config.threads {
            0 | 1 => None,
            n => Some(KernelThreads::new(n).map_err(|e| EngineError::Threads {
                threads: n,
                reason: e.to_string(),
            })?),
        };
        Ok(Engine {
            config,
            pool: TensorPool::new(pool, tensors.clone(), pooled),
            tensors,
            tracker,
            scratch,
            weights,
            registry: RwLock::new(Arc::new(registry)),
            generation: AtomicU64::new(0),
            winners: HashMap::new(),
            threads,
            isa,
        })
    }

    /// The current registry snapshot; plans hold the one they were compiled with.
    pub fn registry(&self) -> Arc<Registry> {
        self.registry.read().clone()
    }

    /// How many snapshots were published before the current one: a plan compiled under an older
    /// generation is recompiled before its next run.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// The deployment's choices of which plugin wins an operator two provide.
    pub fn winners(&self) -> &HashMap<OperatorKey, String> {
        &self.winners
    }

    /// Makes `registry` the current snapshot. Runs holding the old one finish with it.
    pub fn publish(&self, registry: Arc<Registry>) {
        let mut current = self.registry.write();
        for plugin in registry.plugins() {
            self.tracker.owner(&plugin_owner_name(plugin.name()));
        }
        *current = registry;
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// Makes `registry` the current snapshot without asking sessions to recompile: for a
    /// registry that only adds plugins to the current one, so every existing plan still holds
    /// kernels it would resolve again.
    pub fn publish_addition(&self, registry: Arc<Registry>) {
        let mut current = self.registry.write();
        for plugin in registry.plugins() {
            self.tracker.owner(&plugin_owner_name(plugin.name()));
        }
        *current = registry;
    }

    /// Loads an ONNX model; its weights stay mapped, and what must be copied is tracked.
    pub fn load_model(&self, path: &Path) -> Result<Arc<Model>, ModelError> {
        Model::load(path, &self.weights).map(Arc::new)
    }

    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    pub fn tracker(&self) -> &Arc<MemoryTracker> {
        &self.tracker
    }

    pub fn pool(&self) -> &TensorPool {
        &self.pool
    }

    /// The owner of intermediate tensors (pooled and slab).
    pub fn tensor_owner(&self) -> &Owner {
        &self.tensors
    }

    /// The owner of scratch arenas.
    pub fn scratch_owner(&self) -> &Owner {
        &self.scratch
    }

    /// The owner of decoded and folded constants.
    pub fn weights_owner(&self) -> &Owner {
        &self.weights
    }

    /// The owner of memory plugin `name` borrows through the lent allocator.
    pub fn plugin_owner(&self, name: &str) -> Owner {
        self.tracker.owner(&plugin_owner_name(name))
    }

    /// The instruction set kernels use, and what capped it.
    pub fn isa(&self) -> IsaChoice {
        self.isa
    }

    /// The threads lent to kernels, if more than one.
    pub fn threads(&self) -> Option<&KernelThreads> {
        self.threads.as_ref()
    }

    /// The seed's statistics block, with bytes per owner and per plugin.
    pub fn report(&self) -> MemoryReport {
        let registry = self.registry();
        let owners = self.tracker.owners();
        let (plugins, host): (Vec<_>, Vec<_>) = owners
            .into_iter()
            .partition(|o| o.name.starts_with(PLUGIN_OWNER_PREFIX));
        let plugins = plugins
            .into_iter()
            .map(|mut usage| {
                usage.name = usage.name[PLUGIN_OWNER_PREFIX.len()..].to_owned();
                let own_heap_allocations = registry
                    .plugins()
                    .iter()
                    .find(|p| p.name() == usage.name)
                    .and_then(|p| p.own_heap_allocations());
                OwnerReport {
                    usage,
                    own_heap_allocations,
                }
            })
            .collect();
        MemoryReport {
            current_bytes: self.tracker.current_bytes(),
            peak_bytes: self.tracker.peak_bytes(),
            allocations: self.tracker.allocations(),
            pool: self.pool.stats(),
            active_operators: registry.operator_count(),
            owners: host,
            plugins,
        }
    }
}

const PLUGIN_OWNER_PREFIX: &str = "plugin:";

fn plugin_owner_name(plugin: &str) -> String {
    format!("{PLUGIN_OWNER_PREFIX}{plugin}")
}

fn pool_config(deployment: &Deployment) -> PoolConfig {
    PoolConfig {
        max_per_key: deployment.pool.max_per_key,
        bypass_bytes: deployment.pool.bypass_bytes,
    }
}

/// Loads a deployment's plugin through a shadow copy. A bare file name found nowhere is
/// reported with the directories it was searched in.
fn load_plugin(spec: &PluginSpec) -> Result<Arc<PluginLibrary>, PluginError> {
    if !spec.resolved.is_file() {
        if let Some(searched) = spec.searched_dirs() {
            let searched: Vec<String> = searched.iter().map(|d| d.display().to_string()).collect();
            return Err(PluginError::NotInSearchPath {
                name: spec.path.clone(),
                searched: searched.join(", "),
            });
        }
    }
    load_shadow_copy(&spec.resolved)
}
