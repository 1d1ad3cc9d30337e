//! NegativeLogLikelihoodLoss and SoftmaxCrossEntropyLoss (which is NLL of the log-softmax over
//! the class axis, with the log-probabilities as an optional second output): per-element losses
//! `-weight[t] * input[n, t, d]` for target `t`, with ignore_index and reductions none, sum and
//! mean (weighted mean when there are weights or an ignore_index).

use crate::float::{expect_float, input_f32, optional_input_f32, output_f32};
use opal_kernel_support::check::{error, Shape};
use opal_plugin_api::prelude::*;

/// NegativeLogLikelihoodLoss (opsets 12, 13, 22).
pub struct NegativeLogLikelihoodLoss;
/// SoftmaxCrossEntropyLoss (opsets 12, 13).
pub struct SoftmaxCrossEntropyLoss;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Reduction {
    None,
    Sum,
    Mean,
}

fn reduction(op: &str, attributes: &Attributes<'_>) -> KernelResult<Reduction> {
    match attributes.string("reduction", "mean")? {
        "none" => Ok(Reduction::None),
        "sum" => Ok(Reduction::Sum),
        "mean" => Ok(Reduction::Mean),
        other => Err(error(op, format_args!("unknown reduction '{other}'"))),
    }
}

fn infer_loss(cx: &InferContext<'_>, op: &str) -> KernelResult<Vec<OutputType>> {
    let (x, target) = (cx.input(0)?, cx.input(1)?);
    expect_float(op, 0, &x)?;
    if !matches!(target.dtype, DType::I32 | DType::I64) {
        return Err(error(
            op,
            format_args!("target has dtype {}, expected i32 or i64", target.dtype),
        ));
    }
    let fits = x.shape.len() >= 2
        && target.shape.len() == x.shape.len() - 1
        && target
            .shape
            .iter()
            .zip(x.shape.iter().take(1).chain(&x.shape[2..]))
            .all(|(&t, &x)| t < 0 || x < 0 || t == x);
    if !fits {
        return Err(error(
            op,
            format_args!(
                "input {} and target {} do not agree (target is the input without its class axis)",
                Shape(x.shape),
                Shape(target.shape)
            ),
        ));
    }
    let loss_shape = match reduction(op, &cx.attributes())? {
        Reduction::None => target.shape.to_vec(),
        _ => Vec::new(),
    };
    let mut outputs = vec![OutputType::new(x.dtype, loss_shape)];
    if cx.output_count() > 1 {
        outputs.push(OutputType::new(x.dtype, x.shape.to_vec()));
    }
    Ok(outputs)
}

/// The target as i64 values.
enum Targets<'a> {
    I32(&'a [i32]),
    I64(&'a [i64]),
}

impl Targets<'_> {
    fn get(&self, i: usize) -> i64 {
        match self {
            Targets::I32(t) => t[i] as i64,
            Targets::I64(t) => t[i],
        }
    }
}

/// Writes the loss of `log_probs` (`[batch, classes, inner]`) into output 0.
fn nll(cx: &mut KernelContext<'_>, op: &str, log_probs: &[f32]) -> KernelResult<()> {
    let shape = cx.input(0)?.shape();
    let (batch, classes) = (shape[0], shape[1]);
    let inner: usize = shape[2..].iter().product();
    let target = cx.input(1)?;
    let targets = match target.dtype() {
        DType::I32 => Targets::I32(target.as_slice()?),
        _ => Targets::I64(target.as_slice()?),
    };
    let weights = optional_input_f32(cx, op, 2)?;
    if weights.is_some_and(|w| w.len() != classes) {
        return Err(error(op, format_args!("weight must hold {classes} values")));
    }
    let attributes = cx.attributes();
    let ignore = attributes
        .get("ignore_index")
        .map(|_| attributes.int("ignore_index", 0))
        .transpose()?;
    let reduction = reduction(op, &attributes)?;
    let (out, sink) = output_f32(cx, 0)?;
    let (mut total, mut weight_total) = (0.0f64, 0.0f64);
    for n in 0..batch {
        for d in 0..inner {
            let i = n * inner + d;
            let t = targets.get(i);
            let (loss, weight) = if Some(t) == ignore {
                (0.0, 0.0)
            } else {
                if t < 0 || t >= classes as i64 {
                    return Err(error(
                        op,
                        format_args!("target {t} is not a class in 0..{classes}"),
                    ));
                }
                let w = weights.map_or(1.0, |w| w[t as usize]);
                (-log_probs[(n * classes + t as usize) * inner + d] * w, w)
            };
            if reduction == Reduction::None {
                out[i] = loss;
            }
            total += loss as f64;
            weight_total += weight as f64;
        }
    }
    match reduction {
        Reduction::None => {}
        Reduction::Sum => out[0] = total as f32,
        Reduction::Mean if weights.is_some() || ignore.is_some() => {
            out[0] = (total / weight_total) as f32
        }
        Reduction::Mean => out[0] = (total / (batch * inner).max(1) as f64) as f32,
    }
    sink.finish(op, out)
}

impl Operator for NegativeLogLikelihoodLoss {
    const OP_TYPE: &'static str = "NegativeLogLikelihoodLoss";
    const SINCE_VERSION: i64 = 12;

    fn infer(cx: &InferContext<'_>) -> KernelResult<Vec<OutputType>> {
        infer_loss(cx, Self::OP_TYPE)
    }

    fn compute(cx: &mut KernelContext<'_>) -> KernelResult<()> {
        let x = input_f32(cx, Self::OP_TYPE, 0)?;
        nll(cx, Self::OP_TYPE, x)
    }
}

impl Operator for SoftmaxCrossEntropyLoss {
    const OP_TYPE: &'static str = "SoftmaxCrossEntropyLoss";
    const SINCE_VERSION: i64 = 12;

    fn infer(cx: &InferContext<'_>) -> KernelResult<Vec<OutputType>> {
        infer_loss(cx, Self::OP_TYPE)
    }

    fn compute(cx: &mut KernelContext<'_>) -> KernelResult<()> {
        let op = Self::OP_TYPE;
        let shape = cx.input(0)?.shape();
        let (classes, inner) = (shape[1], shape[2..].iter().product::<usize>());
        let x = input_f32(cx, op, 0)?;
        let log_probs = cx.scratch::<f32>(x.len())?;
        if classes > 0 && inner > 0 {
            for (x, y) in x
                .chunks_exact(classes * inner)
                .zip(log_probs.chunks_exact_mut(classes * inner))
            {
                for d in 0..inner {
                    let max = (0..classes)
                        .map(|c| x[c * inner + d])
                        .fold(f32::NEG_INFINITY, f32::max);
                    let sum: f32 = (0..classes).map(|c| (x[c * inner + d] - max).exp()).sum();
                    let log_sum = sum.ln();
                    for c in 0..classes {
                        y[c * inner + d] = x[c * inner + d] - max - log_sum;
                    }
                }
            }
        }
        if cx.output_count() > 1 {
            let (out, sink) = output_f32(cx, 1)?;
            out.copy_from_slice(log_probs);
            sink.finish(op, out)?;
        }
        nll(cx, op, log_probs)
    }
}
