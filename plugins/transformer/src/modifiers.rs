//! `FlexAttention`'s modifier subgraphs, `score_mod` and `prob_mod`: each takes one tensor, the
//! `(batch, q_heads, q_len, kv_len)` scores or probabilities in the softmax precision, and gives
//! one of the same shape and type. The host types them during inference and runs them during
//! a call. Both are optional: the host says which the node has (ABI 1.7).

use crate::work_float::{decode_into, encode_as, WorkFloat};
use opal_kernel_support::check::{error, Shape};
use opal_plugin_api::{prelude::*, tensor::TensorView};

/// The graph attributes that modify the scores and the probabilities, in the order they run.
pub(crate) const MODIFIERS: [&str; 2] = ["score_mod", "prob_mod"];

/// Checks, during inference, that each modifier the node has takes one tensor of dtype
/// `dtype` and shape `scores` (a dim of -1 is unknown) and gives one of the same type.
pub(crate) fn check_types(
    cx: &InferContext<'_>,
    op: &str,
    dtype: DType,
    scores: &[i64],
) -> KernelResult<()> {
    for name in MODIFIERS {
        if !cx.has_subgraph(name).map_err(|e| error(op, e.message()))? {
            continue;
        }
        let types = cx
            .subgraph_types(name, &[InferInput::typed(dtype, scores)])
            .map_err(|e| error(op, e.message()))?;
        let [given] = types.as_slice() else {
            return Err(error(
                op,
                format_args!(
                    "'{name}' gives {} outputs; a modifier gives one, of its input's shape and type",
                    types.len()
                ),
            ));
        };
        let keeps_shape = given.shape.len() == scores.len()
            && given
                .shape
                .iter()
                .zip(scores)
                .all(|(&a, &b)| a < 0 || b < 0 || a == b);
        if given.dtype != dtype || !keeps_shape {
            return Err(error(
                op,
                format_args!(
                    "'{name}' gives {} {}; it must keep its input's dtype and shape, {dtype} {}",
                    given.dtype,
                    Shape(&given.shape),
                    Shape(scores)
                ),
            ));
        }
    }
    Ok(())
}

/// Runs modifier `name` (one of [`MODIFIERS`]), when the node has it, on `values` of float
/// `dtype` and shape `shape`, replacing them with its output.
pub(crate) fn apply<W: WorkFloat>(
    cx: &mut KernelContext<'_>,
    op: &str,
    name: &str,
    dtype: DType,
    shape: &[usize],
    values: &mut [W],
) -> KernelResult<()> {
    if !cx.has_subgraph(name).map_err(|e| error(op, e.message()))? {
        return Ok(());
    }
    let size = dtype.size().unwrap_or(1);
    let bytes = cx.scratch_unzeroed::<u8>(values.len() * size)?;
    encode_as(dtype, values, bytes);
    let given = cx
        .run_subgraph(name, &[TensorView::new(dtype, shape, bytes)])
        .map_err(|e| error(op, e.message()))?;
    if given != 1 {
        return Err(error(
            op,
            format_args!("'{name}' gave {given} outputs; a modifier gives one"),
        ));
    }
    let output = cx.subgraph_output(name, 0)?;
    if output.dtype() != dtype || output.shape() != shape {
        return Err(error(
            op,
            format_args!(
                "'{name}' gave {} {}; it must keep its input's dtype and shape, {dtype} {}",
                output.dtype(),
                Shape(output.shape()),
                Shape(shape)
            ),
        ));
    }
    decode_into(output, values)
}
