//! Placing intermediates in one slab: each gets an offset such that tensors alive at the same
//! time never share bytes, largest first into the lowest gap that fits. Also the lower bound any
//! placement must reach: the largest total of tensors alive at once.

use crate::memory::ALIGNMENT;

/// One tensor to place: its size and the steps from its producer to its last reader.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Lifetime {
    pub(crate) bytes: usize,
    pub(crate) first: usize,
    pub(crate) last: usize,
}

impl Lifetime {
    fn overlaps(&self, other: &Lifetime) -> bool {
        self.first <= other.last && other.first <= self.last
    }
}

/// The placement: an offset per tensor, the slab size, and the liveness lower bound.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Placement {
    pub(crate) offsets: Vec<usize>,
    pub(crate) slab_bytes: usize,
    pub(crate) lower_bound: usize,
}

/// Places `tensors` (greedy by size, first fit among the tensors whose lifetimes overlap).
pub(crate) fn place(tensors: &[Lifetime]) -> Placement {
    let aligned = |n: usize| n.div_ceil(ALIGNMENT) * ALIGNMENT;
    let mut order: Vec<usize> = (0..tensors.len()).collect();
    order.sort_by_key(|&i| (std::cmp::Reverse(tensors[i].bytes), tensors[i].first));
    let mut offsets = vec![0; tensors.len()];
    let mut placed: Vec<usize> = Vec::with_capacity(tensors.len());
    let mut slab_bytes = 0;
    for &i in &order {
        let size = aligned(tensors[i].bytes);
        let mut busy: Vec<(usize, usize)> = placed
            .iter()
            .filter(|&&j| tensors[j].overlaps(&tensors[i]))
            .map(|&j| (offsets[j], offsets[j] + aligned(tensors[j].bytes)))
            .collect();
        busy.sort_unstable();
        let mut offset = 0;
        for (start, end) in busy {
            if start >= offset + size {
                break;
            }
            offset = offset.max(end);
        }
        offsets[i] = offset;
        slab_bytes = slab_bytes.max(offset + size);
        placed.push(i);
    }
    Placement {
        offsets,
        slab_bytes,
        lower_bound: lower_bound(tensors),
    }
}

/// The largest sum of sizes of tensors alive at one step.
pub(crate) fn lower_bound(tensors: &[Lifetime]) -> usize {
    let steps = tensors.iter().map(|t| t.last + 1).max().unwrap_or(0);
    let mut delta = vec![0isize; steps + 1];
    for t in tensors {
        delta[t.first] += t.bytes as isize;
        delta[t.last + 1] -= t.bytes as isize;
    }
    let mut live = 0isize;
    let mut peak = 0isize;
    for d in delta {
        live += d;
        peak = peak.max(live);
    }
    peak as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(bytes: usize, first: usize, last: usize) -> Lifetime {
        Lifetime { bytes, first, last }
    }

    #[test]
    fn tensors_alive_together_never_share_bytes() {
        let tensors = [t(640, 0, 2), t(128, 1, 3), t(640, 3, 4), t(64, 2, 4)];
        let p = place(&tensors);
        for (i, a) in tensors.iter().enumerate() {
            for (j, b) in tensors.iter().enumerate().skip(i + 1) {
                if a.overlaps(b) {
                    let (ra, rb) = (
                        p.offsets[i]..p.offsets[i] + a.bytes,
                        p.offsets[j]..p.offsets[j] + b.bytes,
                    );
                    assert!(
                        ra.end <= rb.start || rb.end <= ra.start,
                        "{i} and {j} overlap"
                    );
                }
            }
        }
        assert!(p.slab_bytes >= p.lower_bound);
    }

    #[test]
    fn a_chain_reuses_memory_and_meets_the_lower_bound() {
        // x0 -> x1 -> x2 -> x3, each read only by the next step.
        let tensors = [t(1024, 0, 1), t(1024, 1, 2), t(1024, 2, 3), t(1024, 3, 3)];
        let p = place(&tensors);
        assert_eq!(p.lower_bound, 2048);
        assert_eq!(p.slab_bytes, 2048);
    }
}
