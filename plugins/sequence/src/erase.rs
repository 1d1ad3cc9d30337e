//! SequenceErase: the sequence without the element at `position` (the last when omitted).

use crate::common::{element_type, int_scalar, position, push_copy, sequence_output};
use opal_plugin_api::prelude::*;

pub struct SequenceErase;

impl Operator for SequenceErase {
    const OP_TYPE: &'static str = "SequenceErase";
    const SINCE_VERSION: i64 = 11;
    const READS_VALUE_KINDS: bool = true;

    fn infer(cx: &InferContext<'_>) -> KernelResult<Vec<OutputType>> {
        let sequence = cx.sequence_input(0)?;
        let (dtype, shape) = element_type(&sequence).unwrap_or((DType::UNDEFINED, Vec::new()));
        Ok(vec![sequence_output(cx, 0, dtype, shape)?])
    }

    fn compute(cx: &mut KernelContext<'_>) -> KernelResult<()> {
        let sequence = cx.sequence(0)?;
        let given = match cx.optional_input(1) {
            Some(p) => int_scalar(Self::OP_TYPE, "position", p)?,
            None => -1,
        };
        let at = position(Self::OP_TYPE, given, sequence.len(), false)?;
        for i in (0..sequence.len()).filter(|&i| i != at) {
            push_copy(cx, 0, sequence.get(i)?)?;
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
        run_on_sequence::<SequenceErase>(inputs)
    }

    #[test]
    fn erases_the_last_or_the_given_element() {
        assert_eq!(run(&[sequence(&[1.0, 2.0, 3.0])]).unwrap(), [1.0, 2.0]);
        let first = TestValue::Tensor(OwnedTensor::i64(&[], &[-3]));
        assert_eq!(
            run(&[sequence(&[1.0, 2.0, 3.0]), first]).unwrap(),
            [2.0, 3.0]
        );
        let err = run(&[sequence(&[])]).unwrap_err();
        assert!(err.contains("no elements"), "{err}");
    }
}
