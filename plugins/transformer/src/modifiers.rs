//! `FlexAttention`'s modifier subgraphs, `score_mod` and `prob_mod`: each takes one tensor, the
//! `(batch, q_heads, q_len, kv_len)` scores or probabilities in the softmax precision, and gives
//! one of the same shape and type. The host types them during inference and runs them during
//! a call.
//!
//! The ABI lends a kernel no list of its node's graph attributes: a modifier's absence shows
//! only as the host's refusal to type or run it. A refusal carries a message the host
//! allocates, so the first call's findings are kept as the node's prepared data and warmed-up
//! calls do not ask again.

use crate::work_float::{decode_into, encode_as, WorkFloat};
use opal_kernel_support::check::{error, Shape};
use opal_plugin_api::{prelude::*, tensor::TensorView};

/// The graph attributes that modify the scores and the probabilities, in the order they run.
pub(crate) const MODIFIERS: [&str; 2] = ["score_mod", "prob_mod"];

/// Whether `message`, from typing or running a subgraph, says the node has no graph
/// attribute of that name (or the host lends none) rather than that the subgraph failed.
fn is_absent(message: &str) -> bool {
    [
        "has no graph attribute",
        "has no subgraph",
        "does not type subgraphs",
        "does not run subgraphs",
    ]
    .iter()
    .any(|refusal| message.contains(refusal))
}

/// Checks, during inference, that each modifier the node has takes one tensor of dtype
/// `dtype` and shape `scores` (a dim of -1 is unknown) and gives one of the same type.
pub(crate) fn check_types(
    cx: &InferContext<'_>,
    op: &str,
    dtype: DType,
    scores: &[i64],
) -> KernelResult<()> {
    for name in MODIFIERS {
        let types = match cx.subgraph_types(name, &[InferInput::typed(dtype, scores)]) {
            Ok(types) => types,
            Err(e) if is_absent(e.message()) => continue,
            Err(e) => return Err(error(op, e.message())),
        };
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

/// Which modifiers a node has, once a call has found out.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Modifiers {
    /// Per modifier: `None` until a call has asked the host.
    present: [Option<bool>; 2],
    /// Whether the node's prepared data held the answer.
    recorded: bool,
}

/// Prepared-data bytes per modifier: not asked (zeroed data is never kept), absent, present.
const ABSENT: u8 = 1;
const PRESENT: u8 = 2;

impl Modifiers {
    /// What an earlier call of the node found, if the host kept it.
    pub(crate) fn recorded(cx: &KernelContext<'_>) -> Self {
        // The fill fails (with a message that allocates nothing) so that nothing is kept
        // before a call has found out.
        let kept = cx.prepared::<u8, _>(MODIFIERS.len(), |_| Err(KernelError::new(String::new())));
        match kept {
            Ok(Some(&[score, prob])) => Modifiers {
                present: [score, prob].map(|b| Some(b == PRESENT)),
                recorded: true,
            },
            _ => Modifiers {
                present: [None; 2],
                recorded: false,
            },
        }
    }

    /// Keeps what this call found as the node's prepared data (where the host keeps any).
    pub(crate) fn record(&self, cx: &KernelContext<'_>) -> KernelResult<()> {
        if self.recorded {
            return Ok(());
        }
        let [Some(score), Some(prob)] = self.present else {
            return Ok(());
        };
        cx.prepared::<u8, _>(MODIFIERS.len(), |flags| {
            for (flag, present) in flags.iter_mut().zip([score, prob]) {
                *flag = if present { PRESENT } else { ABSENT };
            }
            Ok(())
        })?;
        Ok(())
    }

    /// Runs modifier `which` (an index into [`MODIFIERS`]) on `values` of float `dtype` and
    /// shape `shape`, replacing them with its output; does nothing when the node has no such
    /// modifier.
    pub(crate) fn apply<W: WorkFloat>(
        &mut self,
        cx: &mut KernelContext<'_>,
        op: &str,
        which: usize,
        dtype: DType,
        shape: &[usize],
        values: &mut [W],
    ) -> KernelResult<()> {
        if self.present[which] == Some(false) {
            return Ok(());
        }
        let name = MODIFIERS[which];
        let size = dtype.size().unwrap_or(1);
        let bytes = cx.scratch_unzeroed::<u8>(values.len() * size)?;
        encode_as(dtype, values, bytes);
        let given = match cx.run_subgraph(name, &[TensorView::new(dtype, shape, bytes)]) {
            Ok(given) => given,
            Err(e) if self.present[which].is_none() && is_absent(e.message()) => {
                self.present[which] = Some(false);
                return Ok(());
            }
            Err(e) => return Err(error(op, e.message())),
        };
        self.present[which] = Some(true);
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
}
