//! ConvTranspose over 1 to 3 spatial axes with strides, dilations, groups, pads or auto_pad,
//! output_padding and output_shape: per image and group, `col = W_gᵀ · X_g` on [`sgemm`] (in
//! tiles of whole input rows), then col2im scatters each column into the output.

use crate::{
    float::{expect_float, input_f32, optional_input_f32, output_f32},
    window::{valid_outputs, AutoPad, SPATIAL},
};
use opal_kernel_support::{
    check::{error, Shape},
    parallel::for_each_chunk,
    sgemm::{sgemm, single_batch, Operand, Product},
};
use opal_plugin_api::prelude::*;

/// The most f32 values a col tile holds (16 MiB).
const TILE_BUDGET: usize = 1 << 22;
/// Output elements below which col2im runs on one thread.
const GRAIN: usize = 1 << 14;

/// ConvTranspose of every opset (1, 11, 22).
pub struct ConvTranspose;

const OP: &str = "ConvTranspose";

/// One spatial axis: output position of input `i` and tap `k` is `i * stride + k * dilation -
/// pad_begin`.
#[derive(Clone, Copy, Debug)]
struct Axis {
    input: usize,
    output: usize,
    kernel: usize,
    stride: usize,
    dilation: usize,
    pad_begin: isize,
}

impl Axis {
    const UNIT: Axis = Axis {
        input: 1,
        output: 1,
        kernel: 1,
        stride: 1,
        dilation: 1,
        pad_begin: 0,
    };
}

/// An attribute list of one value per spatial axis (or `default` when absent).
fn per_axis(
    op: &str,
    attributes: &Attributes<'_>,
    name: &str,
    dims: usize,
    default: i64,
    minimum: i64,
) -> KernelResult<[i64; SPATIAL]> {
    let mut values = [default; SPATIAL];
    if let Some(list) = attributes.ints(name)? {
        if list.len() != dims || list.iter().any(|&v| v < minimum) {
            return Err(error(
                op,
                format_args!(
                    "'{name}' {} must hold {dims} values of at least {minimum}",
                    Shape(list)
                ),
            ));
        }
        values[..dims].copy_from_slice(list);
    }
    Ok(values)
}

/// `(output, pad_begin)` of each spatial axis from the input's spatial dims (-1 unknown) and the
/// kernel's, following the ONNX definition.
fn resolve(
    attributes: &Attributes<'_>,
    input: &[i64],
    kernel: &[i64],
) -> KernelResult<[(i64, i64); SPATIAL]> {
    let dims = input.len();
    if dims == 0 || dims > SPATIAL {
        return Err(error(
            OP,
            format_args!("{dims} spatial axes; 1 to {SPATIAL} are supported"),
        ));
    }
    let strides = per_axis(OP, attributes, "strides", dims, 1, 1)?;
    let dilations = per_axis(OP, attributes, "dilations", dims, 1, 1)?;
    let output_padding = per_axis(OP, attributes, "output_padding", dims, 0, 0)?;
    let auto_pad = AutoPad::read(OP, attributes)?;
    let pads = attributes.ints("pads")?;
    if pads.is_some_and(|p| p.len() != 2 * dims) {
        return Err(error(
            OP,
            format_args!("'pads' must hold {} values", 2 * dims),
        ));
    }
    let output_shape = attributes
        .ints("output_shape")?
        .map(|s| &s[s.len().saturating_sub(dims)..]);
    if output_shape.is_some_and(|s| s.len() != dims) {
        return Err(error(
            OP,
            format_args!("'output_shape' must hold {dims} values"),
        ));
    }
    let mut result = [(1, 0); SPATIAL];
    for axis in 0..dims {
        let (i, k, s, d) = (input[axis], kernel[axis], strides[axis], dilations[axis]);
        if i < 0 {
            result[axis] = (output_shape.map_or(-1, |o| o[axis]), 0);
            continue;
        }
        let full = s * (i - 1) + output_padding[axis] + (k - 1) * d + 1;
        let split = |total: i64| {
            if auto_pad == AutoPad::SameUpper {
                total.div_euclid(2)
            } else {
                total - total.div_euclid(2)
            }
        };
        result[axis] = match (output_shape, pads) {
            (Some(shape), Some(pads)) if auto_pad == AutoPad::NotSet => (shape[axis], pads[axis]),
            (Some(shape), _) => (shape[axis], split(full - shape[axis])),
            (None, _) if matches!(auto_pad, AutoPad::SameUpper | AutoPad::SameLower) => {
                (i * s, split(full - i * s))
            }
            (None, Some(pads)) => (full - pads[axis] - pads[axis + dims], pads[axis]),
            (None, None) => (full, 0),
        };
        if result[axis].0 < 0 {
            return Err(error(
                OP,
                format_args!("spatial axis {axis} has a negative output size"),
            ));
        }
    }
    Ok(result)
}

impl Operator for ConvTranspose {
    const OP_TYPE: &'static str = OP;

    fn infer(cx: &InferContext<'_>) -> KernelResult<Vec<OutputType>> {
        let (x, w) = (cx.input(0)?, cx.input(1)?);
        expect_float(OP, 0, &x)?;
        if x.shape.len() < 3 || w.shape.len() != x.shape.len() || w.dtype != x.dtype {
            return Err(error(
                OP,
                format_args!(
                    "X {} {} and W {} {} must have one dtype and the same rank, at least 3",
                    x.dtype,
                    Shape(x.shape),
                    w.dtype,
                    Shape(w.shape)
                ),
            ));
        }
        let group = cx.attributes().int("group", 1)?;
        if group < 1 || (x.shape[1] >= 0 && w.shape[0] >= 0 && x.shape[1] != w.shape[0]) {
            return Err(error(
                OP,
                format_args!(
                    "X {} and W {} disagree on input channels",
                    Shape(x.shape),
                    Shape(w.shape)
                ),
            ));
        }
        let channels = if w.shape[1] < 0 {
            -1
        } else {
            w.shape[1] * group
        };
        let mut shape = vec![x.shape[0], channels];
        if w.shape[2..].iter().any(|&k| k < 0) {
            shape.resize(x.shape.len(), -1);
        } else {
            let dims = x.shape.len() - 2;
            let axes = resolve(&cx.attributes(), &x.shape[2..], &w.shape[2..])?;
            shape.extend(axes[..dims].iter().map(|a| a.0));
        }
        Ok(vec![OutputType::new(x.dtype, shape)])
    }

    fn compute(cx: &mut KernelContext<'_>) -> KernelResult<()> {
        let (x_shape, w_shape) = (cx.input(0)?.shape(), cx.input(1)?.shape());
        let dims = x_shape.len() - 2;
        let mut input = [0i64; SPATIAL];
        let mut kernel = [0i64; SPATIAL];
        for axis in 0..dims {
            input[axis] = x_shape[axis + 2] as i64;
            kernel[axis] = w_shape[axis + 2] as i64;
        }
        let resolved = resolve(&cx.attributes(), &input[..dims], &kernel[..dims])?;
        let strides = per_axis(OP, &cx.attributes(), "strides", dims, 1, 1)?;
        let dilations = per_axis(OP, &cx.attributes(), "dilations", dims, 1, 1)?;
        let mut axes = [Axis::UNIT; SPATIAL];
        for axis in 0..dims {
            axes[SPATIAL - dims + axis] = Axis {
                input: x_shape[axis + 2],
                output: resolved[axis].0 as usize,
                kernel: w_shape[axis + 2],
                stride: strides[axis] as usize,
                dilation: dilations[axis] as usize,
                pad_begin: resolved[axis].1 as isize,
            };
        }
        let group = cx.attributes().int("group", 1)?.max(1) as usize;
        let problem = Problem {
            batch: x_shape[0],
            in_channels: x_shape[1],
            out_per_group: w_shape[1],
            group,
            axes,
        };
        let x = input_f32(cx, OP, 0)?;
        let w = input_f32(cx, OP, 1)?;
        let bias = optional_input_f32(cx, OP, 2)?;
        let (y, sink) = output_f32(cx, 0)?;
        if bias.is_some_and(|b| b.len() != group * problem.out_per_group) {
            return Err(error(OP, "B must hold one value per output channel"));
        }
        transpose_convolve(cx, &problem, x, w, bias, y)?;
        sink.finish(OP, y)
    }
}

/// The sizes of one ConvTranspose call.
struct Problem {
    batch: usize,
    in_channels: usize,
    out_per_group: usize,
    group: usize,
    axes: [Axis; SPATIAL],
}

fn transpose_convolve(
    cx: &KernelContext<'_>,
    p: &Problem,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    y: &mut [f32],
) -> KernelResult<()> {
    let in_size: usize = p.axes.iter().map(|a| a.input).product();
    let out_size: usize = p.axes.iter().map(|a| a.output).product();
    let taps: usize = p.axes.iter().map(|a| a.kernel).product();
    let (cg, mg) = (p.in_channels / p.group, p.out_per_group);
    let depth = mg * taps;
    let out_channels = mg * p.group;
    if y.len() != p.batch * out_channels * out_size || w.len() != p.in_channels * depth {
        return Err(error(OP, "output or weight sizes do not match the inputs"));
    }
    if y.is_empty() {
        return Ok(());
    }
    let row_len = p.axes[SPATIAL - 1].input;
    let rows = in_size / row_len.max(1);
    let rows_per_tile = (TILE_BUDGET / (depth * row_len).max(1)).clamp(1, rows.max(1));
    let col = cx.scratch::<f32>(depth * rows_per_tile * row_len)?;
    for (image, y_image) in y.chunks_exact_mut(out_channels * out_size).enumerate() {
        for (g, y_group) in y_image.chunks_exact_mut(mg * out_size).enumerate() {
            for (channel, plane) in y_group.chunks_exact_mut(out_size).enumerate() {
                plane.fill(bias.map_or(0.0, |b| b[g * mg + channel]));
            }
            let x_group = &x[(image * p.in_channels + g * cg) * in_size..];
            let w_group = &w[g * cg * depth..][..cg * depth];
            for first_row in (0..rows).step_by(rows_per_tile) {
                let tile_rows = rows_per_tile.min(rows - first_row);
                let cols = tile_rows * row_len;
                let col = &mut col[..depth * cols];
                let product = Product {
                    m: depth,
                    n: cols,
                    k: cg,
                    alpha: 1.0,
                    beta: 0.0,
                    a: Operand {
                        data: w_group,
                        row_stride: 1,
                        col_stride: depth,
                    },
                    b: Operand {
                        data: &x_group[first_row * row_len..],
                        row_stride: in_size,
                        col_stride: 1,
                    },
                    batches: 1,
                    batch_offsets: &single_batch,
                    packed_a: None,
                    packed_b: None,
                };
                sgemm(cx, &product, col)?;
                let col = &*col;
                for_each_chunk(
                    cx,
                    y_group,
                    out_size,
                    GRAIN,
                    #[inline(always)]
                    |start, chunk| {
                        for (c, plane) in chunk.chunks_exact_mut(out_size).enumerate() {
                            let channel = start / out_size + c;
                            let rows = &col[channel * taps * cols..][..taps * cols];
                            col2im(&p.axes, rows, first_row, cols, plane);
                        }
                    },
                );
            }
        }
    }
    Ok(())
}

/// Adds one output channel's rows of col (`taps` rows of `cols` values, the input positions of
/// whole input rows from `first_row`) into its output plane.
fn col2im(axes: &[Axis; SPATIAL], rows: &[f32], first_row: usize, cols: usize, plane: &mut [f32]) {
    let [ad, ah, aw] = *axes;
    for (tap, row) in rows.chunks_exact(cols).enumerate() {
        let (kd, kh, kw) = (
            tap / (ah.kernel * aw.kernel),
            tap / aw.kernel % ah.kernel,
            tap % aw.kernel,
        );
        let w_offset = (kw * aw.dilation) as isize - aw.pad_begin;
        let valid = valid_outputs(aw.input, aw.stride, w_offset, aw.output);
        if valid.is_empty() {
            continue;
        }
        for (t, values) in row.chunks_exact(aw.input).enumerate() {
            let input_row = first_row + t;
            let (id, ih) = (input_row / ah.input, input_row % ah.input);
            let od = (id * ad.stride + kd * ad.dilation) as isize - ad.pad_begin;
            let oh = (ih * ah.stride + kh * ah.dilation) as isize - ah.pad_begin;
            if od < 0 || od >= ad.output as isize || oh < 0 || oh >= ah.output as isize {
                continue;
            }
            let out_row =
                &mut plane[(od as usize * ah.output + oh as usize) * aw.output..][..aw.output];
            let first = ((valid.start * aw.stride) as isize + w_offset) as usize;
            for (&v, o) in values[valid.clone()]
                .iter()
                .zip(out_row[first..].iter_mut().step_by(aw.stride))
            {
                *o += v;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opal_kernel_support::testutil::values;
    use opal_plugin_api::testing::{assert_close, int_attr, ints_attr, OwnedTensor, TestHost};

    /// ConvTranspose of a 2-D input by the definition: every input value spreads over the
    /// output through every kernel tap.
    #[allow(clippy::too_many_arguments)]
    fn reference(
        x: &[f32],
        w: &[f32],
        [n, c, h, wd]: [usize; 4],
        [mg, kh, kw]: [usize; 3],
        group: usize,
        stride: [usize; 2],
        pad: [usize; 2],
        out: [usize; 2],
    ) -> Vec<f32> {
        let m = mg * group;
        let cg = c / group;
        let mut y = vec![0.0f32; n * m * out[0] * out[1]];
        for image in 0..n {
            for ic in 0..c {
                let g = ic / cg;
                for i in 0..h {
                    for j in 0..wd {
                        let v = x[((image * c + ic) * h + i) * wd + j];
                        for oc in 0..mg {
                            for a in 0..kh {
                                for b in 0..kw {
                                    let oi = (i * stride[0] + a) as isize - pad[0] as isize;
                                    let oj = (j * stride[1] + b) as isize - pad[1] as isize;
                                    if oi < 0
                                        || oj < 0
                                        || oi as usize >= out[0]
                                        || oj as usize >= out[1]
                                    {
                                        continue;
                                    }
                                    let wv = w[((ic * mg + oc) * kh + a) * kw + b];
                                    let channel = image * m + g * mg + oc;
                                    y[(channel * out[0] + oi as usize) * out[1] + oj as usize] +=
                                        v * wv;
                                }
                            }
                        }
                    }
                }
            }
        }
        y
    }

    #[test]
    fn strided_padded_and_grouped_match_the_definition() {
        let x_shape = [2, 4, 3, 5];
        let x = values(x_shape.iter().product(), 1);
        let w = values(4 * 3 * 3 * 2, 2);
        let attributes = [
            int_attr("group", 2),
            ints_attr("strides", &[2, 3]),
            ints_attr("pads", &[1, 0, 1, 1]),
        ];
        let inputs = [
            OwnedTensor::f32(&x_shape, &x),
            OwnedTensor::f32(&[4, 3, 3, 2], &w),
        ];
        for threads in [1, 2] {
            let y = TestHost::new()
                .threads(threads)
                .run::<ConvTranspose>(&inputs, &attributes, 1)
                .unwrap();
            // (3 - 1) * 2 + 3 - 2 = 5 rows, (5 - 1) * 3 + 2 - 1 = 13 columns.
            assert_eq!(y[0].shape(), [2, 6, 5, 13]);
            let expected = reference(&x, &w, x_shape, [3, 3, 2], 2, [2, 3], [1, 0], [5, 13]);
            assert_close(y[0].as_slice(), &expected, 1e-5);
        }
    }

    #[test]
    fn output_shape_sets_the_padding() {
        let x = OwnedTensor::f32(&[1, 1, 3], &[1.0, 2.0, 3.0]);
        let w = OwnedTensor::f32(&[1, 1, 3], &[1.0, 1.0, 1.0]);
        let y = TestHost::new()
            .run::<ConvTranspose>(
                &[x, w],
                &[ints_attr("output_shape", &[4]), ints_attr("strides", &[1])],
                1,
            )
            .unwrap();
        // Full output [1, 3, 6, 5, 3]; total padding 1, split as 1 at the start.
        assert_close(y[0].as_slice(), &[3.0, 6.0, 5.0, 3.0], 0.0);
    }
}
