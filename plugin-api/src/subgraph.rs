//! A node's subgraphs (graph-valued attributes, such as If's branches and Loop's body) as a
//! kernel reaches them: the host types them during inference and runs them during a call, with
//! its own memory and kernels; and outputs whose shape only the call can tell (ABI 1.6).

use crate::{
    infer::{InferContext, InferInput, OutputType},
    kernel::{has_bit, KernelContext, KernelError, KernelResult, TensorMut, TensorRef},
    tensor::TensorView,
    value::{ValueKind, ValueType},
};
use abi_stable::{
    std_types::{RResult, RSlice, RStr, RString, RVec},
    StableAbi,
};
use std::ffi::c_void;

/// The host's services during inference (since ABI 1.6), as a prefix-type table.
#[repr(C)]
#[derive(StableAbi)]
#[sabi(kind(Prefix(prefix_ref = InferHostVTableRef)))]
pub struct InferHostVTable {
    /// The output types of the node's subgraph in graph attribute `name` when its declared
    /// inputs have the types (and, where known, values) `inputs`.
    #[sabi(last_prefix_field)]
    pub subgraph_types: unsafe extern "C" fn(
        ctx: *const c_void,
        name: RStr<'_>,
        inputs: RSlice<'_, InferInput<'_>>,
    ) -> RResult<RVec<OutputType>, RString>,
    /// Since ABI 1.7: whether the node has a subgraph in graph attribute `name`.
    pub has_subgraph: unsafe extern "C" fn(ctx: *const c_void, name: RStr<'_>) -> bool,
    /// Since ABI 1.8: the kind of input `index` of the node (tensor for an absent one).
    pub input_kind: unsafe extern "C" fn(ctx: *const c_void, index: usize) -> ValueKind,
    /// Since ABI 1.8: declares output `index` of kind `kind`; outputs not declared are
    /// tensors. False when the host does not take it (no such output, an unknown kind).
    pub set_output_kind:
        unsafe extern "C" fn(ctx: *const c_void, index: usize, kind: ValueKind) -> bool,
    /// Since ABI 1.8: as `subgraph_types`, with the declared inputs' kinds (one per input)
    /// and the outputs' kinds in the answer.
    pub subgraph_value_types: unsafe extern "C" fn(
        ctx: *const c_void,
        name: RStr<'_>,
        inputs: RSlice<'_, InferInput<'_>>,
        kinds: RSlice<'_, ValueKind>,
    ) -> RResult<RVec<ValueType>, RString>,
}

/// The host's inference services for one call: the table and the context it is called with.
#[repr(C)]
#[derive(StableAbi, Clone, Copy)]
pub struct InferHost {
    pub vtable: InferHostVTableRef,
    pub ctx: *const c_void,
}

impl InferContext<'_> {
    /// Whether the node has a subgraph in graph attribute `name` (an optional one, such as
    /// FlexAttention's `score_mod`). A host that lends no inference services (the test host)
    /// lends no subgraphs; one older than ABI 1.7 cannot tell, which is an error.
    pub fn has_subgraph(&self, name: &str) -> KernelResult<bool> {
        let Some(host) = self.host else {
            return Ok(false);
        };
        let has = host.vtable.has_subgraph().ok_or_else(|| {
            KernelError::new(
                "the host cannot tell which subgraphs a node has (it is older than ABI 1.7)",
            )
        })?;
        // SAFETY: the table and context come from the host for the duration of this call.
        Ok(unsafe { has(host.ctx, RStr::from_str(name)) })
    }

    /// The output types of the node's subgraph in graph attribute `name` when its declared
    /// inputs have the types of `inputs` (a dim of -1 is unknown). The host compiles the
    /// subgraph with its own kernels to tell; an error names what in the subgraph failed.
    pub fn subgraph_types(
        &self,
        name: &str,
        inputs: &[InferInput<'_>],
    ) -> KernelResult<Vec<OutputType>> {
        let host = self.host.ok_or_else(|| {
            KernelError::new("the host does not type subgraphs (it is older than ABI 1.6)")
        })?;
        // SAFETY: the table and context come from the host for the duration of this call.
        let types = unsafe {
            (host.vtable.subgraph_types())(host.ctx, RStr::from_str(name), inputs.into())
        };
        types
            .into_result()
            .map(RVec::into_vec)
            .map_err(|e| KernelError::new(e.into_string()))
    }
}

impl<'a> KernelContext<'a> {
    /// Whether the node has a subgraph in graph attribute `name`; an error from a host older
    /// than ABI 1.7, which cannot tell.
    pub fn has_subgraph(&self, name: &str) -> KernelResult<bool> {
        let has = self.host.vtable.has_subgraph().ok_or_else(|| {
            KernelError::new(
                "the host cannot tell which subgraphs a node has (it is older than ABI 1.7)",
            )
        })?;
        // SAFETY: the table and context come from the host for the duration of this call.
        Ok(unsafe { has(self.host.ctx, RStr::from_str(name)) })
    }

    /// Runs the node's subgraph in graph attribute `name` on `inputs` (its declared inputs, in
    /// order) and returns how many outputs it gave; read them with
    /// [`subgraph_output`](Self::subgraph_output). The values the subgraph reads from
    /// enclosing graphs are the host's to supply.
    pub fn run_subgraph(&mut self, name: &str, inputs: &[TensorView<'_>]) -> KernelResult<usize> {
        let run = self.host.vtable.run_subgraph().ok_or_else(|| {
            KernelError::new("the host does not run subgraphs (it is older than ABI 1.6)")
        })?;
        // SAFETY: the table and context come from the host for the duration of this call; the
        // inputs are valid views for the call.
        let result = unsafe { run(self.host.ctx, RStr::from_str(name), inputs.into()) };
        result
            .into_result()
            .map_err(|e| KernelError::new(e.into_string()))
    }

    /// Output `index` of the last run of subgraph `name`. Borrowed from the context, so it
    /// cannot outlive the next [`run_subgraph`](Self::run_subgraph), which reuses its memory.
    pub fn subgraph_output(&self, name: &str, index: usize) -> KernelResult<TensorRef<'_>> {
        let output = self.host.vtable.subgraph_output().ok_or_else(|| {
            KernelError::new("the host does not run subgraphs (it is older than ABI 1.6)")
        })?;
        // SAFETY: the table and context come from the host for the duration of this call; the
        // host keeps the view's bytes until the subgraph runs again, which needs `&mut self`.
        let view = unsafe { output(self.host.ctx, RStr::from_str(name), index) };
        if view.is_absent() {
            return Err(KernelError::new(format!(
                "subgraph '{name}' has no output {index}: has it run?"
            )));
        }
        Ok(TensorRef::new(view))
    }

    /// Whether output `index` has no shape yet: inference could not know it before the call,
    /// so the kernel gives it one with [`shaped_output`](Self::shaped_output).
    pub fn is_unshaped(&self, index: usize) -> bool {
        let Some(unshaped) = self.host.vtable.unshaped_outputs() else {
            return false;
        };
        // SAFETY: the table and context come from the host for the duration of this call.
        has_bit(unsafe { unshaped(self.host.ctx) }, index)
    }

    /// Output `index` with shape `shape`: an unshaped output is given that shape (zeroed);
    /// an output the host shaped before the call must already have it. Each output can be
    /// taken once, as with [`output`](Self::output).
    pub fn shaped_output(&self, index: usize, shape: &[usize]) -> KernelResult<TensorMut<'a>> {
        if !self.is_unshaped(index) {
            let output = self.output(index)?;
            if output.shape() != shape {
                return Err(KernelError::new(format!(
                    "output {index} has shape {:?}, not {shape:?}",
                    output.shape()
                )));
            }
            return Ok(output);
        }
        let give_shape = self.host.vtable.shape_output().ok_or_else(|| {
            KernelError::new("the host does not shape outputs during a call (before ABI 1.6)")
        })?;
        self.take_output(index)?;
        // SAFETY: the table and context come from the host for the duration of this call.
        let view = unsafe { give_shape(self.host.ctx, index, shape.into()) };
        if view.dtype == crate::DType::UNDEFINED {
            return Err(KernelError::new(format!(
                "the host refused output {index} of shape {shape:?}: more than the deployment's engine.memory_limit allows"
            )));
        }
        let (ptr, len) = (view.data.as_ptr().cast_mut(), view.data.len());
        // SAFETY: the host lends the output's bytes and shape exclusively to this call for the
        // rest of it, and `take_output` marked the output taken, so this is the only reference
        // ever made of them.
        let data = unsafe { std::slice::from_raw_parts_mut(ptr, len) };
        // SAFETY: as above: the host keeps the shape with the output's tensor past the call.
        let shape = unsafe { std::slice::from_raw_parts(view.shape.as_ptr(), view.shape.len()) };
        Ok(TensorMut {
            dtype: view.dtype,
            shape,
            data,
            output: Some((self.host, index)),
        })
    }
}
