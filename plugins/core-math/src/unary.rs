//! Elementwise f32 activations: Relu, Sigmoid, Tanh.

use crate::{check::expect_f32, parallel::for_each_chunk};
use opal_plugin_api::prelude::*;

/// Elements per piece below which an elementwise kernel stays on one thread.
pub(crate) const ELEMENTWISE_GRAIN: usize = 1 << 15;

/// Same dtype and shape as the f32 input 0.
pub(crate) fn infer_elementwise(op: &str, cx: &InferContext<'_>) -> KernelResult<Vec<OutputType>> {
    let x = cx.input(0)?;
    expect_f32(op, 0, &x)?;
    Ok(vec![OutputType::new(x.dtype, x.shape.to_vec())])
}

/// Applies `f` to every element of input 0, writing output 0.
fn map(cx: &mut KernelContext<'_>, f: impl Fn(f32) -> f32 + Sync) -> KernelResult<()> {
    let x = cx.input(0)?.f32()?;
    let y = cx.output(0)?.f32_mut()?;
    if x.len() != y.len() {
        return Err(KernelError::new(format!(
            "input has {} elements, output {}",
            x.len(),
            y.len()
        )));
    }
    for_each_chunk(cx, y, 16, ELEMENTWISE_GRAIN, |start, chunk| {
        for (y, &x) in chunk.iter_mut().zip(&x[start..]) {
            *y = f(x);
        }
    });
    Ok(())
}

/// The logistic function, without overflow for large |x|.
fn sigmoid(x: f32) -> f32 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

/// `max(x, 0)`.
pub struct Relu;

impl Operator for Relu {
    const OP_TYPE: &'static str = "Relu";

    fn infer(cx: &InferContext<'_>) -> KernelResult<Vec<OutputType>> {
        infer_elementwise(Self::OP_TYPE, cx)
    }

    fn compute(cx: &mut KernelContext<'_>) -> KernelResult<()> {
        // `x.max(0.0)` would turn NaN into 0; ONNX keeps NaN.
        map(cx, |x| if x < 0.0 { 0.0 } else { x })
    }
}

/// `1 / (1 + exp(-x))`.
pub struct Sigmoid;

impl Operator for Sigmoid {
    const OP_TYPE: &'static str = "Sigmoid";

    fn infer(cx: &InferContext<'_>) -> KernelResult<Vec<OutputType>> {
        infer_elementwise(Self::OP_TYPE, cx)
    }

    fn compute(cx: &mut KernelContext<'_>) -> KernelResult<()> {
        map(cx, sigmoid)
    }
}

/// The hyperbolic tangent.
pub struct Tanh;

impl Operator for Tanh {
    const OP_TYPE: &'static str = "Tanh";

    fn infer(cx: &InferContext<'_>) -> KernelResult<Vec<OutputType>> {
        infer_elementwise(Self::OP_TYPE, cx)
    }

    fn compute(cx: &mut KernelContext<'_>) -> KernelResult<()> {
        map(cx, f32::tanh)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opal_plugin_api::testing::{
        assert_close, infer_input, infer_operator, run_operator, OwnedTensor, TestHost,
    };

    fn inputs() -> (Vec<f32>, OwnedTensor) {
        let values: Vec<f32> = (0..37).map(|i| (i as f32 - 18.0) * 0.7).collect();
        let tensor = OwnedTensor::f32(&[37], &values);
        (values, tensor)
    }

    #[test]
    fn relu_clamps_negatives_and_keeps_nan() {
        let x = OwnedTensor::f32(&[2, 2], &[-1.0, 0.0, 2.5, f32::NAN]);
        let y = run_operator::<Relu>(&[x], &[], 1).unwrap();
        assert_eq!(y[0].shape(), [2, 2]);
        assert_close(y[0].as_slice(), &[0.0, 0.0, 2.5, f32::NAN], 0.0);
    }

    #[test]
    fn sigmoid_and_tanh_match_the_formulas() {
        let (values, x) = inputs();
        let y = run_operator::<Sigmoid>(std::slice::from_ref(&x), &[], 1).unwrap();
        let expected: Vec<f32> = values
            .iter()
            .map(|&v| 1.0 / (1.0 + (-v as f64).exp()) as f32)
            .collect();
        assert_close(y[0].as_slice(), &expected, 1e-6);
        let y = TestHost::new()
            .threads(4)
            .run::<Tanh>(&[x], &[], 1)
            .unwrap();
        let expected: Vec<f32> = values.iter().map(|&v| v.tanh()).collect();
        assert_close(y[0].as_slice(), &expected, 1e-6);
        assert_eq!(sigmoid(-200.0), 0.0);
        assert_eq!(sigmoid(200.0), 1.0);
    }

    #[test]
    fn large_inputs_split_across_threads() {
        let values: Vec<f32> = (0..100_003).map(|i| (i % 7) as f32 - 3.0).collect();
        let x = OwnedTensor::f32(&[100_003], &values);
        let y = TestHost::new()
            .threads(2)
            .run::<Relu>(&[x], &[], 1)
            .unwrap();
        let expected: Vec<f32> = values.iter().map(|&v| v.max(0.0)).collect();
        assert_eq!(y[0].to_vec::<f32>(), expected);
    }

    #[test]
    fn non_f32_inputs_are_refused_with_unknown_dims_kept() {
        let error = infer_operator::<Relu>(&[infer_input(DType::I64, &[2])], &[], 1).unwrap_err();
        assert_eq!(error, "Relu: input 0 has dtype i64, only f32 is supported");
        let types = infer_operator::<Tanh>(&[infer_input(DType::F32, &[-1, 3])], &[], 1).unwrap();
        assert_eq!(types[0].shape.as_slice(), [-1, 3]);
    }
}
