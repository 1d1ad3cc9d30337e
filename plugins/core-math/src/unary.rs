//! Elementwise functions of one input: the machinery every unary operator shares (float maps
//! with parameters read from attributes, numeric maps, predicates), and the plain math
//! operators: Abs, Neg, Sign, Exp, Log, Sqrt, Reciprocal, Floor, Ceil, Round, the trigonometric
//! and hyperbolic functions, Erf, IsNaN, IsInf.

use crate::{
    check::error,
    elementwise::map,
    half::{widened, Narrow},
    numeric::{is_any_float, with_float, with_numeric, Float, Num},
};
use opal_plugin_api::prelude::*;

/// Same dtype and shape as input 0, which must be of a dtype `accept`s (`what` names them).
pub(crate) fn infer_same(
    op: &str,
    cx: &InferContext<'_>,
    accept: fn(DType) -> bool,
    what: &str,
) -> KernelResult<Vec<OutputType>> {
    let x = cx.input(0)?;
    if !accept(x.dtype) {
        return Err(error(
            op,
            format_args!("input 0 has dtype {}, expected {what}", x.dtype),
        ));
    }
    Ok(vec![OutputType::new(x.dtype, x.shape.to_vec())])
}

/// A function of one float, with up to three float parameters read from attributes.
pub(crate) trait FloatUnary {
    /// The parameters' attribute names and defaults, in the order `apply` receives them.
    const PARAMS: &'static [(&'static str, f32)] = &[];
    fn apply<F: Float>(x: F, params: &[F; 3]) -> F;
}

/// The parameters of `U` from the node's attributes.
fn read_params<U: FloatUnary>(cx: &KernelContext<'_>) -> KernelResult<[f64; 3]> {
    let mut params = [0.0; 3];
    for (slot, &(name, default)) in params.iter_mut().zip(U::PARAMS) {
        *slot = f64::from(cx.attributes().float(name, default)?);
    }
    Ok(params)
}

/// Output 0 = `U::apply(input 0)` for f32, f64, f16 and bf16 inputs.
pub(crate) fn compute_float_unary<U: FloatUnary>(
    op: &str,
    cx: &mut KernelContext<'_>,
) -> KernelResult<()> {
    let params = read_params::<U>(cx)?;
    let x = cx.input(0)?;
    let out = cx.output(0)?;
    with_float!(x.dtype(), F => {
        let p = params.map(F::lit);
        map(op, cx, x.as_slice::<F>()?, out.as_slice_mut::<F>()?, |v| U::apply(v, &p))
    }, _ => {
        let xs = widened(op, cx, x)?;
        let narrow = Narrow::new(cx, out)?;
        let p = params.map(f32::lit);
        map(op, cx, xs, &mut *narrow.values, |v| U::apply(v, &p))?;
        narrow.finish();
        Ok(())
    })
}

/// Declares an operator computing a [`FloatUnary`] function: its name, op type, first opset,
/// parameters (`[name = default, ...]`, bound by name in the body) and body.
macro_rules! float_operator {
    ($(#[$doc:meta])* $name:ident, $op_type:literal, since $since:literal,
     [$($param:ident = $default:literal),*], |$x:ident| $body:expr) => {
        $(#[$doc])*
        pub struct $name;

        impl $crate::unary::FloatUnary for $name {
            const PARAMS: &'static [(&'static str, f32)] = &[$((stringify!($param), $default)),*];

            #[allow(unused_variables)]
            fn apply<F: $crate::numeric::Float>($x: F, params: &[F; 3]) -> F {
                let [$($param,)* ..] = *params;
                $body
            }
        }

        impl Operator for $name {
            const OP_TYPE: &'static str = $op_type;
            const SINCE_VERSION: i64 = $since;

            fn infer(cx: &InferContext<'_>) -> KernelResult<Vec<OutputType>> {
                $crate::unary::infer_same(
                    Self::OP_TYPE,
                    cx,
                    $crate::numeric::is_any_float,
                    "a float type",
                )
            }

            fn compute(cx: &mut KernelContext<'_>) -> KernelResult<()> {
                $crate::unary::compute_float_unary::<Self>(Self::OP_TYPE, cx)
            }
        }
    };
}

pub(crate) use float_operator;

/// A function of one value of any numeric type.
pub(crate) trait NumUnary {
    fn apply<T: Num>(x: T) -> T;
}

/// Output 0 = `U::apply(input 0)` for numeric inputs (f16 and bf16 in f32).
pub(crate) fn compute_num_unary<U: NumUnary>(
    op: &str,
    cx: &mut KernelContext<'_>,
) -> KernelResult<()> {
    let x = cx.input(0)?;
    let out = cx.output(0)?;
    with_numeric!(x.dtype(), T => {
        map(op, cx, x.as_slice::<T>()?, out.as_slice_mut::<T>()?, U::apply::<T>)
    },
    _ => {
        let xs = widened(op, cx, x)?;
        let narrow = Narrow::new(cx, out)?;
        map(op, cx, xs, &mut *narrow.values, U::apply::<f32>)?;
        narrow.finish();
        Ok(())
    })
}

/// Declares an operator computing a [`NumUnary`] function.
macro_rules! num_operator {
    ($(#[$doc:meta])* $name:ident, $op_type:literal, since $since:literal,
     |$x:ident| $body:expr) => {
        $(#[$doc])*
        pub struct $name;

        impl $crate::unary::NumUnary for $name {
            fn apply<T: $crate::numeric::Num>($x: T) -> T {
                $body
            }
        }

        impl Operator for $name {
            const OP_TYPE: &'static str = $op_type;
            const SINCE_VERSION: i64 = $since;

            fn infer(cx: &InferContext<'_>) -> KernelResult<Vec<OutputType>> {
                $crate::unary::infer_same(
                    Self::OP_TYPE,
                    cx,
                    $crate::numeric::is_numeric,
                    "a numeric type",
                )
            }

            fn compute(cx: &mut KernelContext<'_>) -> KernelResult<()> {
                $crate::unary::compute_num_unary::<Self>(Self::OP_TYPE, cx)
            }
        }
    };
}

pub(crate) use num_operator;

num_operator!(
    /// `|x|`.
    Abs, "Abs", since 1, |x| x.abs()
);
num_operator!(
    /// `-x`.
    Neg, "Neg", since 1, |x| x.neg()
);
num_operator!(
    /// -1, 0 or 1 by the sign of `x`.
    Sign, "Sign", since 9, |x| x.signum()
);

float_operator!(
    /// `e^x`.
    Exp, "Exp", since 1, [], |x| x.exp()
);
float_operator!(
    /// The natural logarithm.
    Log, "Log", since 1, [], |x| x.ln()
);
float_operator!(
    /// The square root.
    Sqrt, "Sqrt", since 1, [], |x| x.sqrt()
);
float_operator!(
    /// `1 / x`.
    Reciprocal, "Reciprocal", since 1, [], |x| F::ONE / x
);
float_operator!(
    /// Rounds toward -∞.
    Floor, "Floor", since 1, [], |x| x.floor()
);
float_operator!(
    /// Rounds toward +∞.
    Ceil, "Ceil", since 1, [], |x| x.ceil()
);
float_operator!(
    /// Rounds to the nearest integer, halves to even.
    Round, "Round", since 11, [], |x| x.round_ties_even()
);
float_operator!(
    /// The sine.
    Sin, "Sin", since 7, [], |x| x.sin()
);
float_operator!(
    /// The cosine.
    Cos, "Cos", since 7, [], |x| x.cos()
);
float_operator!(
    /// The tangent.
    Tan, "Tan", since 7, [], |x| x.tan()
);
float_operator!(
    /// The arcsine.
    Asin, "Asin", since 7, [], |x| x.asin()
);
float_operator!(
    /// The arccosine.
    Acos, "Acos", since 7, [], |x| x.acos()
);
float_operator!(
    /// The arctangent.
    Atan, "Atan", since 7, [], |x| x.atan()
);
float_operator!(
    /// The hyperbolic sine.
    Sinh, "Sinh", since 9, [], |x| x.sinh()
);
float_operator!(
    /// The hyperbolic cosine.
    Cosh, "Cosh", since 9, [], |x| x.cosh()
);
float_operator!(
    /// The inverse hyperbolic sine.
    Asinh, "Asinh", since 9, [], |x| x.asinh()
);
float_operator!(
    /// The inverse hyperbolic cosine.
    Acosh, "Acosh", since 9, [], |x| x.acosh()
);
float_operator!(
    /// The inverse hyperbolic tangent.
    Atanh, "Atanh", since 9, [], |x| x.atanh()
);
float_operator!(
    /// The error function.
    Erf, "Erf", since 9, [], |x| x.erf()
);

/// Output 0 (bool) = `test(input 0)` for float inputs.
fn compute_predicate(
    op: &str,
    cx: &mut KernelContext<'_>,
    test: impl Fn(f64) -> bool + Sync,
) -> KernelResult<()> {
    let x = cx.input(0)?;
    let y = cx.output(0)?.as_slice_mut::<bool>()?;
    with_float!(x.dtype(), F => map(op, cx, x.as_slice::<F>()?, y, |v: F| test(v.to_f64())),
        _ => map(op, cx, widened(op, cx, x)?, y, |v: f32| test(f64::from(v))))
}

/// Bool output of input 0's shape, for a float input.
fn infer_predicate(op: &str, cx: &InferContext<'_>) -> KernelResult<Vec<OutputType>> {
    let x = cx.input(0)?;
    if !is_any_float(x.dtype) {
        return Err(error(
            op,
            format_args!("input 0 has dtype {}, expected a float type", x.dtype),
        ));
    }
    Ok(vec![OutputType::new(DType::BOOL, x.shape.to_vec())])
}

/// Whether each element is NaN.
pub struct IsNaN;

impl Operator for IsNaN {
    const OP_TYPE: &'static str = "IsNaN";
    const SINCE_VERSION: i64 = 9;

    fn infer(cx: &InferContext<'_>) -> KernelResult<Vec<OutputType>> {
        infer_predicate(Self::OP_TYPE, cx)
    }

    fn compute(cx: &mut KernelContext<'_>) -> KernelResult<()> {
        compute_predicate(Self::OP_TYPE, cx, f64::is_nan)
    }
}

/// Whether each element is infinite, of the signs the `detect_positive` and `detect_negative`
/// attributes select.
pub struct IsInf;

impl Operator for IsInf {
    const OP_TYPE: &'static str = "IsInf";
    const SINCE_VERSION: i64 = 10;

    fn infer(cx: &InferContext<'_>) -> KernelResult<Vec<OutputType>> {
        infer_predicate(Self::OP_TYPE, cx)
    }

    fn compute(cx: &mut KernelContext<'_>) -> KernelResult<()> {
        let positive = cx.attributes().int("detect_positive", 1)? != 0;
        let negative = cx.attributes().int("detect_negative", 1)? != 0;
        compute_predicate(Self::OP_TYPE, cx, |v| {
            (positive && v == f64::INFINITY) || (negative && v == f64::NEG_INFINITY)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opal_plugin_api::testing::{assert_close, int_attr, run_operator, OwnedTensor};

    #[test]
    fn float_functions_apply_in_f32_and_f64() {
        let x = OwnedTensor::f32(&[4], &[0.5, 1.5, 2.5, -0.5]);
        let y = run_operator::<Round>(&[x], &[], 1).unwrap();
        assert_eq!(y[0].to_vec::<f32>(), [0.0, 2.0, 2.0, -0.0]);
        let x = OwnedTensor::new::<f64>(&[3], &[0.0, 1.0, -2.0]);
        let y = run_operator::<Erf>(&[x], &[], 1).unwrap();
        let expected = [0.0, 0.842_700_792_949_714_9, -0.995_322_265_018_952_7];
        for (a, e) in y[0].to_vec::<f64>().iter().zip(expected) {
            assert!((a - e).abs() < 1e-12, "{a} vs {e}");
        }
        let x = OwnedTensor::f32(&[2], &[4.0, 0.25]);
        let y = run_operator::<Sqrt>(&[x], &[], 1).unwrap();
        assert_close(y[0].as_slice(), &[2.0, 0.5], 1e-7);
    }

    #[test]
    fn numeric_functions_cover_integers() {
        let x = OwnedTensor::new::<i16>(&[3], &[-7, 0, i16::MIN]);
        let y = run_operator::<Abs>(std::slice::from_ref(&x), &[], 1).unwrap();
        assert_eq!(y[0].to_vec::<i16>(), [7, 0, i16::MIN]);
        let y = run_operator::<Sign>(std::slice::from_ref(&x), &[], 1).unwrap();
        assert_eq!(y[0].to_vec::<i16>(), [-1, 0, -1]);
        let y = run_operator::<Neg>(&[x], &[], 1).unwrap();
        assert_eq!(y[0].to_vec::<i16>(), [7, 0, i16::MIN]);
    }

    #[test]
    fn predicates_give_bools() {
        let x = OwnedTensor::f32(&[4], &[1.0, f32::NAN, f32::INFINITY, f32::NEG_INFINITY]);
        let y = run_operator::<IsNaN>(std::slice::from_ref(&x), &[], 1).unwrap();
        assert_eq!(y[0].to_vec::<bool>(), [false, true, false, false]);
        let y = run_operator::<IsInf>(std::slice::from_ref(&x), &[], 1).unwrap();
        assert_eq!(y[0].to_vec::<bool>(), [false, false, true, true]);
        let y = run_operator::<IsInf>(&[x], &[int_attr("detect_positive", 0)], 1).unwrap();
        assert_eq!(y[0].to_vec::<bool>(), [false, false, false, true]);
    }
}
