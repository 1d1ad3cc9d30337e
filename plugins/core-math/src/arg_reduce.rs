//! ArgMax and ArgMin: the i64 index of the extreme element along `axis`, the first one on ties
//! unless `select_last_index` is set.

use crate::{
    check::{check_rank, error, normalize_axis},
    half::widened,
    numeric::{is_numeric, with_numeric, Num},
};
use opal_plugin_api::prelude::*;

fn infer_arg(op: &str, cx: &InferContext<'_>) -> KernelResult<Vec<OutputType>> {
    let x = cx.input(0)?;
    if !is_numeric(x.dtype) {
        return Err(error(
            op,
            format_args!("dtype {} is not supported", x.dtype),
        ));
    }
    check_rank(op, x.shape.len())?;
    let axis = normalize_axis(op, cx.attributes().int("axis", 0)?, x.shape.len())?;
    let keepdims = cx.attributes().int("keepdims", 1)? != 0;
    let mut shape = x.shape.to_vec();
    if keepdims {
        shape[axis] = 1;
    } else {
        shape.remove(axis);
    }
    Ok(vec![OutputType::new(DType::I64, shape)])
}

/// The index along the middle dim of `x` (seen as `[outer, dim, inner]`) where `wins(v, best)`
/// last held, written to `y` (`[outer, inner]`); `best` is scratch of `inner` values.
fn arg_reduce<T: Num>(
    x: &[T],
    dims: (usize, usize, usize),
    y: &mut [i64],
    best: &mut [T],
    wins: impl Fn(T, T) -> bool,
) {
    let (outer, dim, inner) = dims;
    for o in 0..outer {
        let block = &x[o * dim * inner..(o + 1) * dim * inner];
        let out = &mut y[o * inner..(o + 1) * inner];
        best.copy_from_slice(&block[..inner]);
        out.fill(0);
        for d in 1..dim {
            let row = &block[d * inner..(d + 1) * inner];
            for ((b, index), &v) in best.iter_mut().zip(out.iter_mut()).zip(row) {
                if wins(v, *b) {
                    *b = v;
                    *index = d as i64;
                }
            }
        }
    }
}

fn compute_arg(op: &str, cx: &mut KernelContext<'_>, max: bool) -> KernelResult<()> {
    let x = cx.input(0)?;
    let shape = x.shape();
    let axis = normalize_axis(op, cx.attributes().int("axis", 0)?, shape.len())?;
    let last = cx.attributes().int("select_last_index", 0)? != 0;
    let dims = (
        shape[..axis].iter().product::<usize>(),
        shape[axis],
        shape[axis + 1..].iter().product::<usize>(),
    );
    let y = cx.output(0)?.as_slice_mut::<i64>()?;
    if y.is_empty() {
        return Ok(());
    }
    if dims.1 == 0 {
        return Err(error(op, format_args!("axis {axis} has no elements")));
    }
    with_numeric!(x.dtype(), T => {
        let best = cx.scratch::<T>(dims.2)?;
        let x = x.as_slice::<T>()?;
        match (max, last) {
            (true, false) => arg_reduce(x, dims, y, best, |v, b| v > b),
            (true, true) => arg_reduce(x, dims, y, best, |v, b| v >= b),
            (false, false) => arg_reduce(x, dims, y, best, |v, b| v < b),
            (false, true) => arg_reduce(x, dims, y, best, |v, b| v <= b),
        }
        Ok(())
    }, _ => {
        let best = cx.scratch::<f32>(dims.2)?;
        let x = widened(op, cx, x)?;
        match (max, last) {
            (true, false) => arg_reduce(x, dims, y, best, |v, b| v > b),
            (true, true) => arg_reduce(x, dims, y, best, |v, b| v >= b),
            (false, false) => arg_reduce(x, dims, y, best, |v, b| v < b),
            (false, true) => arg_reduce(x, dims, y, best, |v, b| v <= b),
        }
        Ok(())
    })
}

/// The index of the largest element along `axis`.
pub struct ArgMax;

impl Operator for ArgMax {
    const OP_TYPE: &'static str = "ArgMax";

    fn infer(cx: &InferContext<'_>) -> KernelResult<Vec<OutputType>> {
        infer_arg(Self::OP_TYPE, cx)
    }

    fn compute(cx: &mut KernelContext<'_>) -> KernelResult<()> {
        compute_arg(Self::OP_TYPE, cx, true)
    }
}

/// The index of the smallest element along `axis`.
pub struct ArgMin;

impl Operator for ArgMin {
    const OP_TYPE: &'static str = "ArgMin";

    fn infer(cx: &InferContext<'_>) -> KernelResult<Vec<OutputType>> {
        infer_arg(Self::OP_TYPE, cx)
    }

    fn compute(cx: &mut KernelContext<'_>) -> KernelResult<()> {
        compute_arg(Self::OP_TYPE, cx, false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opal_plugin_api::testing::{int_attr, run_operator, OwnedTensor};

    #[test]
    fn indices_along_an_axis_with_ties() {
        let x = OwnedTensor::f32(&[2, 3], &[1.0, 5.0, 5.0, 7.0, 2.0, 7.0]);
        let y =
            run_operator::<ArgMax>(std::slice::from_ref(&x), &[int_attr("axis", 1)], 1).unwrap();
        assert_eq!(y[0].shape(), [2, 1]);
        assert_eq!(y[0].to_vec::<i64>(), [1, 0]);
        let attributes = [
            int_attr("axis", -1),
            int_attr("select_last_index", 1),
            int_attr("keepdims", 0),
        ];
        let y = run_operator::<ArgMax>(std::slice::from_ref(&x), &attributes, 1).unwrap();
        assert_eq!(y[0].shape(), [2]);
        assert_eq!(y[0].to_vec::<i64>(), [2, 2]);
        let y = run_operator::<ArgMin>(&[x], &[], 1).unwrap();
        assert_eq!(y[0].shape(), [1, 3]);
        assert_eq!(y[0].to_vec::<i64>(), [0, 1, 0]);
        let ints = OwnedTensor::new::<u8>(&[4], &[3, 9, 1, 9]);
        let y = run_operator::<ArgMax>(&[ints], &[int_attr("keepdims", 0)], 1).unwrap();
        assert_eq!(y[0].to_vec::<i64>(), [1]);
    }
}
