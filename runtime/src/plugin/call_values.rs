//! A call's values beyond tensors (ABI 1.8), the `extern "C"` side: sequence inputs read by
//! element, sequence outputs grown by tensors from the pool, optional outputs made none, values
//! passed on to outputs or subgraphs by the host.

use super::host_services::call_host;
use crate::{
    engine::Engine,
    tensor::{byte_size, Tensor},
    value::{Value, ValueView},
};
use abi_stable::std_types::{RResult, RSlice, RSliceMut, RStr, RString};
use opal_plugin_api::{
    tensor::{TensorView, TensorViewMut},
    value::{Held, ValueSource},
    DType, ValueKind,
};
use smallvec::SmallVec;
use std::{cell::RefCell, ffi::c_void};

/// A node's subgraphs as values beyond tensors reach them.
pub trait SubgraphValues {
    /// Runs subgraph `name` on inputs of any kind; returns how many outputs it gave.
    fn run_values(&self, name: &str, inputs: &[ValueView<'_>]) -> Result<usize, String>;
    /// Takes output `index` of subgraph `name`'s last run out of it.
    fn take_output(&self, name: &str, index: usize) -> Option<Value>;
    /// Calls `f` with output `index` of subgraph `name`'s last run, if there is one.
    fn with_output_value(&self, name: &str, index: usize, f: &mut dyn FnMut(ValueView<'_>));
}

/// What the kernel made of an output that is not a tensor allocated ahead.
#[derive(Debug)]
enum Made {
    Nothing,
    Elements(Vec<Tensor>),
    None,
    Forwarded(Value),
}

/// A call's outputs of kinds other than tensors, and the values it forwards.
pub struct CallValues<'a> {
    engine: &'a Engine,
    kinds: SmallVec<[ValueKind; 4]>,
    dtypes: SmallVec<[DType; 4]>,
    made: RefCell<SmallVec<[Made; 4]>>,
}

impl<'a> CallValues<'a> {
    /// Outputs of `kinds`, of (or with elements of) `dtypes`.
    pub fn new(
        engine: &'a Engine,
        kinds: SmallVec<[ValueKind; 4]>,
        dtypes: SmallVec<[DType; 4]>,
    ) -> Self {
        let made = kinds.iter().map(|_| Made::Nothing).collect();
        CallValues {
            engine,
            kinds,
            dtypes,
            made: RefCell::new(made),
        }
    }

    /// Output `k` as the kernel left it: `Ok(None)` for a tensor the caller holds (allocated
    /// ahead or shaped in the call); an error when an optional tensor got neither a value nor
    /// none.
    pub fn take(&self, k: usize, shaped: Option<Tensor>) -> Result<Option<Value>, String> {
        let kind = self.kinds.get(k).copied().unwrap_or(ValueKind::TENSOR);
        let made = std::mem::replace(&mut self.made.borrow_mut()[k], Made::Nothing);
        Ok(Some(match (made, kind) {
            (Made::Forwarded(value), _) => {
                if let Some(t) = shaped {
                    self.engine.pool().put(t);
                }
                value
            }
            (Made::None, _) => Value::None,
            (Made::Elements(elements), _) => Value::Sequence(elements),
            (Made::Nothing, kind) if kind.holds_sequence() => Value::Sequence(Vec::new()),
            (Made::Nothing, ValueKind::OPTIONAL_TENSOR) => match shaped {
                Some(t) => Value::Tensor(t),
                None => {
                    return Err(format!(
                        "the kernel gave optional output {k} neither a value nor none"
                    ))
                }
            },
            (Made::Nothing, _) => return Ok(shaped.map(Value::Tensor)),
        }))
    }

    /// Returns whatever the call made to the pool (after a failed call).
    pub fn release(&self) {
        for made in self.made.borrow_mut().iter_mut() {
            match std::mem::replace(made, Made::Nothing) {
                Made::Elements(elements) => Value::Sequence(elements).release(self.engine),
                Made::Forwarded(value) => value.release(self.engine),
                Made::None | Made::Nothing => {}
            }
        }
    }

    /// Appends a zeroed tensor to sequence output `index`; `None` when refused.
    fn push(&self, index: usize, dtype: DType, shape: &[usize]) -> Option<TensorViewMut<'static>> {
        let kind = *self.kinds.get(index)?;
        let expected = self.dtypes[index];
        if !kind.holds_sequence() || (expected != DType::UNDEFINED && expected != dtype) {
            return None;
        }
        let bytes = byte_size(dtype, shape)?;
        let limit = self.engine.config().memory_limit;
        let current = self.engine.tracker().current_bytes() as u64;
        if current.saturating_add(bytes as u64) > limit {
            return None;
        }
        let mut made = self.made.try_borrow_mut().ok()?;
        let place = &mut made[index];
        if let Made::Nothing = place {
            *place = Made::Elements(Vec::new());
        }
        let Made::Elements(elements) = place else {
            return None;
        };
        let mut tensor = self.engine.pool().get(dtype, shape).ok()?;
        tensor.bytes_mut().fill(0);
        elements.push(tensor);
        let data = elements.last_mut()?.bytes_mut();
        let (ptr, len) = (data.as_mut_ptr(), data.len());
        // SAFETY: the element's bytes live in its buffer, which stays where it is (the
        // `Tensor` moving with the vector does not move them) until the call's values are taken
        // after it returns; each element is handed out this once. The shape is the plugin's
        // own slice, which it holds for as long as it uses the view.
        Some(unsafe {
            TensorViewMut {
                dtype,
                shape: RSlice::from_raw_parts(shape.as_ptr(), shape.len()),
                data: RSliceMut::from_raw_parts_mut(ptr, len),
            }
        })
    }

    fn set_none(&self, index: usize) -> bool {
        if !self.kinds.get(index).is_some_and(|k| k.is_optional()) {
            return false;
        }
        let Ok(mut made) = self.made.try_borrow_mut() else {
            return false;
        };
        match made[index] {
            Made::Nothing => {
                made[index] = Made::None;
                true
            }
            _ => false,
        }
    }

    fn forward(&self, index: usize, value: &ValueView<'_>) -> Result<(), String> {
        let kind = *self
            .kinds
            .get(index)
            .ok_or_else(|| format!("the node has no output {index}"))?;
        if !value.fits(kind) {
            return Err(format!(
                "output {index} is {}; a {} cannot be given to it",
                kind.described(),
                value.describe()
            ));
        }
        let copy = value
            .to_owned(self.engine)
            .map_err(|e| format!("copying to output {index}: {e}"))?;
        let mut made = self.made.borrow_mut();
        if let Made::Forwarded(old) = std::mem::replace(&mut made[index], Made::Forwarded(copy)) {
            old.release(self.engine);
        }
        Ok(())
    }
}

/// The input `index` of the call, as a value (`None`: absent).
fn input<'a>(inputs: &'a [Option<ValueView<'a>>], index: usize) -> Option<ValueView<'a>> {
    inputs.get(index).copied().flatten()
}

pub(super) unsafe extern "C" fn host_input_held(ctx: *const c_void, index: usize) -> Held {
    // SAFETY: the plugin passes back the context it was lent for this call.
    let host = unsafe { call_host(ctx) };
    input(host.values_in, index).map_or(Held::TENSOR, |v| v.held())
}

pub(super) unsafe extern "C" fn host_sequence_len(ctx: *const c_void, index: usize) -> usize {
    // SAFETY: the plugin passes back the context it was lent for this call.
    let host = unsafe { call_host(ctx) };
    match input(host.values_in, index) {
        Some(ValueView::Sequence(elements)) => elements.len(),
        _ => 0,
    }
}

pub(super) unsafe extern "C" fn host_sequence_element(
    ctx: *const c_void,
    index: usize,
    element: usize,
) -> TensorView<'static> {
    // SAFETY: the plugin passes back the context it was lent for this call.
    let host = unsafe { call_host(ctx) };
    let Some(ValueView::Sequence(elements)) = input(host.values_in, index) else {
        return TensorView::ABSENT;
    };
    let Some(tensor) = elements.get(element) else {
        return TensorView::ABSENT;
    };
    let view = tensor.as_ref();
    // SAFETY: the sequence is an input of the call, unchanged until it returns; the plugin
    // API ties the views it makes of it to the call.
    unsafe {
        TensorView {
            dtype: view.dtype,
            shape: RSlice::from_raw_parts(view.shape.as_ptr(), view.shape.len()),
            data: RSlice::from_raw_parts(view.data.as_ptr(), view.data.len()),
        }
    }
}

pub(super) unsafe extern "C" fn host_push_element(
    ctx: *const c_void,
    index: usize,
    dtype: DType,
    shape: RSlice<'_, usize>,
) -> TensorViewMut<'static> {
    // SAFETY: the plugin passes back the context it was lent for this call.
    let host = unsafe { call_host(ctx) };
    host.values_out
        .and_then(|values| values.push(index, dtype, shape.as_slice()))
        .unwrap_or_else(|| TensorViewMut::new(DType::UNDEFINED, &[], &mut []))
}

pub(super) unsafe extern "C" fn host_set_none(ctx: *const c_void, index: usize) -> bool {
    // SAFETY: the plugin passes back the context it was lent for this call.
    let host = unsafe { call_host(ctx) };
    host.values_out.is_some_and(|values| values.set_none(index))
}

pub(super) unsafe extern "C" fn host_forward(
    ctx: *const c_void,
    index: usize,
    source: ValueSource<'_>,
) -> RResult<(), RString> {
    // SAFETY: the plugin passes back the context it was lent for this call.
    let host = unsafe { call_host(ctx) };
    let Some(values) = host.values_out else {
        return RResult::RErr(RString::from(format!(
            "output {index} is a tensor allocated before the call: write it"
        )));
    };
    let result = match source.from {
        ValueSource::TENSOR => values.forward(
            index,
            &ValueView::Tensor(crate::tensor::TensorRef::new(
                source.tensor.dtype,
                source.tensor.shape.as_slice(),
                source.tensor.data.as_slice(),
            )),
        ),
        ValueSource::INPUT => match input(host.values_in, source.index) {
            Some(value) => values.forward(index, &value),
            None => Err(format!("input {} is absent", source.index)),
        },
        ValueSource::SUBGRAPH_OUTPUT => match host.subgraph_values {
            Some(subgraphs) => {
                let mut result = Err(format!(
                    "subgraph '{}' has no output {}: has it run?",
                    source.subgraph, source.index
                ));
                subgraphs.with_output_value(source.subgraph.as_str(), source.index, &mut |v| {
                    result = values.forward(index, &v);
                });
                result
            }
            None => Err(format!(
                "the node has no graph attribute '{}'",
                source.subgraph
            )),
        },
        other => Err(format!("unknown value source {other}")),
    };
    result.map_err(RString::from).into()
}

pub(super) unsafe extern "C" fn host_run_subgraph_values(
    ctx: *const c_void,
    name: RStr<'_>,
    inputs: RSlice<'_, ValueSource<'_>>,
) -> RResult<usize, RString> {
    // SAFETY: the plugin passes back the context it was lent for this call.
    let host = unsafe { call_host(ctx) };
    let Some(subgraphs) = host.subgraph_values else {
        return RResult::RErr(RString::from(format!(
            "the node has no graph attribute '{name}'"
        )));
    };
    let name = name.as_str();
    // The outputs of the last run that feed this one are taken out of it first.
    let mut taken: SmallVec<[Option<Value>; 4]> = SmallVec::new();
    for source in inputs.iter() {
        if source.from != ValueSource::SUBGRAPH_OUTPUT {
            taken.push(None);
            continue;
        }
        let Some(value) = subgraphs.take_output(source.subgraph.as_str(), source.index) else {
            release(host.engine, taken);
            return RResult::RErr(RString::from(format!(
                "subgraph '{}' has no output {} to pass on: has it run?",
                source.subgraph, source.index
            )));
        };
        taken.push(Some(value));
    }
    let views: Result<SmallVec<[ValueView<'_>; 8]>, String> = inputs
        .iter()
        .zip(&taken)
        .map(|(source, taken)| match (source.from, taken) {
            (_, Some(value)) => Ok(value.view()),
            (ValueSource::TENSOR, _) => Ok(ValueView::Tensor(crate::tensor::TensorRef::new(
                source.tensor.dtype,
                source.tensor.shape.as_slice(),
                source.tensor.data.as_slice(),
            ))),
            (ValueSource::INPUT, _) => input(host.values_in, source.index)
                .ok_or_else(|| format!("input {} is absent", source.index)),
            (other, _) => Err(format!("unknown value source {other}")),
        })
        .collect();
    let result = views.and_then(|views| subgraphs.run_values(name, &views));
    release(host.engine, taken);
    result.map_err(RString::from).into()
}

/// Returns `values` to the engine's pool (frees them without one).
fn release(engine: Option<&Engine>, values: SmallVec<[Option<Value>; 4]>) {
    let Some(engine) = engine else { return };
    values.into_iter().flatten().for_each(|v| v.release(engine));
}
