//! ONNX `ConvInteger` (opset 10: u8/i8 convolution with zero points, i32 outputs) and
//! `QLinearConv` (opset 10: the same convolution requantized with scales, plus an i32 bias),
//! as direct loops over any number of spatial dims (up to [`MAX_SPATIAL`]), with groups,
//! strides, dilations, explicit pads and `auto_pad`.

use crate::{
    half::widened,
    quant::{
        check_operand, qlinear_output_dtype, quantize_value, with_quant_int, QuantInt, ZeroPoint,
    },
};
use opal_kernel_support::check::{error, Shape};
use opal_plugin_api::prelude::*;

/// The most spatial dims a convolution here has.
const MAX_SPATIAL: usize = 6;

/// ONNX `ConvInteger`.
pub struct ConvInteger;

/// ONNX `QLinearConv`.
pub struct QLinearConv;

/// Strides, dilations and pads of a convolution, and its output's spatial dims.
#[derive(Clone, Copy, Debug)]
struct Geometry {
    rank: usize,
    strides: [i64; MAX_SPATIAL],
    dilations: [i64; MAX_SPATIAL],
    pads_begin: [i64; MAX_SPATIAL],
    output: [i64; MAX_SPATIAL],
}

impl Geometry {
    /// From input spatial dims `input` and kernel dims `kernel` (-1 unknown).
    fn new(
        op: &str,
        attributes: &Attributes<'_>,
        input: &[i64],
        kernel: &[i64],
    ) -> KernelResult<Self> {
        let rank = input.len();
        if rank == 0 || rank > MAX_SPATIAL || kernel.len() != rank {
            return Err(error(
                op,
                format_args!(
                    "spatial dims {} and kernel {} are not supported",
                    Shape(input),
                    Shape(kernel)
                ),
            ));
        }
        let list = |name: &str, default: i64| -> KernelResult<[i64; MAX_SPATIAL]> {
            let mut out = [default; MAX_SPATIAL];
            if let Some(values) = attributes.ints(name)? {
                if values.len() != rank {
                    return Err(error(
                        op,
                        format_args!("{name} has {} values for {rank} spatial dims", values.len()),
                    ));
                }
                out[..rank].copy_from_slice(values);
            }
            Ok(out)
        };
        let strides = list("strides", 1)?;
        let dilations = list("dilations", 1)?;
        let mut pads_begin = [0i64; MAX_SPATIAL];
        let mut pads_end = [0i64; MAX_SPATIAL];
        if let Some(pads) = attributes.ints("pads")? {
            if pads.len() != 2 * rank {
                return Err(error(
                    op,
                    format_args!("pads has {} values for {rank} spatial dims", pads.len()),
                ));
            }
            pads_begin[..rank].copy_from_slice(&pads[..rank]);
            pads_end[..rank].copy_from_slice(&pads[rank..]);
        }
        if let Some(shape) = attributes.ints("kernel_shape")? {
            if shape.len() != rank || shape.iter().zip(kernel).any(|(&a, &b)| b >= 0 && a != b) {
                return Err(error(
                    op,
                    format_args!("kernel_shape {} differs from the weights'", Shape(shape)),
                ));
            }
        }
        let auto_pad = attributes.string("auto_pad", "NOTSET")?;
        let mut output = [0i64; MAX_SPATIAL];
        for d in 0..rank {
            if strides[d] <= 0 || dilations[d] <= 0 {
                return Err(error(op, "strides and dilations must be positive"));
            }
            let (x, s) = (input[d], strides[d]);
            let extent = (kernel[d] - 1) * dilations[d] + 1;
            if x < 0 || kernel[d] < 0 {
                output[d] = -1;
                continue;
            }
            output[d] = match auto_pad {
                "SAME_UPPER" | "SAME_LOWER" => {
                    let out = (x + s - 1) / s;
                    let total = ((out - 1) * s + extent - x).max(0);
                    pads_begin[d] = if auto_pad == "SAME_UPPER" {
                        total / 2
                    } else {
                        total - total / 2
                    };
                    out
                }
                "VALID" => {
                    pads_begin[d] = 0;
                    (x - extent + s) / s
                }
                "NOTSET" | "" => (x + pads_begin[d] + pads_end[d] - extent) / s + 1,
                other => return Err(error(op, format_args!("auto_pad {other} is not supported"))),
            };
            if output[d] < 0 {
                output[d] = 0;
            }
        }
        Ok(Geometry {
            rank,
            strides,
            dilations,
            pads_begin,
            output,
        })
    }
}

/// The output shape of a convolution of `x` by `w`.
fn infer_shape(op: &str, cx: &InferContext<'_>, x: &[i64], w: &[i64]) -> KernelResult<Vec<i64>> {
    if x.len() < 3 || w.len() != x.len() {
        return Err(error(
            op,
            format_args!(
                "X {} and W {} must have the same rank, at least 3",
                Shape(x),
                Shape(w)
            ),
        ));
    }
    let g = Geometry::new(op, &cx.attributes(), &x[2..], &w[2..])?;
    let mut shape = vec![x[0], w[0]];
    shape.extend_from_slice(&g.output[..g.rank]);
    Ok(shape)
}

/// The i32 convolution of `x` and `w` (zero points removed, `w_zero` per output channel or
/// single), plus `bias`, into `y`.
#[allow(clippy::too_many_arguments)]
fn convolve(
    op: &str,
    attributes: &Attributes<'_>,
    x: TensorRef<'_>,
    x_zero: i64,
    w: TensorRef<'_>,
    w_zero: ZeroPoint<'_>,
    bias: Option<&[i32]>,
    y: &mut [i32],
) -> KernelResult<()> {
    let (xs, ws) = (x.shape(), w.shape());
    if xs.len() < 3 || ws.len() != xs.len() || xs.len() - 2 > MAX_SPATIAL {
        return Err(error(
            op,
            format_args!(
                "X {} and W {} do not fit a convolution",
                Shape(xs),
                Shape(ws)
            ),
        ));
    }
    let rank = xs.len() - 2;
    let mut input = [0i64; MAX_SPATIAL];
    let mut kernel = [0i64; MAX_SPATIAL];
    for d in 0..rank {
        input[d] = xs[d + 2] as i64;
        kernel[d] = ws[d + 2] as i64;
    }
    let g = Geometry::new(op, attributes, &input[..rank], &kernel[..rank])?;
    let group = attributes.int("group", 1)?.max(1) as usize;
    let (channels, out_channels) = (xs[1], ws[0]);
    if channels % group != 0 || out_channels % group != 0 || ws[1] * group != channels {
        return Err(error(
            op,
            format_args!(
                "X {} and W {} do not fit {group} groups",
                Shape(xs),
                Shape(ws)
            ),
        ));
    }
    let w_zero_count = w_zero.len().unwrap_or(1);
    if w_zero_count != 1 && w_zero_count != out_channels {
        return Err(error(
            op,
            "w_zero_point must be a scalar or one per output channel",
        ));
    }
    if bias.is_some_and(|b| b.len() != out_channels) {
        return Err(error(op, "B must have one value per output channel"));
    }
    let x_values = ZeroPoint::new(op, Some(x), x.dtype())?;
    let w_values = ZeroPoint::new(op, Some(w), w.dtype())?;
    let in_group = channels / group;
    let out_group = out_channels / group;
    let in_size: usize = xs[2..].iter().product();
    let kernel_size: usize = ws[2..].iter().product();
    let out_size: usize = g.output[..rank].iter().map(|&d| d as usize).product();
    for (index, y) in y.iter_mut().enumerate() {
        let position = index % out_size.max(1);
        let oc = index / out_size.max(1) % out_channels;
        let n = index / (out_size.max(1) * out_channels);
        let zero = if w_zero.len().is_some() {
            w_zero.get(if w_zero_count == 1 { 0 } else { oc })
        } else {
            0
        };
        let mut out_index = [0i64; MAX_SPATIAL];
        let mut rest = position;
        for d in (0..rank).rev() {
            out_index[d] = (rest % g.output[d] as usize) as i64;
            rest /= g.output[d] as usize;
        }
        let first_channel = oc / out_group * in_group;
        let mut acc = bias.map_or(0, |b| b[oc]);
        for k in 0..kernel_size {
            // The input position this kernel tap reads, if inside.
            let mut rest = k;
            let mut offset = 0usize;
            let mut inside = true;
            let mut stride = 1usize;
            for d in (0..rank).rev() {
                let kd = (rest % ws[d + 2]) as i64;
                rest /= ws[d + 2];
                let at = out_index[d] * g.strides[d] - g.pads_begin[d] + kd * g.dilations[d];
                if at < 0 || at >= input[d] {
                    inside = false;
                    break;
                }
                offset += at as usize * stride;
                stride *= xs[d + 2];
            }
            if !inside {
                continue;
            }
            for c in 0..in_group {
                let xi = (n * channels + first_channel + c) * in_size + offset;
                let wi = (oc * in_group + c) * kernel_size + k;
                acc += ((x_values.get(xi) - x_zero) * (w_values.get(wi) - zero)) as i32;
            }
        }
        *y = acc;
    }
    Ok(())
}

/// The single zero point of input `index`, or 0.
fn scalar_zero(op: &str, cx: &KernelContext<'_>, index: usize, dtype: DType) -> KernelResult<i64> {
    let zero = ZeroPoint::new(op, cx.optional_input(index), dtype)?;
    match zero.len() {
        None => Ok(0),
        Some(1) => Ok(zero.get(0)),
        Some(n) => Err(error(
            op,
            format_args!("input {index} must be a single zero point, it has {n} values"),
        )),
    }
}

impl Operator for ConvInteger {
    const OP_TYPE: &'static str = "ConvInteger";
    const SINCE_VERSION: i64 = 10;

    fn infer(cx: &InferContext<'_>) -> KernelResult<Vec<OutputType>> {
        let (x, w) = (cx.input(0)?, cx.input(1)?);
        check_operand(Self::OP_TYPE, 0, x.dtype)?;
        check_operand(Self::OP_TYPE, 1, w.dtype)?;
        let shape = infer_shape(Self::OP_TYPE, cx, x.shape, w.shape)?;
        Ok(vec![OutputType::new(DType::I32, shape)])
    }

    fn compute(cx: &mut KernelContext<'_>) -> KernelResult<()> {
        let op = Self::OP_TYPE;
        let (x, w) = (cx.input(0)?, cx.input(1)?);
        let x_zero = scalar_zero(op, cx, 2, x.dtype())?;
        let w_zero = ZeroPoint::new(op, cx.optional_input(3), w.dtype())?;
        let attributes = cx.attributes();
        let y = cx.output(0)?.as_slice_mut::<i32>()?;
        convolve(op, &attributes, x, x_zero, w, w_zero, None, y)
    }
}

impl Operator for QLinearConv {
    const OP_TYPE: &'static str = "QLinearConv";
    const SINCE_VERSION: i64 = 10;

    fn infer(cx: &InferContext<'_>) -> KernelResult<Vec<OutputType>> {
        let op = Self::OP_TYPE;
        let (x, w) = (cx.input(0)?, cx.input(3)?);
        let dtype = qlinear_output_dtype(op, cx)?;
        let shape = infer_shape(op, cx, x.shape, w.shape)?;
        Ok(vec![OutputType::new(dtype, shape)])
    }

    fn compute(cx: &mut KernelContext<'_>) -> KernelResult<()> {
        let op = Self::OP_TYPE;
        let (x, w) = (cx.input(0)?, cx.input(3)?);
        let x_zero = scalar_zero(op, cx, 2, x.dtype())?;
        let w_zero = ZeroPoint::new(op, cx.optional_input(5), w.dtype())?;
        let bias = cx
            .optional_input(8)
            .map(|b| b.as_slice::<i32>())
            .transpose()?;
        let attributes = cx.attributes();
        let out = cx.output(0)?;
        let products = cx.scratch::<i32>(out.len())?;
        convolve(op, &attributes, x, x_zero, w, w_zero, bias, products)?;
        let x_scale = widened(op, cx, cx.input(1)?)?;
        let w_scale = widened(op, cx, cx.input(4)?)?;
        let y_scale = widened(op, cx, cx.input(6)?)?;
        let out_channels = w.shape()[0];
        if x_scale.len() != 1
            || y_scale.len() != 1
            || (w_scale.len() != 1 && w_scale.len() != out_channels)
        {
            return Err(error(
                op,
                "x_scale and y_scale must be scalars, w_scale a scalar or one per output channel",
            ));
        }
        let y_zero = scalar_zero(op, cx, 7, out.dtype())?;
        let spatial: usize = out.shape()[2..].iter().product();
        let scales = ConvScales {
            x_scale: x_scale[0],
            w_scale,
            y_scale: y_scale[0],
            y_zero,
            spatial,
            out_channels,
        };
        with_quant_int!(out.dtype(), T => {
            scales.requantize::<T>(products, out.as_slice_mut::<T>()?);
            Ok(())
        }, _ => Err(error(op, format_args!("cannot requantize to {}", out.dtype()))))
    }
}

/// What turns QLinearConv's i32 sums into quantized outputs.
struct ConvScales<'a> {
    x_scale: f32,
    /// One scale, or one per output channel.
    w_scale: &'a [f32],
    y_scale: f32,
    y_zero: i64,
    spatial: usize,
    out_channels: usize,
}

impl ConvScales<'_> {
    fn requantize<T: QuantInt>(&self, products: &[i32], y: &mut [T]) {
        for (e, (y, &p)) in y.iter_mut().zip(products).enumerate() {
            let oc = e / self.spatial.max(1) % self.out_channels.max(1);
            let w_scale = if self.w_scale.len() == 1 {
                self.w_scale[0]
            } else {
                self.w_scale[oc]
            };
            let multiplier = self.x_scale * w_scale / self.y_scale;
            *y = quantize_value::<T>(f64::from(p) * f64::from(multiplier) + self.y_zero as f64);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opal_plugin_api::testing::{ints_attr, run_operator, OwnedTensor};

    #[test]
    fn pads_with_the_zero_point() {
        let x = OwnedTensor::new::<u8>(&[1, 1, 2, 2], &[2, 3, 4, 5]);
        let w = OwnedTensor::new::<u8>(&[1, 1, 1, 1], &[2]);
        let zero = OwnedTensor::new::<u8>(&[], &[1]);
        let pads = [1, 0, 0, 0];
        let y = run_operator::<ConvInteger>(&[x, w, zero], &[ints_attr("pads", &pads)], 1).unwrap();
        assert_eq!(y[0].shape(), [1, 1, 3, 2]);
        assert_eq!(y[0].to_vec::<i32>(), [0, 0, 2, 4, 6, 8]);
    }
}
