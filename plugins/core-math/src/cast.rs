//! Conversions between element types: Cast and CastLike over the numeric types, bool, f16,
//! bf16 and the low-bit types (as numpy's `astype`: integers wrap, floats truncate toward zero,
//! non-zero is true; 8- and 4-bit floats round to nearest even and saturate as the `saturate`
//! attribute says, E8M0 rounds as `round_mode` says), strings to and from numbers
//! (`cast_string`), and the f64 view of any input that mixed-type kernels use.

use crate::{
    cast_string::{cast_strings, castable_with_strings},
    check::error,
    elementwise::map,
    half::{decode, encode, widened},
    numeric::{is_half, is_numeric, with_numeric, Num},
};
use opal_kernel_support::low_bit::{
    self, e8m0_from_f32, int_from_i128, is_low_bit_float, is_low_bit_int, RoundMode,
};
use opal_plugin_api::prelude::*;

/// The dtypes a cast reads and writes.
fn castable(dtype: DType) -> bool {
    is_numeric(dtype) || dtype == DType::BOOL || dtype.is_low_bit()
}

/// How a cast rounds into the low-bit floats: its `saturate` and `round_mode` attributes.
#[derive(Clone, Copy)]
struct Rounding {
    saturate: bool,
    round_mode: RoundMode,
}

impl Rounding {
    fn new(op: &str, attributes: Attributes<'_>) -> KernelResult<Self> {
        let name = attributes.string("round_mode", "up")?;
        let round_mode = RoundMode::from_name(name).ok_or_else(|| {
            error(
                op,
                format_args!("round_mode '{name}' is not one of up, down, nearest"),
            )
        })?;
        Ok(Rounding {
            saturate: attributes.int("saturate", 1)? != 0,
            round_mode,
        })
    }
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
        low if low.is_low_bit() => {
            for (y, &x) in out.iter_mut().zip(tensor.bytes()) {
                *y = f64::from(low_bit::to_f32(low, x));
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
    if from == DType::STRING || to == DType::STRING {
        return cast_strings(op, x, y);
    }
    if from == to {
        y.bytes_mut().copy_from_slice(x.bytes());
        return Ok(());
    }
    if from.is_low_bit() || to.is_low_bit() {
        return cast_low_bit(op, cx, x, y, Rounding::new(op, cx.attributes())?);
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

/// A cast from or to a low-bit type. Every value of every castable type but the 64-bit
/// integers is exact in f64, so the input goes through f64 and is rounded once, into the
/// output; integer outputs of 4 and 2 bits take integer inputs whole, so that they wrap as
/// numpy's do.
fn cast_low_bit(
    op: &str,
    cx: &KernelContext<'_>,
    x: TensorRef<'_>,
    y: TensorMut<'_>,
    rounding: Rounding,
) -> KernelResult<()> {
    let (from, to) = (x.dtype(), y.dtype());
    if is_low_bit_int(to) {
        let out = y.bytes_mut();
        return with_numeric!(from, S => map(op, cx, x.as_slice::<S>()?, out, |v: S| int_from_i128(to, v.to_i128())),
            _ => map(op, cx, f64_values(op, cx, x)?, out, |v| int_from_i128(to, v as i128)));
    }
    let values = f64_values(op, cx, x)?;
    let Rounding {
        saturate,
        round_mode,
    } = rounding;
    match to {
        DType::F8E8M0 => map(op, cx, values, y.bytes_mut(), |v| {
            e8m0_from_f32(v as f32, saturate, round_mode)
        }),
        to if is_low_bit_float(to) => map(op, cx, values, y.bytes_mut(), |v| {
            low_bit::from_f64(to, v, saturate)
        }),
        to if is_half(to) => {
            encode(to, values, y.bytes_mut());
            Ok(())
        }
        DType::BOOL => map(op, cx, values, y.as_slice_mut::<bool>()?, |v| v != 0.0),
        _ => with_numeric!(to, D => map(op, cx, values, y.as_slice_mut::<D>()?, |v| {
            if D::IS_FLOAT { D::from_f64(v) } else { D::from_i128(v as i128) }
        }), _ => Err(error(op, format_args!("cannot cast {from} to {to}")))),
    }
}

/// The output of a cast of input 0 to `to`.
fn infer_cast(op: &str, cx: &InferContext<'_>, to: DType) -> KernelResult<Vec<OutputType>> {
    let x = cx.input(0)?;
    if x.dtype == DType::STRING || to == DType::STRING {
        for dtype in [x.dtype, to] {
            if !castable_with_strings(dtype) {
                return Err(error(
                    op,
                    format_args!("casting between {dtype} and strings is not supported"),
                ));
            }
        }
        return Ok(vec![OutputType::new(to, x.shape.to_vec())]);
    }
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
    const TAKES_STRINGS: bool = true;

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
    const TAKES_STRINGS: bool = true;

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
    use opal_plugin_api::testing::{int_attr, run_operator, string_attr, OwnedTensor};

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

    fn cast_with(x: OwnedTensor, to: DType, saturate: i64) -> OwnedTensor {
        let attributes = [
            int_attr("to", i64::from(to.0)),
            int_attr("saturate", saturate),
        ];
        run_operator::<Cast>(&[x], &attributes, 1)
            .unwrap()
            .remove(0)
    }

    #[test]
    fn float8_rounds_to_nearest_even_and_saturates_as_asked() {
        let x = OwnedTensor::f32(&[5], &[448.0, 1.0625, 1e6, f32::NEG_INFINITY, f32::NAN]);
        let y = cast_with(x.clone(), DType::F8E4M3FN, 1);
        assert_eq!(
            (y.dtype(), y.bytes()),
            (DType::F8E4M3FN, &[0x7e, 0x38, 0x7e, 0xfe, 0x7f][..])
        );
        let y = cast_with(x.clone(), DType::F8E4M3FN, 0);
        assert_eq!(y.bytes(), [0x7e, 0x38, 0x7f, 0xff, 0x7f]);
        let y = cast_with(x, DType::F8E5M2, 0);
        assert_eq!(y.bytes(), [0x5f, 0x3c, 0x7c, 0xfc, 0x7e]);
        let back = cast(y, DType::F32).to_vec::<f32>();
        assert_eq!(back[..4], [448.0, 1.0, f32::INFINITY, f32::NEG_INFINITY]);
        assert!(back[4].is_nan());
    }

    #[test]
    fn small_integers_wrap_and_widen_with_their_sign() {
        let x = OwnedTensor::f32(&[4], &[-9.0, 7.9, 8.0, -1.5]);
        let y = cast(x, DType::I4);
        assert_eq!(
            y.bytes().iter().map(|&b| b as i8).collect::<Vec<_>>(),
            [7, 7, -8, -1]
        );
        assert_eq!(cast(y, DType::I8).to_vec::<i8>(), [7, 7, -8, -1]);
        let u2 = cast(OwnedTensor::new::<i16>(&[3], &[-1, 2, 5]), DType::U2);
        assert_eq!(u2.bytes(), [3, 2, 1]);
        let halves = cast(u2, DType::F16);
        assert_eq!(cast(halves, DType::F32).to_vec::<f32>(), [3.0, 2.0, 1.0]);
    }

    #[test]
    fn e8m0_takes_the_round_mode() {
        let x = OwnedTensor::f32(&[3], &[1.1, 4.0, 0.124]);
        let to = int_attr("to", i64::from(DType::F8E8M0.0));
        let y = run_operator::<Cast>(std::slice::from_ref(&x), &[to], 1)
            .unwrap()
            .remove(0);
        assert_eq!(y.bytes(), [128, 129, 124]);
        let down = string_attr("round_mode", "down");
        let y = run_operator::<Cast>(std::slice::from_ref(&x), &[to, down], 1)
            .unwrap()
            .remove(0);
        assert_eq!(y.bytes(), [127, 129, 123]);
        assert_eq!(cast(y, DType::F32).to_vec::<f32>(), [1.0, 4.0, 0.0625]);
        let sideways = string_attr("round_mode", "sideways");
        let err = run_operator::<Cast>(&[x], &[to, sideways], 1).unwrap_err();
        assert!(err.to_string().contains("round_mode 'sideways'"), "{err}");
    }

    #[test]
    fn castlike_takes_the_second_input_dtype() {
        let x = OwnedTensor::new::<u16>(&[2], &[7, 65535]);
        let like = OwnedTensor::new::<i16>(&[1], &[0]);
        let y = run_operator::<CastLike>(&[x, like], &[], 1).unwrap();
        assert_eq!(y[0].to_vec::<i16>(), [7, -1]);
    }

    #[test]
    fn castlike_to_a_low_bit_type_reads_saturate() {
        let x = OwnedTensor::f32(&[2], &[1e6, -0.5]);
        let like = OwnedTensor::from_bytes(DType::F8E5M2FNUZ, &[1], &[0]);
        let y = run_operator::<CastLike>(&[x.clone(), like.clone()], &[], 1).unwrap();
        assert_eq!(
            (y[0].dtype(), y[0].bytes()),
            (DType::F8E5M2FNUZ, &[0x7f, 0xbc][..])
        );
        let y = run_operator::<CastLike>(&[x, like], &[int_attr("saturate", 0)], 1).unwrap();
        assert_eq!(y[0].bytes(), [0x80, 0xbc]);
    }

    #[test]
    fn strings_cast_to_numbers_and_back() {
        let x = OwnedTensor::f32(&[4], &[1.5, 0.00001, f32::NAN, -3.0]);
        assert_eq!(
            cast(x, DType::STRING).to_strings(),
            ["1.5", "1e-05", "nan", "-3.0"]
        );
        let flags = OwnedTensor::new::<bool>(&[2], &[true, false]);
        assert_eq!(cast(flags, DType::STRING).to_strings(), ["True", "False"]);
        let texts = OwnedTensor::strings(&[3], &["2.5", "1E8", " -7 "]);
        assert_eq!(cast(texts, DType::F64).to_vec::<f64>(), [2.5, 1e8, -7.0]);
        let ints = OwnedTensor::strings(&[2], &["42", "-1"]);
        assert_eq!(cast(ints, DType::I64).to_vec::<i64>(), [42, -1]);
        let bad = OwnedTensor::strings(&[2], &["1", "one"]);
        let error = run_operator::<Cast>(&[bad], &[int_attr("to", 6)], 1).unwrap_err();
        assert_eq!(
            error,
            "Cast: element 1 (\"one\") is not a number of type i32"
        );
    }
}
