//! Writing an output in parallel from safe Rust: [`KernelContext::parallel_chunks_mut`] lends
//! disjoint `&mut` chunks of a slice to the host's threads. It is built on the `parallel_for`
//! service alone (no new ABI): the chunks are grouped into at most [`MAX_PIECES`] pieces that
//! wait in a fixed array of slots on the stack, and the range of `parallel_for` covering a slot
//! takes its piece. Each chunk is thus lent exactly once, without `unsafe` and without a heap
//! allocation.

use crate::KernelContext;
use std::sync::Mutex;

/// The most pieces one call groups its chunks into.
const MAX_PIECES: usize = 64;

/// Pieces per host thread, so that a thread that finishes early takes another.
const PIECES_PER_THREAD: usize = 4;

/// A piece waiting for the thread that runs it: its first chunk's index and its elements.
type Slot<'a, T> = Mutex<Option<(usize, &'a mut [T])>>;

impl KernelContext<'_> {
    /// Splits `data` into consecutive chunks of `chunk_len` elements (the last one shorter when
    /// `chunk_len` does not divide the length) and calls `f(index, chunk)` once for each, on
    /// the host's threads; chunk `index` starts at element `index * chunk_len`. A panic in `f`
    /// is carried back to this thread, as with [`parallel_for`](Self::parallel_for).
    ///
    /// ```
    /// # use opal_plugin_api::prelude::*;
    /// # fn compute(cx: &mut KernelContext<'_>) -> KernelResult<()> {
    /// let x = cx.input(0)?.f32()?;
    /// let width = cx.input(0)?.shape().last().copied().unwrap_or(1).max(1);
    /// let y = cx.output(0)?.f32_mut()?;
    /// // One row of the output per call, rows spread over the host's threads.
    /// cx.parallel_chunks_mut(y, width, |row, out| {
    ///     let input = &x[row * width..][..out.len()];
    ///     for (y, &x) in out.iter_mut().zip(input) {
    ///         *y = x.max(0.0);
    ///     }
    /// });
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Panics
    /// If `chunk_len` is 0.
    pub fn parallel_chunks_mut<T, F>(&self, data: &mut [T], chunk_len: usize, f: F)
    where
        T: Send,
        F: Fn(usize, &mut [T]) + Sync,
    {
        assert!(
            chunk_len > 0,
            "parallel_chunks_mut needs chunks of at least one element"
        );
        let chunks = data.len().div_ceil(chunk_len);
        let pieces = (self.threads() * PIECES_PER_THREAD)
            .min(MAX_PIECES)
            .min(chunks);
        if pieces <= 1 {
            for (index, chunk) in data.chunks_mut(chunk_len).enumerate() {
                f(index, chunk);
            }
            return;
        }
        let mut slots: [Slot<'_, T>; MAX_PIECES] = std::array::from_fn(|_| Mutex::new(None));
        let mut rest = data;
        let mut first = 0;
        for (piece, slot) in slots.iter_mut().take(pieces).enumerate() {
            let end = (piece + 1) * chunks / pieces;
            let len = ((end - first) * chunk_len).min(rest.len());
            let (mine, tail) = std::mem::take(&mut rest).split_at_mut(len);
            *slot.get_mut().unwrap_or_else(|e| e.into_inner()) = Some((first, mine));
            rest = tail;
            first = end;
        }
        self.parallel_for(pieces, |range| {
            for slot in &slots[range] {
                let taken = slot.lock().unwrap_or_else(|e| e.into_inner()).take();
                if let Some((first, piece)) = taken {
                    for (k, chunk) in piece.chunks_mut(chunk_len).enumerate() {
                        f(first + k, chunk);
                    }
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use crate::{
        prelude::*,
        testing::{assert_no_heap, run_operator, OwnedTensor, TestHost},
    };

    /// Writes each element's chunk index and position in its chunk, chunks of `len` elements
    /// (the input's only value), and checks the chunks it saw.
    struct ChunkIndices;

    impl Operator for ChunkIndices {
        const OP_TYPE: &'static str = "ChunkIndices";

        fn infer(_: &InferContext<'_>) -> KernelResult<Vec<OutputType>> {
            Ok(vec![OutputType::new(DType::F32, vec![10])])
        }

        fn compute(cx: &mut KernelContext<'_>) -> KernelResult<()> {
            let chunk_len = cx.input(0)?.as_slice::<i64>()?[0] as usize;
            let y = cx.output(0)?.f32_mut()?;
            let total = y.len();
            cx.parallel_chunks_mut(y, chunk_len, |index, chunk| {
                assert!(!chunk.is_empty() && chunk.len() <= chunk_len);
                assert!(index * chunk_len + chunk.len() <= total);
                for (k, y) in chunk.iter_mut().enumerate() {
                    *y = (index * 100 + k) as f32;
                }
            });
            Ok(())
        }
    }

    fn expected(chunk_len: usize) -> Vec<f32> {
        (0..10)
            .map(|i| ((i / chunk_len) * 100 + i % chunk_len) as f32)
            .collect()
    }

    #[test]
    fn every_chunk_is_written_once_with_its_index() {
        for threads in [1, 2, 3] {
            for chunk_len in [1, 3, 4, 10, 25] {
                let len = OwnedTensor::i64(&[1], &[chunk_len as i64]);
                let y = TestHost::new()
                    .threads(threads)
                    .run::<ChunkIndices>(&[len], &[], 1)
                    .unwrap();
                assert_eq!(
                    y[0].to_vec::<f32>(),
                    expected(chunk_len),
                    "{threads} threads, chunks of {chunk_len}"
                );
            }
        }
    }

    #[test]
    fn chunks_are_lent_without_heap_allocations() {
        assert_no_heap::<ChunkIndices>(&[OwnedTensor::i64(&[1], &[3])], &[], 1);
    }

    /// Asks for chunks of no element.
    struct EmptyChunks;

    impl Operator for EmptyChunks {
        const OP_TYPE: &'static str = "EmptyChunks";

        fn compute(cx: &mut KernelContext<'_>) -> KernelResult<()> {
            let y = cx.output(0)?.f32_mut()?;
            cx.parallel_chunks_mut(y, 0, |_, _| {});
            Ok(())
        }
    }

    #[test]
    fn chunks_of_no_element_are_the_calls_error() {
        let x = OwnedTensor::f32(&[2], &[1.0, 2.0]);
        let error = run_operator::<EmptyChunks>(&[x], &[], 1).unwrap_err();
        assert!(error.contains("chunks of at least one element"), "{error}");
    }
}
