//! ScratchArena: a bump allocator for a kernel's temporaries, reset after each call. After a
//! reset it keeps one chunk as large as everything the last call used, so a steady workload
//! allocates nothing.

use super::{AlignedBuffer, Owner, ALIGNMENT};

/// Per-run temporary memory, accounted to the scratch owner.
#[derive(Debug)]
pub struct ScratchArena {
    owner: Owner,
    chunks: Vec<AlignedBuffer>,
    /// Bytes used in the last chunk.
    used: usize,
    /// Bytes handed out since the last reset, across chunks.
    requested: usize,
    /// Refuse requests that would take the arena beyond this many bytes.
    limit: usize,
}

impl ScratchArena {
    pub fn new(owner: Owner, limit: usize) -> Self {
        ScratchArena {
            owner,
            chunks: Vec::with_capacity(4),
            used: 0,
            requested: 0,
            limit,
        }
    }

    /// `size` zeroed bytes aligned to `align` (at most 64), valid until the next reset; `None`
    /// if the alignment is unsupported or the limit or the system refuses.
    pub fn alloc(&mut self, size: usize, align: usize) -> Option<&mut [u8]> {
        self.take(size, align, true)
    }

    /// As [`alloc`](Self::alloc), but the bytes are left as earlier use of the arena wrote
    /// them (zero where it never did): for callers that write all of them first.
    pub fn alloc_unzeroed(&mut self, size: usize, align: usize) -> Option<&mut [u8]> {
        self.take(size, align, false)
    }

    fn take(&mut self, size: usize, align: usize, zero: bool) -> Option<&mut [u8]> {
        if align == 0 || !align.is_power_of_two() || align > ALIGNMENT {
            return None;
        }
        let size = size.checked_next_multiple_of(ALIGNMENT)?;
        if self.requested.checked_add(size)? > self.limit {
            return None;
        }
        let fits = self
            .chunks
            .last()
            .is_some_and(|c| c.len() - self.used >= size);
        if !fits {
            let chunk_size = size
                .max(self.chunks.last().map_or(0, |c| c.len() * 2))
                .max(4096);
            self.chunks
                .push(AlignedBuffer::zeroed(chunk_size, &self.owner)?);
            self.used = 0;
        }
        self.requested += size;
        let start = self.used;
        self.used += size;
        let chunk = self.chunks.last_mut()?;
        let bytes = &mut chunk.as_mut_slice()[start..start + size];
        if zero {
            bytes.fill(0);
        }
        Some(bytes)
    }

    /// Forgets every allocation. If the last cycle needed more than one chunk, they are merged
    /// into one large enough for all of it.
    pub fn reset(&mut self) {
        if self.chunks.len() > 1 {
            let total = self.requested;
            self.chunks.clear();
            if let Some(chunk) = AlignedBuffer::zeroed(total, &self.owner) {
                self.chunks.push(chunk);
            }
        }
        self.used = 0;
        self.requested = 0;
    }

    /// Bytes the arena holds.
    pub fn capacity(&self) -> usize {
        self.chunks.iter().map(AlignedBuffer::len).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::MemoryTracker;

    #[test]
    fn allocations_are_aligned_zeroed_and_disjoint() {
        let tracker = MemoryTracker::new();
        let mut arena = ScratchArena::new(tracker.owner("scratch"), usize::MAX);
        let a = arena.alloc(10, 64).unwrap();
        a.fill(7);
        let a = a.as_ptr() as usize;
        let b = arena.alloc(10, 64).unwrap();
        assert!(b.iter().all(|&x| x == 0));
        assert_eq!(a % 64, 0);
        assert!(b.as_ptr() as usize >= a + 10);
    }

    #[test]
    fn a_steady_workload_settles_on_one_chunk() {
        let tracker = MemoryTracker::new();
        let mut arena = ScratchArena::new(tracker.owner("scratch"), usize::MAX);
        for _ in 0..3 {
            arena.alloc(3000, 64).unwrap();
            arena.alloc(5000, 64).unwrap();
            arena.reset();
        }
        let before = tracker.allocations();
        arena.alloc(3000, 64).unwrap();
        arena.alloc(5000, 64).unwrap();
        arena.reset();
        assert_eq!(tracker.allocations(), before);
        assert_eq!(arena.chunks.len(), 1);
    }

    #[test]
    fn the_limit_and_bad_alignments_are_refused() {
        let tracker = MemoryTracker::new();
        let mut arena = ScratchArena::new(tracker.owner("scratch"), 1024);
        assert!(arena.alloc(2048, 64).is_none());
        assert!(arena.alloc(8, 128).is_none());
        assert!(arena.alloc(8, 3).is_none());
    }
}
