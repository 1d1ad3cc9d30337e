//! A run's feed and results beyond plain tensors: each input as the model declares it (a NumPy
//! array read in place, a list of arrays for a sequence, copied into the engine's pool, or
//! `None` for an optional without a value), and each output as a value (an array, a list of
//! arrays, or `None`).

use crate::{
    arrays::{input_view, numpy_name, output_array, string_tensor, InputView},
    errors::InputError,
};
use opal_plugin_api::{DType, ValueKind};
use opal_runtime::{
    onnx::Value as DeclaredValue,
    value::{Value, ValueView},
    Engine, Tensor,
};
use pyo3::{
    prelude::*,
    types::{PyList, PyTuple},
};

/// One input of a run, as the caller gave it.
pub(crate) enum FedInput {
    /// An array, read in place.
    Array(InputView),
    /// An array of strings, copied into a string tensor.
    Strings(Tensor),
    /// A sequence's arrays, copied into tensors of the engine's pool.
    Owned(Value),
    /// An optional input without a value.
    None,
}

impl FedInput {
    /// Reads `given` for `declared`, an input of kind `declared.kind`: a tensor takes an array,
    /// a sequence a list or tuple of arrays, an optional also `None`.
    pub(crate) fn read(
        engine: &Engine,
        declared: &DeclaredValue,
        given: &Bound<'_, PyAny>,
    ) -> PyResult<FedInput> {
        let name = &declared.name;
        let kind = declared.kind;
        if given.is_none() {
            return if kind.is_optional() {
                Ok(FedInput::None)
            } else {
                Err(InputError::new_err(format!(
                    "input '{name}' is None, but the model takes {}",
                    kind.described()
                )))
            };
        }
        if !kind.holds_sequence() {
            if let Some(tensor) = string_tensor(name, given, engine.tensor_owner())? {
                check_dtype(name, declared.dtype, DType::STRING)?;
                return Ok(FedInput::Strings(tensor));
            }
            let view = input_view(name, given)?;
            check_dtype(name, declared.dtype, view.dtype)?;
            return Ok(FedInput::Array(view));
        }
        let elements: Vec<Bound<'_, PyAny>> = if let Ok(list) = given.cast::<PyList>() {
            list.iter().collect()
        } else if let Ok(tuple) = given.cast::<PyTuple>() {
            tuple.iter().collect()
        } else {
            return Err(InputError::new_err(format!(
                "input '{name}' is {}; pass a list of numpy arrays",
                kind.described()
            )));
        };
        let mut tensors = Vec::with_capacity(elements.len());
        for (i, element) in elements.iter().enumerate() {
            let element_name = format!("{name}[{i}]");
            let view = input_view(&element_name, element)?;
            check_dtype(&element_name, declared.dtype, view.dtype)?;
            // SAFETY: `element` is alive and unchanged for the duration of the copy.
            let copied = ValueView::Tensor(unsafe { view.as_tensor() })
                .to_owned(engine)
                .map_err(|e| InputError::new_err(format!("input '{element_name}': {e}")));
            match copied {
                Ok(Value::Tensor(t)) => tensors.push(t),
                Ok(other) => other.release(engine),
                Err(error) => {
                    Value::Sequence(tensors).release(engine);
                    return Err(error);
                }
            }
        }
        Ok(FedInput::Owned(Value::Sequence(tensors)))
    }

    /// The input as a run reads it.
    ///
    /// # Safety
    /// For an array, the array it was read from must still be alive, and not resized, while
    /// the returned view is used.
    pub(crate) unsafe fn view(&self) -> ValueView<'_> {
        match self {
            // SAFETY: guaranteed by the caller.
            FedInput::Array(view) => ValueView::Tensor(unsafe { view.as_tensor() }),
            FedInput::Strings(tensor) => ValueView::Tensor(tensor.as_ref()),
            FedInput::Owned(value) => value.view(),
            FedInput::None => ValueView::None,
        }
    }

    /// Returns copied tensors to the engine's pool.
    pub(crate) fn release(self, engine: &Engine) {
        if let FedInput::Owned(value) = self {
            value.release(engine);
        }
    }
}

/// An error unless an array of `given` fits an input declared of `declared`.
fn check_dtype(name: &str, declared: Option<DType>, given: DType) -> PyResult<()> {
    match declared.filter(|&d| d != given) {
        None => Ok(()),
        Some(declared) => Err(InputError::new_err(format!(
            "input '{name}': the model takes {}, the array is {}",
            numpy_name(declared),
            numpy_name(given)
        ))),
    }
}

/// A copy of an output: a new array for a tensor, a list of them for a sequence, `None` for an
/// optional without a value.
pub(crate) fn output_value<'py>(
    py: Python<'py>,
    value: ValueView<'_>,
) -> PyResult<Bound<'py, PyAny>> {
    match value {
        ValueView::Tensor(tensor) => output_array(py, tensor),
        ValueView::Sequence(elements) => {
            let arrays = elements
                .iter()
                .map(|t| output_array(py, t.as_ref()))
                .collect::<PyResult<Vec<_>>>()?;
            Ok(PyList::new(py, arrays)?.into_any())
        }
        ValueView::None => Ok(py.None().into_bound(py)),
    }
}

/// The ONNX type of a value of `kind` with elements of `dtype`, as onnxruntime names it:
/// `tensor(float)`, `seq(tensor(float))`, `optional(tensor(float))`.
pub(crate) fn onnx_value_type(kind: ValueKind, tensor_type: String) -> String {
    let inner = if kind.holds_sequence() {
        format!("seq({tensor_type})")
    } else {
        tensor_type
    };
    if kind.is_optional() {
        format!("optional({inner})")
    } else {
        inner
    }
}

/// The inputs of one run; copied tensors go back to the engine's pool when it is dropped,
/// whether the run happened or not.
pub(crate) struct FedInputs<'e> {
    engine: &'e Engine,
    inputs: Vec<FedInput>,
}

impl<'e> FedInputs<'e> {
    pub(crate) fn new(engine: &'e Engine, capacity: usize) -> Self {
        FedInputs {
            engine,
            inputs: Vec::with_capacity(capacity),
        }
    }

    pub(crate) fn push(&mut self, input: FedInput) {
        self.inputs.push(input);
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &FedInput> {
        self.inputs.iter()
    }
}

impl Drop for FedInputs<'_> {
    fn drop(&mut self) {
        for input in self.inputs.drain(..) {
            input.release(self.engine);
        }
    }
}
