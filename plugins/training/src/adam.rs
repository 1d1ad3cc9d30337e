//! `ai.onnx.preview.training` `Adam`: per parameter `X` with gradient `G`, momentum `V` and
//! second moment `H`,
//! `g = norm_coefficient·X + G`, `V' = alpha·V + (1 - alpha)·g`,
//! `H' = beta·H + (1 - beta)·g²`, the rate corrected for bias once steps were taken
//! (`T > 0`: `r = R·√(1 - beta^T) / (1 - alpha^T)`, else `r = R`), then
//! `X' = (1 - norm_coefficient_post)·(X - r·V' / (√H' + epsilon))`.
//! Outputs: every `X'`, then every `V'`, then every `H'`.

use crate::{
    optimizer::{infer, optional_float, run},
    TRAINING_DOMAIN,
};
use opal_plugin_api::prelude::*;

/// One Adam step over any number of parameters.
pub struct Adam;

impl Operator for Adam {
    const DOMAIN: &'static str = TRAINING_DOMAIN;
    const OP_TYPE: &'static str = "Adam";

    fn infer(cx: &InferContext<'_>) -> KernelResult<Vec<OutputType>> {
        infer(Self::OP_TYPE, cx, &["X", "G", "V", "H"], 3)
    }

    fn compute(cx: &mut KernelContext<'_>) -> KernelResult<()> {
        let op = Self::OP_TYPE;
        let attributes = cx.attributes();
        let alpha = optional_float(op, &attributes, "alpha", 0.9)?;
        let beta = optional_float(op, &attributes, "beta", 0.999)?;
        let epsilon = optional_float(op, &attributes, "epsilon", 1e-6)?;
        let norm = optional_float(op, &attributes, "norm_coefficient", 0.0)?;
        let norm_post = optional_float(op, &attributes, "norm_coefficient_post", 0.0)?;
        run(op, cx, |step, [x, g, v, h]| {
            let g = norm * x + g;
            let v = alpha * v + (1.0 - alpha) * g;
            let h = beta * h + (1.0 - beta) * g * g;
            let rate = if step.count > 0 {
                let t = step.count as f64;
                step.rate * (1.0 - beta.powf(t)).sqrt() / (1.0 - alpha.powf(t))
            } else {
                step.rate
            };
            let x = x - rate * v / (h.sqrt() + epsilon);
            [(1.0 - norm_post) * x, v, h]
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::optimizer::example_inputs;
    use opal_plugin_api::testing::{assert_close, float_attr, run_operator};

    #[test]
    fn first_step_has_no_bias_correction() {
        let attrs = [
            float_attr("alpha", 0.95),
            float_attr("beta", 0.1),
            float_attr("epsilon", 1e-7),
            float_attr("norm_coefficient", 0.001),
        ];
        let y = run_operator::<Adam>(&example_inputs(0, 2), &attrs, 3).unwrap();
        assert_close(&y[0].to_vec::<f32>(), &[1.025_036_3, 2.661_032_7], 1e-5);
        assert_close(&y[1].to_vec::<f32>(), &[1.568_06, 3.295_139_8], 1e-5);
        assert_close(&y[2].to_vec::<f32>(), &[0.803_210_8, 5.622_407], 1e-5);
    }

    #[test]
    fn later_steps_correct_the_rate_and_post_norm_shrinks() {
        let attrs = [float_attr("norm_coefficient_post", 0.5)];
        let y = run_operator::<Adam>(&example_inputs(3, 2), &attrs, 3).unwrap();
        let (x, g, v, h) = (1.2f64, -0.94f64, 1.7f64, 0.1f64);
        let v = 0.9 * v + 0.1 * g;
        let h = 0.999 * h + 0.001 * g * g;
        let rate = 0.1 * (1.0 - 0.999f64.powi(3)).sqrt() / (1.0 - 0.9f64.powi(3));
        let expected = 0.5 * (x - rate * v / (h.sqrt() + 1e-6));
        assert_close(&y[0].to_vec::<f32>()[..1], &[expected as f32], 1e-5);
    }
}
