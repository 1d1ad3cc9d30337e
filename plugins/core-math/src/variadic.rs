//! Elementwise folds over any number of broadcast inputs of one numeric dtype: Max, Min, Sum,
//! Mean. Two inputs take the binary broadcast loop; more are folded into the output in place.

use crate::{
    binary::infer_numeric_broadcast,
    check::error,
    elementwise::{broadcast_binary, broadcast_copy, broadcast_update, Operand},
    half::{widened, Narrow},
    numeric::{is_half, with_numeric, Num},
};
use opal_plugin_api::prelude::*;

/// How a variadic operator combines its inputs.
trait Fold {
    fn apply<T: Num>(a: T, b: T) -> T;
    /// Whether the result is divided by the number of inputs (Mean).
    const AVERAGE: bool = false;
}

/// Folds inputs `0..count` (given by `input`) into `y` of shape `shape` with `F`.
fn fold<'a, F: Fold, T: Num>(
    op: &str,
    cx: &KernelContext<'a>,
    count: usize,
    input: impl Fn(usize) -> KernelResult<Operand<'a, T>>,
    y: &mut [T],
    shape: &[usize],
) -> KernelResult<()> {
    let f = F::apply::<T>;
    if count == 2 {
        broadcast_binary(op, cx, input(0)?, input(1)?, (&mut *y, shape), f)?;
    } else {
        broadcast_copy(op, cx, input(0)?, (&mut *y, shape))?;
        for i in 1..count {
            broadcast_update(op, cx, input(i)?, (&mut *y, shape), f)?;
        }
    }
    if F::AVERAGE && count > 1 {
        let n = T::from_f64(count as f64);
        for v in y.iter_mut() {
            *v = v.div(n);
        }
    }
    Ok(())
}

fn compute_fold<F: Fold>(op: &str, cx: &mut KernelContext<'_>) -> KernelResult<()> {
    let count = cx.input_count();
    let first = cx.input(0)?;
    let dtype = first.dtype();
    for i in 1..count {
        let other = cx.input(i)?.dtype();
        if other != dtype {
            return Err(error(
                op,
                format_args!("input {i} has dtype {other}, input 0 has {dtype}"),
            ));
        }
    }
    let out = cx.output(0)?;
    let shape = out.shape();
    let cx = &*cx;
    with_numeric!(dtype, T => {
        let y = out.as_slice_mut::<T>()?;
        let input = |i: usize| {
            let t = cx.input(i)?;
            Ok((t.as_slice::<T>()?, t.shape()))
        };
        fold::<F, T>(op, cx, count, input, y, shape)
    }, _ => {
        if !is_half(dtype) {
            return Err(error(op, format_args!("dtype {dtype} is not supported")));
        }
        let narrow = Narrow::new(cx, out)?;
        let input = |i: usize| {
            let t = cx.input(i)?;
            Ok((widened(op, cx, t)?, t.shape()))
        };
        fold::<F, f32>(op, cx, count, input, &mut *narrow.values, shape)?;
        narrow.finish();
        Ok(())
    })
}

macro_rules! fold_operator {
    ($(#[$doc:meta])* $name:ident, $op_type:literal, average $average:literal,
     |$a:ident, $b:ident| $body:expr) => {
        $(#[$doc])*
        pub struct $name;

        impl Fold for $name {
            const AVERAGE: bool = $average;
            fn apply<T: Num>($a: T, $b: T) -> T {
                $body
            }
        }

        impl Operator for $name {
            const OP_TYPE: &'static str = $op_type;
            const SINCE_VERSION: i64 = 6;

            fn infer(cx: &InferContext<'_>) -> KernelResult<Vec<OutputType>> {
                infer_numeric_broadcast(Self::OP_TYPE, cx)
            }

            fn compute(cx: &mut KernelContext<'_>) -> KernelResult<()> {
                compute_fold::<Self>(Self::OP_TYPE, cx)
            }
        }
    };
}

fold_operator!(
    /// The elementwise maximum of the inputs, broadcast; NaN wins.
    Max, "Max", average false, |a, b| a.max_nan(b)
);
fold_operator!(
    /// The elementwise minimum of the inputs, broadcast; NaN wins.
    Min, "Min", average false, |a, b| a.min_nan(b)
);
fold_operator!(
    /// The elementwise sum of the inputs, broadcast.
    Sum, "Sum", average false, |a, b| a.add(b)
);
fold_operator!(
    /// The elementwise mean of the inputs, broadcast.
    Mean, "Mean", average true, |a, b| a.add(b)
);

#[cfg(test)]
mod tests {
    use super::*;
    use opal_plugin_api::testing::{run_operator, OwnedTensor};

    #[test]
    fn folds_any_number_of_broadcast_inputs() {
        let a = OwnedTensor::f32(&[2, 2], &[1.0, 5.0, -3.0, 2.0]);
        let b = OwnedTensor::f32(&[2], &[2.0, 2.0]);
        let c = OwnedTensor::f32(&[1], &[4.0]);
        let all = [a.clone(), b.clone(), c];
        let max = run_operator::<Max>(&all, &[], 1).unwrap();
        assert_eq!(max[0].to_vec::<f32>(), [4.0, 5.0, 4.0, 4.0]);
        let mean = run_operator::<Mean>(&all, &[], 1).unwrap();
        assert_eq!(
            mean[0].to_vec::<f32>(),
            [7.0 / 3.0, 11.0 / 3.0, 1.0, 8.0 / 3.0]
        );
        let min = run_operator::<Min>(&[a.clone(), b], &[], 1).unwrap();
        assert_eq!(min[0].to_vec::<f32>(), [1.0, 2.0, -3.0, 2.0]);
        let one = run_operator::<Sum>(&[a], &[], 1).unwrap();
        assert_eq!(one[0].to_vec::<f32>(), [1.0, 5.0, -3.0, 2.0]);
    }

    #[test]
    fn integers_fold_in_their_own_type() {
        let a = OwnedTensor::new::<u8>(&[3], &[200, 1, 7]);
        let b = OwnedTensor::new::<u8>(&[3], &[100, 2, 9]);
        let sum = run_operator::<Sum>(&[a.clone(), b.clone()], &[], 1).unwrap();
        assert_eq!(sum[0].to_vec::<u8>(), [44, 3, 16]);
        let max = run_operator::<Max>(&[a, b], &[], 1).unwrap();
        assert_eq!(max[0].to_vec::<u8>(), [200, 2, 9]);
    }
}
