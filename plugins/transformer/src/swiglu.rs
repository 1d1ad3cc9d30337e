//! ONNX `SwiGLU` (opset 28): `Y = A · sigmoid(alpha · A) · B` for a gate `A` and a value `B`
//! of the same shape (no broadcasting). f32 and f64 natively; f16 and bf16 in f32 through
//! scratch, rounded once.

use crate::{
    dims::same,
    half::{is_float, widened, FloatOut},
};
use opal_kernel_support::{
    check::{error, Shape},
    fast_math::sigmoid,
    parallel::for_each_chunk,
};
use opal_plugin_api::prelude::*;

const OP: &str = "SwiGLU";

/// ONNX `SwiGLU`, opset 28.
pub struct SwiGLU;

/// Elements under which one thread does it all.
const GRAIN: usize = 1 << 14;

impl Operator for SwiGLU {
    const OP_TYPE: &'static str = "SwiGLU";
    const SINCE_VERSION: i64 = 28;

    fn infer(cx: &InferContext<'_>) -> KernelResult<Vec<OutputType>> {
        let (a, b) = (cx.input(0)?, cx.input(1)?);
        if a.dtype != b.dtype || !(is_float(a.dtype) || a.dtype == DType::F64) {
            return Err(error(
                OP,
                format_args!(
                    "A ({}) and B ({}) must have one float dtype: f32, f64, f16 or bf16",
                    a.dtype, b.dtype
                ),
            ));
        }
        let fits = a.shape.len() == b.shape.len()
            && a.shape.iter().zip(b.shape).all(|(&x, &y)| same(x, y));
        if !fits {
            return Err(error(
                OP,
                format_args!(
                    "A {} and B {} must have the same shape",
                    Shape(a.shape),
                    Shape(b.shape)
                ),
            ));
        }
        Ok(vec![OutputType::new(a.dtype, a.shape.to_vec())])
    }

    fn compute(cx: &mut KernelContext<'_>) -> KernelResult<()> {
        let (a, b) = (cx.input(0)?, cx.input(1)?);
        if a.shape() != b.shape() {
            return Err(error(
                OP,
                format_args!(
                    "A {} and B {} must have the same shape",
                    Shape(a.shape()),
                    Shape(b.shape())
                ),
            ));
        }
        let alpha = cx.attributes().float("alpha", 1.0)?;
        if a.dtype() == DType::F64 {
            let (a, b) = (a.as_slice::<f64>()?, b.as_slice::<f64>()?);
            let y = cx.output(0)?.as_slice_mut::<f64>()?;
            let alpha = f64::from(alpha);
            for_each_chunk(cx, y, 1, GRAIN, |start, y| {
                let (a, b) = (&a[start..start + y.len()], &b[start..start + y.len()]);
                for ((y, &a), &b) in y.iter_mut().zip(a).zip(b) {
                    *y = a / (1.0 + (-alpha * a).exp()) * b;
                }
            });
            return Ok(());
        }
        let (a, b) = (widened(OP, cx, a)?, widened(OP, cx, b)?);
        let out = cx.output(0)?;
        let out = FloatOut::new(OP, cx, out)?;
        for_each_chunk(cx, out.values, 1, GRAIN, |start, y| {
            let (a, b) = (&a[start..start + y.len()], &b[start..start + y.len()]);
            for ((y, &a), &b) in y.iter_mut().zip(a).zip(b) {
                *y = a * sigmoid(alpha * a) * b;
            }
        });
        out.finish();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opal_plugin_api::testing::{assert_close, float_attr, run_operator, OwnedTensor};

    #[test]
    fn gates_b_with_the_swish_of_a() {
        let a = OwnedTensor::f32(&[3], &[-1.0, 0.0, 2.0]);
        let b = OwnedTensor::f32(&[3], &[2.0, 5.0, -3.0]);
        for alpha in [1.0f32, 0.5] {
            let y =
                run_operator::<SwiGLU>(&[a.clone(), b.clone()], &[float_attr("alpha", alpha)], 1)
                    .unwrap();
            let expected: Vec<f32> = [(-1.0f32, 2.0f32), (0.0, 5.0), (2.0, -3.0)]
                .iter()
                .map(|&(a, b)| a / (1.0 + (-alpha * a).exp()) * b)
                .collect();
            assert_close(&y[0].to_vec::<f32>(), &expected, 1e-6);
        }
    }

    #[test]
    fn f64_stays_in_f64() {
        let a = OwnedTensor::new::<f64>(&[2], &[1.0, -0.5]);
        let b = OwnedTensor::new::<f64>(&[2], &[3.0, 4.0]);
        let y = run_operator::<SwiGLU>(&[a, b], &[], 1).unwrap();
        let expected = [1.0f64, -0.5].map(|a| a / (1.0 + (-a).exp()));
        assert_eq!(y[0].to_vec::<f64>(), [expected[0] * 3.0, expected[1] * 4.0]);
    }

    #[test]
    fn shapes_must_match() {
        let a = OwnedTensor::f32(&[2], &[0.0; 2]);
        let b = OwnedTensor::f32(&[1, 2], &[0.0; 2]);
        let error = run_operator::<SwiGLU>(&[a, b], &[], 1).unwrap_err();
        assert!(error.contains("same shape"), "{error}");
    }
}
