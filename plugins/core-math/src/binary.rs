//! Broadcasting arithmetic on two inputs of any numeric dtype: Add, Sub, Mul, Div, Mod, Pow,
//! PRelu. f32 takes the same loops as every other type, monomorphised; f16 and bf16 compute in
//! f32. Add, Sub, Mul and Div on f32 absorb the elementwise nodes after them (fusion).

use crate::{
    cast::f64_values,
    check::error,
    elementwise::{broadcast_binary, infer_broadcast_shape},
    half::{widened, Narrow},
    numeric::{is_half, is_numeric, with_numeric, Num},
};
use opal_kernel_support::epilogue::{absorb, Epilogue};
use opal_plugin_api::prelude::*;

/// Fails unless `dtype` is numeric.
pub(crate) fn expect_numeric(op: &str, index: usize, dtype: DType) -> KernelResult<()> {
    if !is_numeric(dtype) {
        return Err(error(
            op,
            format_args!("input {index} has dtype {dtype}, which is not numeric"),
        ));
    }
    Ok(())
}

/// The output of a broadcasting operator whose inputs and output share a numeric dtype.
pub(crate) fn infer_numeric_broadcast(
    op: &str,
    cx: &InferContext<'_>,
) -> KernelResult<Vec<OutputType>> {
    let dtype = cx.input(0)?.dtype;
    expect_numeric(op, 0, dtype)?;
    let shape = infer_broadcast_shape(op, cx, true)?;
    Ok(vec![OutputType::new(dtype, shape)])
}

/// An operation on two values of one numeric type.
pub(crate) trait Arithmetic {
    fn apply<T: Num>(a: T, b: T) -> T;
}

/// Output 0 = `A::apply(input 0, input 1)`, broadcast, for any numeric dtype.
pub(crate) fn compute_arithmetic<A: Arithmetic>(
    op: &str,
    cx: &mut KernelContext<'_>,
) -> KernelResult<()> {
    let (a, b) = (cx.input(0)?, cx.input(1)?);
    if a.dtype() != b.dtype() {
        return Err(error(
            op,
            format_args!("inputs have dtypes {} and {}", a.dtype(), b.dtype()),
        ));
    }
    let out = cx.output(0)?;
    let shape = out.shape();
    // Nodes fused into the call (only ever onto an f32 output with a channel axis).
    let (channels, plane) = match shape {
        [_, channels, rest @ ..] => (*channels, rest.iter().product()),
        _ => (1, 1),
    };
    if let Some(epilogue) = Epilogue::from_call(cx, op, channels, out.len())? {
        let y = out.as_slice_mut::<f32>()?;
        broadcast_binary(
            op,
            cx,
            (a.as_slice::<f32>()?, a.shape()),
            (b.as_slice::<f32>()?, b.shape()),
            (&mut *y, shape),
            A::apply::<f32>,
        )?;
        epilogue.apply(cx, y, channels, plane);
        return Ok(());
    }
    with_numeric!(a.dtype(), T => broadcast_binary(
        op,
        cx,
        (a.as_slice::<T>()?, a.shape()),
        (b.as_slice::<T>()?, b.shape()),
        (out.as_slice_mut::<T>()?, shape),
        A::apply::<T>,
    ), _ => {
        if !is_half(a.dtype()) {
            return Err(error(op, format_args!("dtype {} is not supported", a.dtype())));
        }
        let (av, bv) = (widened(op, cx, a)?, widened(op, cx, b)?);
        let narrow = Narrow::new(cx, out)?;
        broadcast_binary(
            op,
            cx,
            (av, a.shape()),
            (bv, b.shape()),
            (&mut *narrow.values, shape),
            A::apply::<f32>,
        )?;
        narrow.finish();
        Ok(())
    })
}

macro_rules! arithmetic_operator {
    ($(#[$doc:meta])* $name:ident, $op_type:literal, since $since:literal, $apply:ident) => {
        $(#[$doc])*
        pub struct $name;

        impl Arithmetic for $name {
            fn apply<T: Num>(a: T, b: T) -> T {
                a.$apply(b)
            }
        }

        impl Operator for $name {
            const OP_TYPE: &'static str = $op_type;
            const SINCE_VERSION: i64 = $since;

            fn infer(cx: &InferContext<'_>) -> KernelResult<Vec<OutputType>> {
                infer_numeric_broadcast(Self::OP_TYPE, cx)
            }

            fn compute(cx: &mut KernelContext<'_>) -> KernelResult<()> {
                compute_arithmetic::<Self>(Self::OP_TYPE, cx)
            }

            /// Absorbs the elementwise nodes after it (a residual add after a
            /// squeeze-excitation product, an activation) into its output pass.
            fn fuse(query: &FuseQuery<'_>) -> Option<Vec<u8>> {
                absorb(query)
            }
        }
    };
}

arithmetic_operator!(
    /// `a + b`, broadcast; integers wrap.
    Add, "Add", since 7, add
);
arithmetic_operator!(
    /// `a - b`, broadcast; integers wrap.
    Sub, "Sub", since 7, sub
);
arithmetic_operator!(
    /// `a * b`, broadcast; integers wrap.
    Mul, "Mul", since 7, mul
);
arithmetic_operator!(
    /// `a / b`, broadcast; integer division truncates toward zero.
    Div, "Div", since 7, div
);

/// The remainder with the divisor's sign.
struct FloorRemainder;

impl Arithmetic for FloorRemainder {
    fn apply<T: Num>(a: T, b: T) -> T {
        a.rem_floor(b)
    }
}

/// The remainder with the dividend's sign.
struct TruncatedRemainder;

impl Arithmetic for TruncatedRemainder {
    fn apply<T: Num>(a: T, b: T) -> T {
        a.rem_trunc(b)
    }
}

/// The remainder of `a / b`, broadcast: with the divisor's sign (`fmod = 0`, Python's `%`) or
/// the dividend's (`fmod = 1`, C's `fmod`).
pub struct Mod;

impl Operator for Mod {
    const OP_TYPE: &'static str = "Mod";
    const SINCE_VERSION: i64 = 10;

    fn infer(cx: &InferContext<'_>) -> KernelResult<Vec<OutputType>> {
        infer_numeric_broadcast(Self::OP_TYPE, cx)
    }

    fn compute(cx: &mut KernelContext<'_>) -> KernelResult<()> {
        match cx.attributes().int("fmod", 0)? {
            0 => compute_arithmetic::<FloorRemainder>(Self::OP_TYPE, cx),
            1 => compute_arithmetic::<TruncatedRemainder>(Self::OP_TYPE, cx),
            other => Err(error(
                Self::OP_TYPE,
                format_args!("fmod must be 0 or 1, got {other}"),
            )),
        }
    }
}

/// `base ^ exponent` in the base's type, as numpy computes it before casting back: integers to
/// a non-negative whole power by wrapping multiplication, everything else in f64.
fn power<T: Num>(base: T, exponent: f64) -> T {
    if !T::IS_FLOAT && exponent >= 0.0 && exponent.fract() == 0.0 && exponent < 128.0 {
        let (mut result, mut square, mut e) = (T::ONE, base, exponent as u32);
        while e > 0 {
            if e & 1 == 1 {
                result = result.mul(square);
            }
            square = square.mul(square);
            e >>= 1;
        }
        return result;
    }
    T::from_f64(base.to_f64().powf(exponent))
}

/// `a ^ b`, broadcast, in the base's dtype; the exponent may have any numeric dtype.
pub struct Pow;

impl Operator for Pow {
    const OP_TYPE: &'static str = "Pow";
    const SINCE_VERSION: i64 = 7;

    fn infer(cx: &InferContext<'_>) -> KernelResult<Vec<OutputType>> {
        let op = Self::OP_TYPE;
        let (base, exponent) = (cx.input(0)?, cx.input(1)?);
        expect_numeric(op, 0, base.dtype)?;
        expect_numeric(op, 1, exponent.dtype)?;
        let shape = infer_broadcast_shape(op, cx, false)?;
        Ok(vec![OutputType::new(base.dtype, shape)])
    }

    fn compute(cx: &mut KernelContext<'_>) -> KernelResult<()> {
        let op = Self::OP_TYPE;
        let (a, b) = (cx.input(0)?, cx.input(1)?);
        let out = cx.output(0)?;
        let shape = out.shape();
        if a.dtype() == DType::F32 && b.dtype() == DType::F32 {
            return broadcast_binary(
                op,
                cx,
                (a.f32()?, a.shape()),
                (b.f32()?, b.shape()),
                (out.f32_mut()?, shape),
                f32::powf,
            );
        }
        let exponents = (f64_values(op, cx, b)?, b.shape());
        with_numeric!(a.dtype(), T => broadcast_binary(
            op,
            cx,
            (a.as_slice::<T>()?, a.shape()),
            exponents,
            (out.as_slice_mut::<T>()?, shape),
            power::<T>,
        ), _ => {
            let av = widened(op, cx, a)?;
            let narrow = Narrow::new(cx, out)?;
            broadcast_binary(
                op,
                cx,
                (av, a.shape()),
                exponents,
                (&mut *narrow.values, shape),
                power::<f32>,
            )?;
            narrow.finish();
            Ok(())
        })
    }
}

/// `x` where positive, `slope * x` elsewhere; the slope broadcasts to the input's shape.
pub struct PRelu;

impl Operator for PRelu {
    const OP_TYPE: &'static str = "PRelu";
    const SINCE_VERSION: i64 = 7;

    fn infer(cx: &InferContext<'_>) -> KernelResult<Vec<OutputType>> {
        let op = Self::OP_TYPE;
        let x = cx.input(0)?;
        expect_numeric(op, 0, x.dtype)?;
        let shape = infer_broadcast_shape(op, cx, true)?;
        if shape.len() != x.shape.len() {
            return Err(error(op, "the slope has a higher rank than the input"));
        }
        Ok(vec![OutputType::new(x.dtype, x.shape.to_vec())])
    }

    fn compute(cx: &mut KernelContext<'_>) -> KernelResult<()> {
        compute_arithmetic::<Self>(Self::OP_TYPE, cx)
    }
}

impl Arithmetic for PRelu {
    fn apply<T: Num>(x: T, slope: T) -> T {
        if x < T::ZERO {
            x.mul(slope)
        } else {
            x
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opal_plugin_api::testing::{
        assert_close, infer_input, infer_operator, int_attr, run_operator, OwnedTensor, TestHost,
    };

    /// Deterministic values that are exact in f32 and never zero.
    fn values(len: usize, seed: usize) -> Vec<f32> {
        (0..len)
            .map(|i| ((i * 7 + seed * 13) % 23) as f32 * 0.25 + 0.5)
            .collect()
    }

    /// Broadcasting the slow way: map every output index to both inputs.
    fn reference(
        a: &[f32],
        a_shape: &[usize],
        b: &[f32],
        b_shape: &[usize],
        f: fn(f32, f32) -> f32,
    ) -> (Vec<usize>, Vec<f32>) {
        let rank = a_shape.len().max(b_shape.len());
        let pad = |s: &[usize]| {
            let mut p = vec![1; rank - s.len()];
            p.extend_from_slice(s);
            p
        };
        let (pa, pb) = (pad(a_shape), pad(b_shape));
        let out: Vec<usize> = pa
            .iter()
            .zip(&pb)
            .map(|(&x, &y)| if x == 1 { y } else { x })
            .collect();
        let len: usize = out.iter().product();
        let flat = |shape: &[usize], index: &[usize]| {
            shape
                .iter()
                .zip(index)
                .fold(0, |acc, (&d, &i)| acc * d + if d == 1 { 0 } else { i })
        };
        let values = (0..len)
            .map(|mut e| {
                let mut index = vec![0; rank];
                for d in (0..rank).rev() {
                    index[d] = e % out[d];
                    e /= out[d];
                }
                f(a[flat(&pa, &index)], b[flat(&pb, &index)])
            })
            .collect();
        (out, values)
    }

    fn check<O: Operator>(a_shape: &[usize], b_shape: &[usize], f: fn(f32, f32) -> f32) {
        let a = values(a_shape.iter().product(), 1);
        let b = values(b_shape.iter().product(), 2);
        let (shape, expected) = reference(&a, a_shape, &b, b_shape, f);
        for threads in [1, 3] {
            let inputs = [OwnedTensor::f32(a_shape, &a), OwnedTensor::f32(b_shape, &b)];
            let y = TestHost::new()
                .threads(threads)
                .run::<O>(&inputs, &[], 1)
                .unwrap();
            assert_eq!(y[0].shape(), shape, "{a_shape:?} and {b_shape:?}");
            assert_close(y[0].as_slice(), &expected, 1e-6);
        }
    }

    const CASES: &[(&[usize], &[usize])] = &[
        (&[2, 3], &[2, 3]),
        (&[2, 3], &[]),
        (&[1], &[4, 5]),
        (&[2, 3, 4], &[4]),
        (&[2, 3, 4], &[3, 1]),
        (&[2, 1, 4], &[3, 1]),
        (&[5, 1, 1], &[1, 4, 3]),
        (&[1, 3, 1, 2], &[2, 1, 5, 1]),
        (&[7, 1], &[1, 9]),
        (&[0, 3], &[3]),
    ];

    #[test]
    fn all_four_broadcast_like_numpy() {
        for &(a, b) in CASES {
            check::<Add>(a, b, |a, b| a + b);
            check::<Sub>(b, a, |a, b| a - b);
            check::<Mul>(a, b, |a, b| a * b);
            check::<Div>(b, a, |a, b| a / b);
        }
    }

    #[test]
    fn large_broadcasts_split_across_threads() {
        check::<Add>(&[300, 257], &[257], |a, b| a + b);
        check::<Mul>(&[3, 1, 40_000], &[3, 2, 1], |a, b| a * b);
    }

    #[test]
    fn integers_wrap_and_divide_toward_zero() {
        let a = OwnedTensor::new::<i8>(&[4], &[-3, 3, 100, -128]);
        let b = OwnedTensor::new::<i8>(&[4], &[2, -2, 100, -1]);
        let sum = run_operator::<Add>(&[a.clone(), b.clone()], &[], 1).unwrap();
        assert_eq!(sum[0].to_vec::<i8>(), [-1, 1, -56, 127]);
        let quotient = run_operator::<Div>(&[a, b], &[], 1).unwrap();
        assert_eq!(quotient[0].to_vec::<i8>(), [-1, -1, 1, -128]);
    }

    #[test]
    fn mod_follows_the_fmod_attribute() {
        let a = OwnedTensor::new::<i32>(&[3], &[-4, 7, 5]);
        let b = OwnedTensor::new::<i32>(&[3], &[3, -3, 0]);
        let floor = run_operator::<Mod>(&[a.clone(), b.clone()], &[], 1).unwrap();
        assert_eq!(floor[0].to_vec::<i32>(), [2, -2, 0]);
        let trunc = run_operator::<Mod>(&[a, b], &[int_attr("fmod", 1)], 1).unwrap();
        assert_eq!(trunc[0].to_vec::<i32>(), [-1, 1, 0]);
    }

    #[test]
    fn pow_mixes_dtypes_in_the_base_type() {
        let base = OwnedTensor::new::<i32>(&[3], &[1, 2, 3]);
        let exponent = OwnedTensor::f32(&[3], &[4.0, 5.0, 6.0]);
        let y = run_operator::<Pow>(&[base, exponent], &[], 1).unwrap();
        assert_eq!(y[0].to_vec::<i32>(), [1, 32, 729]);
        let base = OwnedTensor::f32(&[2], &[2.0, 9.0]);
        let exponent = OwnedTensor::i64(&[1], &[2]);
        let y = run_operator::<Pow>(&[base, exponent], &[], 1).unwrap();
        assert_eq!(y[0].to_vec::<f32>(), [4.0, 81.0]);
    }

    #[test]
    fn prelu_scales_negatives_by_the_broadcast_slope() {
        let x = OwnedTensor::f32(&[2, 2], &[-1.0, 2.0, -3.0, 4.0]);
        let slope = OwnedTensor::f32(&[2], &[0.5, 0.25]);
        let y = run_operator::<PRelu>(&[x, slope], &[], 1).unwrap();
        assert_eq!(y[0].to_vec::<f32>(), [-0.5, 2.0, -1.5, 4.0]);
    }

    #[test]
    fn inference_explains_bad_shapes_and_keeps_unknown_dims() {
        let error = infer_operator::<Add>(
            &[
                infer_input(DType::F32, &[2, 3]),
                infer_input(DType::F32, &[4]),
            ],
            &[],
            1,
        )
        .unwrap_err();
        assert_eq!(error, "Add: shapes [2,3] and [4] cannot be broadcast");
        let types = infer_operator::<Mul>(
            &[
                infer_input(DType::F32, &[-1, 1, 3]),
                infer_input(DType::F32, &[5, 1]),
            ],
            &[],
            1,
        )
        .unwrap();
        assert_eq!(types[0].shape.as_slice(), [-1, 5, 3]);
        let error = infer_operator::<Div>(
            &[infer_input(DType::F32, &[2]), infer_input(DType::I64, &[2])],
            &[],
            1,
        )
        .unwrap_err();
        assert!(error.contains("input 1 has dtype i64"), "{error}");
    }

    #[test]
    fn compute_refuses_inputs_that_do_not_broadcast() {
        let inputs = [
            OwnedTensor::f32(&[2], &[1.0, 2.0]),
            OwnedTensor::f32(&[3], &[1.0; 3]),
        ];
        assert!(run_operator::<Sub>(&inputs, &[], 1).is_err());
    }
}
