//! AffineGrid: the sampling grid of an affine transform, `grid[n, ..., :] = theta[n] · (x, y[,
//! z], 1)` over the normalised coordinates of every output position (2-D and 3-D).

use crate::float::{expect_float, input_f32, output_f32};
use opal_kernel_support::check::{error, Shape};
use opal_plugin_api::prelude::*;

/// AffineGrid (opset 20).
pub struct AffineGrid;

const OP: &str = "AffineGrid";

/// The normalised coordinate of position `i` of `size`.
fn coordinate(i: usize, size: usize, align_corners: bool) -> f32 {
    if align_corners {
        if size <= 1 {
            -1.0
        } else {
            -1.0 + 2.0 * i as f32 / (size - 1) as f32
        }
    } else {
        -1.0 + (2 * i + 1) as f32 / size as f32
    }
}

impl Operator for AffineGrid {
    const OP_TYPE: &'static str = OP;
    const SINCE_VERSION: i64 = 20;
    const VALUE_INPUTS: &'static [usize] = &[1];

    fn infer(cx: &InferContext<'_>) -> KernelResult<Vec<OutputType>> {
        let (theta, size) = (cx.input(0)?, cx.input(1)?);
        expect_float(OP, 0, &theta)?;
        if size.shape.len() != 1 || !(size.shape[0] == 4 || size.shape[0] == 5 || size.shape[0] < 0)
        {
            return Err(error(
                OP,
                format_args!("size {} must hold 4 or 5 values", Shape(size.shape)),
            ));
        }
        let shape = match size.value_as::<i64>()? {
            Some(values) => {
                let mut shape = vec![values[0]];
                shape.extend(&values[2..]);
                shape.push(values.len() as i64 - 2);
                shape
            }
            None if size.shape[0] > 0 => {
                let mut shape = vec![-1; size.shape[0] as usize - 1];
                shape.push(size.shape[0] - 2);
                shape
            }
            None => return Err(error(OP, "the rank of size is not known")),
        };
        Ok(vec![OutputType::new(theta.dtype, shape)])
    }

    fn compute(cx: &mut KernelContext<'_>) -> KernelResult<()> {
        let size = cx.input(1)?.as_slice::<i64>()?;
        let align_corners = cx.attributes().int("align_corners", 0)? != 0;
        if !(size.len() == 4 || size.len() == 5) {
            return Err(error(
                OP,
                format_args!("size holds {} values, it must hold 4 or 5", size.len()),
            ));
        }
        let extent = |i: usize| {
            usize::try_from(size[i]).map_err(|_| {
                error(
                    OP,
                    format_args!("size[{i}] is {}, which is negative", size[i]),
                )
            })
        };
        let dims = size.len() - 2;
        let batch = extent(0)?;
        let (depth, height, width) = if dims == 3 {
            (extent(2)?, extent(3)?, extent(4)?)
        } else {
            (1, extent(2)?, extent(3)?)
        };
        let theta = input_f32(cx, OP, 0)?;
        let (grid, sink) = output_f32(cx, 0)?;
        let rows = dims;
        let cols = dims + 1;
        if batch.checked_mul(rows * cols) != Some(theta.len()) {
            return Err(error(
                OP,
                format_args!(
                    "theta must be [{batch}, {rows}, {cols}] for size of {} values",
                    size.len()
                ),
            ));
        }
        // Values of one batch item's grid: a point of `dims` coordinates per position.
        let per_item = [depth, height, width, dims]
            .into_iter()
            .try_fold(1usize, usize::checked_mul)
            .filter(|&n| n.checked_mul(batch) == Some(grid.len()))
            .ok_or_else(|| {
                error(
                    OP,
                    format_args!(
                        "size {size:?} does not match the output's {} values",
                        grid.len()
                    ),
                )
            })?;
        if per_item == 0 {
            // An extent is 0: the grid is empty.
            return sink.finish(OP, grid);
        }
        for (n, grid) in grid.chunks_exact_mut(per_item).enumerate() {
            let theta = &theta[n * rows * cols..][..rows * cols];
            for (p, out) in grid.chunks_exact_mut(dims).enumerate() {
                let (d, h, w) = (p / (height * width), p / width % height, p % width);
                let point = [
                    coordinate(w, width, align_corners),
                    coordinate(h, height, align_corners),
                    coordinate(d, depth, align_corners),
                ];
                for (r, o) in out.iter_mut().enumerate() {
                    let row = &theta[r * cols..][..cols];
                    *o = row[..dims]
                        .iter()
                        .zip(&point)
                        .map(|(t, x)| t * x)
                        .sum::<f32>()
                        + row[dims];
                }
            }
        }
        sink.finish(OP, grid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opal_plugin_api::testing::{assert_close, OwnedTensor, TestHost};

    fn identity_theta() -> OwnedTensor {
        OwnedTensor::f32(&[1, 2, 3], &[1.0, 0.0, 0.0, 0.0, 1.0, 0.0])
    }

    #[test]
    fn the_identity_transform_gives_the_normalised_coordinates() {
        let size = OwnedTensor::i64(&[4], &[1, 1, 1, 2]);
        let grid = TestHost::new()
            .run::<AffineGrid>(&[identity_theta(), size], &[], 1)
            .unwrap();
        assert_eq!(grid[0].shape(), [1, 1, 2, 2]);
        assert_close(grid[0].as_slice(), &[-0.5, 0.0, 0.5, 0.0], 1e-6);
    }

    #[test]
    fn an_empty_extent_gives_an_empty_grid() {
        // A size with a height of 0 made the kernel split its output in chunks of 0 values.
        let size = OwnedTensor::i64(&[4], &[1, 1, 0, 3]);
        let grid = TestHost::new()
            .run::<AffineGrid>(&[identity_theta(), size], &[], 1)
            .unwrap();
        assert_eq!(grid[0].shape(), [1, 0, 3, 2]);
    }
}
