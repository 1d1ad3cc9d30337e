//! Conversions between element types: Cast and CastLike over the numeric types, bool, f16 and
//! bf16 (as numpy's `astype`: integers wrap, floats truncate toward zero, non-zero is true),
//! and the f64 view of any input that mixed-type kernels use.

use crate::{
    check::error,
    elementwise::map,
    half::{decode, encode, widened},
    numeric::{is_half, is_numeric, with_numeric, Num},
};
use opal_plugin_api::prelude::*;

/// The dtypes a cast reads and writes.
fn castable(dtype: DType) -> bool {
    is_numeric(dtype) || dtype == DType::BOOL
}

/// Input `tensor`'s values as f64: its own data when f64, a converted copy in scratch otherwise
/// (numeric, half-float and bool inputs).
pub(crate) fn f64_values<'a>(
    op: &str,
    cx: &KernelContext<'a>,
    tensor: TensorRef<'a>,
) -> KernelResult<&'a [f64]> {
    let dtype = tensor.dtype();
    if dtype == DType::F64 {
        return tensor.as_slice();
    }
    let out = cx.scratch::<f64>(tensor.len())?;
    with_numeric!(dtype, T => {
        for (y, &x) in out.iter_mut().zip(tensor.as_slice::<T>()?) {
            *y = x.to_f64();
        }
    }, _ => match dtype {
        DType::F16 | DType::BF16 => decode(dtype, tensor.bytes(), out),
        DType::BOOL => {
            for (y, &x) in out.iter_mut().zip(tensor.as_slice::<bool>()?) {
                *y = f64::from(u8::from(x));
            }
        }
        _ => return Err(error(op, format_args!("dtype {dtype} is not numeric"))),
    });
    Ok(out)
}

/// One value converted as numpy's `astype` does: floats to floats by rounding, everything else
/// through an integer (so that values out of an integer type's range wrap).
fn convert<S: Num, D: Num>(x: S) -> D {
    if S::IS_FLOAT && D::IS_FLOAT {
        D::from_f64(x.to_f64())
    } else {
        D::from_i128(x.to_i128())
    }
}

/// Converts input `x` into output `y` (same shape) whatever their dtypes.
fn cast_tensor(
    op: &str,
    cx: &KernelContext<'_>,
    x: TensorRef<'_>,
    y: TensorMut<'_>,
) -> KernelResult<()> {
    let (from, to) = (x.dtype(), y.dtype());
    if from == to {
        y.bytes_mut().copy_from_slice(x.bytes());
        return Ok(());
    }
    if is_half(to) {
        let values = f64_values(op, cx, x)?;
        encode(to, values, y.bytes_mut());
        return Ok(());
    }
    if to == DType::BOOL {
        let out = y.as_slice_mut::<bool>()?;
        return with_numeric!(from, S => map(op, cx, x.as_slice::<S>()?, out, |v: S| v != S::ZERO),
            _ => map(op, cx, widened(op, cx, x)?, out, |v: f32| v != 0.0));
    }
    with_numeric!(to, D => {
        let out = y.as_slice_mut::<D>()?;
        if from == DType::BOOL {
            return map(op, cx, x.as_slice::<bool>()?, out, |v| D::from_i128(i128::from(v)));
        }
        with_numeric!(from, S => map(op, cx, x.as_slice::<S>()?, out, convert::<S, D>),
            _ => map(op, cx, widened(op, cx, x)?, out, convert::<f32, D>))
    }, _ => Err(error(op, format_args!("cannot cast to {to}"))))
}

/// The output of a cast of input 0 to `to`.
fn infer_cast(op: &str, cx: &InferContext<'_>, to: DType) -> KernelResult<Vec<OutputType>> {
    let x = cx.input(0)?;
    for (what, dtype) in [("from", x.dtype), ("to", to)] {
        if !castable(dtype) {
            return Err(error(
                op,
                format_args!("casting {what} {dtype} is not supported"),
            ));
        }
    }
    Ok(vec![OutputType::new(to, x.shape.to_vec())])
}

/// The input converted to the dtype of attribute `to`.
pub struct Cast;

impl Cast {
    fn target(attributes: Attributes<'_>) -> KernelResult<DType> {
        let to = attributes.int("to", -1)?;
        i32::try_from(to)
            .ok()
            .filter(|&t| t > 0)
            .map(DType)
            .ok_or_else(|| {
                error(
                    "Cast",
                    format_args!("attribute 'to' is missing or invalid ({to})"),
                )
            })
    }
}

impl Operator for Cast {
    const OP_TYPE: &'static str = "Cast";
    const SINCE_VERSION: i64 = 6;

    fn infer(cx: &InferContext<'_>) -> KernelResult<Vec<OutputType>> {
        infer_cast(Self::OP_TYPE, cx, Self::target(cx.attributes())?)
    }

    fn compute(cx: &mut KernelContext<'_>) -> KernelResult<()> {
        let x = cx.input(0)?;
        let y = cx.output(0)?;
        cast_tensor(Self::OP_TYPE, cx, x, y)
    }
}

/// Input 0 converted to the dtype of input 1.
pub struct CastLike;

impl Operator for CastLike {
    const OP_TYPE: &'static str = "CastLike";
    const SINCE_VERSION: i64 = 15;

    fn infer(cx: &InferContext<'_>) -> KernelResult<Vec<OutputType>> {
        infer_cast(Self::OP_TYPE, cx, cx.input(1)?.dtype)
    }

    fn compute(cx: &mut KernelContext<'_>) -> KernelResult<()> {
        let x = cx.input(0)?;
        let y = cx.output(0)?;
        cast_tensor(Self::OP_TYPE, cx, x, y)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opal_plugin_api::testing::{int_attr, run_operator, OwnedTensor};

    fn cast(x: OwnedTensor, to: DType) -> OwnedTensor {
        run_operator::<Cast>(&[x], &[int_attr("to", i64::from(to.0))], 1)
            .unwrap()
            .remove(0)
    }

    #[test]
    fn numbers_convert_as_numpy_astype() {
        let x = OwnedTensor::f32(&[4], &[-1.7, 2.9, 300.0, 0.0]);
        assert_eq!(cast(x.clone(), DType::I32).to_vec::<i32>(), [-1, 2, 300, 0]);
        assert_eq!(cast(x.clone(), DType::U8).to_vec::<u8>(), [255, 2, 44, 0]);
        assert_eq!(
            cast(x, DType::BOOL).to_vec::<bool>(),
            [true, true, true, false]
        );
        let big = OwnedTensor::i64(&[2], &[1 << 40, -5]);
        assert_eq!(cast(big.clone(), DType::I32).to_vec::<i32>(), [0, -5]);
        assert_eq!(
            cast(big, DType::F64).to_vec::<f64>(),
            [(1u64 << 40) as f64, -5.0]
        );
        let flags = OwnedTensor::new::<bool>(&[2], &[true, false]);
        assert_eq!(cast(flags, DType::F32).to_vec::<f32>(), [1.0, 0.0]);
    }

    #[test]
    fn half_floats_round_trip() {
        let x = OwnedTensor::f32(&[3], &[0.5, -2.25, 1.0e6]);
        let h = cast(x, DType::F16);
        assert_eq!(h.dtype(), DType::F16);
        let back = cast(h, DType::F64).to_vec::<f64>();
        assert_eq!(back, [0.5, -2.25, f64::INFINITY]);
        let b = cast(OwnedTensor::i64(&[2], &[3, -7]), DType::BF16);
        assert_eq!(cast(b, DType::I8).to_vec::<i8>(), [3, -7]);
    }

    #[test]
    fn castlike_takes_the_second_input_dtype() {
        let x = OwnedTensor::new::<u16>(&[2], &[7, 65535]);
        let like = OwnedTensor::new::<i16>(&[1], &[0]);
        let y = run_operator::<CastLike>(&[x, like], &[], 1).unwrap();
        assert_eq!(y[0].to_vec::<i16>(), [7, -1]);
    }
}
