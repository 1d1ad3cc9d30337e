//! ONNX `TensorScatter` (opset 24): a key/value cache update. The present cache is the past
//! cache with, for every index before `axis` (the sequence axis, never the batch axis), the
//! update's rows written from each batch's `write_indices` entry on, wrapping around the
//! cache length in `circular` mode. Any element type of fixed size; copies bytes.

use crate::dims::{same, Dims};
use opal_kernel_support::check::{error, expect_fixed_size, normalize_axis, Shape};
use opal_plugin_api::prelude::*;

const OP: &str = "TensorScatter";

/// ONNX `TensorScatter`, opset 24.
pub struct TensorScatter;

/// Whether the `mode` attribute asks for circular writes.
fn circular(attributes: &Attributes<'_>) -> KernelResult<bool> {
    match attributes.string("mode", "linear")? {
        "linear" => Ok(false),
        "circular" => Ok(true),
        other => Err(error(
            OP,
            format_args!("mode '{other}' is not 'linear' or 'circular'"),
        )),
    }
}

/// The sequence axis of a cache of `rank`, after checking that the update fits the cache
/// (same dims but on the axis, where it is no longer; unknown dims, negative, match anything).
fn sequence_axis(
    attributes: &Attributes<'_>,
    cache: &[i64],
    update: &[i64],
) -> KernelResult<usize> {
    let rank = cache.len();
    let axis = normalize_axis(OP, attributes.int("axis", -2)?, rank)?;
    if axis == 0 {
        return Err(error(OP, "axis must not be the batch axis 0"));
    }
    let fits = update.len() == rank
        && cache
            .iter()
            .zip(update)
            .enumerate()
            .all(|(i, (&c, &u))| c < 0 || u < 0 || if i == axis { u <= c } else { u == c });
    if !fits {
        return Err(error(
            OP,
            format_args!(
                "update {} does not fit past_cache {} (same dims, no longer on axis {axis})",
                Shape(update),
                Shape(cache)
            ),
        ));
    }
    Ok(axis)
}

impl Operator for TensorScatter {
    const OP_TYPE: &'static str = "TensorScatter";
    const SINCE_VERSION: i64 = 24;

    fn infer(cx: &InferContext<'_>) -> KernelResult<Vec<OutputType>> {
        let (cache, update) = (cx.input(0)?, cx.input(1)?);
        if update.dtype != cache.dtype {
            return Err(error(
                OP,
                format_args!(
                    "update has dtype {}, past_cache {}",
                    update.dtype, cache.dtype
                ),
            ));
        }
        expect_fixed_size(OP, cache.dtype)?;
        circular(&cx.attributes())?;
        sequence_axis(&cx.attributes(), cache.shape, update.shape)?;
        if let Some(indices) = cx.optional_input(2)? {
            let batch_fits = indices.shape.len() == 1 && same(indices.shape[0], cache.shape[0]);
            if indices.dtype != DType::I64 || !batch_fits {
                return Err(error(
                    OP,
                    format_args!(
                        "write_indices must be i64 of shape [batch], not {} {}",
                        indices.dtype,
                        Shape(indices.shape)
                    ),
                ));
            }
        }
        Ok(vec![OutputType::new(cache.dtype, cache.shape.to_vec())])
    }

    fn compute(cx: &mut KernelContext<'_>) -> KernelResult<()> {
        let (cache, update) = (cx.input(0)?, cx.input(1)?);
        let circular = circular(&cx.attributes())?;
        let (shape, update_shape) = (cache.shape(), update.shape());
        let axis = sequence_axis(
            &cx.attributes(),
            &Dims::new(OP, shape)?,
            &Dims::new(OP, update_shape)?,
        )?;
        let size = expect_fixed_size(OP, cache.dtype())?;
        let batch = shape[0];
        let indices = cx
            .optional_input(2)
            .map(|t| t.as_slice::<i64>())
            .transpose()?;
        if indices.is_some_and(|i| i.len() != batch) {
            return Err(error(
                OP,
                format_args!("write_indices must hold one index per batch of {batch}"),
            ));
        }
        let (max_len, len) = (shape[axis], update_shape[axis]);
        let start = |b: usize| indices.map_or(0, |i| i[b]);
        if !circular {
            for b in 0..batch {
                let first = start(b);
                if first < 0 || first as u64 + len as u64 > max_len as u64 {
                    return Err(error(
                        OP,
                        format_args!(
                            "batch {b} writes {len} rows from index {first}, outside the cache of {max_len}"
                        ),
                    ));
                }
            }
        } else if max_len == 0 && len > 0 {
            return Err(error(OP, "circular writes into an empty cache"));
        }

        let out = cx.output(0)?.bytes_mut();
        out.copy_from_slice(cache.bytes());
        // Bytes of one row on the sequence axis, and rows before the axis in each batch.
        let row: usize = shape[axis + 1..].iter().product::<usize>() * size;
        let per_batch: usize = shape[1..axis].iter().product();
        let source = update.bytes();
        if row == 0 {
            return Ok(());
        }
        for b in 0..batch {
            let first = start(b);
            for p in 0..per_batch {
                let outer = b * per_batch + p;
                for s in 0..len {
                    let at = first + s as i64;
                    let at = if circular {
                        at.rem_euclid(max_len as i64)
                    } else {
                        at
                    } as usize;
                    let to = (outer * max_len + at) * row;
                    let from = (outer * len + s) * row;
                    out[to..to + row].copy_from_slice(&source[from..from + row]);
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opal_plugin_api::testing::{int_attr, run_operator, string_attr, OwnedTensor};

    #[test]
    fn writes_each_batch_from_its_index() {
        let cache = OwnedTensor::f32(&[2, 3, 1], &[0.0; 6]);
        let update = OwnedTensor::f32(&[2, 2, 1], &[1.0, 2.0, 3.0, 4.0]);
        let indices = OwnedTensor::i64(&[2], &[1, 0]);
        let y = run_operator::<TensorScatter>(&[cache, update, indices], &[], 1).unwrap();
        assert_eq!(y[0].to_vec::<f32>(), [0.0, 1.0, 2.0, 3.0, 4.0, 0.0]);
    }

    #[test]
    fn circular_writes_wrap_around() {
        let cache = OwnedTensor::i64(&[1, 3], &[7, 8, 9]);
        let update = OwnedTensor::i64(&[1, 2], &[1, 2]);
        let indices = OwnedTensor::i64(&[1], &[2]);
        let attributes = [string_attr("mode", "circular"), int_attr("axis", 1)];
        let y = run_operator::<TensorScatter>(&[cache, update, indices], &attributes, 1).unwrap();
        assert_eq!(y[0].to_vec::<i64>(), [2, 8, 1]);
    }

    #[test]
    fn linear_writes_past_the_end_are_errors() {
        let cache = OwnedTensor::f32(&[1, 2, 1], &[0.0; 2]);
        let update = OwnedTensor::f32(&[1, 2, 1], &[0.0; 2]);
        let indices = OwnedTensor::i64(&[1], &[1]);
        let error = run_operator::<TensorScatter>(&[cache, update, indices], &[], 1).unwrap_err();
        assert!(error.contains("outside the cache"), "{error}");
    }
}
