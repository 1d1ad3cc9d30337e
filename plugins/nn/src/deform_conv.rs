//! DeformConv: a 2-D convolution whose kernel taps are moved by learned per-position offsets
//! (and optionally scaled by a mask). Each moved tap reads the input by bilinear interpolation,
//! zero outside the image, as the ONNX reference's GridSample with `align_corners` does.

use crate::{
    float::{expect_float, input_f32, optional_input_f32, output_f32},
    window::{window, Axis, Window, WindowAttributes},
};
use opal_kernel_support::check::{error, Shape};
use opal_plugin_api::prelude::*;

/// DeformConv (opset 19 on).
pub struct DeformConv;

const OP: &str = "DeformConv";

/// The node's shape: channels, groups and the window (2-D, so its depth axis is a unit axis).
#[derive(Clone, Copy, Debug)]
struct Geometry {
    batch: usize,
    in_channels: usize,
    out_channels: usize,
    group: usize,
    offset_group: usize,
    window: Window,
}

impl Geometry {
    /// Reads the attributes against X `[N, C, H, W]` and W `[M, C / group, kH, kW]`.
    fn new(attributes: &Attributes<'_>, x: &[usize], w: &[usize]) -> KernelResult<Self> {
        if x.len() != 4 || w.len() != 4 {
            return Err(error(
                OP,
                format_args!(
                    "X {} and W {} must be 4-D: only 2-D deformable convolution is supported",
                    Shape(x),
                    Shape(w)
                ),
            ));
        }
        let group = attributes.int("group", 1)?;
        let offset_group = attributes.int("offset_group", 1)?;
        let (in_channels, out_channels) = (x[1], w[0]);
        let fits = |g: i64, channels: usize| g >= 1 && channels.is_multiple_of(g as usize);
        if !fits(group, in_channels)
            || !fits(group, out_channels)
            || !fits(offset_group, in_channels)
            || w[1] * group as usize != in_channels
        {
            return Err(error(
                OP,
                format_args!(
                    "X {} and W {} do not fit group {group} and offset_group {offset_group}",
                    Shape(x),
                    Shape(w)
                ),
            ));
        }
        check_kernel_shape(attributes, [w[2] as i64, w[3] as i64])?;
        let window = window(
            OP,
            &WindowAttributes::read(OP, attributes)?,
            &x[2..],
            &w[2..],
        )?;
        Ok(Geometry {
            batch: x[0],
            in_channels,
            out_channels,
            group: group as usize,
            offset_group: offset_group as usize,
            window,
        })
    }

    /// The height and width axes.
    fn plane_axes(&self) -> [Axis; 2] {
        [self.window.axes[1], self.window.axes[2]]
    }

    fn taps(&self) -> usize {
        self.window.kernel_size()
    }

    fn output_size(&self) -> usize {
        self.window.output_size()
    }

    /// The expected shape of the offset input (`per_tap` = 2) or of the mask (`per_tap` = 1).
    fn per_position(&self, per_tap: usize) -> [usize; 4] {
        [
            self.batch,
            self.offset_group * self.taps() * per_tap,
            self.plane_axes()[0].output,
            self.plane_axes()[1].output,
        ]
    }

    /// Fails unless `shape` is the offset's (`per_tap` = 2) or the mask's (`per_tap` = 1).
    fn check_per_position(&self, name: &str, per_tap: usize, shape: &[usize]) -> KernelResult<()> {
        let expected = self.per_position(per_tap);
        if shape != expected {
            return Err(error(
                OP,
                format_args!(
                    "{name} {} must be {} for offset_group {} and this kernel",
                    Shape(shape),
                    Shape(&expected),
                    self.offset_group
                ),
            ));
        }
        Ok(())
    }
}

/// Fails unless the optional kernel_shape attribute matches W's spatial dims (-1 unknown).
fn check_kernel_shape(attributes: &Attributes<'_>, w_spatial: [i64; 2]) -> KernelResult<()> {
    let Some(kernel) = attributes.ints("kernel_shape")? else {
        return Ok(());
    };
    let matches = kernel.len() == 2 && kernel.iter().zip(w_spatial).all(|(&k, w)| w < 0 || k == w);
    if !matches {
        return Err(error(
            OP,
            format_args!(
                "kernel_shape {} does not match W's spatial dims {}",
                Shape(kernel),
                Shape(&w_spatial)
            ),
        ));
    }
    Ok(())
}

/// The bilinear sample of the `height x width` plane at `(y, x)`; taps outside read zero.
fn bilinear(plane: &[f32], height: usize, width: usize, y: f32, x: f32) -> f32 {
    let (y0, x0) = (y.floor(), x.floor());
    let (dy, dx) = (y - y0, x - x0);
    let at = |row: f32, column: f32| -> f32 {
        if row < 0.0 || column < 0.0 || row >= height as f32 || column >= width as f32 {
            0.0
        } else {
            plane[row as usize * width + column as usize]
        }
    };
    (1.0 - dy) * ((1.0 - dx) * at(y0, x0) + dx * at(y0, x0 + 1.0))
        + dy * ((1.0 - dx) * at(y0 + 1.0, x0) + dx * at(y0 + 1.0, x0 + 1.0))
}

/// The inputs of one image: X, the offsets and the optional mask, as f32.
struct Image<'a> {
    x: &'a [f32],
    offset: &'a [f32],
    mask: Option<&'a [f32]>,
}

/// Fills `columns` (`[C / group * taps, output positions]`) with the deformed, masked samples
/// of the input channels of `group`.
fn sample_columns(geometry: &Geometry, image: &Image<'_>, group: usize, columns: &mut [f32]) {
    let [ah, aw] = geometry.plane_axes();
    let (taps, positions) = (geometry.taps(), geometry.output_size());
    let channels_per_group = geometry.in_channels / geometry.group;
    let channels_per_offset_group = geometry.in_channels / geometry.offset_group;
    let plane_size = ah.input * aw.input;
    for (c, channel_columns) in columns
        .chunks_exact_mut(taps * positions)
        .enumerate()
        .take(channels_per_group)
    {
        let channel = group * channels_per_group + c;
        let plane = &image.x[channel * plane_size..][..plane_size];
        let offset_group = channel / channels_per_offset_group;
        for (tap, row) in channel_columns.chunks_exact_mut(positions).enumerate() {
            let (ki, kj) = (tap / aw.kernel, tap % aw.kernel);
            let tap_index = offset_group * taps + tap;
            let dy = &image.offset[2 * tap_index * positions..][..positions];
            let dx = &image.offset[(2 * tap_index + 1) * positions..][..positions];
            let mask = image.mask.map(|m| &m[tap_index * positions..][..positions]);
            for (p, value) in row.iter_mut().enumerate() {
                let (i, j) = (p / aw.output, p % aw.output);
                let y = (i * ah.stride) as f32 + ah.tap_offset(ki) as f32 + dy[p];
                let x = (j * aw.stride) as f32 + aw.tap_offset(kj) as f32 + dx[p];
                let scale = mask.map_or(1.0, |m| m[p]);
                *value = scale * bilinear(plane, ah.input, aw.input, y, x);
            }
        }
    }
}

impl Operator for DeformConv {
    const OP_TYPE: &'static str = OP;
    const SINCE_VERSION: i64 = 19;

    fn infer(cx: &InferContext<'_>) -> KernelResult<Vec<OutputType>> {
        let (x, w, offset) = (cx.input(0)?, cx.input(1)?, cx.input(2)?);
        for (index, input) in [(0, &x), (1, &w), (2, &offset)] {
            expect_float(OP, index, input)?;
        }
        if x.shape.len() != 4 || w.shape.len() != 4 || offset.shape.len() != 4 {
            return Err(error(
                OP,
                format_args!(
                    "X {}, W {} and offset {} must be 4-D: only 2-D deformable convolution is supported",
                    Shape(x.shape),
                    Shape(w.shape),
                    Shape(offset.shape)
                ),
            ));
        }
        let known = x.shape.iter().chain(w.shape).all(|&d| d >= 0);
        if !known {
            return Ok(vec![OutputType::new(
                x.dtype,
                vec![x.shape[0], w.shape[0], offset.shape[2], offset.shape[3]],
            )]);
        }
        let as_dims = |s: &[i64]| [s[0] as usize, s[1] as usize, s[2] as usize, s[3] as usize];
        let geometry = Geometry::new(&cx.attributes(), &as_dims(x.shape), &as_dims(w.shape))?;
        let [ah, aw] = geometry.plane_axes();
        Ok(vec![OutputType::fixed(
            x.dtype,
            &[geometry.batch, geometry.out_channels, ah.output, aw.output],
        )])
    }

    fn compute(cx: &mut KernelContext<'_>) -> KernelResult<()> {
        let geometry = Geometry::new(&cx.attributes(), cx.input(0)?.shape(), cx.input(1)?.shape())?;
        geometry.check_per_position("offset", 2, cx.input(2)?.shape())?;
        if let Some(mask) = cx.optional_input(4) {
            geometry.check_per_position("mask", 1, mask.shape())?;
        }
        if let Some(bias) = cx.optional_input(3) {
            if bias.shape() != [geometry.out_channels] {
                return Err(error(
                    OP,
                    format_args!(
                        "B {} must be [{}]",
                        Shape(bias.shape()),
                        geometry.out_channels
                    ),
                ));
            }
        }
        let x = input_f32(cx, OP, 0)?;
        let w = input_f32(cx, OP, 1)?;
        let offset = input_f32(cx, OP, 2)?;
        let bias = optional_input_f32(cx, OP, 3)?;
        let mask = optional_input_f32(cx, OP, 4)?;
        let (y, sink) = output_f32(cx, 0)?;
        let positions = geometry.output_size();
        if y.len() != geometry.batch * geometry.out_channels * positions {
            return Err(error(OP, "the output does not match the inferred shape"));
        }
        let taps = geometry.taps();
        let [ah, aw] = geometry.plane_axes();
        let channels_per_group = geometry.in_channels / geometry.group;
        let outputs_per_group = geometry.out_channels / geometry.group;
        let depth = channels_per_group * taps;
        let columns = cx.scratch::<f32>(depth * positions)?;
        let x_image = geometry.in_channels * ah.input * aw.input;
        let offset_image = 2 * geometry.offset_group * taps * positions;
        let mask_image = geometry.offset_group * taps * positions;
        for n in 0..geometry.batch {
            let image = Image {
                x: &x[n * x_image..][..x_image],
                offset: &offset[n * offset_image..][..offset_image],
                mask: mask.map(|m| &m[n * mask_image..][..mask_image]),
            };
            for g in 0..geometry.group {
                sample_columns(&geometry, &image, g, columns);
                for m in g * outputs_per_group..(g + 1) * outputs_per_group {
                    let out = &mut y[(n * geometry.out_channels + m) * positions..][..positions];
                    out.fill(bias.map_or(0.0, |b| b[m]));
                    let weights = &w[m * depth..][..depth];
                    for (&weight, column) in weights.iter().zip(columns.chunks_exact(positions)) {
                        for (o, &c) in out.iter_mut().zip(column) {
                            *o += weight * c;
                        }
                    }
                }
            }
        }
        sink.finish(OP, y)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opal_plugin_api::testing::{assert_close, int_attr, ints_attr, run_operator, OwnedTensor};

    const X: [f32; 9] = [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0];

    #[test]
    fn zero_offsets_give_a_plain_convolution() {
        let inputs = [
            OwnedTensor::f32(&[1, 1, 3, 3], &X),
            OwnedTensor::f32(&[1, 1, 2, 2], &[1.0, 2.0, 3.0, 4.0]),
            OwnedTensor::f32(&[1, 8, 2, 2], &[0.0; 32]),
        ];
        let y = run_operator::<DeformConv>(&inputs, &[], 1).unwrap();
        assert_eq!(y[0].shape(), [1, 1, 2, 2]);
        // Top-left window 0, 1, 3, 4: 0 + 2 + 9 + 16 = 27; each step right adds 10, down 30.
        assert_close(&y[0].to_vec::<f32>(), &[27.0, 37.0, 57.0, 67.0], 1e-6);
    }

    #[test]
    fn offsets_interpolate_and_mask_and_bias_apply() {
        // A 1x1 kernel moved by (0.5, 0.25) from each output position of a 3x3 image.
        let mut offset = [0.0; 18];
        offset[..9].fill(0.5);
        offset[9..].fill(0.25);
        let inputs = [
            OwnedTensor::f32(&[1, 1, 3, 3], &X),
            OwnedTensor::f32(&[1, 1, 1, 1], &[2.0]),
            OwnedTensor::f32(&[1, 2, 3, 3], &offset),
            OwnedTensor::f32(&[1], &[1.0]),
            OwnedTensor::f32(&[1, 1, 3, 3], &[0.5; 9]),
        ];
        let y = run_operator::<DeformConv>(&inputs, &[], 1).unwrap();
        // X is 3 * row + column, linear inside the image: at (i + 0.5, j + 0.25) it is
        // 3i + j + 1.75; the last row and column also read zeros beyond the edge.
        let sample = |i: usize, j: usize| -> f32 {
            let (y, x) = (i as f32 + 0.5, j as f32 + 0.25);
            let value = |r: f32, c: f32| if r > 2.0 || c > 2.0 { 0.0 } else { 3.0 * r + c };
            let (fy, fx) = (y.floor(), x.floor());
            let (dy, dx) = (y - fy, x - fx);
            (1.0 - dy) * ((1.0 - dx) * value(fy, fx) + dx * value(fy, fx + 1.0))
                + dy * ((1.0 - dx) * value(fy + 1.0, fx) + dx * value(fy + 1.0, fx + 1.0))
        };
        let expected: Vec<f32> = (0..9)
            .map(|p| 1.0 + 0.5 * 2.0 * sample(p / 3, p % 3))
            .collect();
        assert_close(&y[0].to_vec::<f32>(), &expected, 1e-6);
        assert_close(&expected[..1], &[1.0 + 1.75], 1e-6);
    }

    #[test]
    fn padding_and_offset_groups_pick_their_offsets() {
        // Two channels in two offset groups; group 1 shifts its 1x1 tap one column right.
        let x: Vec<f32> = (0..18).map(|v| v as f32).collect();
        let mut offset = [0.0; 36];
        offset[27..].fill(1.0);
        let inputs = [
            OwnedTensor::f32(&[1, 2, 3, 3], &x),
            OwnedTensor::f32(&[1, 2, 1, 1], &[1.0, 1.0]),
            OwnedTensor::f32(&[1, 4, 3, 3], &offset),
        ];
        let attributes = [
            ints_attr("kernel_shape", &[1, 1]),
            int_attr("offset_group", 2),
        ];
        let y = run_operator::<DeformConv>(&inputs, &attributes, 1).unwrap();
        // Channel 0 as is; channel 1 (9 + p) read one column right, zero past the edge.
        let expected: Vec<f32> = (0..9)
            .map(|p| {
                let shifted = if p % 3 == 2 {
                    0.0
                } else {
                    9.0 + p as f32 + 1.0
                };
                p as f32 + shifted
            })
            .collect();
        assert_close(&y[0].to_vec::<f32>(), &expected, 1e-6);

        let inputs = [
            OwnedTensor::f32(&[1, 1, 3, 3], &X),
            OwnedTensor::f32(&[1, 1, 2, 2], &[1.0; 4]),
            OwnedTensor::f32(&[1, 8, 4, 4], &[0.0; 128]),
        ];
        let y =
            run_operator::<DeformConv>(&inputs, &[ints_attr("pads", &[1, 1, 1, 1])], 1).unwrap();
        assert_eq!(y[0].shape(), [1, 1, 4, 4]);
        // The corner window holds only X[0, 0]; the centre-left one X[0, 0] + X[1, 0].
        let values = y[0].to_vec::<f32>();
        assert_close(&[values[0], values[4], values[5]], &[0.0, 3.0, 8.0], 1e-6);
    }

    #[test]
    fn a_wrong_offset_shape_is_refused() {
        let inputs = [
            OwnedTensor::f32(&[1, 1, 3, 3], &X),
            OwnedTensor::f32(&[1, 1, 2, 2], &[1.0; 4]),
            OwnedTensor::f32(&[1, 4, 2, 2], &[0.0; 16]),
        ];
        let message = run_operator::<DeformConv>(&inputs, &[], 1).unwrap_err();
        assert!(
            message.contains("DeformConv") && message.contains("offset"),
            "{message}"
        );
    }
}
