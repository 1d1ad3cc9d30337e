//! Broadcasting comparisons with a bool output: Equal, Less, Greater, LessOrEqual,
//! GreaterOrEqual, for numeric and bool inputs (f16 and bf16 compare as f32), and Equal for
//! strings too (byte for byte).

use crate::{
    check::error,
    elementwise::{broadcast_binary, infer_broadcast_shape},
    half::widened,
    numeric::{is_numeric, with_numeric},
};
use opal_kernel_support::broadcast::Plan;
use opal_plugin_api::prelude::*;

/// A comparison of two values of one type.
trait Comparison {
    fn apply<T: PartialOrd>(a: T, b: T) -> bool;
}

fn infer_comparison(
    op: &str,
    cx: &InferContext<'_>,
    takes_strings: bool,
) -> KernelResult<Vec<OutputType>> {
    let dtype = cx.input(0)?.dtype;
    let string = takes_strings && dtype == DType::STRING;
    if !is_numeric(dtype) && dtype != DType::BOOL && !string {
        return Err(error(op, format_args!("dtype {dtype} is not supported")));
    }
    let shape = infer_broadcast_shape(op, cx, true)?;
    Ok(vec![OutputType::new(DType::BOOL, shape)])
}

fn compute_comparison<C: Comparison>(op: &str, cx: &mut KernelContext<'_>) -> KernelResult<()> {
    let (a, b) = (cx.input(0)?, cx.input(1)?);
    if a.dtype() != b.dtype() {
        return Err(error(
            op,
            format_args!("inputs have dtypes {} and {}", a.dtype(), b.dtype()),
        ));
    }
    let out = cx.output(0)?;
    let shape = out.shape();
    if a.dtype() == DType::STRING {
        let (xs, ys) = (a.strings()?, b.strings()?);
        let plan = Plan::broadcast(op, shape, [a.shape(), b.shape()])?;
        for (k, y) in out.as_slice_mut::<bool>()?.iter_mut().enumerate() {
            let [i, j] = plan.offsets(k);
            *y = C::apply(xs.get(i)?, ys.get(j)?);
        }
        return Ok(());
    }
    let y = (out.as_slice_mut::<bool>()?, shape);
    with_numeric!(a.dtype(), T => broadcast_binary(
        op, cx, (a.as_slice::<T>()?, a.shape()), (b.as_slice::<T>()?, b.shape()), y, C::apply::<T>,
    ), _ => if a.dtype() == DType::BOOL {
        broadcast_binary(
            op,
            cx,
            (a.as_slice::<bool>()?, a.shape()),
            (b.as_slice::<bool>()?, b.shape()),
            y,
            C::apply::<bool>,
        )
    } else {
        let (av, bv) = (widened(op, cx, a)?, widened(op, cx, b)?);
        broadcast_binary(op, cx, (av, a.shape()), (bv, b.shape()), y, C::apply::<f32>)
    })
}

macro_rules! comparison_operator {
    ($(#[$doc:meta])* $name:ident, $op_type:literal, since $since:literal,
     strings $strings:literal, |$a:ident, $b:ident| $body:expr) => {
        $(#[$doc])*
        pub struct $name;

        impl Comparison for $name {
            fn apply<T: PartialOrd>($a: T, $b: T) -> bool {
                $body
            }
        }

        impl Operator for $name {
            const OP_TYPE: &'static str = $op_type;
            const SINCE_VERSION: i64 = $since;
            const TAKES_STRINGS: bool = $strings;

            fn infer(cx: &InferContext<'_>) -> KernelResult<Vec<OutputType>> {
                infer_comparison(Self::OP_TYPE, cx, Self::TAKES_STRINGS)
            }

            fn compute(cx: &mut KernelContext<'_>) -> KernelResult<()> {
                compute_comparison::<Self>(Self::OP_TYPE, cx)
            }
        }
    };
}

comparison_operator!(
    /// `a == b`, broadcast; strings too (ONNX allows them since opset 19).
    Equal, "Equal", since 7, strings true, |a, b| a == b
);
comparison_operator!(
    /// `a < b`, broadcast.
    Less, "Less", since 7, strings false, |a, b| a < b
);
comparison_operator!(
    /// `a > b`, broadcast.
    Greater, "Greater", since 7, strings false, |a, b| a > b
);
comparison_operator!(
    /// `a <= b`, broadcast.
    LessOrEqual, "LessOrEqual", since 12, strings false, |a, b| a <= b
);
comparison_operator!(
    /// `a >= b`, broadcast.
    GreaterOrEqual, "GreaterOrEqual", since 12, strings false, |a, b| a >= b
);

#[cfg(test)]
mod tests {
    use super::*;
    use opal_plugin_api::testing::{run_operator, OwnedTensor};

    #[test]
    fn comparisons_broadcast_to_bools() {
        let a = OwnedTensor::new::<u16>(&[2, 2], &[1, 5, 3, 3]);
        let b = OwnedTensor::new::<u16>(&[2], &[3, 3]);
        let inputs = [a, b];
        let run = |y: Vec<OwnedTensor>| y[0].to_vec::<bool>();
        assert_eq!(
            run(run_operator::<Less>(&inputs, &[], 1).unwrap()),
            [true, false, false, false]
        );
        assert_eq!(
            run(run_operator::<GreaterOrEqual>(&inputs, &[], 1).unwrap()),
            [false, true, true, true]
        );
        assert_eq!(
            run(run_operator::<Equal>(&inputs, &[], 1).unwrap()),
            [false, false, true, true]
        );
        let flags = [
            OwnedTensor::new::<bool>(&[2], &[true, false]),
            OwnedTensor::new::<bool>(&[1], &[true]),
        ];
        assert_eq!(
            run(run_operator::<Equal>(&flags, &[], 1).unwrap()),
            [true, false]
        );
        let nan = [
            OwnedTensor::f32(&[1], &[f32::NAN]),
            OwnedTensor::f32(&[1], &[f32::NAN]),
        ];
        assert_eq!(run(run_operator::<Equal>(&nan, &[], 1).unwrap()), [false]);
    }

    #[test]
    fn equal_compares_strings_byte_for_byte_and_broadcasts() {
        let words = [
            OwnedTensor::strings(&[3], &["string1", "String1", ""]),
            OwnedTensor::strings(&[1], &["string1"]),
        ];
        let y = run_operator::<Equal>(&words, &[], 1).unwrap();
        assert_eq!(y[0].to_vec::<bool>(), [true, false, false]);
        let error = run_operator::<Less>(&words, &[], 1).unwrap_err();
        assert_eq!(error, "Less: dtype string is not supported");
    }
}
