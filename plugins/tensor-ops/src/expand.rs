//! Repeating the input: Expand (numpy broadcast to a shape given as input 1) and Tile (each
//! dim repeated the number of times input 1 says).

use crate::{
    broadcast::{broadcast_shapes, MAX_RANK},
    check::{check_rank, error, Shape},
    layout::{element_size, expect_output_shape, row_major_strides, StridedRead},
    params::{known_ints, known_length, Ints},
};
use opal_plugin_api::prelude::*;

/// The input broadcast to the shape input 1 gives (numpy rules: either dim may be 1).
pub struct Expand;

impl Operator for Expand {
    const OP_TYPE: &'static str = "Expand";
    const SINCE_VERSION: i64 = 8;
    const VALUE_INPUTS: &'static [usize] = &[1];

    fn infer(cx: &InferContext<'_>) -> KernelResult<Vec<OutputType>> {
        let op = Self::OP_TYPE;
        let (x, shape) = (cx.input(0)?, cx.input(1)?);
        element_size(op, x.dtype)?;
        let out = match known_ints(op, "the shape input", &shape)? {
            Some(target) => {
                if target.iter().any(|&d| d < 0) {
                    return Err(error(
                        op,
                        format_args!("the shape {target:?} has negative dims"),
                    ));
                }
                broadcast_shapes(op, x.shape, &target)?
            }
            None => {
                let len = known_length(&shape)
                    .ok_or_else(|| error(op, "the length of the shape input is not known"))?;
                vec![-1; len.max(x.shape.len())]
            }
        };
        check_rank(op, out.len())?;
        Ok(vec![OutputType::new(x.dtype, out)])
    }

    fn compute(cx: &mut KernelContext<'_>) -> KernelResult<()> {
        let op = Self::OP_TYPE;
        let x = cx.input(0)?;
        let target = Ints::from_tensor(op, "the shape input", cx.input(1)?)?;
        let out = cx.output(0)?;
        let out_shape = out.shape();
        // The output must be the broadcast of the input and the requested shape.
        let rank = out_shape.len();
        let agrees = rank == target.len().max(x.shape().len())
            && (0..target.len()).all(|j| {
                let (t, o) = (target.get(j), out_shape[rank - target.len() + j]);
                t == o as i64 || t == 1
            });
        if !agrees {
            return Err(error(
                op,
                format_args!(
                    "the output {} is not the broadcast of {} to the shape input",
                    Shape(out_shape),
                    Shape(x.shape())
                ),
            ));
        }
        let size = element_size(op, x.dtype())?;
        let read = StridedRead::broadcast(op, x.shape(), out_shape)?;
        let y = out.bytes_mut();
        read.copy(cx, op, size, x.bytes(), y)
    }
}

/// The input repeated `repeats[d]` times along each dim `d`.
pub struct Tile;

impl Operator for Tile {
    const OP_TYPE: &'static str = "Tile";
    const SINCE_VERSION: i64 = 6;
    const VALUE_INPUTS: &'static [usize] = &[1];

    fn infer(cx: &InferContext<'_>) -> KernelResult<Vec<OutputType>> {
        let op = Self::OP_TYPE;
        let (x, repeats) = (cx.input(0)?, cx.input(1)?);
        element_size(op, x.dtype)?;
        check_rank(op, x.shape.len())?;
        let shape = match known_ints(op, "the repeats", &repeats)? {
            Some(repeats) => {
                if repeats.len() != x.shape.len() || repeats.iter().any(|&r| r < 0) {
                    return Err(error(
                        op,
                        format_args!(
                            "repeats {repeats:?} do not fit an input of rank {}",
                            x.shape.len()
                        ),
                    ));
                }
                x.shape
                    .iter()
                    .zip(&repeats)
                    .map(|(&d, &r)| if d < 0 { -1 } else { d * r })
                    .collect()
            }
            None => vec![-1; x.shape.len()],
        };
        Ok(vec![OutputType::new(x.dtype, shape)])
    }

    fn compute(cx: &mut KernelContext<'_>) -> KernelResult<()> {
        let op = Self::OP_TYPE;
        let x = cx.input(0)?;
        let shape = x.shape();
        let rank = shape.len();
        check_rank(op, rank)?;
        let repeats = Ints::from_tensor(op, "the repeats", cx.input(1)?)?;
        if repeats.len() != rank || repeats.iter().any(|r| r < 0) {
            return Err(error(
                op,
                format_args!("the repeats do not fit an input of rank {rank}"),
            ));
        }
        // The output seen as [repeats[0], dims[0], repeats[1], dims[1], ...]: the repeat dims
        // read the input with stride 0.
        let strides = row_major_strides(shape);
        let mut view_dims = [0usize; 2 * MAX_RANK];
        let mut view_strides = [0isize; 2 * MAX_RANK];
        let mut out_dims = [0usize; MAX_RANK];
        for d in 0..rank {
            let r = repeats.get(d) as usize;
            view_dims[2 * d] = r;
            view_dims[2 * d + 1] = shape[d];
            view_strides[2 * d + 1] = strides[d] as isize;
            out_dims[d] = r * shape[d];
        }
        let out = cx.output(0)?;
        expect_output_shape(op, out.shape(), &out_dims[..rank])?;
        let size = element_size(op, x.dtype())?;
        let y = out.bytes_mut();
        if y.is_empty() {
            return Ok(());
        }
        let read = StridedRead::new(op, &view_dims[..2 * rank], &view_strides[..2 * rank], 0)?;
        read.copy(cx, op, size, x.bytes(), y)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opal_plugin_api::testing::{run_operator, OwnedTensor};

    #[test]
    fn expand_broadcasts_both_ways() {
        let x = OwnedTensor::new(&[3, 1], &[1u64, 2, 3]);
        let y = run_operator::<Expand>(&[x.clone(), OwnedTensor::i64(&[3], &[2, 1, 2])], &[], 1)
            .unwrap();
        assert_eq!(y[0].shape(), [2, 3, 2]);
        assert_eq!(y[0].to_vec::<u64>(), [1, 1, 2, 2, 3, 3, 1, 1, 2, 2, 3, 3]);
        let y = run_operator::<Expand>(&[x, OwnedTensor::i64(&[1], &[1])], &[], 1).unwrap();
        assert_eq!(y[0].shape(), [3, 1]);
    }

    #[test]
    fn tile_repeats_each_dim() {
        let x = OwnedTensor::new(&[2, 2], &[1i8, 2, 3, 4]);
        let y = run_operator::<Tile>(&[x, OwnedTensor::i64(&[2], &[2, 3])], &[], 1).unwrap();
        assert_eq!(y[0].shape(), [4, 6]);
        assert_eq!(
            y[0].to_vec::<i8>(),
            [1, 2, 1, 2, 1, 2, 3, 4, 3, 4, 3, 4, 1, 2, 1, 2, 1, 2, 3, 4, 3, 4, 3, 4]
        );
    }
}
