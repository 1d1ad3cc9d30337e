//! Operators that only change the shape, not the elements: Squeeze, Unsqueeze (axes as an
//! attribute before opset 13, as input 1 from 13) and Flatten.

use crate::{
    check::{check_rank, error, normalize_axis, Shape},
    layout::element_size,
    params::{known_ints, known_length, AxisSet, Ints},
};
use opal_plugin_api::prelude::*;

/// Copies input 0's bytes to output 0 (same dtype, same number of bytes).
pub(crate) fn copy_whole(op: &str, cx: &mut KernelContext<'_>) -> KernelResult<()> {
    let x = cx.input(0)?;
    let out = cx.output(0)?;
    if out.dtype() != x.dtype() || out.len() != x.len() {
        return Err(error(
            op,
            format_args!(
                "the output ({} {}) does not hold the input's elements ({} {})",
                out.dtype(),
                Shape(out.shape()),
                x.dtype(),
                Shape(x.shape())
            ),
        ));
    }
    out.bytes_mut().copy_from_slice(x.bytes());
    Ok(())
}

/// What inference knows of the axes of Squeeze/Unsqueeze.
enum InferAxes {
    Known(Vec<i64>),
    Absent,
    CountOnly(usize),
}

fn infer_axes(op: &str, cx: &InferContext<'_>) -> KernelResult<InferAxes> {
    if let Some(input) = cx.optional_input(1)? {
        return match known_ints(op, "the axes input", &input)? {
            Some(axes) => Ok(InferAxes::Known(axes)),
            None => known_length(&input)
                .map(InferAxes::CountOnly)
                .ok_or_else(|| error(op, "the length of the axes input is not known")),
        };
    }
    Ok(match cx.attributes().ints("axes")? {
        Some(axes) => InferAxes::Known(axes.to_vec()),
        None => InferAxes::Absent,
    })
}

/// The axes of Squeeze/Unsqueeze in a kernel, normalised for `rank`; `None` when absent.
fn kernel_axes(op: &str, cx: &KernelContext<'_>, rank: usize) -> KernelResult<Option<AxisSet>> {
    if let Some(input) = cx.optional_input(1) {
        let axes = Ints::from_tensor(op, "the axes input", input)?;
        return AxisSet::new(op, axes.iter(), rank).map(Some);
    }
    match cx.attributes().ints("axes")? {
        Some(axes) => AxisSet::new(op, axes.iter().copied(), rank).map(Some),
        None => Ok(None),
    }
}

/// The input without the dims of size 1 named by `axes` (all of them when absent).
pub struct Squeeze;

impl Operator for Squeeze {
    const OP_TYPE: &'static str = "Squeeze";
    const VALUE_INPUTS: &'static [usize] = &[1];

    fn infer(cx: &InferContext<'_>) -> KernelResult<Vec<OutputType>> {
        let op = Self::OP_TYPE;
        let x = cx.input(0)?;
        element_size(op, x.dtype)?;
        let rank = x.shape.len();
        check_rank(op, rank)?;
        let shape = match infer_axes(op, cx)? {
            // An empty axes list squeezes every dim of 1, as absent axes do (onnxruntime's
            // reading); dims not known at all are taken as not 1.
            InferAxes::Absent => x.shape.iter().copied().filter(|&d| d != 1).collect(),
            InferAxes::Known(axes) if axes.is_empty() => {
                x.shape.iter().copied().filter(|&d| d != 1).collect()
            }
            InferAxes::Known(axes) => {
                let set = AxisSet::new(op, axes.iter().copied(), rank)?;
                let mut shape = Vec::with_capacity(rank);
                for (d, &dim) in x.shape.iter().enumerate() {
                    if !set.contains(d) {
                        shape.push(dim);
                    } else if dim > 1 || dim == 0 {
                        return Err(error(
                            op,
                            format_args!("dim {d} of {} is not 1", Shape(x.shape)),
                        ));
                    }
                }
                shape
            }
            InferAxes::CountOnly(0) => x.shape.iter().copied().filter(|&d| d != 1).collect(),
            InferAxes::CountOnly(count) => vec![-1; rank.saturating_sub(count)],
        };
        Ok(vec![OutputType::new(x.dtype, shape)])
    }

    fn compute(cx: &mut KernelContext<'_>) -> KernelResult<()> {
        let op = Self::OP_TYPE;
        let rank = cx.input(0)?.shape().len();
        if let Some(set) = kernel_axes(op, cx, rank)? {
            let shape = cx.input(0)?.shape();
            if let Some(d) = (0..rank).find(|&d| set.contains(d) && shape[d] != 1) {
                return Err(error(
                    op,
                    format_args!("dim {d} of {} is not 1", Shape(shape)),
                ));
            }
        }
        copy_whole(op, cx)
    }
}

/// The input with dims of size 1 inserted at `axes` (positions in the output).
pub struct Unsqueeze;

impl Operator for Unsqueeze {
    const OP_TYPE: &'static str = "Unsqueeze";
    const VALUE_INPUTS: &'static [usize] = &[1];

    fn infer(cx: &InferContext<'_>) -> KernelResult<Vec<OutputType>> {
        let op = Self::OP_TYPE;
        let x = cx.input(0)?;
        element_size(op, x.dtype)?;
        let shape = match infer_axes(op, cx)? {
            InferAxes::Known(axes) => {
                let rank = x.shape.len() + axes.len();
                check_rank(op, rank)?;
                let set = AxisSet::new(op, axes.iter().copied(), rank)?;
                let mut dims = x.shape.iter();
                (0..rank)
                    .map(|d| {
                        if set.contains(d) {
                            1
                        } else {
                            dims.next().copied().unwrap_or(1)
                        }
                    })
                    .collect()
            }
            InferAxes::Absent => return Err(error(op, "the axes are required")),
            InferAxes::CountOnly(count) => vec![-1; x.shape.len() + count],
        };
        check_rank(op, shape.len())?;
        Ok(vec![OutputType::new(x.dtype, shape)])
    }

    fn compute(cx: &mut KernelContext<'_>) -> KernelResult<()> {
        let op = Self::OP_TYPE;
        let x = cx.input(0)?;
        let axes_count = match cx.optional_input(1) {
            Some(input) => input.len(),
            None => cx.attributes().ints("axes")?.map_or(0, <[i64]>::len),
        };
        kernel_axes(op, cx, x.shape().len() + axes_count)?;
        copy_whole(op, cx)
    }
}

/// The input as a matrix: dims before `axis` make the rows, the rest the columns.
pub struct Flatten;

impl Operator for Flatten {
    const OP_TYPE: &'static str = "Flatten";

    fn infer(cx: &InferContext<'_>) -> KernelResult<Vec<OutputType>> {
        let op = Self::OP_TYPE;
        let x = cx.input(0)?;
        element_size(op, x.dtype)?;
        let rank = x.shape.len();
        // The axis lies in [-rank, rank]; negative ones count from the rank.
        let axis = cx.attributes().int("axis", 1)?;
        let axis = normalize_axis(
            op,
            if axis < 0 { axis + rank as i64 } else { axis },
            rank + 1,
        )?;
        let product = |dims: &[i64]| dims.iter().try_fold(1i64, |p, &d| (d >= 0).then(|| p * d));
        let rows = product(&x.shape[..axis]).unwrap_or(-1);
        let columns = product(&x.shape[axis..]).unwrap_or(-1);
        Ok(vec![OutputType::new(x.dtype, vec![rows, columns])])
    }

    fn compute(cx: &mut KernelContext<'_>) -> KernelResult<()> {
        copy_whole(Self::OP_TYPE, cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opal_plugin_api::testing::{int_attr, ints_attr, run_operator, OwnedTensor};

    fn shape_after<O: Operator>(
        shape: &[usize],
        axes: Option<&[i64]>,
        as_input: bool,
    ) -> Result<Vec<usize>, String> {
        let len = shape.iter().product();
        let values: Vec<i8> = (0..len).map(|v| v as i8).collect();
        let mut inputs = vec![OwnedTensor::new(shape, &values)];
        let mut attributes = Vec::new();
        match (axes, as_input) {
            (Some(axes), true) => inputs.push(OwnedTensor::i64(&[axes.len()], axes)),
            (Some(axes), false) => attributes.push(ints_attr("axes", axes)),
            (None, _) => {}
        }
        let y = run_operator::<O>(&inputs, &attributes, 1)?;
        assert_eq!(y[0].to_vec::<i8>(), values);
        Ok(y[0].shape().to_vec())
    }

    #[test]
    fn squeeze_and_unsqueeze_move_dims_of_one() {
        assert_eq!(
            shape_after::<Squeeze>(&[1, 3, 1, 5], Some(&[-2]), true).unwrap(),
            [1, 3, 5]
        );
        assert_eq!(
            shape_after::<Squeeze>(&[1, 3, 1, 5], None, false).unwrap(),
            [3, 5]
        );
        assert_eq!(
            shape_after::<Squeeze>(&[1, 3], Some(&[0]), false).unwrap(),
            [3]
        );
        assert!(shape_after::<Squeeze>(&[1, 3], Some(&[1]), true)
            .unwrap_err()
            .contains("not 1"));
        assert_eq!(
            shape_after::<Unsqueeze>(&[3, 4, 5], Some(&[5, 4, 2]), true).unwrap(),
            [3, 4, 1, 5, 1, 1]
        );
        assert_eq!(
            shape_after::<Unsqueeze>(&[3], Some(&[0, -1]), false).unwrap(),
            [1, 3, 1]
        );
        assert!(shape_after::<Unsqueeze>(&[3], Some(&[0, 0]), true).is_err());
    }

    #[test]
    fn flatten_splits_at_the_axis() {
        let x = OwnedTensor::f32(&[2, 3, 4], &[0.5; 24]);
        for (axis, expected) in [(0, [1, 24]), (1, [2, 12]), (3, [24, 1]), (-1, [6, 4])] {
            let y = run_operator::<Flatten>(std::slice::from_ref(&x), &[int_attr("axis", axis)], 1)
                .unwrap();
            assert_eq!(y[0].shape(), expected);
        }
    }
}
