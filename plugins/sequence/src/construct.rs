//! SequenceConstruct: a sequence of its input tensors, which share a dtype.

use crate::common::{merge_shapes, push_copy, sequence_output};
use opal_kernel_support::check::error;
use opal_plugin_api::prelude::*;

pub struct SequenceConstruct;

impl Operator for SequenceConstruct {
    const OP_TYPE: &'static str = "SequenceConstruct";
    const SINCE_VERSION: i64 = 11;
    const READS_VALUE_KINDS: bool = true;

    fn infer(cx: &InferContext<'_>) -> KernelResult<Vec<OutputType>> {
        let first = cx.input(0)?;
        let mut shape = first.shape.to_vec();
        for i in 0..cx.input_count() {
            cx.expect_kind(i, ValueKind::TENSOR)?;
            let input = cx.input(i)?;
            if input.dtype != first.dtype {
                return Err(error(
                    Self::OP_TYPE,
                    format_args!(
                        "input {i} has dtype {}, input 0 {}: a sequence's elements share one dtype",
                        input.dtype, first.dtype
                    ),
                ));
            }
            shape = merge_shapes(&shape, input.shape);
        }
        Ok(vec![sequence_output(cx, 0, first.dtype, shape)?])
    }

    fn compute(cx: &mut KernelContext<'_>) -> KernelResult<()> {
        for i in 0..cx.input_count() {
            push_copy(cx, 0, cx.input(i)?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opal_plugin_api::testing::{OwnedTensor, TestHost, TestValue};

    #[test]
    fn gathers_its_inputs_in_order() {
        let a = OwnedTensor::f32(&[2], &[1.0, 2.0]);
        let b = OwnedTensor::f32(&[3], &[3.0, 4.0, 5.0]);
        let out = TestHost::new()
            .run_values::<SequenceConstruct>(&[TestValue::Tensor(a), TestValue::Tensor(b)], &[], 1)
            .unwrap();
        let elements = out[0].elements();
        assert_eq!(elements.len(), 2);
        assert_eq!(elements[0].to_vec::<f32>(), [1.0, 2.0]);
        assert_eq!(elements[1].to_vec::<f32>(), [3.0, 4.0, 5.0]);
    }

    #[test]
    fn refuses_mixed_dtypes() {
        let a = OwnedTensor::f32(&[1], &[1.0]);
        let b = OwnedTensor::i64(&[1], &[1]);
        let err = TestHost::new()
            .run_values::<SequenceConstruct>(&[TestValue::Tensor(a), TestValue::Tensor(b)], &[], 1)
            .unwrap_err();
        assert!(err.contains("input 1 has dtype i64"), "{err}");
    }
}
