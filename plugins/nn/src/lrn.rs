//! LRN: local response normalisation across channels, `y = x / (bias + alpha / size *
//! sum(x² over the size channels around c))^beta`.

use crate::float::{expect_float_channels, input_f32, output_f32};
use opal_kernel_support::{check::error, parallel::for_each_chunk};
use opal_plugin_api::prelude::*;

/// Values below which planes are normalised on one thread.
const GRAIN: usize = 1 << 14;

/// LRN of every opset.
pub struct Lrn;

const OP: &str = "LRN";

impl Operator for Lrn {
    const OP_TYPE: &'static str = OP;

    fn infer(cx: &InferContext<'_>) -> KernelResult<Vec<OutputType>> {
        let x = cx.input(0)?;
        expect_float_channels(OP, &x)?;
        if cx.attributes().int("size", 0)? < 1 {
            return Err(error(OP, "the 'size' attribute must be positive"));
        }
        Ok(vec![OutputType::new(x.dtype, x.shape.to_vec())])
    }

    fn compute(cx: &mut KernelContext<'_>) -> KernelResult<()> {
        let shape = cx.input(0)?.shape();
        let channels = shape[1];
        let plane: usize = shape[2..].iter().product();
        let attributes = cx.attributes();
        let size = attributes.int("size", 1)?.max(1) as usize;
        let alpha = attributes.float("alpha", 1e-4)?;
        let beta = attributes.float("beta", 0.75)?;
        let bias = attributes.float("bias", 1.0)?;
        let (before, after) = ((size - 1) / 2, size / 2);
        let x = input_f32(cx, OP, 0)?;
        let (y, sink) = output_f32(cx, 0)?;
        if plane > 0 {
            for_each_chunk(
                cx,
                y,
                plane,
                GRAIN,
                #[inline(always)]
                |start, chunk| {
                    for (p, y) in chunk.chunks_exact_mut(plane).enumerate() {
                        let index = start / plane + p;
                        let (image, c) = (index / channels, index % channels);
                        let image_x = &x[image * channels * plane..][..channels * plane];
                        y.fill(0.0);
                        for other in c.saturating_sub(before)..(c + after + 1).min(channels) {
                            for (s, &v) in y.iter_mut().zip(&image_x[other * plane..][..plane]) {
                                *s += v * v;
                            }
                        }
                        for (y, &x) in y.iter_mut().zip(&image_x[c * plane..][..plane]) {
                            *y = x / (bias + alpha / size as f32 * *y).powf(beta);
                        }
                    }
                },
            );
        }
        sink.finish(OP, y)
    }
}
