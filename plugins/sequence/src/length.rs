//! SequenceLength: how many elements a sequence holds, as an i64 scalar.

use opal_plugin_api::prelude::*;

pub struct SequenceLength;

impl Operator for SequenceLength {
    const OP_TYPE: &'static str = "SequenceLength";
    const SINCE_VERSION: i64 = 11;
    const READS_VALUE_KINDS: bool = true;

    fn infer(cx: &InferContext<'_>) -> KernelResult<Vec<OutputType>> {
        cx.sequence_input(0)?;
        Ok(vec![OutputType::fixed(DType::I64, &[])])
    }

    fn compute(cx: &mut KernelContext<'_>) -> KernelResult<()> {
        let len = cx.sequence(0)?.len();
        cx.output(0)?.as_slice_mut::<i64>()?[0] = len as i64;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opal_plugin_api::testing::{OwnedTensor, TestHost, TestValue};

    #[test]
    fn counts_the_elements() {
        let sequence = TestValue::Sequence(DType::F32, vec![OwnedTensor::f32(&[1], &[1.0]); 3]);
        let out = TestHost::new()
            .run_values::<SequenceLength>(&[sequence], &[], 1)
            .unwrap();
        assert_eq!(out[0].tensor().to_vec::<i64>(), [3]);
    }
}
