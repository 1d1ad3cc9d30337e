//! NonZero: the coordinates of the non-zero elements, as an i64 matrix of one row per dim and
//! one column per element, in row-major order. Its shape depends on the input's values.

use crate::{
    broadcast::MAX_RANK,
    check::{check_rank, error},
    number::{with_number_type, Number},
};
use opal_plugin_api::prelude::*;

/// How many elements of `x` are non-zero.
fn count_nonzero(op: &str, x: TensorRef<'_>) -> KernelResult<usize> {
    Ok(with_number_type!(op, x.dtype(), T => {
        T::view(x.bytes()).iter().filter(|&&e| !T::from_bytes(e).is_zero()).count()
    }))
}

/// The coordinates of the input's non-zero elements.
pub struct NonZero;

impl Operator for NonZero {
    const OP_TYPE: &'static str = "NonZero";
    const SINCE_VERSION: i64 = 9;
    const VALUE_INPUTS: &'static [usize] = &[0];

    fn infer(cx: &InferContext<'_>) -> KernelResult<Vec<OutputType>> {
        let op = Self::OP_TYPE;
        let x = cx.input(0)?;
        check_rank(op, x.shape.len())?;
        let count = match x.value() {
            Some(value) => count_nonzero(op, value)? as i64,
            None => -1,
        };
        Ok(vec![OutputType::new(
            DType::I64,
            vec![x.shape.len() as i64, count],
        )])
    }

    fn compute(cx: &mut KernelContext<'_>) -> KernelResult<()> {
        let op = Self::OP_TYPE;
        let x = cx.input(0)?;
        let shape = x.shape();
        let rank = shape.len();
        check_rank(op, rank)?;
        let count = count_nonzero(op, x)?;
        let out = cx.output(0)?;
        if out.shape() != [rank, count] {
            return Err(error(op, format_args!("the output must be {rank}x{count}")));
        }
        let y = out.as_slice_mut::<i64>()?;
        with_number_type!(op, x.dtype(), T => {
            let mut index = [0usize; MAX_RANK];
            let mut column = 0;
            for &element in T::view(x.bytes()) {
                if !T::from_bytes(element).is_zero() {
                    for d in 0..rank {
                        y[d * count + column] = index[d] as i64;
                    }
                    column += 1;
                }
                for d in (0..rank).rev() {
                    index[d] += 1;
                    if index[d] < shape[d] {
                        break;
                    }
                    index[d] = 0;
                }
            }
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opal_plugin_api::testing::{run_operator, OwnedTensor};

    #[test]
    fn nonzero_lists_coordinates() {
        let x = OwnedTensor::f32(&[2, 2], &[1.0, 0.0, -0.0, 3.0]);
        let y = run_operator::<NonZero>(&[x], &[], 1).unwrap();
        assert_eq!(y[0].shape(), [2, 2]);
        assert_eq!(y[0].to_vec::<i64>(), [0, 1, 0, 1]);
    }
}
