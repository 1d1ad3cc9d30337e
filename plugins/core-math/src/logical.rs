//! Logic on bools (And, Or, Xor, Not) and on the bits of integers (BitwiseAnd, BitwiseOr,
//! BitwiseXor, BitwiseNot, BitShift), broadcasting where ONNX does.

use crate::{
    check::error,
    elementwise::{broadcast_binary, infer_broadcast_shape, map},
    numeric::{is_int, with_int, Int},
};
use opal_plugin_api::prelude::*;

fn expect_dtype(op: &str, dtype: DType, bool_op: bool) -> KernelResult<()> {
    let ok = if bool_op {
        dtype == DType::BOOL
    } else {
        is_int(dtype)
    };
    if !ok {
        let expected = if bool_op { "bool" } else { "an integer type" };
        return Err(error(
            op,
            format_args!("input has dtype {dtype}, expected {expected}"),
        ));
    }
    Ok(())
}

fn infer_logical(op: &str, cx: &InferContext<'_>, bool_op: bool) -> KernelResult<Vec<OutputType>> {
    let dtype = cx.input(0)?.dtype;
    expect_dtype(op, dtype, bool_op)?;
    let shape = infer_broadcast_shape(op, cx, true)?;
    Ok(vec![OutputType::new(dtype, shape)])
}

/// Output 0 = `f(input 0, input 1)` on bools, broadcast.
fn compute_bool(
    op: &str,
    cx: &mut KernelContext<'_>,
    f: impl Fn(bool, bool) -> bool + Copy + Sync,
) -> KernelResult<()> {
    let (a, b) = (cx.input(0)?, cx.input(1)?);
    let out = cx.output(0)?;
    let shape = out.shape();
    broadcast_binary(
        op,
        cx,
        (a.as_slice::<bool>()?, a.shape()),
        (b.as_slice::<bool>()?, b.shape()),
        (out.as_slice_mut::<bool>()?, shape),
        f,
    )
}

macro_rules! bool_operator {
    ($(#[$doc:meta])* $name:ident, $op_type:literal, |$a:ident, $b:ident| $body:expr) => {
        $(#[$doc])*
        pub struct $name;

        impl Operator for $name {
            const OP_TYPE: &'static str = $op_type;
            const SINCE_VERSION: i64 = 7;

            fn infer(cx: &InferContext<'_>) -> KernelResult<Vec<OutputType>> {
                infer_logical(Self::OP_TYPE, cx, true)
            }

            fn compute(cx: &mut KernelContext<'_>) -> KernelResult<()> {
                compute_bool(Self::OP_TYPE, cx, |$a, $b| $body)
            }
        }
    };
}

bool_operator!(
    /// `a and b`, broadcast.
    And, "And", |a, b| a & b
);
bool_operator!(
    /// `a or b`, broadcast.
    Or, "Or", |a, b| a | b
);
bool_operator!(
    /// `a xor b`, broadcast.
    Xor, "Xor", |a, b| a ^ b
);

/// `not x`.
pub struct Not;

impl Operator for Not {
    const OP_TYPE: &'static str = "Not";

    fn infer(cx: &InferContext<'_>) -> KernelResult<Vec<OutputType>> {
        let x = cx.input(0)?;
        expect_dtype(Self::OP_TYPE, x.dtype, true)?;
        Ok(vec![OutputType::new(x.dtype, x.shape.to_vec())])
    }

    fn compute(cx: &mut KernelContext<'_>) -> KernelResult<()> {
        let x = cx.input(0)?.as_slice::<bool>()?;
        let y = cx.output(0)?.as_slice_mut::<bool>()?;
        map(Self::OP_TYPE, cx, x, y, |x: bool| !x)
    }
}

/// An operation on the bits of two integers of one type.
trait Bitwise {
    fn apply<T: Int>(a: T, b: T) -> T;
}

fn compute_bitwise<B: Bitwise>(op: &str, cx: &mut KernelContext<'_>) -> KernelResult<()> {
    let (a, b) = (cx.input(0)?, cx.input(1)?);
    if a.dtype() != b.dtype() {
        return Err(error(
            op,
            format_args!("inputs have dtypes {} and {}", a.dtype(), b.dtype()),
        ));
    }
    let out = cx.output(0)?;
    let shape = out.shape();
    with_int!(a.dtype(), T => broadcast_binary(
        op,
        cx,
        (a.as_slice::<T>()?, a.shape()),
        (b.as_slice::<T>()?, b.shape()),
        (out.as_slice_mut::<T>()?, shape),
        B::apply::<T>,
    ), _ => Err(error(op, format_args!("dtype {} is not an integer type", a.dtype()))))
}

macro_rules! bitwise_operator {
    ($(#[$doc:meta])* $name:ident, $op_type:literal, |$a:ident, $b:ident| $body:expr) => {
        $(#[$doc])*
        pub struct $name;

        impl Bitwise for $name {
            fn apply<T: Int>($a: T, $b: T) -> T {
                $body
            }
        }

        impl Operator for $name {
            const OP_TYPE: &'static str = $op_type;
            const SINCE_VERSION: i64 = 18;

            fn infer(cx: &InferContext<'_>) -> KernelResult<Vec<OutputType>> {
                infer_logical(Self::OP_TYPE, cx, false)
            }

            fn compute(cx: &mut KernelContext<'_>) -> KernelResult<()> {
                compute_bitwise::<Self>(Self::OP_TYPE, cx)
            }
        }
    };
}

bitwise_operator!(
    /// `a & b`, broadcast.
    BitwiseAnd, "BitwiseAnd", |a, b| a & b
);
bitwise_operator!(
    /// `a | b`, broadcast.
    BitwiseOr, "BitwiseOr", |a, b| a | b
);
bitwise_operator!(
    /// `a ^ b`, broadcast.
    BitwiseXor, "BitwiseXor", |a, b| a ^ b
);

/// `!x` on the bits of an integer.
pub struct BitwiseNot;

impl Operator for BitwiseNot {
    const OP_TYPE: &'static str = "BitwiseNot";
    const SINCE_VERSION: i64 = 18;

    fn infer(cx: &InferContext<'_>) -> KernelResult<Vec<OutputType>> {
        let x = cx.input(0)?;
        expect_dtype(Self::OP_TYPE, x.dtype, false)?;
        Ok(vec![OutputType::new(x.dtype, x.shape.to_vec())])
    }

    fn compute(cx: &mut KernelContext<'_>) -> KernelResult<()> {
        let op = Self::OP_TYPE;
        let x = cx.input(0)?;
        let y = cx.output(0)?;
        with_int!(x.dtype(), T => {
            map(op, cx, x.as_slice::<T>()?, y.as_slice_mut::<T>()?, |v: T| !v)
        }, _ => Err(error(op, format_args!("dtype {} is not an integer type", x.dtype()))))
    }
}

struct ShiftLeft;

impl Bitwise for ShiftLeft {
    fn apply<T: Int>(a: T, b: T) -> T {
        a.shift_left(b)
    }
}

struct ShiftRight;

impl Bitwise for ShiftRight {
    fn apply<T: Int>(a: T, b: T) -> T {
        a.shift_right(b)
    }
}

/// `x << y` or `x >> y` (attribute `direction`), broadcast; shifts by a negative amount or by
/// the bit width or more give what the sign extension alone gives.
pub struct BitShift;

impl Operator for BitShift {
    const OP_TYPE: &'static str = "BitShift";
    const SINCE_VERSION: i64 = 11;

    fn infer(cx: &InferContext<'_>) -> KernelResult<Vec<OutputType>> {
        infer_logical(Self::OP_TYPE, cx, false)
    }

    fn compute(cx: &mut KernelContext<'_>) -> KernelResult<()> {
        match cx.attributes().string("direction", "")? {
            "LEFT" => compute_bitwise::<ShiftLeft>(Self::OP_TYPE, cx),
            "RIGHT" => compute_bitwise::<ShiftRight>(Self::OP_TYPE, cx),
            other => Err(error(
                Self::OP_TYPE,
                format_args!("direction must be LEFT or RIGHT, got '{other}'"),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opal_plugin_api::testing::{run_operator, string_attr, OwnedTensor};

    #[test]
    fn bools_combine_with_broadcasting() {
        let a = OwnedTensor::new::<bool>(&[2, 2], &[true, false, true, false]);
        let b = OwnedTensor::new::<bool>(&[2], &[true, true]);
        let inputs = [a.clone(), b];
        let and = run_operator::<And>(&inputs, &[], 1).unwrap();
        assert_eq!(and[0].to_vec::<bool>(), [true, false, true, false]);
        let xor = run_operator::<Xor>(&inputs, &[], 1).unwrap();
        assert_eq!(xor[0].to_vec::<bool>(), [false, true, false, true]);
        let not = run_operator::<Not>(&[a], &[], 1).unwrap();
        assert_eq!(not[0].to_vec::<bool>(), [false, true, false, true]);
    }

    #[test]
    fn integers_shift_and_mask() {
        let x = OwnedTensor::new::<i8>(&[3], &[-16, 3, 64]);
        let y = OwnedTensor::new::<i8>(&[3], &[2, 1, 9]);
        let right = run_operator::<BitShift>(
            &[x.clone(), y.clone()],
            &[string_attr("direction", "RIGHT")],
            1,
        )
        .unwrap();
        assert_eq!(right[0].to_vec::<i8>(), [-4, 1, 0]);
        let left = run_operator::<BitShift>(
            &[x.clone(), y.clone()],
            &[string_attr("direction", "LEFT")],
            1,
        )
        .unwrap();
        assert_eq!(left[0].to_vec::<i8>(), [-64, 6, 0]);
        let and = run_operator::<BitwiseAnd>(&[x.clone(), y], &[], 1).unwrap();
        assert_eq!(and[0].to_vec::<i8>(), [0, 1, 0]);
        let not = run_operator::<BitwiseNot>(&[x], &[], 1).unwrap();
        assert_eq!(not[0].to_vec::<i8>(), [15, -4, -65]);
    }
}
