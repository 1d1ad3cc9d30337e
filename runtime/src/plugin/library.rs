//! A loaded plugin library: the handle, owned by the host, and what was read from it through the
//! ABI. The library is unloaded when the last `Arc<PluginLibrary>` drops, and nothing read from
//! it (strings, function pointers) outlives that: names are copied, and functions are only
//! reachable through an [`OperatorEntry`], which holds the `Arc`.

use super::{
    call_scope::{infer_host, InferScope},
    layout::check_module_layout,
    ContentDigest, OperatorKey, PluginError,
};
use abi_stable::{
    std_types::{ROption, RResult, RString, RVec},
    StableAbi,
};
use opal_plugin_api::{
    fusion::FuseCall,
    infer::OutputType,
    module::{PluginDescriptor, PluginModuleRef, DESCRIPTOR_MAGIC},
    operator::{InferCall, KernelCall},
    subgraph::InferHost,
    ABI_MAJOR, ABI_MINOR, DESCRIPTOR_SYMBOL,
};
use std::{
    fmt,
    path::{Path, PathBuf},
    sync::Arc,
};

type InferFn = extern "C" fn(&InferCall<'_>) -> RResult<RVec<OutputType>, RString>;
type ComputeFn = extern "C" fn(&mut KernelCall<'_>) -> RResult<(), RString>;
type FuseFn = extern "C" fn(&FuseCall<'_>) -> ROption<RVec<u8>>;
type InferScopedFn = extern "C" fn(&InferCall<'_>, InferHost) -> RResult<RVec<OutputType>, RString>;

/// A plugin library loaded into the host.
pub struct PluginLibrary {
    name: String,
    version: String,
    abi: (u32, u32),
    /// The file loaded (a shadow copy when loaded through one).
    path: PathBuf,
    /// The file the deployment names.
    source: PathBuf,
    /// What `source` held when it was loaded.
    digest: ContentDigest,
    module: PluginModuleRef,
    operators: Vec<OperatorFns>,
    /// Closed when the plugin is dropped (see [`super::unload`]); nothing above is used after.
    library: Option<libloading::Library>,
}

/// An operator as read from the plugin, before it is tied to its library's `Arc`.
#[derive(Clone)]
struct OperatorFns {
    domain: String,
    op_type: String,
    since_version: i64,
    until_version: i64,
    value_inputs: u64,
    shape_inputs: u64,
    infer: InferFn,
    compute: ComputeFn,
    /// Absent before ABI 1.4: the operator fuses nothing.
    fuse: Option<FuseFn>,
    /// Absent before ABI 1.6: inference without the host's services.
    infer_scoped: Option<InferScopedFn>,
    /// Absent before ABI 1.7: no operator draws at random.
    draws_at_random: bool,
    /// False before ABI 1.8: the operator takes tensors only.
    reads_value_kinds: bool,
    /// False before ABI 1.9: the operator takes and makes no strings.
    takes_strings: bool,
}

/// One operator a plugin provides, with the functions to call it. Holds its library loaded.
#[derive(Clone)]
pub struct OperatorEntry {
    fns: OperatorFns,
    library: Arc<PluginLibrary>,
}

impl PluginLibrary {
    /// Loads the plugin at `path`: checks the descriptor, the ABI version and the module layout,
    /// then reads its name, version and operators.
    pub fn load(path: &Path) -> Result<Arc<Self>, PluginError> {
        let digest = ContentDigest::of_file(path).map_err(|_| PluginError::NotFound {
            path: path.to_owned(),
        })?;
        Self::load_as(path, path, digest)
    }

    /// Loads the library file `path`, a copy of `source` whose contents were `digest`; errors
    /// and listings name `source`.
    pub(crate) fn load_as(
        path: &Path,
        source: &Path,
        digest: ContentDigest,
    ) -> Result<Arc<Self>, PluginError> {
        if !path.is_file() {
            return Err(PluginError::NotFound {
                path: source.to_owned(),
            });
        }
        super::elf::check_header(path, source)?;
        super::probe::check(path, source)?;
        // SAFETY: loading a library runs its initialisers. opal plugins are trusted code by
        // design (a deployment names them); the checks below guard against mistakes, not malice.
        let library =
            unsafe { libloading::Library::new(path) }.map_err(|e| PluginError::NotALibrary {
                path: source.to_owned(),
                // The loader names the file it opened, which may be the shadow copy.
                reason: e
                    .to_string()
                    .replace(&*path.to_string_lossy(), &source.to_string_lossy()),
            })?;
        // SAFETY: the symbol, when present, is the `static PluginDescriptor` that
        // `export_plugin!` defines. Only its frozen leading fields are read before they are
        // validated, and the reference does not outlive `library` (it is dropped in this function).
        let descriptor: &PluginDescriptor = unsafe {
            let symbol = library
                .get::<*const PluginDescriptor>(DESCRIPTOR_SYMBOL)
                .map_err(|_| PluginError::MissingDescriptor {
                    path: source.to_owned(),
                })?;
            &**symbol
        };
        check_descriptor(source, descriptor)?;
        let module = descriptor.module;
        let operators = read_operators(source, module)?;
        Ok(Arc::new(PluginLibrary {
            name: module.name().as_str().to_owned(),
            version: module.version().as_str().to_owned(),
            abi: (descriptor.abi_major, descriptor.abi_minor),
            path: path.to_owned(),
            source: source.to_owned(),
            digest,
            module,
            operators,
            library: Some(library),
        }))
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn version(&self) -> &str {
        &self.version
    }

    /// The opal ABI version the plugin was built against.
    pub fn abi_version(&self) -> (u32, u32) {
        self.abi
    }

    /// The file the library was loaded from (a shadow copy when loaded through one).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file the deployment names, which a reload reads again.
    pub fn source(&self) -> &Path {
        &self.source
    }

    /// What the deployed file held when this library was loaded from it.
    pub fn digest(&self) -> ContentDigest {
        self.digest
    }

    /// The plugin's operators, each holding this library loaded.
    pub fn operators(self: &Arc<Self>) -> Vec<OperatorEntry> {
        self.operators
            .iter()
            .map(|fns| OperatorEntry {
                fns: fns.clone(),
                library: Arc::clone(self),
            })
            .collect()
    }

    /// Heap allocations the plugin made from its own allocator, if its ABI version reports them.
    pub fn own_heap_allocations(&self) -> Option<u64> {
        self.module.heap_allocations().map(|count| count())
    }
}

impl Drop for PluginLibrary {
    fn drop(&mut self) {
        if let Some(library) = self.library.take() {
            super::unload::close(library, &self.name, &self.version, &self.source, &self.path);
        }
    }
}

impl fmt::Debug for PluginLibrary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PluginLibrary")
            .field("name", &self.name)
            .field("version", &self.version)
            .field("abi", &self.abi)
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

fn check_descriptor(path: &Path, d: &PluginDescriptor) -> Result<(), PluginError> {
    if d.magic != DESCRIPTOR_MAGIC {
        return Err(PluginError::BadMagic {
            path: path.to_owned(),
        });
    }
    let (plugin_major, plugin_minor) = (d.abi_major, d.abi_minor);
    let versions = || {
        (
            path.to_owned(),
            plugin_major,
            plugin_minor,
            ABI_MAJOR,
            ABI_MINOR,
        )
    };
    if plugin_major != ABI_MAJOR {
        let (path, plugin_major, plugin_minor, host_major, host_minor) = versions();
        return Err(PluginError::IncompatibleAbi {
            path,
            plugin_major,
            plugin_minor,
            host_major,
            host_minor,
        });
    }
    if !d.abi_stable.is_valid() {
        let (path, plugin_major, plugin_minor, host_major, host_minor) = versions();
        return Err(PluginError::IncompatibleAbiStable {
            path,
            plugin_major,
            plugin_minor,
            host_major,
            host_minor,
        });
    }
    check_module_layout(<PluginModuleRef as StableAbi>::LAYOUT, d.layout).map_err(|difference| {
        let (path, plugin_major, plugin_minor, host_major, host_minor) = versions();
        PluginError::LayoutMismatch {
            path,
            plugin_major,
            plugin_minor,
            host_major,
            host_minor,
            differences: difference.summary,
            report: difference.report,
        }
    })
}

fn read_operators(path: &Path, module: PluginModuleRef) -> Result<Vec<OperatorFns>, PluginError> {
    let table = (module.operators())();
    table
        .iter()
        .map(|op| {
            let fns = OperatorFns {
                domain: op.domain().as_str().to_owned(),
                op_type: op.op_type().as_str().to_owned(),
                since_version: op.since_version(),
                until_version: op.until_version(),
                value_inputs: op.value_inputs(),
                // Absent before ABI 1.2: no input is shape-only.
                shape_inputs: op.shape_inputs().unwrap_or(0),
                infer: op.infer(),
                compute: op.compute(),
                fuse: op.fuse(),
                infer_scoped: op.infer_scoped(),
                draws_at_random: op.draws_at_random().unwrap_or(false),
                reads_value_kinds: op.reads_value_kinds().unwrap_or(false),
                takes_strings: op.takes_strings().unwrap_or(false),
            };
            if fns.op_type.is_empty() || fns.since_version > fns.until_version {
                return Err(PluginError::BadOperator {
                    path: path.to_owned(),
                    reason: format!(
                        "operator '{}' has opset range {}..={}",
                        fns.op_type, fns.since_version, fns.until_version
                    ),
                });
            }
            Ok(fns)
        })
        .collect::<Result<Vec<_>, _>>()
        .and_then(|operators| refuse_duplicates(path, operators))
}

/// `operators`, unless two of them are the same operator over overlapping opsets.
fn refuse_duplicates(
    path: &Path,
    operators: Vec<OperatorFns>,
) -> Result<Vec<OperatorFns>, PluginError> {
    for (i, a) in operators.iter().enumerate() {
        let twin = operators[i + 1..].iter().find(|b| {
            a.domain == b.domain
                && a.op_type == b.op_type
                && a.since_version <= b.until_version
                && b.since_version <= a.until_version
        });
        if let Some(b) = twin {
            let name = if a.domain.is_empty() {
                a.op_type.clone()
            } else {
                format!("{}:{}", a.domain, a.op_type)
            };
            return Err(PluginError::BadOperator {
                path: path.to_owned(),
                reason: format!(
                    "operator '{name}' is listed twice, for opsets {}..={} and {}..={}; list each operator once per opset range",
                    a.since_version, a.until_version, b.since_version, b.until_version
                ),
            });
        }
    }
    Ok(operators)
}

impl OperatorEntry {
    pub fn domain(&self) -> &str {
        &self.fns.domain
    }

    pub fn op_type(&self) -> &str {
        &self.fns.op_type
    }

    pub fn since_version(&self) -> i64 {
        self.fns.since_version
    }

    pub fn until_version(&self) -> i64 {
        self.fns.until_version
    }

    /// Whether inference needs the value of input `index`.
    pub fn needs_value(&self, index: usize) -> bool {
        index < 64 && self.fns.value_inputs & (1 << index) != 0
    }

    /// Whether the outputs are random draws, which only a run may compute.
    pub fn draws_at_random(&self) -> bool {
        self.fns.draws_at_random
    }

    /// Whether compute reads only the shape of input `index`, never its data.
    pub fn reads_only_shape(&self, index: usize) -> bool {
        index < 64 && self.fns.shape_inputs & (1 << index) != 0
    }

    pub fn library(&self) -> &Arc<PluginLibrary> {
        &self.library
    }

    /// `op_type`, or `domain:op_type` outside the default domain.
    pub fn describe(&self) -> String {
        OperatorKey::new(&self.fns.domain, &self.fns.op_type).to_string()
    }

    pub fn plugin_name(&self) -> &str {
        self.library.name()
    }

    /// Calls the plugin's inference function; errors come back as owned strings.
    pub fn infer(&self, call: &InferCall<'_>) -> Result<Vec<OutputType>, String> {
        match (self.fns.infer)(call) {
            RResult::ROk(types) => Ok(types.into_vec()),
            RResult::RErr(message) => Err(message.into_string()),
        }
    }

    /// Inference with the host's services (through which the node's subgraphs are typed), or
    /// plain inference for an operator before ABI 1.6.
    pub fn infer_scoped(
        &self,
        call: &InferCall<'_>,
        host: InferHost,
    ) -> Result<Vec<OutputType>, String> {
        let Some(infer_scoped) = self.fns.infer_scoped else {
            return self.infer(call);
        };
        match infer_scoped(call, host) {
            RResult::ROk(types) => Ok(types.into_vec()),
            RResult::RErr(message) => Err(message.into_string()),
        }
    }

    /// Inference with the host's services `scope` lends (the inputs' kinds, the outputs'
    /// kinds it declares, the node's subgraphs), or plain inference for an operator before
    /// ABI 1.6.
    pub fn infer_in(
        &self,
        call: &InferCall<'_>,
        scope: &InferScope<'_>,
    ) -> Result<Vec<OutputType>, String> {
        self.infer_scoped(call, infer_host(scope))
    }

    /// Whether the operator takes sequences and optionals (ABI 1.8); others take tensors only.
    pub fn reads_value_kinds(&self) -> bool {
        self.fns.reads_value_kinds
    }

    /// Whether the operator takes and makes string tensors (ABI 1.9); others are never given
    /// or asked for one.
    pub fn takes_strings(&self) -> bool {
        self.fns.takes_strings
    }

    /// Whether the kernel can give outputs their shape during the call (ABI 1.6), for outputs
    /// inference cannot shape ahead.
    pub fn shapes_outputs_in_call(&self) -> bool {
        self.fns.infer_scoped.is_some()
    }

    /// Whether the operator may absorb other nodes into its calls (ABI 1.4).
    pub fn can_fuse(&self) -> bool {
        self.fns.fuse.is_some()
    }

    /// Offers a node for absorption: the operator's description of the fused call, or `None`
    /// when it refuses (or fuses nothing).
    pub fn fuse(&self, call: &FuseCall<'_>) -> Option<Vec<u8>> {
        let fuse = self.fns.fuse?;
        fuse(call).into_option().map(RVec::into_vec)
    }

    /// Calls the plugin's kernel; errors come back as owned strings.
    pub fn compute(&self, call: &mut KernelCall<'_>) -> Result<(), String> {
        match (self.fns.compute)(call) {
            RResult::ROk(()) => Ok(()),
            RResult::RErr(message) => Err(message.into_string()),
        }
    }
}

impl fmt::Debug for OperatorEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}@{}..={} from {}",
            self.fns.domain,
            self.fns.op_type,
            self.fns.since_version,
            self.fns.until_version,
            self.library.name
        )
    }
}
