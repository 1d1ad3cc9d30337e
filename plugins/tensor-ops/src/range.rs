//! Range: `start, start + delta, ...` up to (excluding) `limit`, from three scalar inputs of one
//! numeric dtype. Integers are computed exactly; floats in f64 and rounded to the dtype.

use crate::{
    check::error,
    number::{is_float, with_number_type, Number},
};
use opal_plugin_api::prelude::*;

/// The scalar element of a Range input.
fn scalar<T: Number>(op: &str, bytes: &[u8]) -> KernelResult<T> {
    match T::view(bytes) {
        [value] => Ok(T::from_bytes(*value)),
        values => Err(error(
            op,
            format_args!(
                "the inputs must be scalars, one holds {} elements",
                values.len()
            ),
        )),
    }
}

/// How many elements `start..limit` by `delta` holds.
fn range_count<T: Number>(
    op: &str,
    float: bool,
    start: T,
    limit: T,
    delta: T,
) -> KernelResult<usize> {
    if float {
        let (start, limit, delta) = (start.to_f64(), limit.to_f64(), delta.to_f64());
        if delta == 0.0 || !delta.is_finite() || !start.is_finite() || !limit.is_finite() {
            return Err(error(
                op,
                format_args!("cannot count from {start} to {limit} by {delta}"),
            ));
        }
        return Ok(((limit - start) / delta).ceil().max(0.0) as usize);
    }
    let (start, limit, delta) = (
        i128::from(start.to_i64()),
        i128::from(limit.to_i64()),
        i128::from(delta.to_i64()),
    );
    if delta == 0 {
        return Err(error(op, "delta must not be 0"));
    }
    let span = limit - start;
    if span == 0 || (span > 0) != (delta > 0) {
        return Ok(0);
    }
    let whole = span / delta;
    Ok((whole + i128::from(span % delta != 0)) as usize)
}

/// Evenly spaced values from `start` (input 0) toward `limit` (input 1) by `delta` (input 2).
pub struct Range;

impl Operator for Range {
    const OP_TYPE: &'static str = "Range";
    const SINCE_VERSION: i64 = 11;
    const VALUE_INPUTS: &'static [usize] = &[0, 1, 2];

    fn infer(cx: &InferContext<'_>) -> KernelResult<Vec<OutputType>> {
        let op = Self::OP_TYPE;
        let (start, limit, delta) = (cx.input(0)?, cx.input(1)?, cx.input(2)?);
        if limit.dtype != start.dtype || delta.dtype != start.dtype {
            return Err(error(op, "start, limit and delta must share a dtype"));
        }
        let dtype = start.dtype;
        let count = match (start.value(), limit.value(), delta.value()) {
            (Some(s), Some(l), Some(d)) => with_number_type!(op, dtype, T => {
                let (s, l, d) = (scalar::<T>(op, s.bytes())?, scalar::<T>(op, l.bytes())?, scalar::<T>(op, d.bytes())?);
                range_count(op, is_float(dtype), s, l, d)? as i64
            }),
            _ => -1,
        };
        Ok(vec![OutputType::new(dtype, vec![count])])
    }

    fn compute(cx: &mut KernelContext<'_>) -> KernelResult<()> {
        let op = Self::OP_TYPE;
        let (start, limit, delta) = (cx.input(0)?, cx.input(1)?, cx.input(2)?);
        let dtype = start.dtype();
        let out = cx.output(0)?;
        if out.dtype() != dtype {
            return Err(error(op, "the output dtype differs from the inputs'"));
        }
        with_number_type!(op, dtype, T => {
            let (s, l, d) = (scalar::<T>(op, start.bytes())?, scalar::<T>(op, limit.bytes())?, scalar::<T>(op, delta.bytes())?);
            let count = range_count(op, is_float(dtype), s, l, d)?;
            if out.len() != count {
                return Err(error(op, format_args!("the output holds {} elements, the range {count}", out.len())));
            }
            let y = T::view_mut(out.bytes_mut());
            if is_float(dtype) {
                let (s, d) = (s.to_f64(), d.to_f64());
                for (i, element) in y.iter_mut().enumerate() {
                    *element = T::from_f64(s + i as f64 * d).to_bytes();
                }
            } else {
                let (s, d) = (s.to_i64(), d.to_i64());
                for (i, element) in y.iter_mut().enumerate() {
                    *element = T::from_i64(s.wrapping_add((i as i64).wrapping_mul(d))).to_bytes();
                }
            }
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opal_plugin_api::testing::{run_operator, OwnedTensor};

    fn range<T: opal_plugin_api::Element>(start: T, limit: T, delta: T) -> Vec<T> {
        let s = |v: T| OwnedTensor::new(&[], &[v]);
        run_operator::<Range>(&[s(start), s(limit), s(delta)], &[], 1).unwrap()[0].to_vec::<T>()
    }

    #[test]
    fn ranges_count_like_numpy() {
        assert_eq!(range(10i32, 6, -3), [10, 7]);
        assert_eq!(range(1.0f32, 5.0, 2.0), [1.0, 3.0]);
        assert_eq!(range(0i64, 0, 1), [0i64; 0]);
        assert_eq!(range(0i16, 5, 1), [0, 1, 2, 3, 4]);
        assert_eq!(range(0.0f64, 1.0, 0.3).len(), 4);
    }
}
