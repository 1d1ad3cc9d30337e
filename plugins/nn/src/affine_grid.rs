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
        let dims = size.len() - 2;
        let (depth, height, width) = if dims == 3 {
            (size[2] as usize, size[3] as usize, size[4] as usize)
        } else {
            (1, size[2] as usize, size[3] as usize)
        };
        let theta = input_f32(cx, OP, 0)?;
        let (grid, sink) = output_f32(cx, 0)?;
        let rows = dims;
        let cols = dims + 1;
        let positions = depth * height * width;
        let batch = size[0].max(0) as usize;
        if !(2..=3).contains(&dims) || theta.len() != batch * rows * cols {
            return Err(error(
                OP,
                format_args!(
                    "theta must be [{batch}, {rows}, {cols}] for size of {} values",
                    size.len()
                ),
            ));
        }
        for (n, grid) in grid.chunks_exact_mut(positions * dims).enumerate() {
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
