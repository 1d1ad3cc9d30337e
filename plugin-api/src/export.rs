//! The glue [`export_plugin!`] expands to: extern "C" trampolines around [`Operator`]s that catch
//! panics, the operator and module tables, and a counting global allocator for the plugin.

use crate::{
    fusion::{FuseCall, FuseQuery},
    infer::InferContext,
    kernel::KernelContext,
    module::{PluginModule, PluginModuleRef},
    operator::{InferCall, KernelCall, OperatorRef, OperatorVTable},
    panic::catch,
    subgraph::InferHost,
    Operator, OutputType,
};
use abi_stable::{
    prefix_type::WithMetadata,
    std_types::{ROption, RResult, RStr, RString, RVec},
};
use std::{
    alloc::{GlobalAlloc, Layout, System},
    cell::Cell,
    marker::PhantomData,
    sync::atomic::{AtomicU64, Ordering},
};

extern "C" fn infer_trampoline<O: Operator>(
    call: &InferCall<'_>,
) -> RResult<RVec<OutputType>, RString> {
    catch(|| O::infer(&InferContext::new(call)).map_err(|e| e.to_string()))
        .map(RVec::from)
        .map_err(RString::from)
        .into()
}

extern "C" fn infer_scoped_trampoline<O: Operator>(
    call: &InferCall<'_>,
    host: InferHost,
) -> RResult<RVec<OutputType>, RString> {
    catch(|| O::infer(&InferContext::with_host(call, host)).map_err(|e| e.to_string()))
        .map(RVec::from)
        .map_err(RString::from)
        .into()
}

extern "C" fn compute_trampoline<O: Operator>(call: &mut KernelCall<'_>) -> RResult<(), RString> {
    catch(|| O::compute(&mut KernelContext::new(call)).map_err(|e| e.to_string()))
        .map_err(RString::from)
        .into()
}

extern "C" fn fuse_trampoline<O: Operator>(call: &FuseCall<'_>) -> ROption<RVec<u8>> {
    catch(|| Ok(O::fuse(&FuseQuery::new(call))))
        .ok()
        .flatten()
        .map(RVec::from)
        .into()
}

const fn bitmask(indices: &[usize]) -> u64 {
    let mut mask = 0u64;
    let mut i = 0;
    while i < indices.len() {
        mask |= 1 << indices[i];
        i += 1;
    }
    mask
}

struct VTableOf<O>(PhantomData<O>);

impl<O: Operator> VTableOf<O> {
    const VTABLE: &'static WithMetadata<OperatorVTable> = &WithMetadata::new(OperatorVTable {
        domain: RStr::from_str(O::DOMAIN),
        op_type: RStr::from_str(O::OP_TYPE),
        since_version: O::SINCE_VERSION,
        until_version: O::UNTIL_VERSION,
        value_inputs: bitmask(O::VALUE_INPUTS),
        shape_inputs: bitmask(O::SHAPE_INPUTS),
        infer: infer_trampoline::<O>,
        compute: compute_trampoline::<O>,
        fuse: fuse_trampoline::<O>,
        infer_scoped: infer_scoped_trampoline::<O>,
        draws_at_random: O::DRAWS_AT_RANDOM,
        reads_value_kinds: O::READS_VALUE_KINDS,
        takes_strings: O::TAKES_STRINGS,
    });
}

/// The ABI table of operator `O`.
pub const fn operator_vtable_ref<O: Operator>() -> OperatorRef {
    OperatorRef(VTableOf::<O>::VTABLE.static_as_prefix())
}

/// The plugin module for a name, version and operator list.
pub const fn plugin_module(
    name: &'static str,
    version: &'static str,
    operators: extern "C" fn() -> RVec<OperatorRef>,
) -> PluginModule {
    PluginModule {
        name: RStr::from_str(name),
        version: RStr::from_str(version),
        operators,
        heap_allocations,
    }
}

/// A reference to a module built in a constant.
pub const fn module_ref(module: &'static WithMetadata<PluginModule>) -> PluginModuleRef {
    PluginModuleRef(module.static_as_prefix())
}

static HEAP_ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

extern "C" fn heap_allocations() -> u64 {
    heap_allocation_count()
}

thread_local! {
    /// Allocations made by the current thread; a `const` cell without a destructor, so reading
    /// and bumping it never allocates.
    static THREAD_HEAP_ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

/// Heap allocations made through [`CountingAllocator`] in this process so far.
pub(crate) fn heap_allocation_count() -> u64 {
    HEAP_ALLOCATIONS.load(Ordering::Relaxed)
}

/// Heap allocations made through [`CountingAllocator`] by the calling thread so far: unlike the
/// process-wide count, it does not move when another thread (a test harness's) allocates.
pub(crate) fn thread_heap_allocation_count() -> u64 {
    THREAD_HEAP_ALLOCATIONS.with(Cell::get)
}

fn count_allocation() {
    HEAP_ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
    THREAD_HEAP_ALLOCATIONS.with(|count| count.set(count.get() + 1));
}

/// The plugin's global allocator: the system allocator, counting allocations so the host can
/// report them (kernels should make none; they borrow the host's memory instead).
pub struct CountingAllocator;

// SAFETY: every call is forwarded unchanged to `System`, which upholds `GlobalAlloc`.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count_allocation();
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count_allocation();
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count_allocation();
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.dealloc(ptr, layout) }
    }
}

/// Exports a plugin: its name, version and operators (types implementing
/// [`Operator`](crate::Operator)).
///
/// ```ignore
/// opal_plugin_api::export_plugin! {
///     name: "my-ops",
///     version: env!("CARGO_PKG_VERSION"),
///     operators: [Relu, Add],
/// }
/// ```
///
/// It also installs the plugin's global allocator, which counts heap allocations.
#[macro_export]
macro_rules! export_plugin {
    (name: $name:expr, version: $version:expr, operators: [$($op:ty),* $(,)?] $(,)?) => {
        #[global_allocator]
        static __OPAL_PLUGIN_ALLOCATOR: $crate::__private::CountingAllocator =
            $crate::__private::CountingAllocator;

        extern "C" fn __opal_plugin_operators(
        ) -> $crate::__private::RVec<$crate::operator::OperatorRef> {
            ::std::vec![$($crate::__private::operator_vtable_ref::<$op>()),*].into()
        }

        const __OPAL_PLUGIN_MODULE: &$crate::__private::WithMetadata<$crate::module::PluginModule> =
            &$crate::__private::WithMetadata::new($crate::__private::plugin_module(
                $name,
                $version,
                __opal_plugin_operators,
            ));

        /// The descriptor the opal host reads to load this plugin.
        #[unsafe(no_mangle)]
        pub static OPAL_PLUGIN_DESCRIPTOR: $crate::PluginDescriptor = $crate::PluginDescriptor::new(
            $crate::__private::module_ref(__OPAL_PLUGIN_MODULE),
        );
    };
}
