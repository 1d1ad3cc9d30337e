//! ONNX `QuantizeLinear`, `DequantizeLinear` (opsets 10 to 28; per tensor, per axis and per
//! block, to and from u8, i8, u16, i16, the 4- and 2-bit integers and the 8- and 4-bit floats)
//! and `DynamicQuantizeLinear` (opset 11, to u8).

use crate::{
    half::{is_float, round_to, widened, FloatOut},
    quant::{
        is_quant_int, is_quant_low_bit, quantize_to_range, quantize_value, with_quant_int,
        QuantInt, Spread, ZeroPoint,
    },
};
use opal_kernel_support::{check::error, low_bit};
use opal_plugin_api::prelude::*;

/// ONNX `QuantizeLinear`: `y = saturate(round(x / scale) + zero_point)`.
pub struct QuantizeLinear;

/// ONNX `DequantizeLinear`: `y = (x - zero_point) * scale`.
pub struct DequantizeLinear;

/// ONNX `DynamicQuantizeLinear`: u8 quantization with a scale and zero point computed from the
/// input's range (which always includes 0).
pub struct DynamicQuantizeLinear;

const QUANTIZE: &str = "QuantizeLinear";
const DEQUANTIZE: &str = "DequantizeLinear";
const DYNAMIC: &str = "DynamicQuantizeLinear";

/// The quantized dtype: the zero point's, else the `output_dtype` attribute's, else u8.
fn quantized_dtype(zero_point: Option<DType>, attributes: &Attributes<'_>) -> KernelResult<DType> {
    let requested = attributes.int("output_dtype", 0)?;
    let dtype = match (zero_point, requested) {
        (Some(z), 0) => z,
        (Some(z), r) if DType(r as i32) == z => z,
        (Some(z), r) => {
            return Err(error(
                QUANTIZE,
                format_args!("output_dtype {r} differs from the zero point's dtype {z}"),
            ))
        }
        (None, 0) => DType::U8,
        (None, r) => DType(r as i32),
    };
    if !is_quant_int(dtype) && !is_quant_low_bit(dtype) {
        return Err(error(
            QUANTIZE,
            format_args!(
                "quantizing to {dtype} is not supported (only u8, i8, u16, i16, u4, i4, u2, i2 \
                 and the 8- and 4-bit floats)"
            ),
        ));
    }
    Ok(dtype)
}

/// The dtype `x / scale` is computed in: the `precision` attribute's, else numpy's promotion
/// of the two.
fn division_dtype(x: DType, scale: DType, attributes: &Attributes<'_>) -> KernelResult<DType> {
    Ok(match attributes.int("precision", 0)? {
        0 if x == scale => x,
        0 => DType::F32,
        p => DType(p as i32),
    })
}

impl Operator for QuantizeLinear {
    const OP_TYPE: &'static str = "QuantizeLinear";
    const SINCE_VERSION: i64 = 10;
    const UNTIL_VERSION: i64 = 28;

    fn infer(cx: &InferContext<'_>) -> KernelResult<Vec<OutputType>> {
        let x = cx.input(0)?;
        let scale = cx.input(1)?;
        if !is_float(x.dtype) || !is_float(scale.dtype) {
            return Err(error(
                QUANTIZE,
                format_args!(
                    "x ({}) and scale ({}) must be f32, f16 or bf16",
                    x.dtype, scale.dtype
                ),
            ));
        }
        let zero_point = cx.optional_input(2)?.map(|z| z.dtype);
        let dtype = quantized_dtype(zero_point, &cx.attributes())?;
        Ok(vec![OutputType::new(dtype, x.shape.to_vec())])
    }

    fn compute(cx: &mut KernelContext<'_>) -> KernelResult<()> {
        let x = cx.input(0)?;
        let scale = cx.input(1)?;
        let attributes = cx.attributes();
        let spread = Spread::new(
            QUANTIZE,
            x.shape(),
            scale.shape(),
            attributes.int("axis", 1)?,
            attributes.int("block_size", 0)?,
        )?;
        let division = division_dtype(x.dtype(), scale.dtype(), &attributes)?;
        let out = cx.output(0)?;
        let zero_point = ZeroPoint::new(QUANTIZE, cx.optional_input(2), out.dtype())?;
        if zero_point.len().is_some_and(|n| n != scale.len()) {
            return Err(error(
                QUANTIZE,
                "the zero point and the scale have different sizes",
            ));
        }
        let (values, scales) = (widened(QUANTIZE, cx, x)?, widened(QUANTIZE, cx, scale)?);
        if is_quant_low_bit(out.dtype()) {
            let to = LowBitTarget {
                dtype: out.dtype(),
                saturate: attributes.int("saturate", 1)? != 0,
            };
            quantize_low_bit(
                values,
                scales,
                zero_point,
                spread,
                division,
                to,
                out.bytes_mut(),
            );
            return Ok(());
        }
        with_quant_int!(out.dtype(), T => {
            quantize::<T>(values, scales, zero_point, spread, division, out.as_slice_mut::<T>()?);
            Ok(())
        }, _ => Err(error(QUANTIZE, format_args!("cannot quantize to {}", out.dtype()))))
    }
}

/// `x / scale` computed in `division`'s precision.
fn quotient(x: f32, scale: f32, division: DType) -> f64 {
    if division == DType::F64 {
        f64::from(x) / f64::from(scale)
    } else {
        f64::from(round_to(division, x / scale))
    }
}

fn quantize<T: QuantInt>(
    x: &[f32],
    scales: &[f32],
    zero_point: ZeroPoint<'_>,
    spread: Spread,
    division: DType,
    y: &mut [T],
) {
    for (e, (y, &x)) in y.iter_mut().zip(x).enumerate() {
        let s = spread.index(e);
        let q = quotient(x, scales[s], division);
        *y = quantize_value::<T>(q.round_ties_even() + zero_point.get(s) as f64);
    }
}

/// A low-bit quantized type and the `saturate` attribute (which only the 8-bit floats read).
#[derive(Clone, Copy)]
struct LowBitTarget {
    dtype: DType,
    saturate: bool,
}

/// Quantizes into a low-bit type, a byte per element. Integers saturate to their range as the
/// wider ones do. The 8-bit floats round `x / scale` and leave the zero point out, and float4
/// adds it first (in f32), as ONNX's reference does: the zero point of a float type is meant
/// to be zero, and this keeps the sign of a zero quotient where the reference keeps it.
fn quantize_low_bit(
    x: &[f32],
    scales: &[f32],
    zero_point: ZeroPoint<'_>,
    spread: Spread,
    division: DType,
    to: LowBitTarget,
    y: &mut [u8],
) {
    let range = low_bit::int_range(to.dtype);
    for (e, (y, &x)) in y.iter_mut().zip(x).enumerate() {
        let s = spread.index(e);
        let q = quotient(x, scales[s], division);
        *y = match range {
            // The i64's low byte is the value's sign-extended byte.
            Some((lowest, highest)) => quantize_to_range(
                q.round_ties_even() + zero_point.get(s) as f64,
                lowest,
                highest,
            ) as u8,
            None if to.dtype == DType::F4E2M1 => {
                let shifted = q as f32 + zero_point.value(s);
                low_bit::from_f64(to.dtype, f64::from(shifted), true)
            }
            None => low_bit::from_f64(to.dtype, q, to.saturate),
        };
    }
}

impl Operator for DequantizeLinear {
    const OP_TYPE: &'static str = "DequantizeLinear";
    const SINCE_VERSION: i64 = 10;
    const UNTIL_VERSION: i64 = 28;

    fn infer(cx: &InferContext<'_>) -> KernelResult<Vec<OutputType>> {
        let x = cx.input(0)?;
        let scale = cx.input(1)?;
        if !is_quant_int(x.dtype) && !is_quant_low_bit(x.dtype) && x.dtype != DType::I32 {
            return Err(error(
                DEQUANTIZE,
                format_args!(
                    "dequantizing {} is not supported (only u8, i8, u16, i16, i32, u4, i4, u2, \
                     i2 and the 8- and 4-bit floats)",
                    x.dtype
                ),
            ));
        }
        if !is_float(scale.dtype) {
            return Err(error(
                DEQUANTIZE,
                format_args!("scale has dtype {}, expected f32, f16 or bf16", scale.dtype),
            ));
        }
        let dtype = match cx.attributes().int("output_dtype", 0)? {
            0 => scale.dtype,
            d if is_float(DType(d as i32)) => DType(d as i32),
            d => {
                return Err(error(
                    DEQUANTIZE,
                    format_args!("output_dtype {d} is not f32, f16 or bf16"),
                ))
            }
        };
        Ok(vec![OutputType::new(dtype, x.shape.to_vec())])
    }

    fn compute(cx: &mut KernelContext<'_>) -> KernelResult<()> {
        let x = cx.input(0)?;
        let scale = cx.input(1)?;
        let attributes = cx.attributes();
        let spread = Spread::new(
            DEQUANTIZE,
            x.shape(),
            scale.shape(),
            attributes.int("axis", 1)?,
            attributes.int("block_size", 0)?,
        )?;
        let zero_point = if x.dtype() == DType::I32 {
            if cx.optional_input(2).is_some() {
                return Err(error(DEQUANTIZE, "i32 inputs take no zero point"));
            }
            ZeroPoint::None
        } else {
            ZeroPoint::new(DEQUANTIZE, cx.optional_input(2), x.dtype())?
        };
        if zero_point.len().is_some_and(|n| n != scale.len()) {
            return Err(error(
                DEQUANTIZE,
                "the zero point and the scale have different sizes",
            ));
        }
        let scales = widened(DEQUANTIZE, cx, scale)?;
        let out_tensor = cx.output(0)?;
        let out = FloatOut::new(DEQUANTIZE, cx, out_tensor)?;
        if x.dtype() == DType::I32 {
            dequantize::<i32>(x.as_slice()?, scales, zero_point, spread, out.values);
        } else if is_quant_low_bit(x.dtype()) {
            dequantize_low_bit(x.dtype(), x.bytes(), scales, zero_point, spread, out.values);
        } else {
            with_quant_int!(x.dtype(), T => {
                dequantize::<T>(x.as_slice()?, scales, zero_point, spread, out.values)
            }, _ => return Err(error(DEQUANTIZE, format_args!("cannot dequantize {}", x.dtype()))));
        }
        out.finish();
        Ok(())
    }
}

fn dequantize<T: QuantInt>(
    x: &[T],
    scales: &[f32],
    zero_point: ZeroPoint<'_>,
    spread: Spread,
    y: &mut [f32],
) {
    let has_zero_point = zero_point.len().is_some();
    for (e, (y, &x)) in y.iter_mut().zip(x).enumerate() {
        let s = spread.index(e);
        let zero = if has_zero_point {
            zero_point.get(s) as f32
        } else {
            0.0
        };
        *y = (x.to_i64() as f32 - zero) * scales[s];
    }
}

/// Dequantizes a low-bit type, a byte per element: `(x - zero_point) * scale` in f32, which
/// holds every value of these types exactly.
fn dequantize_low_bit(
    dtype: DType,
    x: &[u8],
    scales: &[f32],
    zero_point: ZeroPoint<'_>,
    spread: Spread,
    y: &mut [f32],
) {
    for (e, (y, &x)) in y.iter_mut().zip(x).enumerate() {
        let s = spread.index(e);
        *y = (low_bit::to_f32(dtype, x) - zero_point.value(s)) * scales[s];
    }
}

impl Operator for DynamicQuantizeLinear {
    const OP_TYPE: &'static str = "DynamicQuantizeLinear";
    const SINCE_VERSION: i64 = 11;

    fn infer(cx: &InferContext<'_>) -> KernelResult<Vec<OutputType>> {
        let x = cx.input(0)?;
        if x.dtype != DType::F32 {
            return Err(error(
                DYNAMIC,
                format_args!("x has dtype {}, expected f32", x.dtype),
            ));
        }
        Ok(vec![
            OutputType::new(DType::U8, x.shape.to_vec()),
            OutputType::new(DType::F32, vec![]),
            OutputType::new(DType::U8, vec![]),
        ]
        .into_iter()
        .take(cx.output_count())
        .collect())
    }

    fn compute(cx: &mut KernelContext<'_>) -> KernelResult<()> {
        let x = cx.input(0)?.f32()?;
        let max = x.iter().fold(0.0f32, |m, &v| m.max(v));
        let min = x.iter().fold(0.0f32, |m, &v| m.min(v));
        let range = if max == min { 1.0 } else { max - min };
        let scale = range / 255.0;
        let zero_point = (0.0 - min / scale).clamp(0.0, 255.0).round_ties_even();
        let y = cx.output(0)?.as_slice_mut::<u8>()?;
        for (y, &x) in y.iter_mut().zip(x) {
            *y = quantize_value::<u8>(f64::from((x / scale).round_ties_even() + zero_point));
        }
        if cx.output_count() > 1 {
            cx.output(1)?.f32_mut()?.fill(scale);
        }
        if cx.output_count() > 2 {
            cx.output(2)?.as_slice_mut::<u8>()?.fill(zero_point as u8);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opal_plugin_api::testing::{int_attr, run_operator, OwnedTensor};

    #[test]
    fn quantizes_and_dequantizes_per_tensor() {
        let x = OwnedTensor::f32(&[4], &[0.0, 1.0, 2.5, 1000.0]);
        let scale = OwnedTensor::f32(&[], &[0.5]);
        let zero = OwnedTensor::new::<u8>(&[], &[10]);
        let y = run_operator::<QuantizeLinear>(&[x, scale.clone(), zero.clone()], &[], 1).unwrap();
        assert_eq!(y[0].to_vec::<u8>(), [10, 12, 15, 255]);
        let back = run_operator::<DequantizeLinear>(&[y[0].clone(), scale, zero], &[], 1).unwrap();
        assert_eq!(back[0].to_vec::<f32>(), [0.0, 1.0, 2.5, 122.5]);
    }

    #[test]
    fn quantizes_to_int4_per_axis_saturating_to_its_range() {
        let x = OwnedTensor::f32(&[2, 3], &[0.0, 2.5, 100.0, -100.0, 3.0, -2.0]);
        let scale = OwnedTensor::f32(&[2], &[1.0, 2.0]);
        let zero = OwnedTensor::from_bytes(DType::I4, &[2], &[1, 0xff]);
        let axis = [int_attr("axis", 0)];
        let y = run_operator::<QuantizeLinear>(&[x, scale.clone(), zero.clone()], &axis, 1)
            .unwrap()
            .remove(0);
        assert_eq!(y.dtype(), DType::I4);
        let bytes: Vec<i8> = y.bytes().iter().map(|&b| b as i8).collect();
        assert_eq!(bytes, [1, 3, 7, -8, 1, -2]);
        let back = run_operator::<DequantizeLinear>(&[y, scale, zero], &axis, 1).unwrap();
        assert_eq!(back[0].to_vec::<f32>(), [0.0, 2.0, 6.0, -14.0, 4.0, -2.0]);
    }

    #[test]
    fn quantizes_to_float8_saturating_unless_told_not_to() {
        let x = OwnedTensor::f32(&[3], &[1.0, 1000.0, -0.0]);
        let scale = OwnedTensor::f32(&[], &[2.0]);
        let zero = OwnedTensor::from_bytes(DType::F8E4M3FN, &[], &[0]);
        let inputs = [x, scale.clone(), zero.clone()];
        let y = run_operator::<QuantizeLinear>(&inputs, &[], 1)
            .unwrap()
            .remove(0);
        assert_eq!(y.bytes(), [0x30, 0x7e, 0x80]);
        let unsaturated = run_operator::<QuantizeLinear>(&inputs, &[int_attr("saturate", 0)], 1);
        assert_eq!(unsaturated.unwrap()[0].bytes(), [0x30, 0x7f, 0x80]);
        let back = run_operator::<DequantizeLinear>(&[y, scale, zero], &[], 1).unwrap();
        assert_eq!(back[0].to_vec::<f32>(), [1.0, 896.0, 0.0]);
    }

    #[test]
    fn dynamic_quantization_covers_zero() {
        let x = OwnedTensor::f32(&[3], &[1.0, 2.0, 2.55]);
        let y = run_operator::<DynamicQuantizeLinear>(&[x], &[], 3).unwrap();
        assert_eq!(y[0].to_vec::<u8>(), [100, 200, 255]);
        assert_eq!(y[2].to_vec::<u8>(), [0]);
    }
}
