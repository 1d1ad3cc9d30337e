//! Concat: inputs joined along one axis, for any fixed-size dtype. Opset 1-3 default the axis
//! to 1; from opset 4 it is required.

use crate::{
    check::{check_rank, error, normalize_axis, Shape},
    layout::{around_axis, element_size, COPY_GRAIN},
    parallel::for_each_chunk,
};
use opal_plugin_api::prelude::*;

/// The axis attribute; `default` when the opset allows it to be absent.
fn concat_axis(op: &str, attributes: &Attributes<'_>, default: Option<i64>) -> KernelResult<i64> {
    match (attributes.get("axis"), default) {
        (Some(_), _) => attributes.int("axis", 0),
        (None, Some(d)) => Ok(d),
        (None, None) => Err(error(op, "the axis attribute is required")),
    }
}

fn infer_concat(cx: &InferContext<'_>, default_axis: Option<i64>) -> KernelResult<Vec<OutputType>> {
    let op = "Concat";
    let first = cx.input(0)?;
    element_size(op, first.dtype)?;
    let rank = first.shape.len();
    check_rank(op, rank)?;
    let axis = normalize_axis(op, concat_axis(op, &cx.attributes(), default_axis)?, rank)?;
    let mut shape = first.shape.to_vec();
    for i in 1..cx.input_count() {
        let x = cx.input(i)?;
        if x.dtype != first.dtype {
            return Err(error(
                op,
                format_args!(
                    "input {i} has dtype {}, input 0 has {}",
                    x.dtype, first.dtype
                ),
            ));
        }
        if x.shape.len() != rank {
            return Err(error(
                op,
                format_args!(
                    "input {i} has rank {}, input 0 has rank {rank}",
                    x.shape.len()
                ),
            ));
        }
        for (d, (out, &dim)) in shape.iter_mut().zip(x.shape).enumerate() {
            if d == axis {
                *out = if *out < 0 || dim < 0 { -1 } else { *out + dim };
            } else if *out < 0 {
                *out = dim;
            } else if dim >= 0 && dim != *out {
                return Err(error(
                    op,
                    format_args!(
                        "input {i} has shape {}, which differs from {} outside axis {axis}",
                        Shape(x.shape),
                        Shape(first.shape)
                    ),
                ));
            }
        }
    }
    Ok(vec![OutputType::new(first.dtype, shape)])
}

fn compute_concat(cx: &mut KernelContext<'_>, default_axis: Option<i64>) -> KernelResult<()> {
    let op = "Concat";
    let out = cx.output(0)?;
    let out_shape = out.shape();
    let rank = out_shape.len();
    let size = element_size(op, out.dtype())?;
    let axis = normalize_axis(op, concat_axis(op, &cx.attributes(), default_axis)?, rank)?;
    let (outer, out_dim, inner) = around_axis(out_shape, axis);
    // Check every input against the output before copying anything.
    let mut total = 0;
    for i in 0..cx.input_count() {
        let x = cx.input(i)?;
        let fits = x.dtype() == out.dtype()
            && x.shape().len() == rank
            && x.shape()
                .iter()
                .zip(out_shape)
                .enumerate()
                .all(|(d, (&a, &b))| d == axis || a == b);
        if !fits {
            return Err(error(
                op,
                format_args!(
                    "input {i} ({} {}) does not fit the output {} {}",
                    x.dtype(),
                    Shape(x.shape()),
                    out.dtype(),
                    Shape(out_shape)
                ),
            ));
        }
        total += x.shape()[axis];
    }
    if total != out_dim {
        return Err(error(
            op,
            format_args!(
                "the inputs add up to {total} along axis {axis}, the output has {out_dim}"
            ),
        ));
    }
    let row_bytes = out_dim * inner * size;
    let y = out.bytes_mut();
    if y.is_empty() || outer == 0 {
        return Ok(());
    }
    // Each input's bytes and the bytes it contributes to one output row.
    let block = |x: TensorRef<'_>| x.shape()[axis] * inner * size;
    if cx.input_count() <= MAX_PARALLEL_INPUTS {
        let mut parts: [(&[u8], usize); MAX_PARALLEL_INPUTS] = [(&[], 0); MAX_PARALLEL_INPUTS];
        for (i, part) in parts.iter_mut().enumerate().take(cx.input_count()) {
            let x = cx.input(i)?;
            *part = (x.bytes(), block(x));
        }
        let parts = &parts[..cx.input_count()];
        for_each_chunk(
            cx,
            y,
            row_bytes,
            COPY_GRAIN,
            #[inline(always)]
            |start, chunk| copy_rows(chunk, start / row_bytes, row_bytes, parts.iter().copied()),
        );
    } else {
        let parts = (0..cx.input_count())
            .filter_map(|i| cx.input(i).ok())
            .map(|x| (x.bytes(), block(x)));
        copy_rows(y, 0, row_bytes, parts);
    }
    Ok(())
}

/// The most inputs whose copies are split over the host's threads; more are joined on one.
const MAX_PARALLEL_INPUTS: usize = 64;

/// Fills whole output rows (`first_row` on) from each input's block of those rows.
fn copy_rows<'a>(
    rows: &mut [u8],
    first_row: usize,
    row_bytes: usize,
    parts: impl Iterator<Item = (&'a [u8], usize)> + Clone,
) {
    for (r, row) in rows.chunks_exact_mut(row_bytes).enumerate() {
        let mut at = 0;
        for (bytes, block) in parts.clone() {
            let from = (first_row + r) * block;
            row[at..at + block].copy_from_slice(&bytes[from..from + block]);
            at += block;
        }
    }
}

/// Inputs joined along the required `axis` (opset 4 on).
pub struct Concat;

impl Operator for Concat {
    const OP_TYPE: &'static str = "Concat";
    const SINCE_VERSION: i64 = 4;

    fn infer(cx: &InferContext<'_>) -> KernelResult<Vec<OutputType>> {
        infer_concat(cx, None)
    }

    fn compute(cx: &mut KernelContext<'_>) -> KernelResult<()> {
        compute_concat(cx, None)
    }
}

/// Concat of opsets 1-3, where `axis` defaults to 1.
pub struct ConcatV1;

impl Operator for ConcatV1 {
    const OP_TYPE: &'static str = "Concat";
    const UNTIL_VERSION: i64 = 3;

    fn infer(cx: &InferContext<'_>) -> KernelResult<Vec<OutputType>> {
        infer_concat(cx, Some(1))
    }

    fn compute(cx: &mut KernelContext<'_>) -> KernelResult<()> {
        compute_concat(cx, Some(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opal_plugin_api::testing::{int_attr, OwnedTensor, TestHost};

    #[test]
    fn concat_joins_along_any_axis() {
        let a = OwnedTensor::new(&[2, 2], &[1u16, 2, 3, 4]);
        let b = OwnedTensor::new(&[2, 1], &[5u16, 6]);
        for threads in [1, 3] {
            let y = TestHost::new()
                .threads(threads)
                .run::<Concat>(&[a.clone(), b.clone()], &[int_attr("axis", -1)], 1)
                .unwrap();
            assert_eq!(y[0].shape(), [2, 3]);
            assert_eq!(y[0].to_vec::<u16>(), [1, 2, 5, 3, 4, 6]);
        }
        let error = TestHost::new()
            .run::<Concat>(&[a, b], &[int_attr("axis", 0)], 1)
            .unwrap_err();
        assert!(
            error.contains("differs from [2,2] outside axis 0"),
            "{error}"
        );
    }

    #[test]
    fn concat_skips_empty_inputs() {
        let a = OwnedTensor::new(&[0, 3], &[] as &[i64]);
        let b = OwnedTensor::new(&[1, 3], &[1i64, 2, 3]);
        let y = TestHost::new()
            .run::<Concat>(&[a, b], &[int_attr("axis", 0)], 1)
            .unwrap();
        assert_eq!(y[0].to_vec::<i64>(), [1, 2, 3]);
    }
}
