//! Sequences and optionals in the test host (ABI 1.8): the values a test passes and gets back,
//! what inference sees of them, and the host functions a kernel reads and writes them through.

use super::{host, lock, OwnedTensor};
use crate::{
    infer::{InferInput, OutputType},
    subgraph::{InferHostVTable, InferHostVTableRef},
    tensor::{TensorView, TensorViewMut},
    value::{Held, ValueKind, ValueSource, ValueType},
    DType,
};
use abi_stable::{
    prefix_type::WithMetadata,
    std_types::{RResult, RSlice, RStr, RString, RVec},
};
use std::{cell::RefCell, ffi::c_void, sync::Mutex};

/// A value a test passes to an operator or gets back from it.
#[derive(Clone, Debug)]
pub enum TestValue {
    Tensor(OwnedTensor),
    /// A sequence of tensors of the dtype (which an empty one needs too).
    Sequence(DType, Vec<OwnedTensor>),
    /// An optional holding a value.
    Some(Box<TestValue>),
    /// An optional without a value, of this optional kind and dtype.
    None(ValueKind, DType),
}

impl TestValue {
    /// An optional holding `value`.
    pub fn some(value: TestValue) -> Self {
        TestValue::Some(Box::new(value))
    }

    /// The kind inference sees.
    pub fn kind(&self) -> ValueKind {
        match self {
            TestValue::Tensor(_) => ValueKind::TENSOR,
            TestValue::Sequence(..) => ValueKind::SEQUENCE,
            TestValue::Some(inner) => inner.kind().optional(),
            TestValue::None(kind, _) => *kind,
        }
    }

    /// The tensor it is (or holds); panics otherwise.
    pub fn tensor(&self) -> &OwnedTensor {
        match self {
            TestValue::Tensor(t) => t,
            TestValue::Some(inner) => inner.tensor(),
            other => panic!("{other:?} is not a tensor"),
        }
    }

    /// The elements of the sequence it is (or holds); panics otherwise.
    pub fn elements(&self) -> &[OwnedTensor] {
        match self {
            TestValue::Sequence(_, elements) => elements,
            TestValue::Some(inner) => inner.elements(),
            other => panic!("{other:?} is not a sequence"),
        }
    }

    /// What the value holds at run time, seen through an optional.
    fn held(&self) -> &TestValue {
        match self {
            TestValue::Some(inner) => inner.held(),
            other => other,
        }
    }

    /// What inference sees: a tensor's dtype and shape, a sequence's elements' (-1 where
    /// they differ).
    pub(super) fn infer_type(&self) -> (DType, Vec<i64>) {
        match self.held() {
            TestValue::Tensor(t) => (t.dtype(), t.shape().iter().map(|&d| d as i64).collect()),
            // As in the host, an empty sequence's elements have no type at run time.
            TestValue::Sequence(_, elements) if elements.is_empty() => {
                (DType::UNDEFINED, Vec::new())
            }
            TestValue::Sequence(dtype, elements) => (*dtype, merged_shape(elements)),
            TestValue::None(_, dtype) => (*dtype, Vec::new()),
            TestValue::Some(_) => unreachable!("held() looks through optionals"),
        }
    }

    /// The view a kernel gets as its input: the tensor, or absent for other values.
    pub(super) fn view(&self) -> TensorView<'_> {
        match self.held() {
            TestValue::Tensor(t) => t.view(),
            _ => TensorView::ABSENT,
        }
    }
}

/// The dims elements share, -1 where they differ (and for ranks that differ).
fn merged_shape(elements: &[OwnedTensor]) -> Vec<i64> {
    let Some(first) = elements.first() else {
        return Vec::new();
    };
    let mut dims: Vec<i64> = first.shape().iter().map(|&d| d as i64).collect();
    for e in &elements[1..] {
        if e.shape().len() != dims.len() {
            return vec![-1; dims.len()];
        }
        for (d, &n) in dims.iter_mut().zip(e.shape()) {
            if *d != n as i64 {
                *d = -1;
            }
        }
    }
    dims
}

/// An output a kernel fills during the call.
#[derive(Debug)]
pub(super) enum OutputValue {
    /// A tensor the host allocated before the call.
    Tensor(OwnedTensor),
    /// A tensor output (or optional tensor) given its shape in the call, once it is.
    Unshaped(DType, Option<OwnedTensor>),
    Sequence(DType, Vec<OwnedTensor>),
    None,
}

/// The values of one test call, behind the host context.
#[derive(Default)]
pub(super) struct CallValues {
    pub inputs: Vec<TestValue>,
    pub kinds: Vec<ValueKind>,
    pub outputs: Mutex<Vec<OutputValue>>,
    /// Elements of earlier passes, reused by later ones so a warmed-up kernel's call
    /// allocates nothing in the test host either.
    pub spare: Mutex<Vec<OwnedTensor>>,
}

impl CallValues {
    /// Makes the outputs ready for another pass, keeping appended elements for reuse.
    pub(super) fn reset(&self) {
        let mut outputs = lock(&self.outputs);
        let mut spare = lock(&self.spare);
        for output in outputs.iter_mut() {
            match output {
                OutputValue::Sequence(_, elements) => spare.extend(elements.drain(..)),
                OutputValue::Unshaped(_, tensor) => spare.extend(tensor.take()),
                OutputValue::None => {}
                OutputValue::Tensor(_) => {}
            }
        }
    }

    /// A zeroed tensor of `dtype` and `shape`, reused from an earlier pass when one fits.
    fn tensor(&self, dtype: DType, shape: &[usize]) -> OwnedTensor {
        let mut spare = lock(&self.spare);
        match spare
            .iter()
            .position(|t| t.dtype() == dtype && t.shape() == shape)
        {
            Some(at) => {
                let mut t = spare.swap_remove(at);
                t.data.as_mut_slice().fill(0);
                t
            }
            None => OwnedTensor::filled(dtype, shape, 0),
        }
    }

    /// The outputs as the test gets them, each of its declared kind.
    pub(super) fn results(&self) -> Result<Vec<TestValue>, String> {
        let outputs = std::mem::take(&mut *lock(&self.outputs));
        outputs
            .into_iter()
            .zip(&self.kinds)
            .enumerate()
            .map(|(k, (output, &kind))| {
                let value = match output {
                    OutputValue::Tensor(t) | OutputValue::Unshaped(_, Some(t)) => {
                        TestValue::Tensor(t)
                    }
                    OutputValue::Sequence(dtype, elements) => TestValue::Sequence(dtype, elements),
                    OutputValue::None => return Ok(TestValue::None(kind, DType::UNDEFINED)),
                    OutputValue::Unshaped(_, None) => {
                        return Err(format!(
                            "the kernel gave output {k} neither a value nor none"
                        ))
                    }
                };
                Ok(if kind.is_optional() {
                    TestValue::some(value)
                } else {
                    value
                })
            })
            .collect()
    }
}

/// The kinds a test inference call sees and declares.
pub(super) struct InferValues<'a> {
    pub inputs: &'a [TestValue],
    pub outputs: RefCell<Vec<ValueKind>>,
}

pub(super) const TEST_INFER_HOST_VTABLE: InferHostVTableRef =
    InferHostVTableRef(TEST_INFER_HOST_VTABLE_WM.static_as_prefix());

const TEST_INFER_HOST_VTABLE_WM: &WithMetadata<InferHostVTable> =
    &WithMetadata::new(InferHostVTable {
        subgraph_types: test_subgraph_types,
        has_subgraph: super::test_has_subgraph,
        input_kind: test_input_kind,
        set_output_kind: test_set_output_kind,
        subgraph_value_types: test_subgraph_value_types,
    });

/// # Safety
/// `ctx` must be the [`InferValues`] lent for the current inference call.
unsafe fn infer_values<'a>(ctx: *const c_void) -> &'a InferValues<'a> {
    // SAFETY: guaranteed by the caller.
    unsafe { &*ctx.cast::<InferValues<'a>>() }
}

unsafe extern "C" fn test_subgraph_types(
    _ctx: *const c_void,
    name: RStr<'_>,
    _inputs: RSlice<'_, InferInput<'_>>,
) -> RResult<RVec<OutputType>, RString> {
    RResult::RErr(RString::from(format!(
        "the test host has no subgraph '{name}': subgraphs run in the real host"
    )))
}

unsafe extern "C" fn test_subgraph_value_types(
    _ctx: *const c_void,
    name: RStr<'_>,
    _inputs: RSlice<'_, InferInput<'_>>,
    _kinds: RSlice<'_, ValueKind>,
) -> RResult<RVec<ValueType>, RString> {
    RResult::RErr(RString::from(format!(
        "the test host has no subgraph '{name}': subgraphs run in the real host"
    )))
}

unsafe extern "C" fn test_input_kind(ctx: *const c_void, index: usize) -> ValueKind {
    // SAFETY: the plugin passes back the context it was lent.
    let values = unsafe { infer_values(ctx) };
    values
        .inputs
        .get(index)
        .map_or(ValueKind::TENSOR, TestValue::kind)
}

unsafe extern "C" fn test_set_output_kind(
    ctx: *const c_void,
    index: usize,
    kind: ValueKind,
) -> bool {
    // SAFETY: the plugin passes back the context it was lent.
    let values = unsafe { infer_values(ctx) };
    let mut outputs = values.outputs.borrow_mut();
    match outputs.get_mut(index) {
        Some(place) if kind.is_known() => {
            *place = kind;
            true
        }
        _ => false,
    }
}

/// A `'static` view of `tensor`, for a host function's answer.
///
/// # Safety
/// The tensor must stay unchanged while the plugin holds the view (until the call returns).
unsafe fn lend(tensor: &OwnedTensor) -> TensorView<'static> {
    let view = tensor.view();
    // SAFETY: guaranteed by the caller.
    unsafe {
        TensorView {
            dtype: view.dtype,
            shape: RSlice::from_raw_parts(view.shape.as_ptr(), view.shape.len()),
            data: RSlice::from_raw_parts(view.data.as_ptr(), view.data.len()),
        }
    }
}

/// A `'static` writable view of `tensor`.
///
/// # Safety
/// The tensor's bytes must be lent to the plugin alone until the call returns, and stay where
/// they are (moving an `OwnedTensor` does not move its heap bytes).
pub(super) unsafe fn lend_mut(tensor: &mut OwnedTensor) -> TensorViewMut<'static> {
    let (dtype, shape) = (tensor.dtype(), tensor.shape().as_ptr());
    let rank = tensor.shape().len();
    let data = tensor.data.as_mut_slice();
    // SAFETY: guaranteed by the caller.
    unsafe {
        TensorViewMut {
            dtype,
            shape: RSlice::from_raw_parts(shape, rank),
            data: abi_stable::std_types::RSliceMut::from_raw_parts_mut(
                data.as_mut_ptr(),
                data.len(),
            ),
        }
    }
}

pub(super) unsafe extern "C" fn test_input_held(ctx: *const c_void, index: usize) -> Held {
    // SAFETY: the plugin passes back the context it was lent.
    let values = &unsafe { host(ctx) }.values;
    match values.inputs.get(index).map(TestValue::held) {
        Some(TestValue::Sequence(..)) => Held::SEQUENCE,
        Some(TestValue::None(..)) => Held::NONE,
        _ => Held::TENSOR,
    }
}

pub(super) unsafe extern "C" fn test_sequence_len(ctx: *const c_void, index: usize) -> usize {
    // SAFETY: the plugin passes back the context it was lent.
    let values = &unsafe { host(ctx) }.values;
    match values.inputs.get(index).map(TestValue::held) {
        Some(TestValue::Sequence(_, elements)) => elements.len(),
        _ => 0,
    }
}

pub(super) unsafe extern "C" fn test_sequence_element(
    ctx: *const c_void,
    index: usize,
    element: usize,
) -> TensorView<'static> {
    // SAFETY: the plugin passes back the context it was lent.
    let values = &unsafe { host(ctx) }.values;
    match values.inputs.get(index).map(TestValue::held) {
        // SAFETY: the inputs stay unchanged in the context until the call returns.
        Some(TestValue::Sequence(_, elements)) => elements
            .get(element)
            .map_or(TensorView::ABSENT, |t| unsafe { lend(t) }),
        _ => TensorView::ABSENT,
    }
}

pub(super) unsafe extern "C" fn test_push_element(
    ctx: *const c_void,
    index: usize,
    dtype: DType,
    shape: RSlice<'_, usize>,
) -> TensorViewMut<'static> {
    let refused = TensorViewMut::new(DType::UNDEFINED, &[], &mut []);
    // SAFETY: the plugin passes back the context it was lent.
    let values = &unsafe { host(ctx) }.values;
    if dtype.size().is_none() {
        return refused;
    }
    let tensor = values.tensor(dtype, shape.as_slice());
    let mut outputs = lock(&values.outputs);
    let Some(OutputValue::Sequence(expected, elements)) = outputs.get_mut(index).map(|o| &mut *o)
    else {
        return refused;
    };
    if *expected != DType::UNDEFINED && *expected != dtype {
        return refused;
    }
    *expected = dtype;
    elements.push(tensor);
    let last = elements.last_mut().expect("just pushed");
    // SAFETY: the element's bytes stay in the context's outputs, handed out this once, until
    // the call returns.
    unsafe { lend_mut(last) }
}

pub(super) unsafe extern "C" fn test_set_none(ctx: *const c_void, index: usize) -> bool {
    // SAFETY: the plugin passes back the context it was lent.
    let values = &unsafe { host(ctx) }.values;
    if !values.kinds.get(index).is_some_and(|k| k.is_optional()) {
        return false;
    }
    let mut outputs = lock(&values.outputs);
    outputs[index] = OutputValue::None;
    true
}

pub(super) unsafe extern "C" fn test_forward(
    ctx: *const c_void,
    index: usize,
    source: ValueSource<'_>,
) -> RResult<(), RString> {
    // SAFETY: the plugin passes back the context it was lent.
    let values = &unsafe { host(ctx) }.values;
    let given = match source.from {
        ValueSource::INPUT => values.inputs.get(source.index).map(TestValue::held),
        _ => None,
    };
    let Some(given) = given else {
        return RResult::RErr(RString::from(
            "the test host forwards the node's inputs only",
        ));
    };
    let mut outputs = lock(&values.outputs);
    let Some(place) = outputs.get_mut(index) else {
        return RResult::RErr(RString::from(format!("there is no output {index}")));
    };
    // Copies into tensors (and a list) of earlier passes, as the host copies into its pool.
    let copy = |t: &OwnedTensor| {
        let mut copy = values.tensor(t.dtype(), t.shape());
        copy.data.as_mut_slice().copy_from_slice(t.bytes());
        copy
    };
    *place = match given {
        TestValue::Tensor(t) => OutputValue::Unshaped(t.dtype(), Some(copy(t))),
        TestValue::Sequence(dtype, elements) => {
            let mut list = match std::mem::replace(place, OutputValue::None) {
                OutputValue::Sequence(_, list) => list,
                _ => Vec::new(),
            };
            list.clear();
            list.extend(elements.iter().map(copy));
            OutputValue::Sequence(*dtype, list)
        }
        _ => OutputValue::None,
    };
    RResult::ROk(())
}

pub(super) unsafe extern "C" fn test_run_subgraph_values(
    _ctx: *const c_void,
    name: RStr<'_>,
    _inputs: RSlice<'_, ValueSource<'_>>,
) -> RResult<usize, RString> {
    RResult::RErr(RString::from(format!(
        "the test host has no subgraph '{name}': subgraphs run in the real host"
    )))
}

/// Shapes unshaped output `index` (`shape_output` of ABI 1.6).
pub(super) fn shape_output(
    values: &CallValues,
    index: usize,
    shape: &[usize],
) -> Option<TensorViewMut<'static>> {
    let mut outputs = lock(&values.outputs);
    let OutputValue::Unshaped(dtype, place @ None) = outputs.get_mut(index)? else {
        return None;
    };
    let tensor = values.tensor(*dtype, shape);
    let tensor = place.insert(tensor);
    // SAFETY: the tensor's bytes stay in the context's outputs, handed out this once, until
    // the call returns.
    Some(unsafe { lend_mut(tensor) })
}
