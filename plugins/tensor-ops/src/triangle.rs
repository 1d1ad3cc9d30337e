//! Operators defined by the diagonals of matrices: Trilu (the upper or lower triangle of the
//! last two dims, from diagonal `k`) and EyeLike (ones on diagonal `k`, zeros elsewhere).

use crate::{
    check::error,
    layout::element_size,
    number::{with_number_type, Number},
    params::Ints,
};
use opal_plugin_api::prelude::*;

/// The triangle of each matrix in the last two dims: on and above diagonal `k` (input 1,
/// default 0) when `upper` is 1 (the default), on and below it when 0; the rest is zero.
pub struct Trilu;

impl Operator for Trilu {
    const OP_TYPE: &'static str = "Trilu";
    const SINCE_VERSION: i64 = 14;

    fn infer(cx: &InferContext<'_>) -> KernelResult<Vec<OutputType>> {
        let op = Self::OP_TYPE;
        let x = cx.input(0)?;
        element_size(op, x.dtype)?;
        if x.shape.len() < 2 {
            return Err(error(
                op,
                format_args!(
                    "the input must have rank 2 or more, it has {}",
                    x.shape.len()
                ),
            ));
        }
        Ok(vec![OutputType::new(x.dtype, x.shape.to_vec())])
    }

    fn compute(cx: &mut KernelContext<'_>) -> KernelResult<()> {
        let op = Self::OP_TYPE;
        let x = cx.input(0)?;
        let shape = x.shape();
        if shape.len() < 2 {
            return Err(error(op, "the input must have rank 2 or more"));
        }
        let k = match cx.optional_input(1) {
            Some(k) => Ints::from_tensor(op, "k", k)?.scalar(op, "k")?,
            None => 0,
        };
        let upper = cx.attributes().int("upper", 1)? != 0;
        let size = element_size(op, x.dtype())?;
        let (rows, columns) = (shape[shape.len() - 2], shape[shape.len() - 1]);
        let out = cx.output(0)?;
        let row_bytes = columns * size;
        let clamp = |j: i64| j.clamp(0, columns as i64) as usize * size;
        let y = out.bytes_mut();
        if y.len() != x.bytes().len() {
            return Err(error(op, "the output does not match the input"));
        }
        y.copy_from_slice(x.bytes());
        if row_bytes == 0 {
            return Ok(());
        }
        for (r, row) in y.chunks_exact_mut(row_bytes).enumerate() {
            let i = (r % rows.max(1)) as i64;
            let diagonal = i.saturating_add(k);
            if upper {
                row[..clamp(diagonal)].fill(0);
            } else {
                row[clamp(diagonal.saturating_add(1))..].fill(0);
            }
        }
        Ok(())
    }
}

/// A matrix shaped like the input with ones on diagonal `k` (default 0) and zeros elsewhere,
/// of dtype `dtype` (default the input's).
pub struct EyeLike;

impl Operator for EyeLike {
    const OP_TYPE: &'static str = "EyeLike";
    const SINCE_VERSION: i64 = 9;
    const SHAPE_INPUTS: &'static [usize] = &[0];

    fn infer(cx: &InferContext<'_>) -> KernelResult<Vec<OutputType>> {
        let op = Self::OP_TYPE;
        let x = cx.input(0)?;
        if x.shape.len() != 2 {
            return Err(error(
                op,
                format_args!("the input must be a matrix, it has rank {}", x.shape.len()),
            ));
        }
        let dtype = match cx.attributes().get("dtype") {
            Some(_) => DType(cx.attributes().int("dtype", 0)? as i32),
            None => x.dtype,
        };
        element_size(op, dtype)?;
        Ok(vec![OutputType::new(dtype, x.shape.to_vec())])
    }

    fn compute(cx: &mut KernelContext<'_>) -> KernelResult<()> {
        let op = Self::OP_TYPE;
        let k = cx.attributes().int("k", 0)?;
        let out = cx.output(0)?;
        let [rows, columns] = *out.shape() else {
            return Err(error(op, "the output must be a matrix"));
        };
        let dtype = out.dtype();
        let y = out.bytes_mut();
        y.fill(0);
        with_number_type!(op, dtype, T => {
            let y = T::view_mut(y);
            for i in 0..rows {
                let j = i as i64 + k;
                if (0..columns as i64).contains(&j) {
                    y[i * columns + j as usize] = T::ONE.to_bytes();
                }
            }
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opal_plugin_api::testing::{int_attr, run_operator, OwnedTensor};

    #[test]
    fn trilu_keeps_a_triangle() {
        let x = OwnedTensor::i64(&[3, 3], &[1, 2, 3, 4, 5, 6, 7, 8, 9]);
        let y = run_operator::<Trilu>(std::slice::from_ref(&x), &[], 1).unwrap();
        assert_eq!(y[0].to_vec::<i64>(), [1, 2, 3, 0, 5, 6, 0, 0, 9]);
        let k = OwnedTensor::i64(&[], &[-1]);
        let y = run_operator::<Trilu>(&[x, k], &[int_attr("upper", 0)], 1).unwrap();
        assert_eq!(y[0].to_vec::<i64>(), [0, 0, 0, 4, 0, 0, 7, 8, 0]);
    }

    #[test]
    fn eye_like_puts_ones_on_a_diagonal() {
        let x = OwnedTensor::new(&[2, 3], &[0i32; 6]);
        let y =
            run_operator::<EyeLike>(&[x], &[int_attr("k", 1), int_attr("dtype", 1)], 1).unwrap();
        assert_eq!(y[0].to_vec::<f32>(), [0.0, 1.0, 0.0, 0.0, 0.0, 1.0]);
    }
}
