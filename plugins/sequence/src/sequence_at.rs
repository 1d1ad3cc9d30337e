//! SequenceAt: the element at `position` of a sequence, as a tensor.

use crate::common::{element_type, int_scalar, position};
use opal_kernel_support::check::error;
use opal_plugin_api::prelude::*;

pub struct SequenceAt;

impl Operator for SequenceAt {
    const OP_TYPE: &'static str = "SequenceAt";
    const SINCE_VERSION: i64 = 11;
    const READS_VALUE_KINDS: bool = true;
    const VALUE_INPUTS: &'static [usize] = &[1];

    fn infer(cx: &InferContext<'_>) -> KernelResult<Vec<OutputType>> {
        let sequence = cx.sequence_input(0)?;
        cx.expect_kind(1, ValueKind::TENSOR)?;
        let Some((dtype, shape)) = element_type(&sequence) else {
            // Only a run knows the elements of a sequence it sees as empty.
            let given = cx.input(1)?.value();
            if let Some(p) = given {
                position(
                    Self::OP_TYPE,
                    int_scalar(Self::OP_TYPE, "position", p)?,
                    0,
                    false,
                )?;
            }
            return Err(error(
                Self::OP_TYPE,
                "the sequence has no element type: it is empty",
            ));
        };
        Ok(vec![OutputType::new(dtype, shape)])
    }

    fn compute(cx: &mut KernelContext<'_>) -> KernelResult<()> {
        let sequence = cx.sequence(0)?;
        let given = int_scalar(Self::OP_TYPE, "position", cx.input(1)?)?;
        let element = sequence.get(position(Self::OP_TYPE, given, sequence.len(), false)?)?;
        let out = cx.shaped_output(0, element.shape())?;
        if out.dtype() != element.dtype() {
            return Err(error(
                Self::OP_TYPE,
                format_args!(
                    "element {given} has dtype {}, but the sequence was typed {}",
                    element.dtype(),
                    out.dtype()
                ),
            ));
        }
        out.bytes_mut().copy_from_slice(element.bytes());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opal_plugin_api::testing::{OwnedTensor, TestHost, TestValue};

    fn sequence() -> TestValue {
        TestValue::Sequence(
            DType::F32,
            vec![
                OwnedTensor::f32(&[1], &[1.0]),
                OwnedTensor::f32(&[2], &[2.0, 3.0]),
            ],
        )
    }

    fn at(p: i64) -> Result<Vec<f32>, String> {
        let position = TestValue::Tensor(OwnedTensor::i64(&[], &[p]));
        let out = TestHost::new().run_values::<SequenceAt>(&[sequence(), position], &[], 1)?;
        Ok(out[0].tensor().to_vec::<f32>())
    }

    #[test]
    fn reads_an_element_counted_from_either_end() {
        assert_eq!(at(1).unwrap(), [2.0, 3.0]);
        assert_eq!(at(-2).unwrap(), [1.0]);
        let err = at(2).unwrap_err();
        assert_eq!(
            err,
            "SequenceAt: position 2 is out of range for a sequence of 2 elements ([-2, 1])"
        );
    }

    #[test]
    fn refuses_a_tensor_where_a_sequence_goes() {
        let x = TestValue::Tensor(OwnedTensor::f32(&[1], &[1.0]));
        let position = TestValue::Tensor(OwnedTensor::i64(&[], &[0]));
        let err = TestHost::new()
            .run_values::<SequenceAt>(&[x, position], &[], 1)
            .unwrap_err();
        assert_eq!(err, "input 0 must be a sequence, but it is a tensor");
    }
}
