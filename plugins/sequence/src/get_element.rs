//! OptionalGetElement: the value an optional holds (an error for none); since opset 18 a
//! tensor or sequence input is given back as it is.

use crate::common::element_type;
use opal_kernel_support::check::error;
use opal_plugin_api::{prelude::*, value::ValueSource};

pub struct OptionalGetElement;

impl Operator for OptionalGetElement {
    const OP_TYPE: &'static str = "OptionalGetElement";
    const SINCE_VERSION: i64 = 15;
    const READS_VALUE_KINDS: bool = true;

    fn infer(cx: &InferContext<'_>) -> KernelResult<Vec<OutputType>> {
        let kind = cx.input_kind(0).element();
        if kind.holds_sequence() {
            let (dtype, shape) =
                element_type(&cx.sequence_input(0)?).unwrap_or((DType::UNDEFINED, Vec::new()));
            cx.set_output_kind(0, kind)?;
            return Ok(vec![OutputType::new(dtype, shape)]);
        }
        let x = cx.optional_input(0)?.ok_or_else(|| {
            error(
                Self::OP_TYPE,
                "the optional input is none: it holds no element",
            )
        })?;
        Ok(vec![OutputType::new(x.dtype, x.shape.to_vec())])
    }

    fn compute(cx: &mut KernelContext<'_>) -> KernelResult<()> {
        match cx.value(0)? {
            Value::None => Err(error(
                Self::OP_TYPE,
                "the optional input is none: it holds no element",
            )),
            Value::Tensor(x) => {
                let out = cx.shaped_output(0, x.shape())?;
                out.bytes_mut().copy_from_slice(x.bytes());
                Ok(())
            }
            Value::Sequence(_) => cx.forward(0, ValueSource::input(0)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opal_plugin_api::testing::{OwnedTensor, TestHost, TestValue};

    #[test]
    fn gives_back_what_the_optional_holds_and_refuses_none() {
        let x = OwnedTensor::f32(&[2], &[1.0, 2.0]);
        let out = TestHost::new()
            .run_values::<OptionalGetElement>(
                &[TestValue::some(TestValue::Tensor(x.clone()))],
                &[],
                1,
            )
            .unwrap();
        assert_eq!(out[0].tensor().to_vec::<f32>(), [1.0, 2.0]);
        let sequence = TestValue::some(TestValue::Sequence(DType::F32, vec![x]));
        let out = TestHost::new()
            .run_values::<OptionalGetElement>(&[sequence], &[], 1)
            .unwrap();
        assert_eq!(out[0].kind(), ValueKind::SEQUENCE);
        assert_eq!(out[0].elements().len(), 1);
        let none = TestValue::None(ValueKind::OPTIONAL_TENSOR, DType::UNDEFINED);
        let err = TestHost::new()
            .run_values::<OptionalGetElement>(&[none], &[], 1)
            .unwrap_err();
        assert!(err.contains("none"), "{err}");
    }
}
