//! SequenceInsert: the sequence with a tensor inserted at `position` (at the back when the
//! position is omitted).

use crate::common::{
    element_type, expect_element_dtype, int_scalar, merge_shapes, position, push_copy,
    sequence_dtype, sequence_output,
};
use opal_plugin_api::prelude::*;

pub struct SequenceInsert;

impl Operator for SequenceInsert {
    const OP_TYPE: &'static str = "SequenceInsert";
    const SINCE_VERSION: i64 = 11;
    const READS_VALUE_KINDS: bool = true;

    fn infer(cx: &InferContext<'_>) -> KernelResult<Vec<OutputType>> {
        let sequence = cx.sequence_input(0)?;
        cx.expect_kind(1, ValueKind::TENSOR)?;
        let tensor = cx.input(1)?;
        let (dtype, shape) = match element_type(&sequence) {
            Some((dtype, shape)) => {
                expect_element_dtype(Self::OP_TYPE, dtype, tensor.dtype)?;
                (dtype, merge_shapes(&shape, tensor.shape))
            }
            None => (tensor.dtype, tensor.shape.to_vec()),
        };
        Ok(vec![sequence_output(cx, 0, dtype, shape)?])
    }

    fn compute(cx: &mut KernelContext<'_>) -> KernelResult<()> {
        let sequence = cx.sequence(0)?;
        let tensor = cx.input(1)?;
        if let Some(dtype) = sequence_dtype(&sequence)? {
            expect_element_dtype(Self::OP_TYPE, dtype, tensor.dtype())?;
        }
        let at = match cx.optional_input(2) {
            Some(p) => position(
                Self::OP_TYPE,
                int_scalar(Self::OP_TYPE, "position", p)?,
                sequence.len(),
                true,
            )?,
            None => sequence.len(),
        };
        for i in 0..=sequence.len() {
            if i == at {
                push_copy(cx, 0, tensor)?;
            }
            if i < sequence.len() {
                push_copy(cx, 0, sequence.get(i)?)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::common::test_sequences::{run_on_sequence, sequence};
    use opal_plugin_api::testing::{OwnedTensor, TestValue};

    fn run(inputs: &[TestValue]) -> Result<Vec<f32>, String> {
        run_on_sequence::<SequenceInsert>(inputs)
    }

    #[test]
    fn inserts_at_the_back_front_or_a_position_from_the_end() {
        let x = TestValue::Tensor(OwnedTensor::f32(&[1], &[9.0]));
        assert_eq!(
            run(&[sequence(&[1.0, 2.0]), x.clone()]).unwrap(),
            [1.0, 2.0, 9.0]
        );
        let front = TestValue::Tensor(OwnedTensor::i64(&[], &[0]));
        assert_eq!(
            run(&[sequence(&[1.0, 2.0]), x.clone(), front]).unwrap(),
            [9.0, 1.0, 2.0]
        );
        let minus_one = TestValue::Tensor(OwnedTensor::new::<i32>(&[], &[-1]));
        assert_eq!(
            run(&[sequence(&[1.0, 2.0]), x.clone(), minus_one]).unwrap(),
            [1.0, 9.0, 2.0]
        );
        assert_eq!(run(&[sequence(&[]), x]).unwrap(), [9.0]);
    }

    #[test]
    fn refuses_a_position_out_of_range_and_another_dtype() {
        let x = TestValue::Tensor(OwnedTensor::f32(&[1], &[9.0]));
        let far = TestValue::Tensor(OwnedTensor::i64(&[], &[4]));
        let err = run(&[sequence(&[1.0]), x, far]).unwrap_err();
        assert!(err.contains("position 4 is out of range"), "{err}");
        let y = TestValue::Tensor(OwnedTensor::i64(&[1], &[9]));
        let err = run(&[sequence(&[1.0]), y]).unwrap_err();
        assert!(err.contains("dtype i64"), "{err}");
    }
}
