//! ConcatFromSequence: a sequence's elements joined along `axis`, or stacked along a new one
//! when `new_axis` is 1.

use crate::common::element_type;
use opal_kernel_support::check::{error, normalize_axis};
use opal_plugin_api::prelude::*;
use smallvec::SmallVec;

pub struct ConcatFromSequence;

impl Operator for ConcatFromSequence {
    const OP_TYPE: &'static str = "ConcatFromSequence";
    const SINCE_VERSION: i64 = 11;
    const READS_VALUE_KINDS: bool = true;

    fn infer(cx: &InferContext<'_>) -> KernelResult<Vec<OutputType>> {
        let sequence = cx.sequence_input(0)?;
        let Some((dtype, mut shape)) = element_type(&sequence) else {
            return Err(error(
                Self::OP_TYPE,
                "the sequence is empty: there is no element to take the dtype and shape from",
            ));
        };
        let (axis, new_axis) = axis(cx.attributes(), shape.len())?;
        // How many elements there are is known only when the call runs.
        if new_axis {
            shape.insert(axis, -1);
        } else {
            shape[axis] = -1;
        }
        Ok(vec![OutputType::new(dtype, shape)])
    }

    fn compute(cx: &mut KernelContext<'_>) -> KernelResult<()> {
        const OP: &str = ConcatFromSequence::OP_TYPE;
        let sequence = cx.sequence(0)?;
        if sequence.is_empty() {
            return Err(error(
                OP,
                "the sequence is empty: there is nothing to concatenate",
            ));
        }
        let first = sequence.get(0)?;
        let (axis, new_axis) = axis(cx.attributes(), first.shape().len())?;
        let mut total = 0;
        for (i, element) in sequence.iter().enumerate() {
            let element = element?;
            let matches = element.dtype() == first.dtype()
                && element.shape().len() == first.shape().len()
                && element
                    .shape()
                    .iter()
                    .zip(first.shape())
                    .enumerate()
                    .all(|(d, (a, b))| a == b || (d == axis && !new_axis));
            if !matches {
                return Err(error(
                    OP,
                    format_args!(
                        "element {i} is {} {:?} and element 0 {} {:?}: they must agree in dtype and in every dim{}",
                        element.dtype(),
                        element.shape(),
                        first.dtype(),
                        first.shape(),
                        if new_axis { String::new() } else { format!(" but axis {axis}") }
                    ),
                ));
            }
            total += if new_axis { 1 } else { element.shape()[axis] };
        }
        let mut shape: SmallVec<[usize; 8]> = SmallVec::from_slice(first.shape());
        if new_axis {
            shape.insert(axis, total);
        } else {
            shape[axis] = total;
        }
        let size = first.dtype().size().unwrap_or(1);
        let outer: usize = shape[..axis].iter().product();
        let inner: usize = shape[axis + 1..].iter().product::<usize>() * size;
        let out = cx.shaped_output(0, &shape)?.bytes_mut();
        let mut offset = 0;
        for o in 0..outer {
            for element in sequence.iter() {
                let bytes = element?.bytes();
                let run = bytes.len() / outer.max(1);
                out[offset..offset + run].copy_from_slice(&bytes[o * run..(o + 1) * run]);
                offset += run;
            }
        }
        debug_assert_eq!(offset, outer * total * inner);
        Ok(())
    }
}

/// The `axis` attribute as an index of the output, and whether it is a new one.
fn axis(attributes: Attributes<'_>, rank: usize) -> KernelResult<(usize, bool)> {
    const OP: &str = ConcatFromSequence::OP_TYPE;
    let new_axis = attributes.int("new_axis", 0)? != 0;
    if attributes.get("axis").is_none() {
        return Err(error(OP, "the attribute 'axis' is required"));
    }
    let axis = attributes.int("axis", 0)?;
    let bound = if new_axis { rank + 1 } else { rank };
    Ok((normalize_axis(OP, axis, bound)?, new_axis))
}

#[cfg(test)]
mod tests {
    use super::*;
    use opal_plugin_api::testing::{int_attr, OwnedTensor, TestHost, TestValue};

    fn sequence(elements: Vec<OwnedTensor>) -> TestValue {
        TestValue::Sequence(DType::F32, elements)
    }

    #[test]
    fn joins_along_an_axis_or_stacks_on_a_new_one() {
        let a = OwnedTensor::f32(&[2, 1], &[1.0, 2.0]);
        let b = OwnedTensor::f32(&[2, 2], &[3.0, 4.0, 5.0, 6.0]);
        let out = TestHost::new()
            .run_values::<ConcatFromSequence>(
                &[sequence(vec![a.clone(), b])],
                &[int_attr("axis", 1)],
                1,
            )
            .unwrap();
        assert_eq!(out[0].tensor().shape(), [2, 3]);
        assert_eq!(
            out[0].tensor().to_vec::<f32>(),
            [1.0, 3.0, 4.0, 2.0, 5.0, 6.0]
        );
        let out = TestHost::new()
            .run_values::<ConcatFromSequence>(
                &[sequence(vec![a.clone(), a])],
                &[int_attr("axis", -1), int_attr("new_axis", 1)],
                1,
            )
            .unwrap();
        assert_eq!(out[0].tensor().shape(), [2, 1, 2]);
        assert_eq!(out[0].tensor().to_vec::<f32>(), [1.0, 1.0, 2.0, 2.0]);
    }

    #[test]
    fn refuses_elements_whose_shapes_do_not_fit() {
        let a = OwnedTensor::f32(&[2, 1], &[1.0, 2.0]);
        let b = OwnedTensor::f32(&[3, 1], &[3.0, 4.0, 5.0]);
        let err = TestHost::new()
            .run_values::<ConcatFromSequence>(&[sequence(vec![a, b])], &[int_attr("axis", 1)], 1)
            .unwrap_err();
        assert!(
            err.contains("element 1 is f32 [3, 1] and element 0 f32 [2, 1]"),
            "{err}"
        );
        let err = TestHost::new()
            .run_values::<ConcatFromSequence>(&[sequence(vec![])], &[int_attr("axis", 0)], 1)
            .unwrap_err();
        assert!(err.contains("empty"), "{err}");
    }
}
