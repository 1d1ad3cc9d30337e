//! Depthwise convolution (one input channel per group, any channel multiplier) as a direct loop:
//! each output plane accumulates `weight * input row` over the kernel taps, whole output rows at
//! a time so the inner loop runs over contiguous (or strided) input.

use crate::{
    conv::ConvShape,
    window::{valid_outputs, valid_taps, Window},
};
use opal_kernel_support::parallel::for_each_chunk;
use opal_plugin_api::prelude::*;

/// Output elements below which planes are computed on one thread.
const GRAIN: usize = 1 << 14;

/// `y = conv(x, w) + bias` for a convolution with one input channel per group.
pub(crate) fn depthwise(
    cx: &KernelContext<'_>,
    shape: &ConvShape,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    y: &mut [f32],
) {
    let window = &shape.window;
    let (in_size, out_size, taps) = (
        window.input_size(),
        window.output_size(),
        window.kernel_size(),
    );
    let multiplier = shape.out_per_group();
    for_each_chunk(
        cx,
        y,
        out_size,
        GRAIN,
        #[inline(always)]
        |start, chunk| {
            for (p, y_plane) in chunk.chunks_exact_mut(out_size).enumerate() {
                let plane = start / out_size + p;
                let (image, channel) = (plane / shape.out_channels, plane % shape.out_channels);
                let input_channel = channel / multiplier;
                let x_plane =
                    &x[(image * shape.in_channels + input_channel) * in_size..][..in_size];
                y_plane.fill(bias.map_or(0.0, |b| b[channel]));
                plane_conv(window, x_plane, &w[channel * taps..][..taps], y_plane);
            }
        },
    );
}

/// Accumulates the convolution of one input plane with one kernel into `y`.
#[inline(always)]
fn plane_conv(window: &Window, x: &[f32], w: &[f32], y: &mut [f32]) {
    let [ad, ah, aw] = window.axes;
    for od in 0..ad.output {
        let start_d = (od * ad.stride) as isize - ad.pad_begin as isize;
        for oh in 0..ah.output {
            let start_h = (oh * ah.stride) as isize - ah.pad_begin as isize;
            let y_row = &mut y[(od * ah.output + oh) * aw.output..][..aw.output];
            for kd in valid_taps(ad.kernel, ad.dilation, start_d, 0, ad.input as isize) {
                let id = (start_d + (kd * ad.dilation) as isize) as usize;
                for kh in valid_taps(ah.kernel, ah.dilation, start_h, 0, ah.input as isize) {
                    let ih = (start_h + (kh * ah.dilation) as isize) as usize;
                    let x_row = &x[(id * ah.input + ih) * aw.input..][..aw.input];
                    let w_row = &w[(kd * ah.kernel + kh) * aw.kernel..][..aw.kernel];
                    for (kw, &weight) in w_row.iter().enumerate() {
                        let offset = aw.tap_offset(kw);
                        let valid = valid_outputs(aw.output, aw.stride, offset, aw.input);
                        if valid.is_empty() {
                            continue;
                        }
                        let first = ((valid.start * aw.stride) as isize + offset) as usize;
                        let y_valid = &mut y_row[valid.clone()];
                        if aw.stride == 1 {
                            for (y, &x) in y_valid.iter_mut().zip(&x_row[first..]) {
                                *y += weight * x;
                            }
                        } else {
                            for (y, &x) in y_valid
                                .iter_mut()
                                .zip(x_row[first..].iter().step_by(aw.stride))
                            {
                                *y += weight * x;
                            }
                        }
                    }
                }
            }
        }
    }
}
