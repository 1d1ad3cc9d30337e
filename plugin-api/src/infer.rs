//! Shape and type inference: what a plugin sees of a node's inputs before anything runs.

use crate::{
    attribute::Attributes, kernel::KernelError, operator::InferCall, subgraph::InferHost,
    tensor::TensorView, DType, Element, KernelResult, TensorRef,
};
use abi_stable::{
    std_types::{ROption, RSlice, RVec},
    StableAbi,
};

/// What inference knows of one input: dtype, shape (a dim of -1 is unknown), and the value when
/// it is a constant or the operator asked for it through [`Operator::VALUE_INPUTS`](crate::Operator).
#[repr(C)]
#[derive(StableAbi, Clone, Copy)]
pub struct InferInput<'a> {
    pub dtype: DType,
    pub shape: RSlice<'a, i64>,
    pub value: ROption<TensorView<'a>>,
}

impl<'a> InferInput<'a> {
    /// An input of known dtype and shape (a dim of -1 is unknown) whose value is not known.
    pub fn typed(dtype: DType, shape: &'a [i64]) -> Self {
        InferInput {
            dtype,
            shape: shape.into(),
            value: ROption::RNone,
        }
    }
}

/// The inferred dtype and shape of one output.
#[repr(C)]
#[derive(StableAbi, Clone, Debug, PartialEq)]
pub struct OutputType {
    pub dtype: DType,
    pub shape: RVec<i64>,
}

impl OutputType {
    pub fn new(dtype: DType, shape: Vec<i64>) -> Self {
        OutputType {
            dtype,
            shape: shape.into(),
        }
    }

    /// An output whose dims are known, as `usize`.
    pub fn fixed(dtype: DType, shape: &[usize]) -> Self {
        OutputType::new(dtype, shape.iter().map(|&d| d as i64).collect())
    }
}

/// One input as inference sees it.
#[derive(Clone, Copy)]
pub struct InferTensor<'a> {
    pub dtype: DType,
    pub shape: &'a [i64],
    value: Option<TensorView<'a>>,
}

impl<'a> InferTensor<'a> {
    /// The input as the ABI carries it, to pass on to a subgraph.
    pub fn to_abi(&self) -> InferInput<'a> {
        InferInput {
            dtype: self.dtype,
            shape: self.shape.into(),
            value: self.value.into(),
        }
    }

    pub(crate) fn from_abi(input: &'a InferInput<'a>) -> Self {
        InferTensor {
            dtype: input.dtype,
            shape: input.shape.as_slice(),
            value: input.value.into_option(),
        }
    }

    /// The dims as `usize`, or an error naming the input if any is unknown.
    pub fn dims(&self) -> KernelResult<Vec<usize>> {
        self.shape
            .iter()
            .map(|&d| usize::try_from(d).map_err(|_| KernelError::new("input shape is not known")))
            .collect()
    }

    /// The value, when inference has it.
    pub fn value(&self) -> Option<TensorRef<'a>> {
        self.value.map(TensorRef::new)
    }

    /// The value as a typed slice, when inference has it.
    pub fn value_as<T: Element>(&self) -> KernelResult<Option<&'a [T]>> {
        self.value().map(|v| v.as_slice::<T>()).transpose()
    }
}

/// The arguments of [`Operator::infer`](crate::Operator::infer).
pub struct InferContext<'a> {
    pub(crate) call: &'a InferCall<'a>,
    /// The host's inference services (since ABI 1.6): the types of the node's subgraphs.
    pub(crate) host: Option<InferHost>,
}

impl<'a> InferContext<'a> {
    pub fn new(call: &'a InferCall<'a>) -> Self {
        InferContext { call, host: None }
    }

    /// A context whose node's subgraphs the host can infer (see
    /// [`subgraph_types`](Self::subgraph_types)).
    pub fn with_host(call: &'a InferCall<'a>, host: InferHost) -> Self {
        InferContext {
            call,
            host: Some(host),
        }
    }

    /// Number of inputs the node has, optional ones included.
    pub fn input_count(&self) -> usize {
        self.call.inputs.len()
    }

    /// Number of outputs the node declares.
    pub fn output_count(&self) -> usize {
        self.call.output_count
    }

    /// Input `index`; an error if it is missing or absent.
    pub fn input(&self, index: usize) -> KernelResult<InferTensor<'a>> {
        self.optional_input(index)?
            .ok_or_else(|| KernelError::new(format!("input {index} is required")))
    }

    /// Input `index`, or `None` when the node omits this optional input.
    pub fn optional_input(&self, index: usize) -> KernelResult<Option<InferTensor<'a>>> {
        let Some(input) = self.call.inputs.as_slice().get(index) else {
            return Ok(None);
        };
        if input.dtype == DType::UNDEFINED {
            return Ok(None);
        }
        Ok(Some(InferTensor::from_abi(input)))
    }

    pub fn attributes(&self) -> Attributes<'a> {
        Attributes::new(self.call.attributes.as_slice())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{infer_input, int_attr, OwnedTensor};

    #[test]
    fn inference_reads_shapes_values_and_attributes_through_the_abi_slices() {
        let shape = OwnedTensor::i64(&[2], &[3, -1]);
        let dims = [4i64, 6];
        let unknown = [-1i64, 6];
        let inputs = [
            infer_input(DType::F32, &dims),
            InferInput {
                dtype: DType::I64,
                shape: RSlice::from_slice(&[2]),
                value: ROption::RSome(shape.view()),
            },
            infer_input(DType::UNDEFINED, &[]),
            infer_input(DType::F32, &unknown),
        ];
        let attributes = [int_attr("allowzero", 1)];
        let call = InferCall {
            inputs: RSlice::from_slice(&inputs),
            attributes: RSlice::from_slice(&attributes),
            output_count: 1,
        };
        let cx = InferContext::new(&call);
        assert_eq!((cx.input_count(), cx.output_count()), (4, 1));
        let data = cx.input(0).unwrap();
        assert_eq!((data.dtype, data.shape), (DType::F32, &dims[..]));
        assert_eq!(data.dims(), Ok(vec![4, 6]));
        assert!(data.value().is_none());
        assert_eq!(data.value_as::<f32>(), Ok(None));
        let target = cx.input(1).unwrap();
        assert_eq!(target.value_as::<i64>(), Ok(Some(&[3, -1][..])));
        assert!(target.value_as::<f32>().is_err());
        assert!(cx.optional_input(2).unwrap().is_none());
        assert!(cx.optional_input(9).unwrap().is_none());
        assert_eq!(
            cx.input(2).map(|_| ()).unwrap_err().message(),
            "input 2 is required"
        );
        assert!(cx.input(3).unwrap().dims().is_err());
        assert_eq!(cx.attributes().int("allowzero", 0), Ok(1));
    }
}
