//! CumSum and CumProd: running sums and products along the axis given by input 1, optionally
//! `exclusive` (each output leaves out its own element) and `reverse` (from the end).

use crate::{
    check::{error, normalize_axis},
    half::{widened, Narrow},
    numeric::{is_numeric, with_numeric, Num},
};
use opal_plugin_api::prelude::*;

/// How the running value is carried along the axis.
#[derive(Clone, Copy)]
struct Scan {
    exclusive: bool,
    reverse: bool,
    product: bool,
}

/// `x` (seen as `[outer, dim, inner]`) scanned along `dim` into `y`; `acc` is scratch of
/// `inner` values.
fn scan<T: Num>(x: &[T], dims: (usize, usize, usize), y: &mut [T], acc: &mut [T], how: Scan) {
    let (outer, dim, inner) = dims;
    let (start, step) = if how.product {
        (T::ONE, T::mul as fn(T, T) -> T)
    } else {
        (T::ZERO, T::add as fn(T, T) -> T)
    };
    for o in 0..outer {
        acc.fill(start);
        for s in 0..dim {
            let d = if how.reverse { dim - 1 - s } else { s };
            let at = (o * dim + d) * inner;
            let (x_row, y_row) = (&x[at..at + inner], &mut y[at..at + inner]);
            for ((a, y), &x) in acc.iter_mut().zip(y_row).zip(x_row) {
                if how.exclusive {
                    *y = *a;
                    *a = step(*a, x);
                } else {
                    *a = step(*a, x);
                    *y = *a;
                }
            }
        }
    }
}

fn infer_scan(op: &str, cx: &InferContext<'_>) -> KernelResult<Vec<OutputType>> {
    let x = cx.input(0)?;
    let axis = cx.input(1)?;
    if !is_numeric(x.dtype) {
        return Err(error(
            op,
            format_args!("dtype {} is not supported", x.dtype),
        ));
    }
    if !matches!(axis.dtype, DType::I32 | DType::I64) {
        return Err(error(op, "the axis input must be an i32 or i64 scalar"));
    }
    Ok(vec![OutputType::new(x.dtype, x.shape.to_vec())])
}

fn compute_scan(op: &str, cx: &mut KernelContext<'_>, product: bool) -> KernelResult<()> {
    let x = cx.input(0)?;
    let axis_input = cx.input(1)?;
    let axis = match axis_input.dtype() {
        DType::I32 => axis_input.as_slice::<i32>()?.first().map(|&a| i64::from(a)),
        _ => axis_input.as_slice::<i64>()?.first().copied(),
    }
    .ok_or_else(|| error(op, "the axis input is empty"))?;
    let shape = x.shape();
    let how = Scan {
        exclusive: cx.attributes().int("exclusive", 0)? != 0,
        reverse: cx.attributes().int("reverse", 0)? != 0,
        product,
    };
    let axis = normalize_axis(op, axis, shape.len().max(1))?;
    let dims = if shape.is_empty() {
        (1, 1, 1)
    } else {
        (
            shape[..axis].iter().product::<usize>(),
            shape[axis],
            shape[axis + 1..].iter().product::<usize>(),
        )
    };
    let out = cx.output(0)?;
    with_numeric!(x.dtype(), T => {
        scan(x.as_slice::<T>()?, dims, out.as_slice_mut::<T>()?, cx.scratch::<T>(dims.2)?, how);
        Ok(())
    }, _ => {
        let narrow = Narrow::new(cx, out)?;
        scan(widened(op, cx, x)?, dims, &mut *narrow.values, cx.scratch::<f32>(dims.2)?, how);
        narrow.finish();
        Ok(())
    })
}

/// Running sums along an axis.
pub struct CumSum;

impl Operator for CumSum {
    const OP_TYPE: &'static str = "CumSum";
    const SINCE_VERSION: i64 = 11;

    fn infer(cx: &InferContext<'_>) -> KernelResult<Vec<OutputType>> {
        infer_scan(Self::OP_TYPE, cx)
    }

    fn compute(cx: &mut KernelContext<'_>) -> KernelResult<()> {
        compute_scan(Self::OP_TYPE, cx, false)
    }
}

/// Running products along an axis.
pub struct CumProd;

impl Operator for CumProd {
    const OP_TYPE: &'static str = "CumProd";
    const SINCE_VERSION: i64 = 26;

    fn infer(cx: &InferContext<'_>) -> KernelResult<Vec<OutputType>> {
        infer_scan(Self::OP_TYPE, cx)
    }

    fn compute(cx: &mut KernelContext<'_>) -> KernelResult<()> {
        compute_scan(Self::OP_TYPE, cx, true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opal_plugin_api::testing::{int_attr, run_operator, OwnedTensor};

    #[test]
    fn scans_in_all_four_directions() {
        let x = OwnedTensor::f32(&[5], &[1.0, 2.0, 3.0, 4.0, 5.0]);
        let axis = OwnedTensor::new::<i32>(&[], &[0]);
        let run = |attributes: &[_]| {
            run_operator::<CumSum>(&[x.clone(), axis.clone()], attributes, 1).unwrap()[0]
                .to_vec::<f32>()
        };
        assert_eq!(run(&[]), [1.0, 3.0, 6.0, 10.0, 15.0]);
        assert_eq!(run(&[int_attr("exclusive", 1)]), [0.0, 1.0, 3.0, 6.0, 10.0]);
        assert_eq!(run(&[int_attr("reverse", 1)]), [15.0, 14.0, 12.0, 9.0, 5.0]);
        assert_eq!(
            run(&[int_attr("reverse", 1), int_attr("exclusive", 1)]),
            [14.0, 12.0, 9.0, 5.0, 0.0]
        );
    }

    #[test]
    fn products_along_an_inner_axis() {
        let x = OwnedTensor::new::<i64>(&[2, 3], &[1, 2, 3, 4, 5, 6]);
        let axis = OwnedTensor::i64(&[], &[-1]);
        let y = run_operator::<CumProd>(&[x, axis], &[], 1).unwrap();
        assert_eq!(y[0].to_vec::<i64>(), [1, 2, 6, 4, 20, 120]);
    }
}
