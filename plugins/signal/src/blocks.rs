//! Splitting a transform's output over the host's threads: the output is a sequence of equal
//! blocks (what one outer index writes), each task takes a run of whole blocks and its own
//! pair of line buffers from the call's scratch.

use crate::values::Values;
use opal_kernel_support::parallel::{task_count, Tasks};
use opal_plugin_api::prelude::*;

/// The least work (about one multiply-add per unit) worth a task of its own.
const GRAIN: usize = 1 << 15;

/// Runs `f(block, values, re, im)` for every block of `block_len` consecutive values of `out`,
/// in parallel when the host lends threads and the work (`cost` units per block) is worth it;
/// `re` and `im` are the task's line buffers of `buffer_len` values each, left as earlier
/// blocks wrote them.
pub(crate) fn for_each_block<'a>(
    cx: &KernelContext<'a>,
    out: Values<'a>,
    block_len: usize,
    buffer_len: usize,
    cost: usize,
    f: impl Fn(usize, &mut Values<'_>, &mut [f64], &mut [f64]) + Sync,
) -> KernelResult<()> {
    if block_len == 0 || out.is_empty() {
        return Ok(());
    }
    let blocks = out.len() / block_len;
    let pieces = task_count(cx, blocks.saturating_mul(cost), GRAIN).min(blocks);
    let mut buffers = cx.scratch_unzeroed::<f64>(pieces * 2 * buffer_len)?;
    let mut rest = out;
    let mut tasks = Tasks::new();
    let mut first = 0;
    for piece in 0..pieces {
        let end = (piece + 1) * blocks / pieces;
        let (values, tail) = rest.split_at((end - first) * block_len);
        let (buffer, more) = buffers.split_at_mut(2 * buffer_len);
        tasks.push((first..end, values, buffer));
        (rest, buffers, first) = (tail, more, end);
    }
    tasks.run(
        cx,
        #[inline(always)]
        |(range, mut values, buffer)| {
            let (re, im) = buffer.split_at_mut(buffer_len);
            for block in range {
                let (mut own, tail) = values.split_at(block_len);
                f(block, &mut own, re, im);
                values = tail;
            }
        },
    );
    Ok(())
}
