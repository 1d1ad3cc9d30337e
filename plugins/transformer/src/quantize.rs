//! ONNX `QuantizeLinear`, `DequantizeLinear` (opsets 10 to 28; per tensor, per axis and per
//! block, to and from u8, i8, u16 and i16) and `DynamicQuantizeLinear` (opset 11, to u8).

use crate::{
    half::{is_float, round_to, widened, FloatOut},
    quant::{is_quant_int, quantize_value, with_quant_int, QuantInt, Spread, ZeroPoint},
};
use opal_kernel_support::check::error;
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
    if !is_quant_int(dtype) {
        return Err(error(
            QUANTIZE,
            format_args!("quantizing to {dtype} is not supported (only u8, i8, u16, i16)"),
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
        with_quant_int!(out.dtype(), T => {
            quantize::<T>(values, scales, zero_point, spread, division, out.as_slice_mut::<T>()?);
            Ok(())
        }, _ => Err(error(QUANTIZE, format_args!("cannot quantize to {}", out.dtype()))))
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
    let zero_point_of = |s: usize| {
        if zero_point.len().is_some() {
            zero_point.get(s)
        } else {
            0
        }
    };
    for (e, (y, &x)) in y.iter_mut().zip(x).enumerate() {
        let s = spread.index(e);
        let quotient = if division == DType::F64 {
            f64::from(x) / f64::from(scales[s])
        } else {
            f64::from(round_to(division, x / scales[s]))
        };
        *y = quantize_value::<T>(quotient.round_ties_even() + zero_point_of(s) as f64);
    }
}

impl Operator for DequantizeLinear {
    const OP_TYPE: &'static str = "DequantizeLinear";
    const SINCE_VERSION: i64 = 10;
    const UNTIL_VERSION: i64 = 28;

    fn infer(cx: &InferContext<'_>) -> KernelResult<Vec<OutputType>> {
        let x = cx.input(0)?;
        let scale = cx.input(1)?;
        if !is_quant_int(x.dtype) && x.dtype != DType::I32 {
            return Err(error(
                DEQUANTIZE,
                format_args!(
                    "dequantizing {} is not supported (only u8, i8, u16, i16, i32)",
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
    use opal_plugin_api::testing::{run_operator, OwnedTensor};

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
    fn dynamic_quantization_covers_zero() {
        let x = OwnedTensor::f32(&[3], &[1.0, 2.0, 2.55]);
        let y = run_operator::<DynamicQuantizeLinear>(&[x], &[], 3).unwrap();
        assert_eq!(y[0].to_vec::<u8>(), [100, 200, 255]);
        assert_eq!(y[2].to_vec::<u8>(), [0]);
    }
}
