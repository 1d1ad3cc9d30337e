//! LayerNormalization (opset 17; optional Mean and InvStdDev outputs) and RMSNormalization
//! (opset 23): each row of the dims from `axis` on is normalised by its own statistics, then
//! scaled (and shifted) by parameters broadcast over the row.

use crate::{
    float::{expect_float, input_f32, optional_input_f32, output_f32},
    moments::{mean_variance, sum_of_squares},
};
use opal_kernel_support::{
    check::{error, normalize_axis, Shape},
    parallel::for_each_chunk,
};
use opal_plugin_api::prelude::*;

/// Values below which rows are normalised on one thread.
const GRAIN: usize = 1 << 15;

/// LayerNormalization (opset 17).
pub struct LayerNormalization;
/// RMSNormalization (opset 23).
pub struct RmsNormalization;

/// Checks that a parameter of shape `param` broadcasts over the normalised dims `row` as a
/// suffix (leading 1s, then the row's last dims), so that element `j` of a row uses
/// `param[j % len]`.
fn check_parameter(op: &str, index: usize, param: &[i64], row: &[i64]) -> KernelResult<()> {
    let first = param.iter().position(|&d| d != 1).unwrap_or(param.len());
    let tail = &param[first..];
    let fits = tail.len() <= row.len()
        && tail
            .iter()
            .zip(&row[row.len() - tail.len()..])
            .all(|(&p, &r)| p < 0 || r < 0 || p == r);
    if !fits || param.len() > row.len() + first {
        return Err(error(
            op,
            format_args!(
                "input {index} of shape {} does not broadcast over the normalised dims {} as a suffix",
                Shape(param),
                Shape(row)
            ),
        ));
    }
    Ok(())
}

fn infer_rows(cx: &InferContext<'_>, op: &str, parameters: usize) -> KernelResult<usize> {
    let x = cx.input(0)?;
    expect_float(op, 0, &x)?;
    let axis = normalize_axis(op, cx.attributes().int("axis", -1)?, x.shape.len())?;
    for index in 1..=parameters {
        if let Some(param) = cx.optional_input(index)? {
            expect_float(op, index, &param)?;
            check_parameter(op, index, param.shape, &x.shape[axis..])?;
        }
    }
    Ok(axis)
}

/// `(rows, row length)` of input 0 split at the `axis` attribute.
fn rows(cx: &KernelContext<'_>, op: &str) -> KernelResult<(usize, usize)> {
    let shape = cx.input(0)?.shape();
    let axis = normalize_axis(op, cx.attributes().int("axis", -1)?, shape.len())?;
    let row: usize = shape[axis..].iter().product();
    Ok((shape[..axis].iter().product(), row))
}

impl Operator for LayerNormalization {
    const OP_TYPE: &'static str = "LayerNormalization";
    const SINCE_VERSION: i64 = 17;

    fn infer(cx: &InferContext<'_>) -> KernelResult<Vec<OutputType>> {
        let axis = infer_rows(cx, Self::OP_TYPE, 2)?;
        let x = cx.input(0)?;
        let mut outputs = vec![OutputType::new(x.dtype, x.shape.to_vec())];
        let mut reduced = x.shape[..axis].to_vec();
        reduced.resize(x.shape.len(), 1);
        for _ in 1..cx.output_count() {
            outputs.push(OutputType::new(DType::F32, reduced.clone()));
        }
        Ok(outputs)
    }

    fn compute(cx: &mut KernelContext<'_>) -> KernelResult<()> {
        let op = Self::OP_TYPE;
        let (_, row) = rows(cx, op)?;
        let epsilon = cx.attributes().float("epsilon", 1e-5)?;
        let x = input_f32(cx, op, 0)?;
        let scale = input_f32(cx, op, 1)?;
        let bias = optional_input_f32(cx, op, 2)?;
        if row == 0 || scale.is_empty() || bias.is_some_and(|b| b.is_empty()) {
            return Ok(());
        }
        let (y, sink) = output_f32(cx, 0)?;
        for_each_chunk(
            cx,
            y,
            row,
            GRAIN,
            #[inline(always)]
            |start, chunk| {
                for (r, y) in chunk.chunks_exact_mut(row).enumerate() {
                    let x = &x[start + r * row..][..row];
                    let (mean, variance) = mean_variance(x);
                    let inv_std = 1.0 / (variance + epsilon).sqrt();
                    for (y, x) in y.chunks_mut(scale.len()).zip(x.chunks(scale.len())) {
                        for ((y, &x), &s) in y.iter_mut().zip(x).zip(scale) {
                            *y = (x - mean) * inv_std * s;
                        }
                    }
                    if let Some(bias) = bias {
                        for y in y.chunks_mut(bias.len()) {
                            y.iter_mut().zip(bias).for_each(|(y, &b)| *y += b);
                        }
                    }
                }
            },
        );
        sink.finish(op, y)?;
        // Mean and InvStdDev, when the node has them.
        for index in 1..cx.output_count().min(3) {
            let out = cx.output(index)?.f32_mut()?;
            for (o, x) in out.iter_mut().zip(x.chunks_exact(row)) {
                let (mean, variance) = mean_variance(x);
                *o = if index == 1 {
                    mean
                } else {
                    1.0 / (variance + epsilon).sqrt()
                };
            }
        }
        Ok(())
    }
}

impl Operator for RmsNormalization {
    const OP_TYPE: &'static str = "RMSNormalization";
    const SINCE_VERSION: i64 = 23;

    fn infer(cx: &InferContext<'_>) -> KernelResult<Vec<OutputType>> {
        infer_rows(cx, Self::OP_TYPE, 1)?;
        let x = cx.input(0)?;
        Ok(vec![OutputType::new(x.dtype, x.shape.to_vec())])
    }

    fn compute(cx: &mut KernelContext<'_>) -> KernelResult<()> {
        let op = Self::OP_TYPE;
        let (_, row) = rows(cx, op)?;
        let epsilon = cx.attributes().float("epsilon", 1e-5)?;
        let x = input_f32(cx, op, 0)?;
        let scale = input_f32(cx, op, 1)?;
        if row == 0 || scale.is_empty() {
            return Ok(());
        }
        let (y, sink) = output_f32(cx, 0)?;
        for_each_chunk(
            cx,
            y,
            row,
            GRAIN,
            #[inline(always)]
            |start, chunk| {
                for (r, y) in chunk.chunks_exact_mut(row).enumerate() {
                    let x = &x[start + r * row..][..row];
                    let mean_square = sum_of_squares(x) / row as f32;
                    let inv_rms = 1.0 / (mean_square + epsilon).sqrt();
                    for (y, x) in y.chunks_mut(scale.len()).zip(x.chunks(scale.len())) {
                        for ((y, &x), &s) in y.iter_mut().zip(x).zip(scale) {
                            *y = x * inv_rms * s;
                        }
                    }
                }
            },
        );
        sink.finish(op, y)
    }
}
