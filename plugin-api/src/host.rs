//! What the host lends a plugin during a call: its tracked allocator, a scratch arena,
//! `parallel_for`, data kept with the compiled node (such as packed weights), and the node's
//! subgraphs, (since ABI 1.8) its values beyond tensors and (since 1.9) the bytes of its string
//! outputs, as a prefix-type function table
//! plus an opaque per-call context.

use crate::{
    tensor::{StringView, TensorView, TensorViewMut},
    value::{Held, ValueSource},
    DType,
};
use abi_stable::{
    std_types::{RResult, RSlice, RStr, RString},
    StableAbi,
};
use std::ffi::c_void;

/// The host's services. The table is a static in the host; `ctx` (passed beside it) carries the
/// per-call state: whose temporaries these are, which arena, which thread pool.
#[repr(C)]
#[derive(StableAbi)]
#[sabi(kind(Prefix(prefix_ref = HostVTableRef)))]
pub struct HostVTable {
    /// Allocates `size` bytes aligned to `align` from the host's tracked allocator, accounted to
    /// the calling plugin. Returns null on failure.
    pub alloc: unsafe extern "C" fn(ctx: *const c_void, size: usize, align: usize) -> *mut u8,
    /// Frees memory from `alloc` with the same size and alignment.
    pub free: unsafe extern "C" fn(ctx: *const c_void, ptr: *mut u8, size: usize, align: usize),
    /// Allocates `size` zeroed bytes aligned to `align` from the per-call scratch arena; valid
    /// until the kernel call returns. Returns null on failure.
    pub scratch: unsafe extern "C" fn(ctx: *const c_void, size: usize, align: usize) -> *mut u8,
    /// Runs `task.run(task_ctx, start, end)` over disjoint ranges covering `0..n`, possibly on
    /// several threads, and returns when all have finished. `task` must not unwind.
    pub parallel_for: unsafe extern "C" fn(
        ctx: *const c_void,
        n: usize,
        task_ctx: *const c_void,
        task: ParallelTask,
    ),
    /// How many threads `parallel_for` may use.
    #[sabi(last_prefix_field)]
    pub threads: unsafe extern "C" fn(ctx: *const c_void) -> usize,
    /// Since ABI 1.3: which inputs of the call are constants of the compiled model, the same
    /// data on every call of the node: bit `i` for input `i`.
    pub constant_inputs: unsafe extern "C" fn(ctx: *const c_void) -> u64,
    /// Since ABI 1.3: the node's prepared data, `size` bytes aligned to `align` that the host
    /// keeps with the compiled node, in its tracked memory. The first call that asks runs
    /// `fill.run(fill_ctx, data, size)` on zeroed bytes; every later call of the node, in any
    /// run, gets the same bytes back, read-only. Null when the host keeps no data for this call
    /// (as when it folds constants), when `fill` returned false, or when `size` or `align`
    /// differ from what the node asked before.
    pub prepared: unsafe extern "C" fn(
        ctx: *const c_void,
        size: usize,
        align: usize,
        fill_ctx: *const c_void,
        fill: PrepareTask,
    ) -> *const u8,
    /// Since ABI 1.3: as `scratch`, but the bytes are not zeroed: they hold what earlier calls
    /// wrote there (always initialised), for kernels that write all of them before reading.
    pub scratch_unzeroed:
        unsafe extern "C" fn(ctx: *const c_void, size: usize, align: usize) -> *mut u8,
    /// Since ABI 1.4: the description the operator gave when nodes were fused into this call
    /// (see [`fusion`](crate::fusion)); writes its length to `len`. Empty (`len` 0) when
    /// nothing was fused. Valid until the call returns.
    pub fusion: unsafe extern "C" fn(ctx: *const c_void, len: *mut usize) -> *const u8,
    /// Since ABI 1.5: the instruction set the call's kernels may use
    /// ([`Isa::to_abi`](crate::Isa::to_abi)), chosen by the host once per process.
    pub isa: unsafe extern "C" fn(ctx: *const c_void) -> u32,
    /// Since ABI 1.6: runs the node's subgraph held in graph attribute `name` on `inputs`, the
    /// subgraph's declared inputs in order (the values it reads from enclosing graphs the host
    /// adds itself). Returns how many outputs it gave; they stay readable through
    /// `subgraph_output` until this subgraph runs again or the call returns.
    pub run_subgraph: unsafe extern "C" fn(
        ctx: *const c_void,
        name: RStr<'_>,
        inputs: RSlice<'_, TensorView<'_>>,
    ) -> RResult<usize, RString>,
    /// Since ABI 1.6: output `index` of the last run of subgraph `name` in this call; an absent
    /// view when there is none. Valid until that subgraph runs again or the call returns.
    pub subgraph_output: unsafe extern "C" fn(
        ctx: *const c_void,
        name: RStr<'_>,
        index: usize,
    ) -> TensorView<'static>,
    /// Since ABI 1.6: bit `i` set: output `i` has no shape yet, because inference could not know
    /// it before the call (a Loop's trip count, an If's branch); the kernel gives it one with
    /// `shape_output`. Its view in the call has no bytes until then.
    pub unshaped_outputs: unsafe extern "C" fn(ctx: *const c_void) -> u64,
    /// Since ABI 1.6: gives unshaped output `index` the shape `shape` and returns its view,
    /// zeroed, lent for the rest of the call. Dtype undefined when refused: the output is not
    /// unshaped, was shaped already, or the memory limit does not allow it.
    pub shape_output: unsafe extern "C" fn(
        ctx: *const c_void,
        index: usize,
        shape: RSlice<'_, usize>,
    ) -> TensorViewMut<'static>,
    /// Since ABI 1.7: whether the node has a subgraph in graph attribute `name`.
    pub has_subgraph: unsafe extern "C" fn(ctx: *const c_void, name: RStr<'_>) -> bool,
    /// Since ABI 1.8: what input `index` holds in this call: a tensor (also when absent), a
    /// sequence, or none.
    pub input_held: unsafe extern "C" fn(ctx: *const c_void, index: usize) -> Held,
    /// Since ABI 1.8: how many elements sequence input `index` holds; 0 when it is no sequence.
    pub sequence_len: unsafe extern "C" fn(ctx: *const c_void, index: usize) -> usize,
    /// Since ABI 1.8: element `element` of sequence input `index`, lent for the call; an absent
    /// view when there is none.
    pub sequence_element: unsafe extern "C" fn(
        ctx: *const c_void,
        index: usize,
        element: usize,
    ) -> TensorView<'static>,
    /// Since ABI 1.8: appends to sequence output `index` a zeroed tensor of `dtype` and `shape`,
    /// which the host allocates, and returns its view, lent for the rest of the call. Dtype
    /// undefined when refused: the output is no sequence, was set to none, the dtype differs
    /// from its elements', or the memory limit does not allow it.
    pub push_element: unsafe extern "C" fn(
        ctx: *const c_void,
        index: usize,
        dtype: DType,
        shape: RSlice<'_, usize>,
    ) -> TensorViewMut<'static>,
    /// Since ABI 1.8: makes optional output `index` none; false when it is not optional or
    /// was given a value already.
    pub set_none: unsafe extern "C" fn(ctx: *const c_void, index: usize) -> bool,
    /// Since ABI 1.8: gives output `index` (a sequence or optional, or an unshaped tensor) the
    /// value `source` names, copied by the host.
    pub forward: unsafe extern "C" fn(
        ctx: *const c_void,
        index: usize,
        source: ValueSource<'_>,
    ) -> RResult<(), RString>,
    /// Since ABI 1.8: as `run_subgraph`, with inputs of any kind: each a tensor, an input of
    /// the node, or an output of this subgraph's last run (taken from it before it runs again).
    pub run_subgraph_values: unsafe extern "C" fn(
        ctx: *const c_void,
        name: RStr<'_>,
        inputs: RSlice<'_, ValueSource<'_>>,
    ) -> RResult<usize, RString>,
    /// Since ABI 1.9: copies `bytes` (UTF-8) into host memory kept with string output `index`
    /// and returns the view of the copy, which the kernel writes into an element of that
    /// output. A null view when refused: the output is not a string tensor, or the memory limit
    /// does not allow it.
    pub store_string:
        unsafe extern "C" fn(ctx: *const c_void, index: usize, bytes: RStr<'_>) -> StringView,
}

/// A task for `parallel_for`: called as `run(task_ctx, start, end)` for each range. It must
/// not unwind.
#[repr(transparent)]
#[derive(StableAbi, Clone, Copy)]
pub struct ParallelTask {
    pub run: unsafe extern "C" fn(task_ctx: *const c_void, start: usize, end: usize),
}

/// The filling of a node's prepared data: called as `run(fill_ctx, data, size)` on `size`
/// zeroed bytes; returns whether it succeeded. It must not unwind.
#[repr(transparent)]
#[derive(StableAbi, Clone, Copy)]
pub struct PrepareTask {
    pub run: unsafe extern "C" fn(fill_ctx: *const c_void, data: *mut u8, size: usize) -> bool,
}

/// The host's services for one call: the static table and the context it is called with.
#[repr(C)]
#[derive(StableAbi, Clone, Copy)]
pub struct HostServices {
    pub vtable: HostVTableRef,
    pub ctx: *const c_void,
}
