//! Handing disjoint pieces of a kernel's output to the host's `parallel_for`, in safe Rust and
//! without heap allocations: pieces wait in a fixed array of slots, and the range that covers
//! a slot's index takes its piece. Every piece runs compiled for the call's instruction set
//! ([`vectorized`]), so the loops kernels hand over here use AVX-512 or AVX2 where the host
//! chose them.

use crate::{isa, simd::vectorized};
use opal_plugin_api::KernelContext;
use std::sync::Mutex;

/// The most pieces one kernel call splits its work into.
pub const MAX_TASKS: usize = 64;

/// Up to [`MAX_TASKS`] pieces of work, each run once by [`Tasks::run`].
pub struct Tasks<T> {
    slots: [Mutex<Option<T>>; MAX_TASKS],
    len: usize,
}

impl<T: Send> Default for Tasks<T> {
    fn default() -> Self {
        Tasks::new()
    }
}

impl<T: Send> Tasks<T> {
    /// No pieces yet.
    pub fn new() -> Self {
        Tasks {
            slots: std::array::from_fn(|_| Mutex::new(None)),
            len: 0,
        }
    }

    /// Adds a piece. Panics beyond [`MAX_TASKS`] (callers size their split with [`task_count`]).
    pub fn push(&mut self, task: T) {
        let slot = self.slots[self.len]
            .get_mut()
            .unwrap_or_else(|e| e.into_inner());
        *slot = Some(task);
        self.len += 1;
    }

    /// Runs `f` on every piece, on the host's threads when there are several pieces, compiled
    /// for the call's instruction set.
    pub fn run(mut self, cx: &KernelContext<'_>, f: impl Fn(T) + Sync) {
        let isa = isa::current(cx);
        if self.len <= 1 {
            if let Some(task) = self.slots[0]
                .get_mut()
                .unwrap_or_else(|e| e.into_inner())
                .take()
            {
                vectorized(
                    isa,
                    #[inline(always)]
                    || f(task),
                );
            }
            return;
        }
        let slots = &self.slots;
        cx.parallel_for(self.len, |range| {
            for slot in &slots[range] {
                let task = slot.lock().unwrap_or_else(|e| e.into_inner()).take();
                if let Some(task) = task {
                    vectorized(
                        isa,
                        #[inline(always)]
                        || f(task),
                    );
                }
            }
        });
    }
}

/// How many pieces to split `work` units into so that each has at least `grain` units: one per
/// host thread at most, and one when the host has a single thread.
pub fn task_count(cx: &KernelContext<'_>, work: usize, grain: usize) -> usize {
    let threads = cx.threads().clamp(1, MAX_TASKS);
    (work / grain.max(1)).clamp(1, threads)
}

/// Pieces per host thread for work that costs nothing to split further: the host's threads take
/// pieces from a shared counter, so one that joined late or runs slower takes fewer of them.
const PIECES_PER_THREAD: usize = 4;

/// [`task_count`] for work whose pieces share nothing (no packing or set-up per piece): up to
/// [`PIECES_PER_THREAD`] pieces per host thread, each of at least `grain` units; one when the
/// host has a single thread.
pub fn balanced_task_count(cx: &KernelContext<'_>, work: usize, grain: usize) -> usize {
    let threads = cx.threads().clamp(1, MAX_TASKS);
    if threads == 1 {
        return 1;
    }
    (work / grain.max(1)).clamp(1, (threads * PIECES_PER_THREAD).min(MAX_TASKS))
}

/// Runs `f(first_index, chunk)` over consecutive chunks of `data` covering all of it, each a
/// multiple of `granule` elements (but the last) and, when split at all, at least `grain`
/// elements; in parallel when the host lends several threads, and compiled for the call's
/// instruction set.
pub fn for_each_chunk<T: Send>(
    cx: &KernelContext<'_>,
    data: &mut [T],
    granule: usize,
    grain: usize,
    f: impl Fn(usize, &mut [T]) + Sync,
) {
    let granule = granule.max(1);
    let units = data.len().div_ceil(granule);
    let pieces = balanced_task_count(cx, data.len(), grain).min(units.max(1));
    if pieces <= 1 {
        vectorized(
            isa::current(cx),
            #[inline(always)]
            || f(0, data),
        );
        return;
    }
    let mut tasks = Tasks::new();
    let mut rest = data;
    let mut start = 0;
    for piece in 0..pieces {
        let end_unit = (piece + 1) * units / pieces;
        let end = (end_unit * granule).min(start + rest.len());
        let (chunk, tail) = rest.split_at_mut(end - start);
        tasks.push((start, chunk));
        rest = tail;
        start = end;
    }
    tasks.run(
        cx,
        #[inline(always)]
        |(start, chunk)| f(start, chunk),
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use opal_plugin_api::{
        testing::{OwnedTensor, TestHost},
        KernelResult, Operator,
    };

    /// Writes each element's index, in chunks of granule 3 and grain 4.
    struct Indices;

    impl Operator for Indices {
        const OP_TYPE: &'static str = "Indices";

        fn compute(cx: &mut KernelContext<'_>) -> KernelResult<()> {
            let out = cx.output(0)?.f32_mut()?;
            for_each_chunk(cx, out, 3, 4, |start, chunk| {
                assert!(start % 3 == 0);
                for (i, v) in chunk.iter_mut().enumerate() {
                    *v = (start + i) as f32;
                }
            });
            Ok(())
        }
    }

    #[test]
    fn chunks_cover_the_output_once() {
        for (threads, len) in [(1, 10), (4, 10), (4, 2), (64, 100), (3, 0)] {
            let x = OwnedTensor::f32(&[len], &vec![0.0; len]);
            let y = TestHost::new()
                .threads(threads)
                .run::<Indices>(&[x], &[], 1)
                .unwrap();
            let expected: Vec<f32> = (0..len).map(|i| i as f32).collect();
            assert_eq!(y[0].to_vec::<f32>(), expected, "{threads} threads, {len}");
        }
    }
}
