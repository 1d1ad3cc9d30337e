//! TopK: the `k` largest (or smallest) elements along an axis and their indices, sorted, equal
//! values in index order as the ONNX reference does. `k` is an attribute in opsets 1-9 and
//! input 1 from 10; `largest` and `sorted` arrived in 11.

use crate::{
    check::{check_rank, error, normalize_axis},
    layout::{around_axis, element_size, expect_output_shape},
    number::{with_number_type, Number},
    params::{known_ints, Ints},
};
use opal_plugin_api::prelude::*;
use std::cmp::Ordering;

/// Output types for `k` elements (`None`: unknown) along `axis` of input 0.
fn infer_top_k(op: &str, cx: &InferContext<'_>, k: Option<i64>) -> KernelResult<Vec<OutputType>> {
    let x = cx.input(0)?;
    element_size(op, x.dtype)?;
    check_rank(op, x.shape.len())?;
    let axis = normalize_axis(op, cx.attributes().int("axis", -1)?, x.shape.len())?;
    let mut shape = x.shape.to_vec();
    if let Some(k) = k {
        if k < 0 || (shape[axis] >= 0 && k > shape[axis]) {
            return Err(error(
                op,
                format_args!("k = {k} is out of range for an axis of {}", shape[axis]),
            ));
        }
    }
    shape[axis] = k.unwrap_or(-1);
    Ok(vec![
        OutputType::new(x.dtype, shape.clone()),
        OutputType::new(DType::I64, shape),
    ])
}

/// Writes the top `k` values and indices along `axis` into outputs 0 and 1.
fn compute_top_k(op: &str, cx: &mut KernelContext<'_>, k: i64) -> KernelResult<()> {
    let x = cx.input(0)?;
    let shape = x.shape();
    check_rank(op, shape.len())?;
    let axis = normalize_axis(op, cx.attributes().int("axis", -1)?, shape.len())?;
    let largest = cx.attributes().int("largest", 1)? != 0;
    let (outer, n, inner) = around_axis(shape, axis);
    let k = usize::try_from(k).ok().filter(|&k| k <= n).ok_or_else(|| {
        error(
            op,
            format_args!("k = {k} is out of range for an axis of {n}"),
        )
    })?;
    let mut expected = [0usize; crate::broadcast::MAX_RANK];
    expected[..shape.len()].copy_from_slice(shape);
    expected[axis] = k;
    let expected = &expected[..shape.len()];
    let values_out = cx.output(0)?;
    let indices_out = cx.output(1)?;
    expect_output_shape(op, values_out.shape(), expected)?;
    expect_output_shape(op, indices_out.shape(), expected)?;
    if values_out.dtype() != x.dtype() {
        return Err(error(op, "the values output must have the input's dtype"));
    }
    let order = cx.scratch::<u32>(n)?;
    if n > u32::MAX as usize {
        return Err(error(op, "the axis is too long"));
    }
    let indices_out = indices_out.as_slice_mut::<i64>()?;
    with_number_type!(op, x.dtype(), T => {
        let data = T::view(x.bytes());
        let values = T::view_mut(values_out.bytes_mut());
        for o in 0..outer {
            for i in 0..inner {
                let at = |j: u32| T::from_bytes(data[(o * n + j as usize) * inner + i]);
                let compare = |a: &u32, b: &u32| -> Ordering {
                    let by_value = if largest { at(*b).order(at(*a)) } else { at(*a).order(at(*b)) };
                    by_value.then(a.cmp(b))
                };
                for (j, slot) in order.iter_mut().enumerate() {
                    *slot = j as u32;
                }
                if k > 0 && k < n {
                    order.select_nth_unstable_by(k - 1, compare);
                }
                order[..k].sort_unstable_by(compare);
                for (t, &j) in order[..k].iter().enumerate() {
                    let target = (o * k + t) * inner + i;
                    values[target] = data[(o * n + j as usize) * inner + i];
                    indices_out[target] = i64::from(j);
                }
            }
        }
    });
    Ok(())
}

/// TopK from opset 10: `k` is input 1 (a one-element i64 tensor).
pub struct TopK;

impl Operator for TopK {
    const OP_TYPE: &'static str = "TopK";
    const SINCE_VERSION: i64 = 10;
    const VALUE_INPUTS: &'static [usize] = &[1];

    fn infer(cx: &InferContext<'_>) -> KernelResult<Vec<OutputType>> {
        let op = Self::OP_TYPE;
        let k = match known_ints(op, "k", &cx.input(1)?)? {
            Some(k) if k.len() == 1 => Some(k[0]),
            Some(k) => {
                return Err(error(
                    op,
                    format_args!("k must hold one value, it holds {}", k.len()),
                ))
            }
            None => None,
        };
        infer_top_k(op, cx, k)
    }

    fn compute(cx: &mut KernelContext<'_>) -> KernelResult<()> {
        let op = Self::OP_TYPE;
        let k = Ints::from_tensor(op, "k", cx.input(1)?)?.scalar(op, "k")?;
        compute_top_k(op, cx, k)
    }
}

/// TopK of opsets 1-9: `k` is an attribute, and the largest elements are taken.
pub struct TopKV1;

impl Operator for TopKV1 {
    const OP_TYPE: &'static str = "TopK";
    const UNTIL_VERSION: i64 = 9;

    fn infer(cx: &InferContext<'_>) -> KernelResult<Vec<OutputType>> {
        let k = cx.attributes().int("k", -1)?;
        infer_top_k(Self::OP_TYPE, cx, Some(k))
    }

    fn compute(cx: &mut KernelContext<'_>) -> KernelResult<()> {
        let k = cx.attributes().int("k", -1)?;
        compute_top_k(Self::OP_TYPE, cx, k)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opal_plugin_api::testing::{int_attr, run_operator, OwnedTensor};

    #[test]
    fn top_k_orders_ties_by_index() {
        let x = OwnedTensor::i64(&[2, 4], &[0, 1, 1, 0, 3, 1, 3, 2]);
        let k = OwnedTensor::i64(&[1], &[3]);
        let y = run_operator::<TopK>(&[x.clone(), k.clone()], &[], 2).unwrap();
        assert_eq!(y[0].to_vec::<i64>(), [1, 1, 0, 3, 3, 2]);
        assert_eq!(y[1].to_vec::<i64>(), [1, 2, 0, 0, 2, 3]);
        let k = OwnedTensor::i64(&[1], &[2]);
        let y = run_operator::<TopK>(&[x, k], &[int_attr("largest", 0), int_attr("axis", 0)], 2)
            .unwrap();
        assert_eq!(y[0].shape(), [2, 4]);
        assert_eq!(y[1].to_vec::<i64>(), [0, 0, 0, 0, 1, 1, 1, 1]);
    }

    #[test]
    fn top_k_of_floats_along_the_first_axis() {
        let x = OwnedTensor::f32(&[3, 1], &[0.5, 2.0, 1.0]);
        let y = run_operator::<TopKV1>(&[x], &[int_attr("k", 2), int_attr("axis", 0)], 2).unwrap();
        assert_eq!(y[0].to_vec::<f32>(), [2.0, 1.0]);
        assert_eq!(y[1].to_vec::<i64>(), [1, 2]);
    }
}
