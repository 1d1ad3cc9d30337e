//! Slab: one aligned block holding a run's intermediates at offsets a plan assigned, so tensors
//! whose lifetimes do not overlap share memory. A kernel call borrows some regions to read and
//! others to write; the split is checked to be disjoint, so it is safe.

use super::{AlignedBuffer, Owner};
use smallvec::SmallVec;
use std::ops::Range;

/// A run's intermediate memory.
#[derive(Debug)]
pub struct Slab {
    buffer: AlignedBuffer,
}

/// Regions of a slab lent for one kernel call.
pub type Reads<'a> = SmallVec<[&'a [u8]; 8]>;
pub type Writes<'a> = SmallVec<[&'a mut [u8]; 4]>;

impl Slab {
    /// A zeroed slab of `len` bytes accounted to `owner`, or `None` if memory runs out.
    pub fn new(len: usize, owner: &Owner) -> Option<Self> {
        Some(Slab {
            buffer: AlignedBuffer::zeroed(len, owner)?,
        })
    }

    pub fn len(&self) -> usize {
        self.buffer.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buffer.is_empty()
    }

    /// The bytes of `range`.
    pub fn region(&self, range: Range<usize>) -> &[u8] {
        &self.buffer.as_slice()[range]
    }

    /// Borrows `reads` shared and `writes` exclusively. `None` if a range is out of bounds or a
    /// written range overlaps any other range (reads may overlap each other).
    pub fn split(
        &mut self,
        reads: &[Range<usize>],
        writes: &[Range<usize>],
    ) -> Option<(Reads<'_>, Writes<'_>)> {
        let len = self.buffer.len();
        let in_bounds = |r: &Range<usize>| r.start <= r.end && r.end <= len;
        let overlap = |a: &Range<usize>, b: &Range<usize>| a.start < b.end && b.start < a.end;
        if !reads.iter().chain(writes).all(in_bounds) {
            return None;
        }
        for (i, w) in writes.iter().enumerate() {
            let clash = writes[i + 1..]
                .iter()
                .chain(reads)
                .any(|other| overlap(w, other));
            if clash {
                return None;
            }
        }
        let base = self.buffer.as_mut_ptr();
        // SAFETY: every range is within the buffer, and no written range overlaps another
        // range, so the `&mut` slices are unique and the shared ones never alias them. All of
        // them borrow `self` mutably for their lifetime.
        unsafe {
            let reads = reads
                .iter()
                .map(|r| std::slice::from_raw_parts(base.add(r.start), r.len()))
                .collect();
            let writes = writes
                .iter()
                .map(|r| std::slice::from_raw_parts_mut(base.add(r.start), r.len()))
                .collect();
            Some((reads, writes))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::MemoryTracker;

    #[test]
    #[allow(clippy::single_range_in_vec_init, reason = "slices of one range each")]
    fn disjoint_regions_are_lent_and_overlaps_refused() {
        let tracker = MemoryTracker::new();
        let mut slab = Slab::new(256, &tracker.owner("slab")).unwrap();
        {
            let (reads, mut writes) = slab.split(&[0..64, 0..32], &[64..128]).unwrap();
            writes[0].fill(7);
            assert_eq!(reads.len(), 2);
        }
        assert!(slab.region(64..128).iter().all(|&b| b == 7));
        assert!(slab.split(&[0..65], &[64..128]).is_none());
        assert!(slab.split(&[], &[0..64, 32..96]).is_none());
        assert!(slab.split(&[], &[200..300]).is_none());
    }
}
