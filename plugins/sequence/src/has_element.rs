//! OptionalHasElement: whether its input holds a value (false for none, and for an omitted
//! input); since opset 18 a tensor or sequence input holds one.

use opal_plugin_api::prelude::*;

pub struct OptionalHasElement;

impl Operator for OptionalHasElement {
    const OP_TYPE: &'static str = "OptionalHasElement";
    const SINCE_VERSION: i64 = 15;
    const READS_VALUE_KINDS: bool = true;

    fn infer(_cx: &InferContext<'_>) -> KernelResult<Vec<OutputType>> {
        Ok(vec![OutputType::fixed(DType::BOOL, &[])])
    }

    fn compute(cx: &mut KernelContext<'_>) -> KernelResult<()> {
        let has = !matches!(cx.optional_value(0)?, None | Some(Value::None));
        cx.output(0)?.as_slice_mut::<bool>()?[0] = has;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opal_plugin_api::testing::{OwnedTensor, TestHost, TestValue};

    fn has(inputs: &[TestValue]) -> bool {
        let out = TestHost::new()
            .run_values::<OptionalHasElement>(inputs, &[], 1)
            .unwrap();
        out[0].tensor().to_vec::<bool>()[0]
    }

    #[test]
    fn tells_a_value_from_none_and_from_nothing() {
        let x = OwnedTensor::f32(&[1], &[1.0]);
        assert!(has(&[TestValue::some(TestValue::Tensor(x.clone()))]));
        assert!(has(&[TestValue::Tensor(x)]));
        assert!(has(&[TestValue::Sequence(DType::F32, vec![])]));
        assert!(!has(&[TestValue::None(
            ValueKind::OPTIONAL_TENSOR,
            DType::F32
        )]));
        assert!(!has(&[]));
        assert!(!has(&[TestValue::Tensor(OwnedTensor::absent())]));
    }
}
