//! Index arithmetic on fixed-size arrays (rank ≤ `MAX_RANK`): row-major strides, a shape split
//! around an axis, element-size dispatch, and the strided copy most byte-moving operators reduce
//! to: an output walked in order while the input is read through signed strides (slices with
//! negative steps, broadcasts, depth/space rearrangements).

use crate::{
    broadcast::MAX_RANK,
    check::{check_rank, error},
    parallel::for_each_chunk,
};
use opal_plugin_api::{DType, KernelContext, KernelResult};

/// Bytes per piece below which a copy stays on one thread.
pub(crate) const COPY_GRAIN: usize = 1 << 17;

/// Runs `$body` with the const `$n` bound to the element size of `$size` bytes (1, 2, 4 or 8),
/// so that kernels copy whole `[u8; N]` elements; other sizes are an error of operator `$op`.
macro_rules! with_element_size {
    ($op:expr, $size:expr, $n:ident => $body:expr) => {
        match $size {
            1 => {
                const $n: usize = 1;
                $body
            }
            2 => {
                const $n: usize = 2;
                $body
            }
            4 => {
                const $n: usize = 4;
                $body
            }
            8 => {
                const $n: usize = 8;
                $body
            }
            other => {
                return Err($crate::check::error(
                    $op,
                    format_args!("elements of {other} bytes are not supported"),
                ))
            }
        }
    };
}
pub(crate) use with_element_size;

/// The element size of `dtype`, or an error naming the operator for dtypes opal cannot move
/// (strings, unknown types).
pub(crate) fn element_size(op: &str, dtype: DType) -> KernelResult<usize> {
    crate::check::expect_fixed_size(op, dtype)
}

/// The elements of `bytes` as `N`-byte arrays (a trailing partial element is ignored).
pub(crate) fn elements<const N: usize>(bytes: &[u8]) -> &[[u8; N]] {
    bytes.as_chunks::<N>().0
}

/// The elements of `bytes` as mutable `N`-byte arrays.
pub(crate) fn elements_mut<const N: usize>(bytes: &mut [u8]) -> &mut [[u8; N]] {
    bytes.as_chunks_mut::<N>().0
}

/// Row-major element strides of `shape` (rank ≤ `MAX_RANK`).
pub(crate) fn row_major_strides(shape: &[usize]) -> [usize; MAX_RANK] {
    let mut strides = [0; MAX_RANK];
    let mut stride = 1;
    for (d, &dim) in shape.iter().enumerate().rev() {
        strides[d] = stride;
        stride *= dim;
    }
    strides
}

/// `(outer, dim, inner)`: the products of the dims before `axis`, the dim at `axis`, and the
/// product of the dims after it.
pub(crate) fn around_axis(shape: &[usize], axis: usize) -> (usize, usize, usize) {
    let outer = shape[..axis].iter().product();
    let inner = shape[axis + 1..].iter().product();
    (outer, shape[axis], inner)
}

/// Fails unless the output the host allocated has the shape the kernel computes.
pub(crate) fn expect_output_shape(
    op: &str,
    actual: &[usize],
    expected: &[usize],
) -> KernelResult<()> {
    if actual != expected {
        return Err(error(
            op,
            format_args!(
                "the output has shape {}, the inputs give {}",
                crate::check::Shape(actual),
                crate::check::Shape(expected)
            ),
        ));
    }
    Ok(())
}

/// An input read in the order an output is written: for each output dim, how far (in elements,
/// possibly negative or zero) the input moves per step, and the input element under the
/// output's first.
#[derive(Clone, Copy, Debug)]
pub(crate) struct StridedRead {
    /// At least 1; the last dim is the run length.
    rank: usize,
    dims: [usize; MAX_RANK],
    strides: [isize; MAX_RANK],
    offset: usize,
}

impl StridedRead {
    /// A read of an output of shape `dims` with input strides `strides` (one per output dim),
    /// starting at input element `offset`. Dims of 1 are dropped and neighbouring dims the input
    /// walks contiguously merged; what remains must be at most `MAX_RANK` dims.
    pub(crate) fn new(
        op: &str,
        dims: &[usize],
        strides: &[isize],
        offset: usize,
    ) -> KernelResult<Self> {
        let mut read = StridedRead {
            rank: 0,
            dims: [1; MAX_RANK],
            strides: [0; MAX_RANK],
            offset,
        };
        for (&dim, &stride) in dims.iter().zip(strides) {
            if dim == 1 {
                continue;
            }
            let r = read.rank;
            if r > 0 && read.strides[r - 1] == stride * dim as isize {
                read.dims[r - 1] *= dim;
                read.strides[r - 1] = stride;
            } else {
                if r == MAX_RANK {
                    return check_rank(op, dims.len()).and(Err(error(
                        op,
                        "the copy needs more dims than the kernels support",
                    )));
                }
                read.dims[r] = dim;
                read.strides[r] = stride;
                read.rank += 1;
            }
        }
        if read.rank == 0 {
            read.rank = 1;
        }
        Ok(read)
    }

    /// A read of `input` broadcast (numpy style) to the output shape `out`.
    pub(crate) fn broadcast(op: &str, input: &[usize], out: &[usize]) -> KernelResult<Self> {
        check_rank(op, out.len())?;
        let fits = input.len() <= out.len()
            && input
                .iter()
                .rev()
                .zip(out.iter().rev())
                .all(|(&i, &o)| i == o || i == 1);
        if !fits {
            return Err(error(
                op,
                format_args!(
                    "shape {} does not broadcast to {}",
                    crate::check::Shape(input),
                    crate::check::Shape(out)
                ),
            ));
        }
        let input_strides = row_major_strides(input);
        let lead = out.len() - input.len();
        let mut strides = [0isize; MAX_RANK];
        for (j, &dim) in input.iter().enumerate() {
            if dim != 1 {
                strides[lead + j] = input_strides[j] as isize;
            }
        }
        StridedRead::new(op, out, &strides[..out.len()], 0)
    }

    /// Copies the whole output `to` from `from`, elements being `size` bytes, on the host's
    /// threads when it is large.
    pub(crate) fn copy(
        &self,
        cx: &KernelContext<'_>,
        op: &str,
        size: usize,
        from: &[u8],
        to: &mut [u8],
    ) -> KernelResult<()> {
        with_element_size!(op, size, N => self.copy_elements::<N>(
            cx,
            elements::<N>(from),
            elements_mut::<N>(to),
        ));
        Ok(())
    }

    fn copy_elements<const N: usize>(
        &self,
        cx: &KernelContext<'_>,
        from: &[[u8; N]],
        to: &mut [[u8; N]],
    ) {
        if to.is_empty() {
            return;
        }
        let run = self.dims[self.rank - 1];
        for_each_chunk(
            cx,
            to,
            run,
            COPY_GRAIN / N,
            #[inline(always)]
            |start, chunk| self.copy_range(from, start, chunk),
        );
    }

    /// Writes output elements `start..start + chunk.len()` into `chunk`.
    fn copy_range<const N: usize>(&self, from: &[[u8; N]], start: usize, chunk: &mut [[u8; N]]) {
        let last = self.rank - 1;
        let (run, stride) = (self.dims[last], self.strides[last]);
        let mut index = [0usize; MAX_RANK];
        let mut row = start / run;
        let mut base = self.offset as isize;
        for d in (0..last).rev() {
            index[d] = row % self.dims[d];
            row /= self.dims[d];
            base += index[d] as isize * self.strides[d];
        }
        let mut column = start % run;
        let mut written = 0;
        while written < chunk.len() {
            let len = (run - column).min(chunk.len() - written);
            let out = &mut chunk[written..written + len];
            let first = base + column as isize * stride;
            match stride {
                1 => out.copy_from_slice(&from[first as usize..first as usize + len]),
                0 => out.fill(from[first as usize]),
                _ => {
                    for (t, element) in out.iter_mut().enumerate() {
                        *element = from[(first + t as isize * stride) as usize];
                    }
                }
            }
            written += len;
            column = 0;
            for d in (0..last).rev() {
                index[d] += 1;
                base += self.strides[d];
                if index[d] < self.dims[d] {
                    break;
                }
                base -= self.strides[d] * self.dims[d] as isize;
                index[d] = 0;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strided_reads_merge_contiguous_dims() {
        let read = StridedRead::new("Op", &[2, 3, 4], &[12, 4, 1], 0).unwrap();
        assert_eq!((read.rank, read.dims[0], read.strides[0]), (1, 24, 1));
        let read = StridedRead::new("Op", &[2, 1, 4], &[-4, 7, 1], 4).unwrap();
        assert_eq!(read.rank, 2);
        let scalar = StridedRead::new("Op", &[], &[], 3).unwrap();
        assert_eq!((scalar.rank, scalar.dims[0]), (1, 1));
    }

    #[test]
    fn strided_ranges_walk_rows() {
        // A 2x3 input read transposed into a 3x2 output.
        let read = StridedRead::new("Op", &[3, 2], &[1, 3], 0).unwrap();
        let from: Vec<[u8; 1]> = (0..6).map(|v| [v]).collect();
        let mut to = vec![[0u8; 1]; 5];
        read.copy_range(&from, 1, &mut to);
        assert_eq!(to, [[3], [1], [4], [2], [5]]);
    }

    #[test]
    fn broadcast_reads_repeat() {
        let read = StridedRead::broadcast("Expand", &[3, 1], &[2, 3, 2]).unwrap();
        let from: Vec<[u8; 1]> = (0..3).map(|v| [v]).collect();
        let mut to = vec![[9u8; 1]; 12];
        read.copy_range(&from, 0, &mut to);
        let flat: Vec<u8> = to.iter().map(|e| e[0]).collect();
        assert_eq!(flat, [0, 0, 1, 1, 2, 2, 0, 0, 1, 1, 2, 2]);
        assert!(StridedRead::broadcast("Expand", &[3], &[2]).is_err());
    }

    #[test]
    fn axes_split_shapes() {
        assert_eq!(around_axis(&[2, 3, 4], 1), (2, 3, 4));
        assert_eq!(row_major_strides(&[2, 3, 4])[..3], [12, 4, 1]);
    }
}
