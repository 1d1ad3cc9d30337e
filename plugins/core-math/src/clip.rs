//! Clip: every element limited to `[min, max]`, bounds from attributes (opsets 1 to 10, floats)
//! or from optional scalar inputs (opset 11 on, any numeric dtype). As numpy's `clip`, a min
//! above the max gives the max, and NaN stays NaN.

use crate::{
    check::error,
    elementwise::map,
    half::{widened, Narrow},
    numeric::{is_any_float, is_numeric, with_float, with_numeric, Num},
    unary::infer_same,
};
use opal_plugin_api::prelude::*;

fn clamp<T: Num>(x: T, low: T, high: T) -> T {
    let x = if x < low { low } else { x };
    if x > high {
        high
    } else {
        x
    }
}

/// Clip of opsets 1 to 10: bounds in the float attributes `min` and `max`.
pub struct ClipAttributes;

impl Operator for ClipAttributes {
    const OP_TYPE: &'static str = "Clip";
    const UNTIL_VERSION: i64 = 10;

    fn infer(cx: &InferContext<'_>) -> KernelResult<Vec<OutputType>> {
        infer_same(Self::OP_TYPE, cx, is_any_float, "a float type")
    }

    fn compute(cx: &mut KernelContext<'_>) -> KernelResult<()> {
        let op = Self::OP_TYPE;
        let low = f64::from(cx.attributes().float("min", f32::NEG_INFINITY)?);
        let high = f64::from(cx.attributes().float("max", f32::INFINITY)?);
        let x = cx.input(0)?;
        let out = cx.output(0)?;
        with_float!(x.dtype(), F => {
            let (low, high) = (F::from_f64(low), F::from_f64(high));
            map(op, cx, x.as_slice::<F>()?, out.as_slice_mut::<F>()?, |v| clamp(v, low, high))
        }, _ => {
            let (low, high) = (low as f32, high as f32);
            let narrow = Narrow::new(cx, out)?;
            map(op, cx, widened(op, cx, x)?, &mut *narrow.values, |v| clamp(v, low, high))?;
            narrow.finish();
            Ok(())
        })
    }
}

/// Clip of opset 11 on: bounds in the optional scalar inputs 1 (min) and 2 (max).
pub struct Clip;

/// The single value of optional bound input `index`, if present.
fn bound<'a>(
    op: &str,
    cx: &KernelContext<'a>,
    index: usize,
) -> KernelResult<Option<TensorRef<'a>>> {
    match cx.optional_input(index) {
        Some(t) if t.len() != 1 => Err(error(
            op,
            format_args!("bound input {index} has {} elements, expected 1", t.len()),
        )),
        other => Ok(other),
    }
}

impl Operator for Clip {
    const OP_TYPE: &'static str = "Clip";
    const SINCE_VERSION: i64 = 11;

    fn infer(cx: &InferContext<'_>) -> KernelResult<Vec<OutputType>> {
        let op = Self::OP_TYPE;
        let types = infer_same(op, cx, is_numeric, "a numeric type")?;
        for i in 1..3 {
            if let Some(b) = cx.optional_input(i)? {
                if b.dtype != types[0].dtype {
                    return Err(error(
                        op,
                        format_args!(
                            "bound input {i} has dtype {}, the input {}",
                            b.dtype, types[0].dtype
                        ),
                    ));
                }
            }
        }
        Ok(types)
    }

    fn compute(cx: &mut KernelContext<'_>) -> KernelResult<()> {
        let op = Self::OP_TYPE;
        let (low, high) = (bound(op, cx, 1)?, bound(op, cx, 2)?);
        let x = cx.input(0)?;
        let out = cx.output(0)?;
        with_numeric!(x.dtype(), T => {
            let value = |b: Option<TensorRef<'_>>, default: T| -> KernelResult<T> {
                Ok(match b { Some(b) => b.as_slice::<T>()?[0], None => default })
            };
            let (low, high) = (value(low, T::LOWEST)?, value(high, T::HIGHEST)?);
            map(op, cx, x.as_slice::<T>()?, out.as_slice_mut::<T>()?, |v| clamp(v, low, high))
        }, _ => {
            let value = |b: Option<TensorRef<'_>>, default: f32| -> KernelResult<f32> {
                Ok(match b { Some(b) => widened(op, cx, b)?[0], None => default })
            };
            let (low, high) = (value(low, f32::NEG_INFINITY)?, value(high, f32::INFINITY)?);
            let narrow = Narrow::new(cx, out)?;
            map(op, cx, widened(op, cx, x)?, &mut *narrow.values, |v| clamp(v, low, high))?;
            narrow.finish();
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opal_plugin_api::testing::{float_attr, run_operator, OwnedTensor};

    #[test]
    fn bounds_come_from_inputs_and_may_be_absent() {
        let x = OwnedTensor::f32(&[4], &[-3.0, 0.5, 7.0, f32::NAN]);
        let low = OwnedTensor::f32(&[], &[-1.0]);
        let high = OwnedTensor::f32(&[], &[1.0]);
        let y = run_operator::<Clip>(&[x.clone(), low.clone(), high], &[], 1).unwrap();
        let y = y[0].to_vec::<f32>();
        assert_eq!(y[..3], [-1.0, 0.5, 1.0]);
        assert!(y[3].is_nan());
        let y = run_operator::<Clip>(&[x.clone(), low], &[], 1).unwrap();
        assert_eq!(y[0].to_vec::<f32>()[..3], [-1.0, 0.5, 7.0]);
        let y = run_operator::<Clip>(
            &[x, OwnedTensor::absent(), OwnedTensor::f32(&[], &[0.0])],
            &[],
            1,
        )
        .unwrap();
        assert_eq!(y[0].to_vec::<f32>()[..3], [-3.0, 0.0, 0.0]);
    }

    #[test]
    fn integers_clip_and_a_min_above_the_max_gives_the_max() {
        let x = OwnedTensor::new::<i64>(&[3], &[-5, 3, 9]);
        let low = OwnedTensor::new::<i64>(&[1], &[4]);
        let high = OwnedTensor::new::<i64>(&[1], &[2]);
        let y = run_operator::<Clip>(&[x, low, high], &[], 1).unwrap();
        assert_eq!(y[0].to_vec::<i64>(), [2, 2, 2]);
    }

    #[test]
    fn old_opsets_read_attributes() {
        let x = OwnedTensor::f32(&[3], &[-3.0, 0.5, 7.0]);
        let y = run_operator::<ClipAttributes>(&[x], &[float_attr("max", 2.0)], 1).unwrap();
        assert_eq!(y[0].to_vec::<f32>(), [-3.0, 0.5, 2.0]);
    }
}
