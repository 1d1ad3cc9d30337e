//! Optional: an optional holding its input, or none of the `type` attribute's type when the
//! input is omitted (the host lends a type attribute as ints `[kind, dtype]`).

use crate::common::element_type;
use opal_kernel_support::check::error;
use opal_plugin_api::{prelude::*, value::ValueSource};

pub struct Optional;

impl Operator for Optional {
    const OP_TYPE: &'static str = "Optional";
    const SINCE_VERSION: i64 = 15;
    const READS_VALUE_KINDS: bool = true;

    fn infer(cx: &InferContext<'_>) -> KernelResult<Vec<OutputType>> {
        if !cx.has_input(0) {
            let declared = cx.attributes().ints("type")?.ok_or_else(|| {
                error(
                    Self::OP_TYPE,
                    "without an input it needs the attribute 'type'",
                )
            })?;
            let &[kind, dtype] = declared else {
                return Err(error(Self::OP_TYPE, "the attribute 'type' is not a type"));
            };
            let kind = ValueKind(u32::try_from(kind).unwrap_or(u32::MAX));
            if !kind.is_known() || kind.is_optional() {
                return Err(error(
                    Self::OP_TYPE,
                    format_args!(
                        "the attribute 'type' names {}; an optional holds a tensor or a sequence",
                        kind.described()
                    ),
                ));
            }
            cx.set_output_kind(0, kind.optional())?;
            let dtype = DType(i32::try_from(dtype).unwrap_or(0));
            return Ok(vec![OutputType::new(dtype, Vec::new())]);
        }
        let kind = cx.input_kind(0);
        let (dtype, shape) = match kind {
            ValueKind::TENSOR => {
                let x = cx.input(0)?;
                (x.dtype, x.shape.to_vec())
            }
            ValueKind::SEQUENCE => {
                element_type(&cx.sequence_input(0)?).unwrap_or((DType::UNDEFINED, Vec::new()))
            }
            other => {
                return Err(error(
                    Self::OP_TYPE,
                    format_args!(
                        "input 0 is {}; an optional holds a tensor or a sequence",
                        other.described()
                    ),
                ))
            }
        };
        cx.set_output_kind(0, kind.optional())?;
        Ok(vec![OutputType::new(dtype, shape)])
    }

    fn compute(cx: &mut KernelContext<'_>) -> KernelResult<()> {
        match cx.optional_value(0)? {
            Some(_) => cx.forward(0, ValueSource::input(0)),
            None => cx.set_none(0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opal_plugin_api::testing::{ints_attr, OwnedTensor, TestHost, TestValue};

    #[test]
    fn wraps_its_input_or_makes_none_of_the_declared_type() {
        let x = TestValue::Tensor(OwnedTensor::f32(&[2], &[1.0, 2.0]));
        let out = TestHost::new()
            .run_values::<Optional>(&[x], &[], 1)
            .unwrap();
        assert_eq!(out[0].kind(), ValueKind::OPTIONAL_TENSOR);
        assert_eq!(out[0].tensor().to_vec::<f32>(), [1.0, 2.0]);
        let sequence_of_f32 = [1, 1];
        let out = TestHost::new()
            .run_values::<Optional>(&[], &[ints_attr("type", &sequence_of_f32)], 1)
            .unwrap();
        assert!(matches!(
            out[0],
            TestValue::None(ValueKind::OPTIONAL_SEQUENCE, _)
        ));
    }
}
