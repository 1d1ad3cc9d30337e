//! The services the host lends a kernel for one call: its tracked allocator (accounted to the
//! plugin), the run's scratch arena, `parallel_for` over the engine's threads, the node's
//! prepared data, (see [`call_scope`](super::call_scope)) its subgraphs, and (see
//! [`call_strings`](super::call_strings)) its string outputs.

use super::{
    call_scope::{
        host_has_subgraph, host_run_subgraph, host_shape_output, host_subgraph_output,
        host_unshaped_outputs, ShapedOutputs, SubgraphRunner,
    },
    call_strings::{host_store_string, StringOutputs},
    call_values::{
        host_forward, host_input_held, host_push_element, host_run_subgraph_values,
        host_sequence_element, host_sequence_len, host_set_none, CallValues, SubgraphValues,
    },
    KernelThreads,
};
use crate::memory::{AlignedBuffer, Owner, ScratchArena, ALIGNMENT};
use crate::plan::PreparedData;
use crate::value::ValueView;
use abi_stable::prefix_type::WithMetadata;
use opal_plugin_api::{
    host::{HostServices, HostVTable, HostVTableRef, ParallelTask, PrepareTask},
    Isa,
};
use std::{cell::RefCell, ffi::c_void};

/// What one kernel call may use; lent to the plugin as the context of [`HOST_VTABLE`].
pub struct CallHost<'a> {
    /// The plugin whose temporaries these are.
    pub plugin: &'a Owner,
    pub arena: &'a RefCell<ScratchArena>,
    /// `None` runs `parallel_for` on the calling thread.
    pub threads: Option<&'a KernelThreads>,
    /// Bit `i` set: input `i` is a constant of the plan.
    pub constant_inputs: u64,
    /// The node's prepared data; `None` when the call keeps none (constant folding).
    pub prepared: Option<&'a PreparedData>,
    /// The operator's description of the nodes fused into this call; empty when none were.
    pub fusion: &'a [u8],
    /// The instruction set the kernel may use.
    pub isa: Isa,
    /// The node's subgraphs, when it has any.
    pub subgraphs: Option<&'a dyn SubgraphRunner>,
    /// The outputs the kernel shapes during the call, when inference left any unshaped.
    pub shaped: Option<&'a ShapedOutputs<'a>>,
    /// The engine whose pool takes back values the call held; `None` outside a run.
    pub engine: Option<&'a crate::engine::Engine>,
    /// The call's inputs as values (`None`: absent), sequences and none included.
    pub values_in: &'a [Option<ValueView<'a>>],
    /// The outputs other than tensors allocated ahead, when the node has any.
    pub values_out: Option<&'a CallValues<'a>>,
    /// The node's subgraphs, run on values of any kind.
    pub subgraph_values: Option<&'a dyn SubgraphValues>,
    /// The bytes of the call's string outputs, when it has any.
    pub strings: Option<&'a StringOutputs>,
}

impl CallHost<'_> {
    /// The ABI value handed to the plugin; valid while `self` is.
    pub fn services(&self) -> HostServices {
        HostServices {
            vtable: HOST_VTABLE,
            ctx: (self as *const Self).cast(),
        }
    }
}

/// The host's function table, shared by every call.
pub const HOST_VTABLE: HostVTableRef = HostVTableRef(HOST_VTABLE_WM.static_as_prefix());

const HOST_VTABLE_WM: &WithMetadata<HostVTable> = &WithMetadata::new(HostVTable {
    alloc: host_alloc,
    free: host_free,
    scratch: host_scratch,
    parallel_for: host_parallel_for,
    threads: host_threads,
    constant_inputs: host_constant_inputs,
    prepared: host_prepared,
    scratch_unzeroed: host_scratch_unzeroed,
    fusion: host_fusion,
    isa: host_isa,
    run_subgraph: host_run_subgraph,
    subgraph_output: host_subgraph_output,
    unshaped_outputs: host_unshaped_outputs,
    shape_output: host_shape_output,
    has_subgraph: host_has_subgraph,
    input_held: host_input_held,
    sequence_len: host_sequence_len,
    sequence_element: host_sequence_element,
    push_element: host_push_element,
    set_none: host_set_none,
    forward: host_forward,
    run_subgraph_values: host_run_subgraph_values,
    store_string: host_store_string,
});

/// # Safety
/// `ctx` must be the context of a live [`CallHost`], as given by [`CallHost::services`].
pub(super) unsafe fn call_host<'a>(ctx: *const c_void) -> &'a CallHost<'a> {
    // SAFETY: guaranteed by the caller.
    unsafe { &*ctx.cast::<CallHost<'a>>() }
}

unsafe extern "C" fn host_alloc(ctx: *const c_void, size: usize, align: usize) -> *mut u8 {
    // SAFETY: the plugin passes back the context it was lent for this call.
    let host = unsafe { call_host(ctx) };
    if align > ALIGNMENT || !align.is_power_of_two() {
        return std::ptr::null_mut();
    }
    match AlignedBuffer::zeroed(size, host.plugin) {
        Some(buffer) => buffer.into_raw(),
        None => std::ptr::null_mut(),
    }
}

unsafe extern "C" fn host_free(ctx: *const c_void, ptr: *mut u8, size: usize, _align: usize) {
    if ptr.is_null() {
        return;
    }
    // SAFETY: the plugin passes back the context it was lent for this call.
    let host = unsafe { call_host(ctx) };
    // SAFETY: the ABI contract says `ptr` came from `host_alloc` with this size.
    drop(unsafe { AlignedBuffer::from_raw(ptr, size, host.plugin) });
}

unsafe extern "C" fn host_scratch(ctx: *const c_void, size: usize, align: usize) -> *mut u8 {
    // SAFETY: the plugin passes back the context it was lent for this call.
    unsafe { arena_bytes(ctx, size, align, true) }
}

unsafe extern "C" fn host_scratch_unzeroed(
    ctx: *const c_void,
    size: usize,
    align: usize,
) -> *mut u8 {
    // SAFETY: the plugin passes back the context it was lent for this call.
    unsafe { arena_bytes(ctx, size, align, false) }
}

/// `size` bytes of the call's scratch arena, zeroed when `zero`; null when refused.
///
/// # Safety
/// As [`call_host`].
unsafe fn arena_bytes(ctx: *const c_void, size: usize, align: usize, zero: bool) -> *mut u8 {
    // SAFETY: guaranteed by the caller.
    let host = unsafe { call_host(ctx) };
    let Ok(mut arena) = host.arena.try_borrow_mut() else {
        return std::ptr::null_mut();
    };
    let bytes = if zero {
        arena.alloc(size, align)
    } else {
        arena.alloc_unzeroed(size, align)
    };
    bytes.map_or(std::ptr::null_mut(), |bytes| bytes.as_mut_ptr())
}

/// Raw pointers the plugin's task needs on worker threads.
#[derive(Clone, Copy)]
struct SendTask {
    ctx: *const c_void,
    task: ParallelTask,
}
// SAFETY: the plugin-side task is `Sync` (enforced by `KernelContext::parallel_for`'s bound)
// and its context outlives `parallel_for`, which waits for every range.
unsafe impl Send for SendTask {}
// SAFETY: as above.
unsafe impl Sync for SendTask {}

unsafe extern "C" fn host_parallel_for(
    ctx: *const c_void,
    n: usize,
    task_ctx: *const c_void,
    task: ParallelTask,
) {
    // SAFETY: the plugin passes back the context it was lent for this call.
    let host = unsafe { call_host(ctx) };
    let send = SendTask {
        ctx: task_ctx,
        task,
    };
    let run = move |start: usize, end: usize| {
        let send = send;
        // SAFETY: the task catches its own panics and its context is alive (see `SendTask`).
        unsafe { (send.task.run)(send.ctx, start, end) }
    };
    match host.threads {
        Some(pool) => pool.run(n, &run),
        None => run(0, n),
    }
}

unsafe extern "C" fn host_threads(ctx: *const c_void) -> usize {
    // SAFETY: the plugin passes back the context it was lent for this call.
    let host = unsafe { call_host(ctx) };
    host.threads.map_or(1, KernelThreads::threads)
}

unsafe extern "C" fn host_constant_inputs(ctx: *const c_void) -> u64 {
    // SAFETY: the plugin passes back the context it was lent for this call.
    unsafe { call_host(ctx) }.constant_inputs
}

unsafe extern "C" fn host_prepared(
    ctx: *const c_void,
    size: usize,
    align: usize,
    fill_ctx: *const c_void,
    fill: PrepareTask,
) -> *const u8 {
    // SAFETY: the plugin passes back the context it was lent for this call.
    let host = unsafe { call_host(ctx) };
    let Some(prepared) = host.prepared else {
        return std::ptr::null();
    };
    if align > ALIGNMENT || !align.is_power_of_two() {
        return std::ptr::null();
    }
    let filled = prepared.get_or_fill(size, host.plugin, |bytes| {
        // SAFETY: the ABI contract: `fill` accepts `fill_ctx` and these zeroed bytes, lent
        // exclusively until it returns, and does not unwind.
        unsafe { (fill.run)(fill_ctx, bytes.as_mut_ptr(), bytes.len()) }
    });
    filled.unwrap_or(std::ptr::null())
}

unsafe extern "C" fn host_fusion(ctx: *const c_void, len: *mut usize) -> *const u8 {
    // SAFETY: the plugin passes back the context it was lent for this call.
    let host = unsafe { call_host(ctx) };
    // SAFETY: the plugin passes a valid place for the length.
    unsafe { *len = host.fusion.len() };
    host.fusion.as_ptr()
}

unsafe extern "C" fn host_isa(ctx: *const c_void) -> u32 {
    // SAFETY: the plugin passes back the context it was lent for this call.
    unsafe { call_host(ctx) }.isa.to_abi()
}
