//! Numpy-style multidirectional broadcasting: output shapes for inference, and fixed-size stride
//! plans (rank ≤ [`MAX_RANK`]) that kernels walk as contiguous runs of output.

use crate::check::{error, Shape};
use opal_plugin_api::KernelResult;
use std::ops::Range;

/// The highest rank the kernels' fixed-size index arrays hold.
pub const MAX_RANK: usize = 8;

/// The broadcast of two inference shapes (a dim of -1 is unknown), or an error naming both.
pub fn broadcast_shapes(op: &str, a: &[i64], b: &[i64]) -> KernelResult<Vec<i64>> {
    let rank = a.len().max(b.len());
    let dim = |shape: &[i64], i: usize| (i + shape.len()).checked_sub(rank).map_or(1, |j| shape[j]);
    (0..rank)
        .map(|i| match (dim(a, i), dim(b, i)) {
            (x, y) if x == y => Ok(x),
            (1, y) => Ok(y),
            (x, 1) => Ok(x),
            (x, y) if x < 0 => Ok(y),
            (x, y) if y < 0 => Ok(x),
            _ => Err(error(
                op,
                format_args!("shapes {} and {} cannot be broadcast", Shape(a), Shape(b)),
            )),
        })
        .collect()
}

/// The broadcast of two known shapes into a fixed array, for kernels.
pub fn broadcast_dims(op: &str, a: &[usize], b: &[usize]) -> KernelResult<Dims> {
    let rank = a.len().max(b.len());
    crate::check::check_rank(op, rank)?;
    let mut out = Dims {
        rank,
        dims: [1; MAX_RANK],
    };
    for i in 0..rank {
        let x = (i + a.len()).checked_sub(rank).map_or(1, |j| a[j]);
        let y = (i + b.len()).checked_sub(rank).map_or(1, |j| b[j]);
        out.dims[i] = match (x, y) {
            (x, y) if x == y => x,
            (1, y) => y,
            (x, 1) => x,
            _ => {
                return Err(error(
                    op,
                    format_args!("shapes {} and {} cannot be broadcast", Shape(a), Shape(b)),
                ))
            }
        };
    }
    Ok(out)
}

/// A shape of rank ≤ [`MAX_RANK`] without heap allocation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dims {
    rank: usize,
    dims: [usize; MAX_RANK],
}

impl Dims {
    pub fn as_slice(&self) -> &[usize] {
        &self.dims[..self.rank]
    }
}

/// How to walk an output of some shape and `N` operands broadcast (or permuted) into it:
/// collapsed dims and each operand's element strides (0 along broadcast dims).
#[derive(Clone, Copy, Debug)]
pub struct Plan<const N: usize> {
    /// At least 1 after [`Plan::collapse`]; the last dim is the run length.
    rank: usize,
    dims: [usize; MAX_RANK],
    strides: [[usize; MAX_RANK]; N],
}

impl<const N: usize> Plan<N> {
    /// A plan for operands broadcast into `out` (their shapes aligned at the right, each dim
    /// equal to the output's or 1), collapsed.
    pub fn broadcast(op: &str, out: &[usize], operands: [&[usize]; N]) -> KernelResult<Self> {
        crate::check::check_rank(op, out.len())?;
        let mut strides = [[0; MAX_RANK]; N];
        for (k, shape) in operands.iter().enumerate() {
            if shape.len() > out.len() {
                return Err(error(
                    op,
                    format_args!(
                        "shape {} does not broadcast to {}",
                        Shape(shape),
                        Shape(out)
                    ),
                ));
            }
            let offset = out.len() - shape.len();
            let mut stride = 1;
            for (j, &d) in shape.iter().enumerate().rev() {
                if d == out[offset + j] && d != 1 {
                    strides[k][offset + j] = stride;
                } else if d != 1 {
                    return Err(error(
                        op,
                        format_args!(
                            "shape {} does not broadcast to {}",
                            Shape(shape),
                            Shape(out)
                        ),
                    ));
                }
                stride *= d;
            }
        }
        Ok(Plan::with_strides(out, strides))
    }

    /// A plan with explicit operand strides (one per output dim), collapsed. `out.len()` must
    /// be at most [`MAX_RANK`].
    pub fn with_strides(out: &[usize], strides: [[usize; MAX_RANK]; N]) -> Self {
        let mut dims = [1; MAX_RANK];
        dims[..out.len()].copy_from_slice(out);
        let mut plan = Plan {
            rank: out.len(),
            dims,
            strides,
        };
        plan.collapse();
        plan
    }

    /// Drops dims of size 1 and merges neighbours that every operand walks contiguously, so
    /// that the innermost runs are as long as possible.
    fn collapse(&mut self) {
        let mut rank = 0;
        for d in 0..self.rank {
            if self.dims[d] == 1 {
                continue;
            }
            let mergeable = rank > 0
                && (0..N).all(|k| self.strides[k][rank - 1] == self.strides[k][d] * self.dims[d]);
            if mergeable {
                self.dims[rank - 1] *= self.dims[d];
                for k in 0..N {
                    self.strides[k][rank - 1] = self.strides[k][d];
                }
            } else {
                self.dims[rank] = self.dims[d];
                for k in 0..N {
                    self.strides[k][rank] = self.strides[k][d];
                }
                rank += 1;
            }
        }
        if rank == 0 {
            self.dims[0] = 1;
            self.strides = [[0; MAX_RANK]; N];
            rank = 1;
        }
        self.rank = rank;
    }

    /// The operands' strides along the innermost (run) dim.
    pub fn run_strides(&self) -> [usize; N] {
        let mut out = [0; N];
        for (k, s) in out.iter_mut().enumerate() {
            *s = self.strides[k][self.rank - 1];
        }
        out
    }

    /// Calls `f(output_start, len, operand_starts)` for the contiguous runs of output that cover
    /// `elements` in order; along a run operand `k` advances by `run_strides()[k]`.
    pub fn for_each_run(
        &self,
        elements: Range<usize>,
        mut f: impl FnMut(usize, usize, [usize; N]),
    ) {
        if elements.is_empty() {
            return;
        }
        let last = self.rank - 1;
        let run = self.dims[last];
        // The multi-index of the row holding the first element, and the operands' offsets there.
        let mut index = [0usize; MAX_RANK];
        let mut offsets = [0usize; N];
        let mut row = elements.start / run;
        for d in (0..last).rev() {
            index[d] = row % self.dims[d];
            row /= self.dims[d];
            for (k, offset) in offsets.iter_mut().enumerate() {
                *offset += index[d] * self.strides[k][d];
            }
        }
        let mut position = elements.start;
        let mut column = elements.start % run;
        while position < elements.end {
            let len = (run - column).min(elements.end - position);
            let mut starts = offsets;
            for (k, start) in starts.iter_mut().enumerate() {
                *start += column * self.strides[k][last];
            }
            f(position, len, starts);
            position += len;
            column = 0;
            // Advance to the next row, odometer style.
            for d in (0..last).rev() {
                index[d] += 1;
                for (k, offset) in offsets.iter_mut().enumerate() {
                    *offset += self.strides[k][d];
                }
                if index[d] < self.dims[d] {
                    break;
                }
                for (k, offset) in offsets.iter_mut().enumerate() {
                    *offset -= self.strides[k][d] * self.dims[d];
                }
                index[d] = 0;
            }
        }
    }

    /// Operand offsets of output element `element` (its flat row-major index).
    pub fn offsets(&self, element: usize) -> [usize; N] {
        let mut offsets = [0; N];
        let mut rest = element;
        for d in (0..self.rank).rev() {
            let i = rest % self.dims[d];
            rest /= self.dims[d];
            for (k, offset) in offsets.iter_mut().enumerate() {
                *offset += i * self.strides[k][d];
            }
        }
        offsets
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inference_shapes_broadcast_and_keep_unknown_dims() {
        let b = |a: &[i64], b: &[i64]| broadcast_shapes("Add", a, b);
        assert_eq!(b(&[2, 3], &[3]).unwrap(), [2, 3]);
        assert_eq!(b(&[2, 1, 4], &[3, 1]).unwrap(), [2, 3, 4]);
        assert_eq!(b(&[-1, 3], &[3]).unwrap(), [-1, 3]);
        assert_eq!(b(&[-1, 3], &[5, 1]).unwrap(), [5, 3]);
        assert_eq!(b(&[-1], &[1]).unwrap(), [-1]);
        assert_eq!(b(&[], &[2]).unwrap(), [2]);
        assert_eq!(
            b(&[2, 3], &[4]).unwrap_err().message(),
            "Add: shapes [2,3] and [4] cannot be broadcast"
        );
    }

    #[test]
    fn plans_collapse_contiguous_dims() {
        let plan = Plan::broadcast("Add", &[2, 3, 4], [&[2, 3, 4], &[4]]).unwrap();
        assert_eq!(plan.rank, 2);
        assert_eq!(&plan.dims[..2], [6, 4]);
        assert_eq!(plan.run_strides(), [1, 1]);
        let same = Plan::broadcast("Add", &[2, 3, 4], [&[2, 3, 4], &[2, 3, 4]]).unwrap();
        assert_eq!(same.rank, 1);
        let scalar = Plan::<1>::broadcast("Add", &[], [&[]]).unwrap();
        assert_eq!((scalar.rank, scalar.dims[0]), (1, 1));
    }

    #[test]
    fn runs_cover_any_element_range() {
        // [2, 3] against [2, 1]: runs of 3 with the second operand fixed.
        let plan = Plan::broadcast("Add", &[2, 3], [&[2, 3], &[2, 1]]).unwrap();
        assert_eq!(plan.run_strides(), [1, 0]);
        let mut runs = Vec::new();
        plan.for_each_run(1..6, |start, len, offsets| runs.push((start, len, offsets)));
        assert_eq!(runs, [(1, 2, [1, 0]), (3, 3, [3, 1])]);
        assert_eq!(plan.offsets(4), [4, 1]);
    }

    #[test]
    fn bad_broadcasts_are_refused() {
        assert!(Plan::<1>::broadcast("Gemm", &[2, 3], [&[3, 3]]).is_err());
        assert!(broadcast_dims("Add", &[2, 3], &[2]).is_err());
        assert_eq!(
            broadcast_dims("Add", &[2, 1], &[4]).unwrap().as_slice(),
            [2, 4]
        );
        assert!(broadcast_dims("Add", &[1; 9], &[1]).is_err());
    }
}
