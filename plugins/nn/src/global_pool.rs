//! GlobalAveragePool, GlobalMaxPool and GlobalLpPool: one value per image and channel over all
//! spatial axes (any number of them); the output keeps the spatial axes with size 1.

use crate::{
    float::{expect_float, input_f32, output_f32},
    pool::lp_exponent,
};
use opal_kernel_support::{
    check::{error, Shape},
    parallel::for_each_chunk,
};
use opal_plugin_api::prelude::*;

/// Input values below which channels are reduced on one thread.
const GRAIN: usize = 1 << 14;

pub struct GlobalAveragePool;
pub struct GlobalMaxPool;
pub struct GlobalLpPool;

#[derive(Clone, Copy)]
enum Reduce {
    Mean,
    Max,
    Lp(f32),
}

fn infer_global(cx: &InferContext<'_>, op: &str) -> KernelResult<Vec<OutputType>> {
    let x = cx.input(0)?;
    expect_float(op, 0, &x)?;
    if x.shape.len() < 2 {
        return Err(error(
            op,
            format_args!("X {} needs a batch and a channel axis", Shape(x.shape)),
        ));
    }
    let mut shape = x.shape.to_vec();
    shape[2..].fill(1);
    Ok(vec![OutputType::new(x.dtype, shape)])
}

/// Partial results kept side by side (two AVX registers of f32).
const LANES: usize = 16;

/// Folds `values` with `step` into [`LANES`] independent accumulators starting at `initial`
/// (so the loop vectorizes), then folds the accumulators and the tail. `step` must be
/// associative and commutative up to rounding, with `initial` its neutral value.
#[inline(always)]
fn lanewise(values: &[f32], initial: f32, step: impl Fn(f32, f32) -> f32) -> f32 {
    let mut lanes = [initial; LANES];
    let chunks = values.chunks_exact(LANES);
    let tail = chunks.remainder();
    for chunk in chunks {
        for (lane, &v) in lanes.iter_mut().zip(chunk) {
            *lane = step(*lane, v);
        }
    }
    let lanes = lanes.into_iter().reduce(&step).unwrap_or(initial);
    tail.iter().fold(lanes, |a, &v| step(a, v))
}

fn global_pool(cx: &mut KernelContext<'_>, op: &str, reduce: Reduce) -> KernelResult<()> {
    let plane: usize = cx.input(0)?.shape()[2..].iter().product();
    let x = input_f32(cx, op, 0)?;
    let (y, sink) = output_f32(cx, 0)?;
    for_each_chunk(
        cx,
        y,
        1,
        (GRAIN / plane.max(1)).max(1),
        #[inline(always)]
        |start, chunk| {
            for (i, y) in chunk.iter_mut().enumerate() {
                let values = &x[(start + i) * plane..][..plane];
                *y = match reduce {
                    Reduce::Mean => lanewise(values, 0.0, |s, v| s + v) / plane as f32,
                    Reduce::Max => lanewise(values, f32::NEG_INFINITY, f32::max),
                    Reduce::Lp(2.0) => lanewise(values, 0.0, |s, v| s + v * v).sqrt(),
                    Reduce::Lp(p) => values
                        .iter()
                        .map(|v| v.abs().powf(p))
                        .sum::<f32>()
                        .powf(1.0 / p),
                };
            }
        },
    );
    sink.finish(op, y)
}

impl Operator for GlobalAveragePool {
    const OP_TYPE: &'static str = "GlobalAveragePool";

    fn infer(cx: &InferContext<'_>) -> KernelResult<Vec<OutputType>> {
        infer_global(cx, Self::OP_TYPE)
    }

    fn compute(cx: &mut KernelContext<'_>) -> KernelResult<()> {
        global_pool(cx, Self::OP_TYPE, Reduce::Mean)
    }
}

impl Operator for GlobalMaxPool {
    const OP_TYPE: &'static str = "GlobalMaxPool";

    fn infer(cx: &InferContext<'_>) -> KernelResult<Vec<OutputType>> {
        infer_global(cx, Self::OP_TYPE)
    }

    fn compute(cx: &mut KernelContext<'_>) -> KernelResult<()> {
        global_pool(cx, Self::OP_TYPE, Reduce::Max)
    }
}

impl Operator for GlobalLpPool {
    const OP_TYPE: &'static str = "GlobalLpPool";

    fn infer(cx: &InferContext<'_>) -> KernelResult<Vec<OutputType>> {
        infer_global(cx, Self::OP_TYPE)
    }

    fn compute(cx: &mut KernelContext<'_>) -> KernelResult<()> {
        let p = lp_exponent(Self::OP_TYPE, &cx.attributes())?;
        global_pool(cx, Self::OP_TYPE, Reduce::Lp(p))
    }
}
