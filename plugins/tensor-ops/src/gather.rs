//! Gathering by index: Gather (slices along an axis), GatherElements (one element per index)
//! and GatherND (slices addressed by index tuples, after `batch_dims` shared leading dims).
//! Indices are i32 or i64 and may count from the end.

use crate::{
    broadcast::MAX_RANK,
    check::{check_rank, error, normalize_axis, Shape},
    layout::{
        around_axis, element_size, elements, elements_mut, expect_output_shape, row_major_strides,
        with_element_size, COPY_GRAIN,
    },
    parallel::for_each_chunk,
    params::{expect_int_dtype, Ints},
};
use opal_plugin_api::prelude::*;

/// Index `index` into a dim of size `dim`, counted from the end when negative; an error when
/// out of range.
pub(crate) fn wrap_index(op: &str, index: i64, dim: usize) -> KernelResult<usize> {
    let wrapped = wrapped_index(index, dim);
    if (0..dim as i64).contains(&wrapped) {
        Ok(wrapped as usize)
    } else {
        Err(error(
            op,
            format_args!("index {index} is out of range for a dim of {dim}"),
        ))
    }
}

/// `index` counted from the end of a dim of size `dim` when negative (not range-checked).
fn wrapped_index(index: i64, dim: usize) -> i64 {
    if index < 0 {
        index + dim as i64
    } else {
        index
    }
}

/// Slices of the data along `axis`, picked by the indices (input 1).
pub struct Gather;

impl Operator for Gather {
    const OP_TYPE: &'static str = "Gather";

    fn infer(cx: &InferContext<'_>) -> KernelResult<Vec<OutputType>> {
        let op = Self::OP_TYPE;
        let (data, indices) = (cx.input(0)?, cx.input(1)?);
        element_size(op, data.dtype)?;
        expect_int_dtype(op, "the indices", &indices)?;
        let axis = normalize_axis(op, cx.attributes().int("axis", 0)?, data.shape.len())?;
        let mut shape = data.shape[..axis].to_vec();
        shape.extend_from_slice(indices.shape);
        shape.extend_from_slice(&data.shape[axis + 1..]);
        check_rank(op, shape.len())?;
        Ok(vec![OutputType::new(data.dtype, shape)])
    }

    fn compute(cx: &mut KernelContext<'_>) -> KernelResult<()> {
        let op = Self::OP_TYPE;
        let data = cx.input(0)?;
        let indices = Ints::from_tensor(op, "the indices", cx.input(1)?)?;
        let axis = normalize_axis(op, cx.attributes().int("axis", 0)?, data.shape().len())?;
        let (outer, dim, inner) = around_axis(data.shape(), axis);
        let size = element_size(op, data.dtype())?;
        for i in 0..indices.len() {
            wrap_index(op, indices.get(i), dim)?;
        }
        let out = cx.output(0)?;
        if out.dtype() != data.dtype() || out.len() != outer * indices.len() * inner {
            return Err(error(
                op,
                format_args!(
                    "the output {} does not fit the gathered slices",
                    Shape(out.shape())
                ),
            ));
        }
        let block = inner * size;
        let y = out.bytes_mut();
        if y.is_empty() {
            return Ok(());
        }
        let from = data.bytes();
        let count = indices.len();
        for_each_chunk(
            cx,
            y,
            block,
            COPY_GRAIN,
            #[inline(always)]
            |start, chunk| {
                for (b, piece) in chunk.chunks_exact_mut(block).enumerate() {
                    let slot = start / block + b;
                    let (o, j) = (slot / count, slot % count);
                    // Checked above, so in range.
                    let index = wrapped_index(indices.get(j), dim) as usize;
                    let at = (o * dim + index) * block;
                    piece.copy_from_slice(&from[at..at + block]);
                }
            },
        );
        Ok(())
    }
}

/// One data element per index: the output has the indices' shape, and the index replaces the
/// coordinate along `axis`.
pub struct GatherElements;

impl Operator for GatherElements {
    const OP_TYPE: &'static str = "GatherElements";
    const SINCE_VERSION: i64 = 11;

    fn infer(cx: &InferContext<'_>) -> KernelResult<Vec<OutputType>> {
        let op = Self::OP_TYPE;
        let (data, indices) = (cx.input(0)?, cx.input(1)?);
        element_size(op, data.dtype)?;
        expect_int_dtype(op, "the indices", &indices)?;
        if data.shape.len() != indices.shape.len() {
            return Err(error(
                op,
                format_args!(
                    "data {} and indices {} differ in rank",
                    Shape(data.shape),
                    Shape(indices.shape)
                ),
            ));
        }
        check_rank(op, data.shape.len())?;
        normalize_axis(op, cx.attributes().int("axis", 0)?, data.shape.len())?;
        Ok(vec![OutputType::new(data.dtype, indices.shape.to_vec())])
    }

    fn compute(cx: &mut KernelContext<'_>) -> KernelResult<()> {
        let op = Self::OP_TYPE;
        let data = cx.input(0)?;
        let indices_tensor = cx.input(1)?;
        let indices = Ints::from_tensor(op, "the indices", indices_tensor)?;
        let rank = data.shape().len();
        check_rank(op, rank)?;
        let axis = normalize_axis(op, cx.attributes().int("axis", 0)?, rank)?;
        let out = cx.output(0)?;
        expect_output_shape(op, out.shape(), indices_tensor.shape())?;
        let size = element_size(op, data.dtype())?;
        let walk = ElementWalk::new(op, data.shape(), indices_tensor.shape(), axis)?;
        with_element_size!(op, size, N => walk.gather::<N>(
            op,
            &indices,
            elements::<N>(data.bytes()),
            elements_mut::<N>(out.bytes_mut()),
        ))
    }
}

/// The walk shared by GatherElements and ScatterElements: every position of the indices, and
/// the data element it addresses once the index replaces the coordinate along `axis`.
pub(crate) struct ElementWalk {
    rank: usize,
    dims: [usize; MAX_RANK],
    data_strides: [usize; MAX_RANK],
    axis: usize,
    axis_dim: usize,
}

impl ElementWalk {
    /// A walk over `indices` (same rank as `data`, dims no larger except along `axis`).
    pub(crate) fn new(
        op: &str,
        data: &[usize],
        indices: &[usize],
        axis: usize,
    ) -> KernelResult<Self> {
        let rank = data.len();
        check_rank(op, rank)?;
        let fits = indices.len() == rank && (0..rank).all(|d| d == axis || indices[d] <= data[d]);
        if !fits {
            return Err(error(
                op,
                format_args!("indices {} do not fit data {}", Shape(indices), Shape(data)),
            ));
        }
        let mut dims = [1; MAX_RANK];
        dims[..rank].copy_from_slice(indices);
        Ok(ElementWalk {
            rank,
            dims,
            data_strides: row_major_strides(data),
            axis,
            axis_dim: data[axis],
        })
    }

    /// Calls `f(position, data_offset)` for every position of the indices in order; an error
    /// for an index out of range.
    pub(crate) fn for_each(
        &self,
        op: &str,
        indices: &Ints<'_>,
        mut f: impl FnMut(usize, usize),
    ) -> KernelResult<()> {
        let count: usize = self.dims[..self.rank].iter().product();
        let mut index = [0usize; MAX_RANK];
        let mut base = 0;
        for position in 0..count {
            let i = wrap_index(op, indices.get(position), self.axis_dim)?;
            f(position, base + i * self.data_strides[self.axis]);
            for d in (0..self.rank).rev() {
                index[d] += 1;
                if d != self.axis {
                    base += self.data_strides[d];
                }
                if index[d] < self.dims[d] {
                    break;
                }
                if d != self.axis {
                    base -= self.data_strides[d] * self.dims[d];
                }
                index[d] = 0;
            }
        }
        Ok(())
    }

    fn gather<const N: usize>(
        &self,
        op: &str,
        indices: &Ints<'_>,
        data: &[[u8; N]],
        out: &mut [[u8; N]],
    ) -> KernelResult<()> {
        self.for_each(op, indices, |position, at| out[position] = data[at])
    }
}

/// Slices addressed by the tuples in the last dim of the indices; the first `batch_dims` dims
/// of data and indices are shared.
pub struct GatherND;

/// The shapes of a GatherND or ScatterND: `(batch_dims, tuple length)`, checked.
pub(crate) fn nd_layout<T: Copy + TryInto<i64>>(
    op: &str,
    data: &[T],
    indices: &[T],
    batch_dims: i64,
) -> KernelResult<(usize, usize)> {
    let b =
        usize::try_from(batch_dims).map_err(|_| error(op, "batch_dims must not be negative"))?;
    let Some(&k) = indices.last() else {
        return Err(error(op, "the indices must have rank 1 or more"));
    };
    let k = k
        .try_into()
        .ok()
        .and_then(|k| usize::try_from(k).ok())
        .ok_or_else(|| error(op, "the last dim of the indices must be known"))?;
    if b >= indices.len() || b + k > data.len() {
        return Err(error(
            op,
            format_args!(
                "indices {} with batch_dims {b} do not address data {}",
                Shape(indices),
                Shape(data)
            ),
        ));
    }
    Ok((b, k))
}

impl Operator for GatherND {
    const OP_TYPE: &'static str = "GatherND";
    const SINCE_VERSION: i64 = 11;

    fn infer(cx: &InferContext<'_>) -> KernelResult<Vec<OutputType>> {
        let op = Self::OP_TYPE;
        let (data, indices) = (cx.input(0)?, cx.input(1)?);
        element_size(op, data.dtype)?;
        expect_int_dtype(op, "the indices", &indices)?;
        let (b, k) = nd_layout(
            op,
            data.shape,
            indices.shape,
            cx.attributes().int("batch_dims", 0)?,
        )?;
        let mut shape = indices.shape[..indices.shape.len() - 1].to_vec();
        shape.extend_from_slice(&data.shape[b + k..]);
        check_rank(op, shape.len())?;
        Ok(vec![OutputType::new(data.dtype, shape)])
    }

    fn compute(cx: &mut KernelContext<'_>) -> KernelResult<()> {
        let op = Self::OP_TYPE;
        let data = cx.input(0)?;
        let indices_tensor = cx.input(1)?;
        let indices = Ints::from_tensor(op, "the indices", indices_tensor)?;
        let walk = NdWalk::new(
            op,
            data.shape(),
            indices_tensor.shape(),
            cx.attributes().int("batch_dims", 0)?,
        )?;
        let size = element_size(op, data.dtype())?;
        let out = cx.output(0)?;
        if out.dtype() != data.dtype() || out.len() != walk.tuples * walk.slice {
            return Err(error(
                op,
                format_args!("the output {} does not fit", Shape(out.shape())),
            ));
        }
        let block = walk.slice * size;
        let (from, y) = (data.bytes(), out.bytes_mut());
        walk.for_each(op, &indices, |tuple, at| {
            y[tuple * block..(tuple + 1) * block]
                .copy_from_slice(&from[at * size..at * size + block]);
        })
    }
}

/// The walk shared by GatherND and ScatterND: each index tuple and the data slice it
/// addresses.
pub(crate) struct NdWalk {
    /// Number of index tuples.
    pub(crate) tuples: usize,
    /// Elements per addressed slice.
    pub(crate) slice: usize,
    /// Tuples per batch, and elements of data per batch.
    tuples_per_batch: usize,
    batch_elements: usize,
    k: usize,
    dims: [usize; MAX_RANK],
    strides: [usize; MAX_RANK],
}

impl NdWalk {
    pub(crate) fn new(
        op: &str,
        data: &[usize],
        indices: &[usize],
        batch_dims: i64,
    ) -> KernelResult<Self> {
        check_rank(op, data.len())?;
        let (b, k) = nd_layout(op, data, indices, batch_dims)?;
        if data[..b] != indices[..b] {
            return Err(error(
                op,
                format_args!(
                    "the batch dims of data {} and indices {} differ",
                    Shape(data),
                    Shape(indices)
                ),
            ));
        }
        let tuples: usize = indices[..indices.len() - 1].iter().product();
        let batches: usize = data[..b].iter().product();
        let mut dims = [0; MAX_RANK];
        dims[..k].copy_from_slice(&data[b..b + k]);
        let all_strides = row_major_strides(data);
        let mut strides = [0; MAX_RANK];
        strides[..k].copy_from_slice(&all_strides[b..b + k]);
        Ok(NdWalk {
            tuples,
            slice: data[b + k..].iter().product(),
            tuples_per_batch: tuples.checked_div(batches).unwrap_or(0),
            batch_elements: data[b..].iter().product(),
            k,
            dims,
            strides,
        })
    }

    /// Calls `f(tuple, data_offset)` for each index tuple; an error for an index out of range.
    pub(crate) fn for_each(
        &self,
        op: &str,
        indices: &Ints<'_>,
        mut f: impl FnMut(usize, usize),
    ) -> KernelResult<()> {
        for tuple in 0..self.tuples {
            let batch = tuple.checked_div(self.tuples_per_batch).unwrap_or(0);
            let mut at = batch * self.batch_elements;
            for j in 0..self.k {
                at += wrap_index(op, indices.get(tuple * self.k + j), self.dims[j])?
                    * self.strides[j];
            }
            f(tuple, at);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opal_plugin_api::testing::{int_attr, run_operator, OwnedTensor, TestHost};

    #[test]
    fn gather_picks_slices_with_negative_indices() {
        let data = OwnedTensor::new(&[3, 2], &[1u8, 2, 3, 4, 5, 6]);
        let indices = OwnedTensor::new(&[2, 2], &[0i32, -1, 1, 0]);
        for threads in [1, 3] {
            let y = TestHost::new()
                .threads(threads)
                .run::<Gather>(&[data.clone(), indices.clone()], &[], 1)
                .unwrap();
            assert_eq!(y[0].shape(), [2, 2, 2]);
            assert_eq!(y[0].to_vec::<u8>(), [1, 2, 5, 6, 3, 4, 1, 2]);
        }
        let y = run_operator::<Gather>(
            &[data.clone(), OwnedTensor::i64(&[], &[1])],
            &[int_attr("axis", 1)],
            1,
        )
        .unwrap();
        assert_eq!(
            (y[0].shape(), y[0].to_vec::<u8>()),
            (&[3][..], vec![2, 4, 6])
        );
        let error =
            run_operator::<Gather>(&[data, OwnedTensor::i64(&[1], &[3])], &[], 1).unwrap_err();
        assert_eq!(error, "Gather: index 3 is out of range for a dim of 3");
    }

    #[test]
    fn gather_elements_replaces_the_axis_coordinate() {
        let data = OwnedTensor::new(&[3, 3], &[1i64, 2, 3, 4, 5, 6, 7, 8, 9]);
        let indices = OwnedTensor::i64(&[2, 3], &[1, 2, 0, 2, 0, -3]);
        let y =
            run_operator::<GatherElements>(&[data, indices], &[int_attr("axis", 0)], 1).unwrap();
        assert_eq!(y[0].to_vec::<i64>(), [4, 8, 3, 7, 2, 3]);
    }

    #[test]
    fn gather_nd_with_batch_dims() {
        let data = OwnedTensor::new(&[2, 2, 2], &[0i32, 1, 2, 3, 4, 5, 6, 7]);
        let indices = OwnedTensor::i64(&[2, 1], &[1, 0]);
        let y = run_operator::<GatherND>(
            &[data.clone(), indices.clone()],
            &[int_attr("batch_dims", 1)],
            1,
        )
        .unwrap();
        assert_eq!(
            (y[0].shape(), y[0].to_vec::<i32>()),
            (&[2, 2][..], vec![2, 3, 4, 5])
        );
        let y = run_operator::<GatherND>(&[data, indices], &[], 1).unwrap();
        assert_eq!(
            (y[0].shape(), y[0].to_vec::<i32>()),
            (&[2, 2, 2][..], vec![4, 5, 6, 7, 0, 1, 2, 3])
        );
    }
}
