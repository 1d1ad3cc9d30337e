//! Choosing elements by a boolean condition: Where (elementwise, with numpy broadcasting of
//! all three inputs) and Compress (the slices along an axis whose condition is true).

use crate::{
    broadcast::{broadcast_shapes, Plan},
    check::{check_rank, error, normalize_axis, Shape},
    layout::{around_axis, element_size, elements, elements_mut, with_element_size, COPY_GRAIN},
    parallel::for_each_chunk,
};
use opal_plugin_api::prelude::*;

/// Fails unless input `index` is bool.
fn expect_bool(op: &str, what: &str, dtype: DType) -> KernelResult<()> {
    if dtype != DType::BOOL {
        return Err(error(op, format_args!("{what} must be bool, got {dtype}")));
    }
    Ok(())
}

/// `condition ? x : y` elementwise, the three broadcast together.
pub struct Where;

impl Operator for Where {
    const OP_TYPE: &'static str = "Where";
    const SINCE_VERSION: i64 = 9;

    fn infer(cx: &InferContext<'_>) -> KernelResult<Vec<OutputType>> {
        let op = Self::OP_TYPE;
        let (c, x, y) = (cx.input(0)?, cx.input(1)?, cx.input(2)?);
        expect_bool(op, "the condition", c.dtype)?;
        element_size(op, x.dtype)?;
        if x.dtype != y.dtype {
            return Err(error(
                op,
                format_args!("X has dtype {}, Y has {}", x.dtype, y.dtype),
            ));
        }
        let shape = broadcast_shapes(op, &broadcast_shapes(op, c.shape, x.shape)?, y.shape)?;
        check_rank(op, shape.len())?;
        Ok(vec![OutputType::new(x.dtype, shape)])
    }

    fn compute(cx: &mut KernelContext<'_>) -> KernelResult<()> {
        let op = Self::OP_TYPE;
        let (c, x, y) = (cx.input(0)?, cx.input(1)?, cx.input(2)?);
        expect_bool(op, "the condition", c.dtype())?;
        let out = cx.output(0)?;
        if x.dtype() != out.dtype() || y.dtype() != out.dtype() {
            return Err(error(op, "X, Y and the output must share a dtype"));
        }
        let plan = Plan::broadcast(op, out.shape(), [c.shape(), x.shape(), y.shape()])?;
        let size = element_size(op, out.dtype())?;
        let condition = c.bytes();
        with_element_size!(op, size, N => {
            let (xs, ys) = (elements::<N>(x.bytes()), elements::<N>(y.bytes()));
            let [sc, sx, sy] = plan.run_strides();
            for_each_chunk(cx, elements_mut::<N>(out.bytes_mut()), 1, COPY_GRAIN / N, #[inline(always)] |first, chunk| {
                plan.for_each_run(first..first + chunk.len(), |start, len, [oc, ox, oy]| {
                    let run = &mut chunk[start - first..start - first + len];
                    for (t, element) in run.iter_mut().enumerate() {
                        *element = if condition[oc + t * sc] != 0 { xs[ox + t * sx] } else { ys[oy + t * sy] };
                    }
                });
            });
        });
        Ok(())
    }
}

/// The slices along `axis` (of the flattened input when absent) whose condition is true;
/// the condition may be shorter than the axis.
pub struct Compress;

/// How many of the first `limit` conditions are true.
fn count_true(condition: &[u8], limit: usize) -> usize {
    condition.iter().take(limit).filter(|&&c| c != 0).count()
}

impl Operator for Compress {
    const OP_TYPE: &'static str = "Compress";
    const SINCE_VERSION: i64 = 9;
    const VALUE_INPUTS: &'static [usize] = &[1];

    fn infer(cx: &InferContext<'_>) -> KernelResult<Vec<OutputType>> {
        let op = Self::OP_TYPE;
        let (x, condition) = (cx.input(0)?, cx.input(1)?);
        element_size(op, x.dtype)?;
        expect_bool(op, "the condition", condition.dtype)?;
        let kept = |limit: i64| -> KernelResult<i64> {
            match (condition.value(), usize::try_from(limit)) {
                (Some(c), Ok(limit)) => Ok(count_true(c.bytes(), limit) as i64),
                _ => Ok(-1),
            }
        };
        let shape = match cx.attributes().get("axis") {
            None => {
                let total = x
                    .shape
                    .iter()
                    .try_fold(1i64, |p, &d| (d >= 0).then(|| p * d))
                    .unwrap_or(-1);
                vec![kept(total)?]
            }
            Some(_) => {
                let axis = normalize_axis(op, cx.attributes().int("axis", 0)?, x.shape.len())?;
                let mut shape = x.shape.to_vec();
                shape[axis] = kept(x.shape[axis])?;
                shape
            }
        };
        Ok(vec![OutputType::new(x.dtype, shape)])
    }

    fn compute(cx: &mut KernelContext<'_>) -> KernelResult<()> {
        let op = Self::OP_TYPE;
        let (x, condition) = (cx.input(0)?, cx.input(1)?);
        expect_bool(op, "the condition", condition.dtype())?;
        let size = element_size(op, x.dtype())?;
        let (outer, dim, inner) = match cx.attributes().get("axis") {
            None => (1, x.len(), 1),
            Some(_) => {
                let axis = normalize_axis(op, cx.attributes().int("axis", 0)?, x.shape().len())?;
                around_axis(x.shape(), axis)
            }
        };
        let condition = condition.bytes();
        let kept = count_true(condition, dim);
        let out = cx.output(0)?;
        if out.dtype() != x.dtype() || out.len() != outer * kept * inner {
            return Err(error(
                op,
                format_args!(
                    "the output {} does not fit the kept slices",
                    Shape(out.shape())
                ),
            ));
        }
        let (from, to) = (x.bytes(), out.bytes_mut());
        let block = inner * size;
        let mut at = 0;
        for o in 0..outer {
            for (j, _) in condition
                .iter()
                .take(dim)
                .enumerate()
                .filter(|(_, &c)| c != 0)
            {
                let source = (o * dim + j) * block;
                to[at..at + block].copy_from_slice(&from[source..source + block]);
                at += block;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opal_plugin_api::testing::{int_attr, run_operator, OwnedTensor, TestHost};

    #[test]
    fn where_broadcasts_all_three() {
        let c = OwnedTensor::new(&[2, 1], &[true, false]);
        let x = OwnedTensor::new(&[3], &[1i64, 2, 3]);
        let y = OwnedTensor::new(&[], &[-1i64]);
        for threads in [1, 2] {
            let z = TestHost::new()
                .threads(threads)
                .run::<Where>(&[c.clone(), x.clone(), y.clone()], &[], 1)
                .unwrap();
            assert_eq!(z[0].shape(), [2, 3]);
            assert_eq!(z[0].to_vec::<i64>(), [1, 2, 3, -1, -1, -1]);
        }
    }

    #[test]
    fn compress_keeps_true_slices() {
        let x = OwnedTensor::f32(&[3, 2], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        let c = OwnedTensor::new(&[2], &[false, true]);
        let y =
            run_operator::<Compress>(&[x.clone(), c.clone()], &[int_attr("axis", 0)], 1).unwrap();
        assert_eq!(
            (y[0].shape(), y[0].to_vec::<f32>()),
            (&[1, 2][..], vec![3.0, 4.0])
        );
        let y =
            run_operator::<Compress>(&[x.clone(), c.clone()], &[int_attr("axis", -1)], 1).unwrap();
        assert_eq!(y[0].to_vec::<f32>(), [2.0, 4.0, 6.0]);
        let y = run_operator::<Compress>(&[x, c], &[], 1).unwrap();
        assert_eq!(y[0].to_vec::<f32>(), [2.0]);
    }
}
