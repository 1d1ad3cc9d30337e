//! Activation functions: Relu, Sigmoid, Tanh, LeakyRelu, Elu, Selu, Celu, HardSigmoid,
//! HardSwish, Softplus, Softsign, Gelu, Mish, ThresholdedRelu, Shrink, Swish. Each is a
//! [`FloatUnary`](crate::unary::FloatUnary) function (Relu a numeric one), so f32 runs the
//! same tight loop as before, and f64, f16 and bf16 come for free.

use crate::{
    check::error,
    numeric::Float,
    unary::{compute_float_unary, float_operator, infer_same, num_operator, FloatUnary},
};
use opal_plugin_api::prelude::*;

/// `ln(1 + e^x)`, without overflow for large x.
fn softplus<F: Float>(x: F) -> F {
    if x > F::ZERO {
        x + (-x).exp().ln_1p()
    } else {
        x.exp().ln_1p()
    }
}

num_operator!(
    /// `max(x, 0)`; NaN stays NaN.
    Relu, "Relu", since 1, |x| if x < T::ZERO { T::ZERO } else { x }
);
float_operator!(
    /// `1 / (1 + exp(-x))`.
    Sigmoid, "Sigmoid", since 1, [], |x| x.sigmoid()
);
float_operator!(
    /// The hyperbolic tangent.
    Tanh, "Tanh", since 1, [], |x| x.tanh()
);
float_operator!(
    /// `x` where non-negative, `alpha * x` elsewhere.
    LeakyRelu, "LeakyRelu", since 1, [alpha = 0.01], |x| if x < F::ZERO { alpha * x } else { x }
);
float_operator!(
    /// `x` where positive, `alpha * (e^x - 1)` elsewhere.
    Elu, "Elu", since 1, [alpha = 1.0], |x| positive_or(x, x, alpha * (x.exp() - F::ONE))
);
float_operator!(
    /// `gamma * x` where positive, `gamma * alpha * (e^x - 1)` elsewhere.
    Selu, "Selu", since 1, [alpha = 1.673_263_2, gamma = 1.050_701],
    |x| positive_or(x, gamma * x, gamma * (alpha * x.exp() - alpha))
);
float_operator!(
    /// `max(0, x) + min(0, alpha * (e^(x / alpha) - 1))`.
    Celu, "Celu", since 12, [alpha = 1.0],
    |x| positive_or(x, x, alpha * ((x / alpha).exp() - F::ONE))
);
float_operator!(
    /// `max(0, min(1, alpha * x + beta))`.
    HardSigmoid, "HardSigmoid", since 1, [alpha = 0.2, beta = 0.5],
    |x| hard_sigmoid(x, alpha, beta)
);
float_operator!(
    /// `x * max(0, min(1, x / 6 + 1 / 2))`.
    HardSwish, "HardSwish", since 14, [], |x| x * hard_sigmoid(x, F::lit(1.0 / 6.0), F::lit(0.5))
);
float_operator!(
    /// `ln(1 + e^x)`.
    Softplus, "Softplus", since 1, [], |x| softplus(x)
);
float_operator!(
    /// `x / (1 + |x|)`.
    Softsign, "Softsign", since 1, [], |x| x / (F::ONE + x.abs())
);
float_operator!(
    /// `x * tanh(softplus(x))`.
    Mish, "Mish", since 18, [], |x| x * softplus(x).tanh()
);
float_operator!(
    /// `x` where above `alpha`, 0 elsewhere.
    ThresholdedRelu, "ThresholdedRelu", since 10, [alpha = 1.0],
    |x| if x > alpha { x } else { F::ZERO }
);
float_operator!(
    /// `x - bias` above `lambd`, `x + bias` below `-lambd`, 0 between.
    Shrink, "Shrink", since 9, [lambd = 0.5, bias = 0.0],
    |x| if x < -lambd { x + bias } else if x > lambd { x - bias } else { F::ZERO }
);
float_operator!(
    /// `x * sigmoid(alpha * x)`.
    Swish, "Swish", since 24, [alpha = 1.0], |x| x * (alpha * x).sigmoid()
);

/// `positive` where `x > 0`, `negative` elsewhere (NaN included), both already computed so that
/// the choice is a blend and loops over it vectorise.
fn positive_or<F: Float>(x: F, positive: F, negative: F) -> F {
    if x > F::ZERO {
        positive
    } else {
        negative
    }
}

fn hard_sigmoid<F: Float>(x: F, alpha: F, beta: F) -> F {
    let v = alpha * x + beta;
    if v < F::ZERO {
        F::ZERO
    } else if v > F::ONE {
        F::ONE
    } else {
        v
    }
}

/// Gelu with the exact error function.
struct GeluErf;

impl FloatUnary for GeluErf {
    fn apply<F: Float>(x: F, _: &[F; 3]) -> F {
        F::lit(0.5) * x * (F::ONE + (x * F::lit(std::f64::consts::FRAC_1_SQRT_2)).erf())
    }
}

/// Gelu with the tanh approximation.
struct GeluTanh;

impl FloatUnary for GeluTanh {
    fn apply<F: Float>(x: F, _: &[F; 3]) -> F {
        let scale = F::lit((2.0 / std::f64::consts::PI).sqrt());
        let inner = scale * (x + F::lit(0.044_715) * x * x * x);
        F::lit(0.5) * x * (F::ONE + inner.tanh())
    }
}

/// `x * Φ(x)`, with Φ exact (`approximate = "none"`) or through tanh (`"tanh"`).
pub struct Gelu;

impl Operator for Gelu {
    const OP_TYPE: &'static str = "Gelu";
    const SINCE_VERSION: i64 = 20;

    fn infer(cx: &InferContext<'_>) -> KernelResult<Vec<OutputType>> {
        infer_same(
            Self::OP_TYPE,
            cx,
            crate::numeric::is_any_float,
            "a float type",
        )
    }

    fn compute(cx: &mut KernelContext<'_>) -> KernelResult<()> {
        match cx.attributes().string("approximate", "none")? {
            "none" => compute_float_unary::<GeluErf>(Self::OP_TYPE, cx),
            "tanh" => compute_float_unary::<GeluTanh>(Self::OP_TYPE, cx),
            other => Err(error(
                Self::OP_TYPE,
                format_args!("approximate must be 'none' or 'tanh', got '{other}'"),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opal_plugin_api::testing::{
        assert_close, float_attr, infer_input, infer_operator, run_operator, string_attr,
        OwnedTensor, TestHost,
    };

    fn inputs() -> (Vec<f32>, OwnedTensor) {
        let values: Vec<f32> = (0..37).map(|i| (i as f32 - 18.0) * 0.7).collect();
        let tensor = OwnedTensor::f32(&[37], &values);
        (values, tensor)
    }

    fn apply<O: Operator>(
        values: &[f32],
        attributes: &[opal_plugin_api::Attribute<'_>],
    ) -> Vec<f32> {
        let x = OwnedTensor::f32(&[values.len()], values);
        run_operator::<O>(&[x], attributes, 1).unwrap()[0].to_vec()
    }

    #[test]
    fn relu_clamps_negatives_and_keeps_nan() {
        let x = OwnedTensor::f32(&[2, 2], &[-1.0, 0.0, 2.5, f32::NAN]);
        let y = run_operator::<Relu>(&[x], &[], 1).unwrap();
        assert_eq!(y[0].shape(), [2, 2]);
        assert_close(y[0].as_slice(), &[0.0, 0.0, 2.5, f32::NAN], 0.0);
        let x = OwnedTensor::new::<i32>(&[2], &[-3, 4]);
        let y = run_operator::<Relu>(&[x], &[], 1).unwrap();
        assert_eq!(y[0].to_vec::<i32>(), [0, 4]);
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
        assert_eq!((-200.0f32).sigmoid(), 0.0);
        assert_eq!(200.0f32.sigmoid(), 1.0);
    }

    #[test]
    fn f64_inputs_compute_in_f64() {
        let x = OwnedTensor::new::<f64>(&[2], &[-1.0, 1.0]);
        let y = run_operator::<Sigmoid>(&[x], &[], 1).unwrap();
        let expected = 1.0 / (1.0 + 1f64.exp());
        assert_eq!(y[0].to_vec::<f64>(), [expected, 1.0 - expected]);
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
    fn parameters_come_from_attributes_with_onnx_defaults() {
        let x = [-2.0, -0.5, 0.0, 0.5, 2.0];
        assert_close(
            &apply::<LeakyRelu>(&x, &[]),
            &[-0.02, -0.005, 0.0, 0.5, 2.0],
            1e-7,
        );
        assert_close(
            &apply::<LeakyRelu>(&x, &[float_attr("alpha", 0.5)]),
            &[-1.0, -0.25, 0.0, 0.5, 2.0],
            1e-7,
        );
        assert_close(
            &apply::<HardSigmoid>(&x, &[]),
            &[0.1, 0.4, 0.5, 0.6, 0.9],
            1e-6,
        );
        assert_close(
            &apply::<Shrink>(&x, &[float_attr("bias", 0.25)]),
            &[-1.75, 0.0, 0.0, 0.0, 1.75],
            1e-7,
        );
        assert_close(
            &apply::<ThresholdedRelu>(&x, &[float_attr("alpha", 0.4)]),
            &[0.0, 0.0, 0.0, 0.5, 2.0],
            1e-7,
        );
    }

    #[test]
    fn gelu_has_two_forms() {
        let x = [-1.0, 0.0, 1.0];
        let exact = apply::<Gelu>(&x, &[]);
        assert_close(&exact, &[-0.158_655_26, 0.0, 0.841_344_7], 1e-6);
        let tanh = apply::<Gelu>(&x, &[string_attr("approximate", "tanh")]);
        assert_close(&tanh, &[-0.158_808, 0.0, 0.841_192], 1e-5);
    }

    #[test]
    fn non_float_inputs_are_refused_with_unknown_dims_kept() {
        let error =
            infer_operator::<Sigmoid>(&[infer_input(DType::I64, &[2])], &[], 1).unwrap_err();
        assert_eq!(
            error,
            "Sigmoid: input 0 has dtype i64, expected a float type"
        );
        let types = infer_operator::<Tanh>(&[infer_input(DType::F32, &[-1, 3])], &[], 1).unwrap();
        assert_eq!(types[0].shape.as_slice(), [-1, 3]);
    }
}
