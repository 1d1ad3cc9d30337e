//! `ai.onnx.preview.training` `Adagrad`: per parameter `X` with gradient `G` and accumulated
//! squared gradient `H`,
//! `r = R / (1 + T·decay_factor)`, `g = norm_coefficient·X + G`, `H' = H + g²`,
//! `X' = X - r·g / (√H' + epsilon)`. Outputs: every `X'`, then every `H'`.

use crate::{
    optimizer::{infer, optional_float, run},
    TRAINING_DOMAIN,
};
use opal_plugin_api::prelude::*;

/// One Adagrad step over any number of parameters.
pub struct Adagrad;

impl Operator for Adagrad {
    const DOMAIN: &'static str = TRAINING_DOMAIN;
    const OP_TYPE: &'static str = "Adagrad";

    fn infer(cx: &InferContext<'_>) -> KernelResult<Vec<OutputType>> {
        infer(Self::OP_TYPE, cx, &["X", "G", "H"], 2)
    }

    fn compute(cx: &mut KernelContext<'_>) -> KernelResult<()> {
        let op = Self::OP_TYPE;
        let attributes = cx.attributes();
        let decay = optional_float(op, &attributes, "decay_factor", 0.0)?;
        let epsilon = optional_float(op, &attributes, "epsilon", 1e-6)?;
        let norm = optional_float(op, &attributes, "norm_coefficient", 0.0)?;
        run(op, cx, |step, [x, g, h]| {
            let rate = step.rate / (1.0 + step.count as f64 * decay);
            let g = norm * x + g;
            let h = h + g * g;
            [x - rate * g / (h.sqrt() + epsilon), h]
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opal_plugin_api::testing::{assert_close, float_attr, run_operator, OwnedTensor};

    fn scalar_inputs() -> [OwnedTensor; 2] {
        [OwnedTensor::f32(&[], &[0.1]), OwnedTensor::i64(&[], &[0])]
    }

    #[test]
    fn one_parameter_matches_the_update_rule() {
        let [r, t] = scalar_inputs();
        let x = OwnedTensor::f32(&[1], &[1.0]);
        let g = OwnedTensor::f32(&[1], &[-1.0]);
        let h = OwnedTensor::f32(&[1], &[2.0]);
        let attrs = [
            float_attr("decay_factor", 0.1),
            float_attr("epsilon", 1e-5),
            float_attr("norm_coefficient", 0.001),
        ];
        let y = run_operator::<Adagrad>(&[r, t, x, g, h], &attrs, 2).unwrap();
        // g = 0.001 - 1 = -0.999; h = 2 + 0.998001; x = 1 + 0.1·0.999 / (√2.998001 + 1e-5).
        assert_close(&y[0].to_vec::<f32>(), &[1.057_696_2], 1e-6);
        assert_close(&y[1].to_vec::<f32>(), &[2.998_001], 1e-6);
    }

    #[test]
    fn several_parameters_come_out_grouped_by_kind() {
        let [r, t] = scalar_inputs();
        let x2 = OwnedTensor::new::<f64>(&[2], &[1.0, 2.0]);
        let g2 = OwnedTensor::new::<f64>(&[2], &[-1.0, -3.0]);
        let h2 = OwnedTensor::new::<f64>(&[2], &[4.0, 1.0]);
        let x1 = OwnedTensor::f32(&[1], &[1.0]);
        let g1 = OwnedTensor::f32(&[1], &[-1.0]);
        let h1 = OwnedTensor::f32(&[1], &[2.0]);
        let y = run_operator::<Adagrad>(&[r, t, x1, x2, g1, g2, h1, h2], &[], 4).unwrap();
        let shapes: Vec<_> = y.iter().map(|t| (t.dtype(), t.shape().to_vec())).collect();
        assert_eq!(
            shapes,
            [
                (DType::F32, vec![1]),
                (DType::F64, vec![2]),
                (DType::F32, vec![1]),
                (DType::F64, vec![2])
            ]
        );
        assert_eq!(y[3].to_vec::<f64>(), [5.0, 10.0]);
    }
}
