//! OneHot: a new axis of size `depth` holding the "on" value where it equals the index and the
//! "off" value elsewhere. Indices and depth may be of any numeric dtype; negative indices count
//! from the end of the depth, out-of-range ones match nothing.

use crate::{
    check::{check_rank, error, normalize_axis},
    constant::fill_bytes,
    layout::{around_axis, element_size},
    number::{with_number_type, Number},
};
use opal_plugin_api::prelude::*;

/// The depth, from the scalar input 1 of any numeric dtype.
fn depth_of(op: &str, depth: TensorRef<'_>) -> KernelResult<usize> {
    if depth.len() != 1 {
        return Err(error(op, "the depth must hold one value"));
    }
    let value = with_number_type!(op, depth.dtype(), T => T::from_bytes(T::view(depth.bytes())[0]).to_i64());
    usize::try_from(value)
        .ok()
        .filter(|&d| d > 0)
        .ok_or_else(|| error(op, format_args!("the depth must be positive, got {value}")))
}

/// Indices one-hot encoded along a new `axis` (default -1, the last).
pub struct OneHot;

impl Operator for OneHot {
    const OP_TYPE: &'static str = "OneHot";
    const SINCE_VERSION: i64 = 9;
    const VALUE_INPUTS: &'static [usize] = &[1];

    fn infer(cx: &InferContext<'_>) -> KernelResult<Vec<OutputType>> {
        let op = Self::OP_TYPE;
        let (indices, depth, values) = (cx.input(0)?, cx.input(1)?, cx.input(2)?);
        element_size(op, values.dtype)?;
        let rank = indices.shape.len() + 1;
        check_rank(op, rank)?;
        let axis = normalize_axis(op, cx.attributes().int("axis", -1)?, rank)?;
        let depth = match depth.value() {
            Some(d) => depth_of(op, d)? as i64,
            None => -1,
        };
        let mut shape = indices.shape.to_vec();
        shape.insert(axis, depth);
        Ok(vec![OutputType::new(values.dtype, shape)])
    }

    fn compute(cx: &mut KernelContext<'_>) -> KernelResult<()> {
        let op = Self::OP_TYPE;
        let (indices, values) = (cx.input(0)?, cx.input(2)?);
        let depth = depth_of(op, cx.input(1)?)?;
        let size = element_size(op, values.dtype())?;
        if values.len() != 2 {
            return Err(error(op, "the values must be [off, on]"));
        }
        let rank = indices.shape().len() + 1;
        check_rank(op, rank)?;
        let axis = normalize_axis(op, cx.attributes().int("axis", -1)?, rank)?;
        let out = cx.output(0)?;
        let (outer, out_depth, inner) = around_axis(out.shape(), axis);
        if out_depth != depth || out.dtype() != values.dtype() || outer * inner != indices.len() {
            return Err(error(op, "the output does not fit the indices and depth"));
        }
        let (off, on) = values.bytes().split_at(size);
        let y = out.bytes_mut();
        fill_bytes(y, off);
        with_number_type!(op, indices.dtype(), T => {
            for (position, &element) in T::view(indices.bytes()).iter().enumerate() {
                let index = T::from_bytes(element).to_i64();
                let index = if index < 0 { index + depth as i64 } else { index };
                if (0..depth as i64).contains(&index) {
                    let (o, i) = (position / inner, position % inner);
                    let at = ((o * depth + index as usize) * inner + i) * size;
                    y[at..at + size].copy_from_slice(on);
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
    fn one_hot_places_on_values() {
        let indices = OwnedTensor::f32(&[2], &[1.0, -1.0]);
        let depth = OwnedTensor::f32(&[], &[3.0]);
        let values = OwnedTensor::new(&[2], &[0i32, 5]);
        let y = run_operator::<OneHot>(&[indices.clone(), depth.clone(), values.clone()], &[], 1)
            .unwrap();
        assert_eq!(y[0].shape(), [2, 3]);
        assert_eq!(y[0].to_vec::<i32>(), [0, 5, 0, 0, 0, 5]);
        let y =
            run_operator::<OneHot>(&[indices, depth, values], &[int_attr("axis", 0)], 1).unwrap();
        assert_eq!(y[0].to_vec::<i32>(), [0, 0, 5, 0, 0, 5]);
    }
}
