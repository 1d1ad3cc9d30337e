//! SequenceEmpty: an empty sequence of the `dtype` attribute's element type (f32 by default).

use crate::common::sequence_output;
use opal_kernel_support::check::{error, expect_fixed_size};
use opal_plugin_api::prelude::*;

pub struct SequenceEmpty;

impl Operator for SequenceEmpty {
    const OP_TYPE: &'static str = "SequenceEmpty";
    const SINCE_VERSION: i64 = 11;
    const READS_VALUE_KINDS: bool = true;

    fn infer(cx: &InferContext<'_>) -> KernelResult<Vec<OutputType>> {
        let code = cx.attributes().int("dtype", i64::from(DType::F32.0))?;
        let dtype = i32::try_from(code).map(DType).unwrap_or(DType::UNDEFINED);
        expect_fixed_size(Self::OP_TYPE, dtype).map_err(|_| {
            error(
                Self::OP_TYPE,
                format_args!("dtype {code} is not a tensor type opal supports"),
            )
        })?;
        Ok(vec![sequence_output(cx, 0, dtype, Vec::new())?])
    }

    fn compute(_cx: &mut KernelContext<'_>) -> KernelResult<()> {
        // A sequence output the kernel appends nothing to is empty.
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opal_plugin_api::testing::{int_attr, TestHost, TestValue};

    #[test]
    fn makes_an_empty_sequence_of_the_dtype_asked_for() {
        let out = TestHost::new()
            .run_values::<SequenceEmpty>(&[], &[int_attr("dtype", 7)], 1)
            .unwrap();
        match &out[0] {
            TestValue::Sequence(dtype, elements) => {
                assert_eq!(*dtype, DType::I64);
                assert!(elements.is_empty());
            }
            other => panic!("{other:?}"),
        }
        let err = TestHost::new()
            .run_values::<SequenceEmpty>(&[], &[int_attr("dtype", 8)], 1)
            .unwrap_err();
        assert!(err.contains("dtype 8"), "{err}");
    }
}
