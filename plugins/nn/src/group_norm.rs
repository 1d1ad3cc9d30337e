//! GroupNormalization and InstanceNormalization (the case of one channel per group): each
//! group of channels of each image is normalised by its own mean and variance, then scaled and
//! shifted per channel (per group for GroupNormalization-18's scale and bias).

use crate::{
    float::{expect_float, expect_float_channels, input_f32, output_f32},
    moments::mean_variance,
};
use opal_kernel_support::{
    check::{error, Shape},
    parallel::for_each_chunk,
};
use opal_plugin_api::prelude::*;

/// Values below which groups are normalised on one thread.
const GRAIN: usize = 1 << 15;

/// InstanceNormalization of every opset.
pub struct InstanceNormalization;
/// GroupNormalization of opsets 18 (scale and bias per group) and 21 (per channel).
pub struct GroupNormalization;

fn infer_norm(cx: &InferContext<'_>, op: &str) -> KernelResult<Vec<OutputType>> {
    let x = cx.input(0)?;
    expect_float_channels(op, &x)?;
    for index in 1..3 {
        let input = cx.input(index)?;
        expect_float(op, index, &input)?;
        if input.shape.len() != 1 {
            return Err(error(
                op,
                format_args!(
                    "input {index} has shape {}, expected 1-D",
                    Shape(input.shape)
                ),
            ));
        }
    }
    Ok(vec![OutputType::new(x.dtype, x.shape.to_vec())])
}

/// Normalises X (input 0) in `groups` groups of channels with scale and bias (inputs 1 and 2)
/// of one value per channel or per group.
fn group_normalize(cx: &mut KernelContext<'_>, op: &str, groups: usize) -> KernelResult<()> {
    let shape = cx.input(0)?.shape();
    let channels = shape[1];
    let plane: usize = shape[2..].iter().product();
    if groups == 0 || channels % groups != 0 {
        return Err(error(
            op,
            format_args!("{channels} channels do not divide into {groups} groups"),
        ));
    }
    let per_group = channels / groups;
    let epsilon = cx.attributes().float("epsilon", 1e-5)?;
    let x = input_f32(cx, op, 0)?;
    let scale = input_f32(cx, op, 1)?;
    let bias = input_f32(cx, op, 2)?;
    let per_channel = match (scale.len(), bias.len()) {
        (s, b) if s == channels && b == channels => true,
        (s, b) if s == groups && b == groups => false,
        (s, b) => {
            return Err(error(
                op,
                format_args!(
                    "scale and bias hold {s} and {b} values; {channels} (per channel) or {groups} (per group) expected"
                ),
            ))
        }
    };
    let (y, sink) = output_f32(cx, 0)?;
    let block = per_group * plane;
    if block > 0 {
        for_each_chunk(
            cx,
            y,
            block,
            GRAIN,
            #[inline(always)]
            |start, chunk| {
                for (b, y) in chunk.chunks_exact_mut(block).enumerate() {
                    let index = start / block + b;
                    let x = &x[index * block..][..block];
                    let (mean, variance) = mean_variance(x);
                    let inv_std = 1.0 / (variance + epsilon).sqrt();
                    let group = index % groups;
                    for (c, (y, x)) in y
                        .chunks_exact_mut(plane)
                        .zip(x.chunks_exact(plane))
                        .enumerate()
                    {
                        let at = if per_channel {
                            group * per_group + c
                        } else {
                            group
                        };
                        let a = scale[at] * inv_std;
                        let shift = bias[at] - mean * a;
                        for (y, &x) in y.iter_mut().zip(x) {
                            *y = x * a + shift;
                        }
                    }
                }
            },
        );
    }
    sink.finish(op, y)
}

impl Operator for InstanceNormalization {
    const OP_TYPE: &'static str = "InstanceNormalization";

    fn infer(cx: &InferContext<'_>) -> KernelResult<Vec<OutputType>> {
        infer_norm(cx, Self::OP_TYPE)
    }

    fn compute(cx: &mut KernelContext<'_>) -> KernelResult<()> {
        let channels = cx.input(0)?.shape()[1];
        group_normalize(cx, Self::OP_TYPE, channels)
    }
}

impl Operator for GroupNormalization {
    const OP_TYPE: &'static str = "GroupNormalization";
    const SINCE_VERSION: i64 = 18;

    fn infer(cx: &InferContext<'_>) -> KernelResult<Vec<OutputType>> {
        if cx.attributes().int("num_groups", 0)? < 1 {
            return Err(error(
                Self::OP_TYPE,
                "the 'num_groups' attribute must be positive",
            ));
        }
        infer_norm(cx, Self::OP_TYPE)
    }

    fn compute(cx: &mut KernelContext<'_>) -> KernelResult<()> {
        let groups = cx.attributes().int("num_groups", 0)?.max(0) as usize;
        group_normalize(cx, Self::OP_TYPE, groups)
    }
}
