//! `ai.onnx.ml` `Binarizer`: 1 where an element is greater than the `threshold` attribute
//! (default 0), 0 elsewhere (NaN included), in the input's dtype (f32, f64, i32 or i64).

use crate::ML_DOMAIN;
use opal_kernel_support::{check::error, parallel::for_each_chunk};
use opal_plugin_api::prelude::*;

/// Writes `one` where `x > threshold` and `zero` elsewhere, comparing in f64.
fn binarize<T: Element + Copy + Send + Sync>(
    cx: &KernelContext<'_>,
    x: &[T],
    y: &mut [T],
    threshold: f64,
    [zero, one]: [T; 2],
    widen: fn(T) -> f64,
) {
    for_each_chunk(cx, y, 1, 1 << 14, |start, chunk| {
        for (y, &x) in chunk.iter_mut().zip(&x[start..]) {
            *y = if widen(x) > threshold { one } else { zero };
        }
    });
}

/// Input 0 mapped to 1 above the threshold and 0 elsewhere.
pub struct Binarizer;

impl Operator for Binarizer {
    const DOMAIN: &'static str = ML_DOMAIN;
    const OP_TYPE: &'static str = "Binarizer";

    fn infer(cx: &InferContext<'_>) -> KernelResult<Vec<OutputType>> {
        let x = cx.input(0)?;
        if !matches!(x.dtype, DType::F32 | DType::F64 | DType::I32 | DType::I64) {
            return Err(error(
                Self::OP_TYPE,
                format_args!("X has dtype {}, expected f32, f64, i32 or i64", x.dtype),
            ));
        }
        cx.attributes()
            .float("threshold", 0.0)
            .map_err(|e| error(Self::OP_TYPE, e))?;
        Ok(vec![OutputType::new(x.dtype, x.shape.to_vec())])
    }

    fn compute(cx: &mut KernelContext<'_>) -> KernelResult<()> {
        let x = cx.input(0)?;
        let threshold = f64::from(cx.attributes().float("threshold", 0.0)?);
        let y = cx.output(0)?;
        match x.dtype() {
            DType::F32 => binarize(cx, x.f32()?, y.f32_mut()?, threshold, [0.0, 1.0], f64::from),
            DType::F64 => binarize(
                cx,
                x.as_slice()?,
                y.as_slice_mut()?,
                threshold,
                [0.0, 1.0],
                |v| v,
            ),
            DType::I32 => binarize(
                cx,
                x.as_slice()?,
                y.as_slice_mut()?,
                threshold,
                [0, 1],
                f64::from,
            ),
            DType::I64 => binarize(
                cx,
                x.as_slice()?,
                y.as_slice_mut()?,
                threshold,
                [0, 1],
                |v: i64| v as f64,
            ),
            dtype => return Err(error(Self::OP_TYPE, format_args!("X has dtype {dtype}"))),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opal_plugin_api::testing::{
        float_attr, infer_input, infer_operator, run_operator, OwnedTensor,
    };

    #[test]
    fn values_above_the_threshold_become_one() {
        let x = OwnedTensor::f32(&[5], &[-1.0, 1.0, 1.5, f32::NAN, 3.0]);
        let y = run_operator::<Binarizer>(&[x], &[float_attr("threshold", 1.0)], 1).unwrap();
        assert_eq!(y[0].to_vec::<f32>(), [0.0, 0.0, 1.0, 0.0, 1.0]);
        let x = OwnedTensor::i64(&[3], &[-2, 0, 7]);
        let y = run_operator::<Binarizer>(&[x], &[], 1).unwrap();
        assert_eq!(y[0].to_vec::<i64>(), [0, 0, 1]);
    }

    #[test]
    fn wrong_dtypes_and_attribute_kinds_are_named() {
        let x = [infer_input(DType::U8, &[2])];
        let err = infer_operator::<Binarizer>(&x, &[], 1).unwrap_err();
        assert!(err.contains("X has dtype u8"), "{err}");
        let x = [infer_input(DType::F32, &[2])];
        let threshold = opal_plugin_api::testing::int_attr("threshold", 1);
        let err = infer_operator::<Binarizer>(&x, &[threshold], 1).unwrap_err();
        assert!(err.contains("'threshold' must be a float"), "{err}");
    }
}
