//! RoiAlign: for each region of interest, an `output_height x output_width` grid of bins, each
//! the average (or the maximum) of bilinear samples on a regular grid inside the bin, as
//! onnxruntime and the ONNX reference compute it.

use crate::float::{expect_float, input_f32, output_f32};
use opal_kernel_support::check::{error, Shape};
use opal_plugin_api::prelude::*;

/// RoiAlign of opsets 10 to 15 (coordinates without the half-pixel offset).
pub struct RoiAlignV10;
/// RoiAlign of opset 16 on (coordinate_transformation_mode, default half_pixel).
pub struct RoiAlign;

const OP: &str = "RoiAlign";

fn infer_roi_align(cx: &InferContext<'_>) -> KernelResult<Vec<OutputType>> {
    let (x, rois, indices) = (cx.input(0)?, cx.input(1)?, cx.input(2)?);
    expect_float(OP, 0, &x)?;
    expect_float(OP, 1, &rois)?;
    let known = |a: i64, b: i64| a < 0 || b < 0 || a == b;
    if x.shape.len() != 4
        || rois.shape.len() != 2
        || indices.shape.len() != 1
        || !known(rois.shape[1], 4)
        || !known(rois.shape[0], indices.shape[0])
    {
        return Err(error(
            OP,
            format_args!(
                "X {} must be 4-D, rois {} [num_rois, 4] and batch_indices {} [num_rois]",
                Shape(x.shape),
                Shape(rois.shape),
                Shape(indices.shape)
            ),
        ));
    }
    let attributes = cx.attributes();
    let height = attributes.int("output_height", 1)?;
    let width = attributes.int("output_width", 1)?;
    Ok(vec![OutputType::new(
        x.dtype,
        vec![rois.shape[0], x.shape[1], height, width],
    )])
}

/// One bilinear sample: four input offsets and their weights.
#[derive(Clone, Copy, Default)]
struct Sample {
    at: [usize; 4],
    weight: [f32; 4],
}

/// The bilinear sample at `(y, x)` of a `height x width` plane (zero weights outside).
fn sample(y: f32, x: f32, height: usize, width: usize) -> Sample {
    if y < -1.0 || y > height as f32 || x < -1.0 || x > width as f32 {
        return Sample::default();
    }
    let (mut y, mut x) = (y.max(0.0), x.max(0.0));
    let (mut y_low, mut x_low) = (y as usize, x as usize);
    let y_high = if y_low >= height - 1 {
        y_low = height - 1;
        y = y_low as f32;
        y_low
    } else {
        y_low + 1
    };
    let x_high = if x_low >= width - 1 {
        x_low = width - 1;
        x = x_low as f32;
        x_low
    } else {
        x_low + 1
    };
    let (ly, lx) = (y - y_low as f32, x - x_low as f32);
    let (hy, hx) = (1.0 - ly, 1.0 - lx);
    Sample {
        at: [
            y_low * width + x_low,
            y_low * width + x_high,
            y_high * width + x_low,
            y_high * width + x_high,
        ],
        weight: [hy * hx, hy * lx, ly * hx, ly * lx],
    }
}

fn roi_align(cx: &mut KernelContext<'_>, half_pixel: bool) -> KernelResult<()> {
    let attributes = cx.attributes();
    let max_mode = match attributes.string("mode", "avg")? {
        "avg" => false,
        "max" => true,
        other => return Err(error(OP, format_args!("unknown mode '{other}'"))),
    };
    let pooled_h = attributes.int("output_height", 1)?.max(1) as usize;
    let pooled_w = attributes.int("output_width", 1)?.max(1) as usize;
    let sampling_ratio = attributes.int("sampling_ratio", 0)?;
    let spatial_scale = attributes.float("spatial_scale", 1.0)?;
    let x_shape = cx.input(0)?.shape();
    let (batch, channels, height, width) = (x_shape[0], x_shape[1], x_shape[2], x_shape[3]);
    let batch_indices = cx.input(2)?;
    let x = input_f32(cx, OP, 0)?;
    let rois = input_f32(cx, OP, 1)?;
    let (y, sink) = output_f32(cx, 0)?;
    if height == 0 || width == 0 {
        y.fill(0.0);
        return sink.finish(OP, y);
    }
    let roi_count = y.len() / (channels * pooled_h * pooled_w).max(1);
    for r in 0..roi_count {
        let image = match batch_indices.dtype() {
            DType::I32 => batch_indices.as_slice::<i32>()?[r] as i64,
            _ => batch_indices.as_slice::<i64>()?[r],
        };
        if image < 0 || image as usize >= batch {
            return Err(error(
                OP,
                format_args!("batch index {image} is outside 0..{batch}"),
            ));
        }
        let offset = if half_pixel { 0.5 } else { 0.0 };
        let roi = &rois[r * 4..][..4];
        let [start_w, start_h, end_w, end_h] =
            [0, 1, 2, 3].map(|i| roi[i] * spatial_scale - offset);
        let (mut roi_w, mut roi_h) = (end_w - start_w, end_h - start_h);
        if !half_pixel {
            roi_w = roi_w.max(1.0);
            roi_h = roi_h.max(1.0);
        }
        let (bin_h, bin_w) = (roi_h / pooled_h as f32, roi_w / pooled_w as f32);
        let grid_h = if sampling_ratio > 0 {
            sampling_ratio as usize
        } else {
            (roi_h / pooled_h as f32).ceil() as usize
        };
        let grid_w = if sampling_ratio > 0 {
            sampling_ratio as usize
        } else {
            (roi_w / pooled_w as f32).ceil() as usize
        };
        let count = (grid_h * grid_w).max(1) as f32;
        for c in 0..channels {
            let plane = &x[(image as usize * channels + c) * height * width..][..height * width];
            let out = &mut y[(r * channels + c) * pooled_h * pooled_w..][..pooled_h * pooled_w];
            for ph in 0..pooled_h {
                for pw in 0..pooled_w {
                    let mut total = 0.0f32;
                    let mut best: Option<f32> = None;
                    for iy in 0..grid_h {
                        let yy =
                            start_h + ph as f32 * bin_h + (iy as f32 + 0.5) * bin_h / grid_h as f32;
                        for ix in 0..grid_w {
                            let xx = start_w
                                + pw as f32 * bin_w
                                + (ix as f32 + 0.5) * bin_w / grid_w as f32;
                            let s = sample(yy, xx, height, width);
                            let values = [0, 1, 2, 3].map(|k| s.weight[k] * plane[s.at[k]]);
                            if max_mode {
                                let v = values.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
                                best = Some(best.map_or(v, |b| b.max(v)));
                            } else {
                                total += values.iter().sum::<f32>();
                            }
                        }
                    }
                    out[ph * pooled_w + pw] = if max_mode {
                        best.unwrap_or(0.0)
                    } else {
                        total / count
                    };
                }
            }
        }
    }
    sink.finish(OP, y)
}

impl Operator for RoiAlignV10 {
    const OP_TYPE: &'static str = OP;
    const SINCE_VERSION: i64 = 10;
    const UNTIL_VERSION: i64 = 15;

    fn infer(cx: &InferContext<'_>) -> KernelResult<Vec<OutputType>> {
        infer_roi_align(cx)
    }

    fn compute(cx: &mut KernelContext<'_>) -> KernelResult<()> {
        roi_align(cx, false)
    }
}

impl Operator for RoiAlign {
    const OP_TYPE: &'static str = OP;
    const SINCE_VERSION: i64 = 16;

    fn infer(cx: &InferContext<'_>) -> KernelResult<Vec<OutputType>> {
        infer_roi_align(cx)
    }

    fn compute(cx: &mut KernelContext<'_>) -> KernelResult<()> {
        let half_pixel = match cx
            .attributes()
            .string("coordinate_transformation_mode", "half_pixel")?
        {
            "half_pixel" => true,
            "output_half_pixel" => false,
            other => {
                return Err(error(
                    OP,
                    format_args!("unknown coordinate_transformation_mode '{other}'"),
                ))
            }
        };
        roi_align(cx, half_pixel)
    }
}
