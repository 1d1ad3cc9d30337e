//! What a kernel reaches beyond its node's own tensors (ABI 1.6): the node's subgraphs, typed
//! during inference and run during a call, and outputs whose shape the kernel gives during the
//! call. The plan implements the subgraph traits; this module is the `extern "C"` side.

use super::host_services::call_host;
use crate::{engine::Engine, tensor::byte_size, tensor::Tensor};
use abi_stable::{
    prefix_type::WithMetadata,
    std_types::{RResult, RSlice, RStr, RString, RVec},
};
use opal_plugin_api::{
    infer::InferInput,
    subgraph::{InferHost, InferHostVTable, InferHostVTableRef},
    tensor::{TensorView, TensorViewMut},
    value::ValueType,
    DType, OutputType, ValueKind,
};
use smallvec::SmallVec;
use std::{cell::RefCell, ffi::c_void};

/// The types of a node's subgraphs, for its inference.
pub trait SubgraphTypes {
    /// Whether the node has subgraph `name`.
    fn has(&self, name: &str) -> bool;
    /// The output kinds and types of subgraph `name` for declared inputs of the types of
    /// `inputs` and kinds `kinds`.
    fn types(
        &self,
        name: &str,
        inputs: &[InferInput<'_>],
        kinds: &[ValueKind],
    ) -> Result<Vec<ValueType>, String>;
}

/// What an inference call reaches through the host: its inputs' kinds, the kinds it declares
/// for its outputs, and its node's subgraphs.
pub struct InferScope<'a> {
    pub subgraphs: Option<&'a dyn SubgraphTypes>,
    pub input_kinds: &'a [ValueKind],
    pub output_kinds: RefCell<SmallVec<[ValueKind; 4]>>,
}

impl<'a> InferScope<'a> {
    /// A scope for a node with `outputs` outputs, all tensors until inference says otherwise.
    pub fn new(
        subgraphs: Option<&'a dyn SubgraphTypes>,
        input_kinds: &'a [ValueKind],
        outputs: usize,
    ) -> Self {
        InferScope {
            subgraphs,
            input_kinds,
            output_kinds: RefCell::new(smallvec::smallvec![ValueKind::TENSOR; outputs]),
        }
    }

    /// The kinds inference declared, one per output.
    pub fn into_output_kinds(self) -> SmallVec<[ValueKind; 4]> {
        self.output_kinds.into_inner()
    }
}

/// A node's subgraphs during its kernel's call.
pub trait SubgraphRunner {
    /// Whether the node has subgraph `name`.
    fn has(&self, name: &str) -> bool;
    /// Runs subgraph `name` on its declared inputs; returns how many outputs it gave.
    fn run(&self, name: &str, inputs: &[TensorView<'_>]) -> Result<usize, String>;
    /// Calls `f` with output `index` of subgraph `name`'s last run, if there is one.
    fn with_output(&self, name: &str, index: usize, f: &mut dyn FnMut(Option<TensorView<'_>>));
}

/// The inference services lent with a call of `infer_scoped`; valid while `scope` is.
pub fn infer_host(scope: &InferScope<'_>) -> InferHost {
    InferHost {
        vtable: INFER_HOST_VTABLE,
        ctx: (scope as *const InferScope<'_>).cast(),
    }
}

const INFER_HOST_VTABLE: InferHostVTableRef =
    InferHostVTableRef(INFER_HOST_VTABLE_WM.static_as_prefix());

const INFER_HOST_VTABLE_WM: &WithMetadata<InferHostVTable> = &WithMetadata::new(InferHostVTable {
    subgraph_types: host_subgraph_types,
    has_subgraph: host_infer_has_subgraph,
    input_kind: host_input_kind,
    set_output_kind: host_set_output_kind,
    subgraph_value_types: host_subgraph_value_types,
});

unsafe extern "C" fn host_infer_has_subgraph(ctx: *const c_void, name: RStr<'_>) -> bool {
    // SAFETY: the plugin passes back the context `infer_host` made, which outlives the call.
    let scope = unsafe { infer_scope(ctx) };
    scope.subgraphs.is_some_and(|s| s.has(name.as_str()))
}

/// # Safety
/// `ctx` must be the context `infer_host` made, whose scope outlives the inference call.
unsafe fn infer_scope<'a>(ctx: *const c_void) -> &'a InferScope<'a> {
    // SAFETY: guaranteed by the caller.
    unsafe { &*ctx.cast::<InferScope<'a>>() }
}

/// The output types of subgraph `name` of the scope's node, for inputs of these kinds.
fn subgraph_value_types(
    scope: &InferScope<'_>,
    name: &str,
    inputs: &[InferInput<'_>],
    kinds: &[ValueKind],
) -> Result<Vec<ValueType>, String> {
    let subgraphs = scope
        .subgraphs
        .ok_or_else(|| format!("the node has no graph attribute '{name}'"))?;
    if kinds.len() != inputs.len() {
        return Err(format!(
            "{} kinds were given for the {} inputs of subgraph '{name}'",
            kinds.len(),
            inputs.len()
        ));
    }
    subgraphs.types(name, inputs, kinds)
}

unsafe extern "C" fn host_subgraph_types(
    ctx: *const c_void,
    name: RStr<'_>,
    inputs: RSlice<'_, InferInput<'_>>,
) -> RResult<RVec<OutputType>, RString> {
    // SAFETY: the plugin passes back the context `infer_host` made, which outlives the call.
    let scope = unsafe { infer_scope(ctx) };
    let kinds: SmallVec<[ValueKind; 8]> = inputs.iter().map(|_| ValueKind::TENSOR).collect();
    subgraph_value_types(scope, name.as_str(), inputs.as_slice(), &kinds)
        .map(|types| types.into_iter().map(|t| t.ty).collect())
        .map_err(RString::from)
        .into()
}

unsafe extern "C" fn host_subgraph_value_types(
    ctx: *const c_void,
    name: RStr<'_>,
    inputs: RSlice<'_, InferInput<'_>>,
    kinds: RSlice<'_, ValueKind>,
) -> RResult<RVec<ValueType>, RString> {
    // SAFETY: the plugin passes back the context `infer_host` made, which outlives the call.
    let scope = unsafe { infer_scope(ctx) };
    subgraph_value_types(scope, name.as_str(), inputs.as_slice(), kinds.as_slice())
        .map(RVec::from)
        .map_err(RString::from)
        .into()
}

unsafe extern "C" fn host_input_kind(ctx: *const c_void, index: usize) -> ValueKind {
    // SAFETY: the plugin passes back the context `infer_host` made, which outlives the call.
    let scope = unsafe { infer_scope(ctx) };
    scope
        .input_kinds
        .get(index)
        .copied()
        .unwrap_or(ValueKind::TENSOR)
}

unsafe extern "C" fn host_set_output_kind(
    ctx: *const c_void,
    index: usize,
    kind: ValueKind,
) -> bool {
    // SAFETY: the plugin passes back the context `infer_host` made, which outlives the call.
    let scope = unsafe { infer_scope(ctx) };
    let Ok(mut kinds) = scope.output_kinds.try_borrow_mut() else {
        return false;
    };
    match kinds.get_mut(index) {
        Some(place) if kind.is_known() => {
            *place = kind;
            true
        }
        _ => false,
    }
}

/// A call's outputs that inference left unshaped: the kernel gives each its shape, and the
/// host takes its tensor from the pool then.
pub struct ShapedOutputs<'a> {
    engine: &'a Engine,
    /// Bit `k` set: output `k` is unshaped.
    mask: u64,
    dtypes: SmallVec<[DType; 4]>,
    /// One place per output, made before the call, so a tensor never moves while lent.
    tensors: RefCell<SmallVec<[Option<Tensor>; 4]>>,
}

impl<'a> ShapedOutputs<'a> {
    /// Outputs of `dtypes`, those whose bit is set in `mask` unshaped.
    pub fn new(engine: &'a Engine, mask: u64, dtypes: SmallVec<[DType; 4]>) -> Self {
        let tensors = (0..dtypes.len()).map(|_| None).collect();
        ShapedOutputs {
            engine,
            mask,
            dtypes,
            tensors: RefCell::new(tensors),
        }
    }

    pub fn mask(&self) -> u64 {
        self.mask
    }

    /// The tensors the kernel shaped, by output.
    pub fn into_tensors(self) -> SmallVec<[Option<Tensor>; 4]> {
        self.tensors.into_inner()
    }

    /// Gives output `index` its shape; `None` when it is not unshaped, is shaped already, or
    /// does not fit the memory limit.
    fn shape(&self, index: usize, shape: &[usize]) -> Option<()> {
        let bit = u32::try_from(index)
            .ok()
            .and_then(|i| 1u64.checked_shl(i))?;
        if self.mask & bit == 0 {
            return None;
        }
        let mut tensors = self.tensors.try_borrow_mut().ok()?;
        let place = tensors.get_mut(index).filter(|t| t.is_none())?;
        let dtype = self.dtypes[index];
        let bytes = byte_size(dtype, shape)?;
        let limit = self.engine.config().memory_limit;
        let current = self.engine.tracker().current_bytes() as u64;
        if current.saturating_add(bytes as u64) > limit {
            return None;
        }
        let mut tensor = self.engine.pool().get(dtype, shape).ok()?;
        tensor.bytes_mut().fill(0);
        *place = Some(tensor);
        Some(())
    }
}

pub(super) unsafe extern "C" fn host_has_subgraph(ctx: *const c_void, name: RStr<'_>) -> bool {
    // SAFETY: the plugin passes back the context it was lent for this call.
    let host = unsafe { call_host(ctx) };
    host.subgraphs.is_some_and(|s| s.has(name.as_str()))
}

pub(super) unsafe extern "C" fn host_run_subgraph(
    ctx: *const c_void,
    name: RStr<'_>,
    inputs: RSlice<'_, TensorView<'_>>,
) -> RResult<usize, RString> {
    // SAFETY: the plugin passes back the context it was lent for this call.
    let host = unsafe { call_host(ctx) };
    let Some(subgraphs) = host.subgraphs else {
        return RResult::RErr(RString::from(format!(
            "the node has no graph attribute '{name}'"
        )));
    };
    subgraphs
        .run(name.as_str(), inputs.as_slice())
        .map_err(RString::from)
        .into()
}

pub(super) unsafe extern "C" fn host_subgraph_output(
    ctx: *const c_void,
    name: RStr<'_>,
    index: usize,
) -> TensorView<'static> {
    // SAFETY: the plugin passes back the context it was lent for this call.
    let host = unsafe { call_host(ctx) };
    let Some(subgraphs) = host.subgraphs else {
        return TensorView::ABSENT;
    };
    let mut found = TensorView::ABSENT;
    subgraphs.with_output(name.as_str(), index, &mut |output| {
        if let Some(view) = output {
            // SAFETY: the output's tensor stays in its run state, unchanged, until the
            // subgraph runs again or the node's call returns; the plugin API ties the view it
            // makes of this one to a borrow that ends before either.
            found = unsafe {
                TensorView {
                    dtype: view.dtype,
                    shape: RSlice::from_raw_parts(view.shape.as_ptr(), view.shape.len()),
                    data: RSlice::from_raw_parts(view.data.as_ptr(), view.data.len()),
                }
            };
        }
    });
    found
}

pub(super) unsafe extern "C" fn host_unshaped_outputs(ctx: *const c_void) -> u64 {
    // SAFETY: the plugin passes back the context it was lent for this call.
    let host = unsafe { call_host(ctx) };
    host.shaped.map_or(0, ShapedOutputs::mask)
}

pub(super) unsafe extern "C" fn host_shape_output(
    ctx: *const c_void,
    index: usize,
    shape: RSlice<'_, usize>,
) -> TensorViewMut<'static> {
    let refused = TensorViewMut::new(DType::UNDEFINED, &[], &mut []);
    // SAFETY: the plugin passes back the context it was lent for this call.
    let host = unsafe { call_host(ctx) };
    let Some(shaped) = host.shaped else {
        return refused;
    };
    if shaped.shape(index, shape.as_slice()).is_none() {
        return refused;
    }
    let Ok(mut tensors) = shaped.tensors.try_borrow_mut() else {
        return refused;
    };
    let Some(tensor) = tensors.get_mut(index).and_then(Option::as_mut) else {
        return refused;
    };
    let view = tensor.to_abi_mut();
    let (dtype, shape, data) = (view.dtype, view.shape, view.data);
    // SAFETY: the tensor stays in its place in `shaped` (made before the call, never grown)
    // until the call returns, and `shape` gives each output once, so these bytes and this
    // shape are lent to the plugin alone for the rest of the call.
    unsafe {
        TensorViewMut {
            dtype,
            shape: RSlice::from_raw_parts(shape.as_ptr(), shape.len()),
            data: abi_stable::std_types::RSliceMut::from_raw_parts_mut(
                data.as_ptr().cast_mut(),
                data.len(),
            ),
        }
    }
}
