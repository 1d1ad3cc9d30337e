//! Det: the determinant of each square matrix in the last two axes, by LU decomposition with
//! partial pivoting (as LAPACK's `getrf`, which numpy's `linalg.det` calls).

use crate::{
    check::{error, Shape},
    half::{widened, Narrow},
    numeric::{is_any_float, with_float, Float},
};
use opal_plugin_api::prelude::*;

/// Det (opset 11 on): `[..., M, M]` to `[...]`.
pub struct Det;

const OP: &str = "Det";

/// The determinant of the `n x n` row-major matrix in `lu`, which is overwritten by its
/// elimination.
fn determinant<F: Float>(lu: &mut [F], n: usize) -> F {
    let mut det = F::ONE;
    for column in 0..n {
        // The largest pivot keeps the multipliers at most 1 in magnitude.
        let mut pivot = column;
        for row in column + 1..n {
            if lu[row * n + column].abs() > lu[pivot * n + column].abs() {
                pivot = row;
            }
        }
        if pivot != column {
            for k in 0..n {
                lu.swap(column * n + k, pivot * n + k);
            }
            det = -det;
        }
        let diagonal = lu[column * n + column];
        det = det * diagonal;
        if diagonal == F::ZERO {
            return det;
        }
        for row in column + 1..n {
            let factor = lu[row * n + column] / diagonal;
            for k in column + 1..n {
                let above = lu[column * n + k];
                lu[row * n + k] = lu[row * n + k] - factor * above;
            }
        }
    }
    det
}

/// The determinants of the `n x n` matrices of `x` into `y`, using `lu` (`n * n`) as working space.
fn determinants<F: Float>(x: &[F], y: &mut [F], n: usize, lu: &mut [F]) {
    let size = n * n;
    for (det, matrix) in y.iter_mut().zip(x.chunks_exact(size.max(1))) {
        if size == 0 {
            *det = F::ONE;
            continue;
        }
        lu.copy_from_slice(matrix);
        *det = determinant(lu, n);
    }
}

impl Operator for Det {
    const OP_TYPE: &'static str = OP;
    const SINCE_VERSION: i64 = 11;

    fn infer(cx: &InferContext<'_>) -> KernelResult<Vec<OutputType>> {
        let x = cx.input(0)?;
        if !is_any_float(x.dtype) {
            return Err(error(
                OP,
                format_args!("X has dtype {}, expected a float type", x.dtype),
            ));
        }
        let rank = x.shape.len();
        let square = rank >= 2 && {
            let (rows, columns) = (x.shape[rank - 2], x.shape[rank - 1]);
            rows < 0 || columns < 0 || rows == columns
        };
        if !square {
            return Err(error(
                OP,
                format_args!("X {} must end in a square matrix", Shape(x.shape)),
            ));
        }
        Ok(vec![OutputType::new(x.dtype, x.shape[..rank - 2].to_vec())])
    }

    fn compute(cx: &mut KernelContext<'_>) -> KernelResult<()> {
        let x = cx.input(0)?;
        let shape = x.shape();
        let rank = shape.len();
        if rank < 2 || shape[rank - 1] != shape[rank - 2] {
            return Err(error(
                OP,
                format_args!("X {} must end in a square matrix", Shape(shape)),
            ));
        }
        let n = shape[rank - 1];
        let out = cx.output(0)?;
        if out.len() * n * n != x.len() {
            return Err(error(
                OP,
                format_args!(
                    "the output {} does not match X {}",
                    Shape(out.shape()),
                    Shape(shape)
                ),
            ));
        }
        with_float!(x.dtype(), F => {
            let lu = cx.scratch::<F>(n * n)?;
            determinants(x.as_slice::<F>()?, out.as_slice_mut::<F>()?, n, lu);
            Ok(())
        },
        _ => {
            let narrow = Narrow::new(cx, out)?;
            let lu = cx.scratch::<f32>(n * n)?;
            determinants(widened(OP, cx, x)?, &mut *narrow.values, n, lu);
            narrow.finish();
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opal_plugin_api::testing::{assert_close, run_operator, OwnedTensor};

    #[test]
    fn determinant_of_a_matrix_needing_a_pivot() {
        // [[0, 2], [3, 4]]: the zero pivot forces a row swap; det = 0*4 - 2*3 = -6.
        let x = OwnedTensor::f32(&[2, 2], &[0.0, 2.0, 3.0, 4.0]);
        let y = run_operator::<Det>(&[x], &[], 1).unwrap();
        assert_eq!(y[0].shape(), [] as [usize; 0]);
        assert_close(&y[0].to_vec::<f32>(), &[-6.0], 1e-6);
    }

    #[test]
    fn determinants_of_a_batch_in_f64() {
        // [[2, 0, 1], [1, 3, 2], [1, 1, 1]] has det 2*(3-2) - 0 + 1*(1-3) = 0;
        // [[4, 3, 2], [1, 5, 7], [2, 8, 3]] has det 4*(15-56) - 3*(3-14) + 2*(8-10) = -135.
        let values = [
            2.0, 0.0, 1.0, 1.0, 3.0, 2.0, 1.0, 1.0, 1.0, 4.0, 3.0, 2.0, 1.0, 5.0, 7.0, 2.0, 8.0,
            3.0,
        ];
        let x = OwnedTensor::new::<f64>(&[2, 3, 3], &values);
        let y = run_operator::<Det>(&[x], &[], 1).unwrap();
        assert_eq!(y[0].shape(), [2]);
        let det = y[0].to_vec::<f64>();
        assert!(det[0].abs() < 1e-12, "{det:?}");
        assert!((det[1] + 135.0).abs() < 1e-9, "{det:?}");
    }

    #[test]
    fn non_square_input_is_refused() {
        let x = OwnedTensor::f32(&[2, 3], &[1.0; 6]);
        let message = run_operator::<Det>(&[x], &[], 1).unwrap_err();
        assert!(
            message.contains("Det") && message.contains("square"),
            "{message}"
        );
    }
}
