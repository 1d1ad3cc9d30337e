//! `ai.onnx.preview.training` `Momentum`: per parameter `X` with gradient `G` and momentum
//! `V`, `g = norm_coefficient·X + G` and `V' = alpha·V + b·g`, where `b` is `beta` once steps
//! were taken (`T > 0`) and 1 on the first; then `X' = X - R·V'` (`mode` "standard") or
//! `X' = X - R·(g + alpha·V')` ("nesterov"). Outputs: every `X'`, then every `V'`.

use crate::{
    optimizer::{infer, required_float, run},
    TRAINING_DOMAIN,
};
use opal_kernel_support::check::error;
use opal_plugin_api::prelude::*;

/// One momentum step over any number of parameters.
pub struct Momentum;

impl Momentum {
    /// Whether attribute `mode` asks for Nesterov's momentum; an error unless it is
    /// "standard" or "nesterov".
    fn nesterov(attributes: &Attributes<'_>) -> KernelResult<bool> {
        let op = Self::OP_TYPE;
        if attributes.get("mode").is_none() {
            return Err(error(op, "the required attribute 'mode' is missing"));
        }
        match attributes.string("mode", "").map_err(|e| error(op, e))? {
            "standard" => Ok(false),
            "nesterov" => Ok(true),
            other => Err(error(
                op,
                format_args!("mode '{other}' is not one of standard, nesterov"),
            )),
        }
    }
}

impl Operator for Momentum {
    const DOMAIN: &'static str = TRAINING_DOMAIN;
    const OP_TYPE: &'static str = "Momentum";

    fn infer(cx: &InferContext<'_>) -> KernelResult<Vec<OutputType>> {
        let op = Self::OP_TYPE;
        let attributes = cx.attributes();
        Self::nesterov(&attributes)?;
        for name in ["alpha", "beta", "norm_coefficient"] {
            required_float(op, &attributes, name)?;
        }
        infer(op, cx, &["X", "G", "V"], 2)
    }

    fn compute(cx: &mut KernelContext<'_>) -> KernelResult<()> {
        let op = Self::OP_TYPE;
        let attributes = cx.attributes();
        let nesterov = Self::nesterov(&attributes)?;
        let alpha = required_float(op, &attributes, "alpha")?;
        let beta = required_float(op, &attributes, "beta")?;
        let norm = required_float(op, &attributes, "norm_coefficient")?;
        run(op, cx, |step, [x, g, v]| {
            let g = norm * x + g;
            let b = if step.count > 0 { beta } else { 1.0 };
            let v = alpha * v + b * g;
            let x = if nesterov {
                x - step.rate * (g + alpha * v)
            } else {
                x - step.rate * v
            };
            [x, v]
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::optimizer::example_inputs;
    use opal_plugin_api::{
        testing::{
            assert_close, float_attr, infer_input, infer_operator, run_operator, string_attr,
        },
        Attribute, InferInput,
    };

    fn attributes(mode: &str) -> [Attribute<'_>; 4] {
        [
            float_attr("alpha", 0.95),
            float_attr("beta", 0.1),
            float_attr("norm_coefficient", 0.001),
            string_attr("mode", mode),
        ]
    }

    #[test]
    fn standard_and_nesterov_steps() {
        let y =
            run_operator::<Momentum>(&example_inputs(0, 1), &attributes("standard"), 2).unwrap();
        assert_close(&y[0].to_vec::<f32>(), &[1.132_38, 2.707_72], 1e-5);
        assert_close(&y[1].to_vec::<f32>(), &[0.676_2, 0.922_8], 1e-5);
        let y =
            run_operator::<Momentum>(&example_inputs(1, 1), &attributes("nesterov"), 2).unwrap();
        // T > 0: the gradient is scaled by beta.
        let g = 0.001 * 1.2 - 0.94;
        let v = 0.95 * 1.7 + 0.1 * g;
        assert_close(&y[1].to_vec::<f32>()[..1], &[v as f32], 1e-6);
        assert_close(
            &y[0].to_vec::<f32>()[..1],
            &[(1.2 - 0.1 * (g + 0.95 * v)) as f32],
            1e-6,
        );
    }

    #[test]
    fn bad_nodes_are_refused_with_the_cause() {
        let scalar_f32 = infer_input(DType::F32, &[]);
        let scalar_i64 = infer_input(DType::I64, &[]);
        let vector = infer_input(DType::F32, &[2]);
        let matrix = infer_input(DType::F32, &[2, 2]);
        let ints = infer_input(DType::I32, &[2]);
        let good = [scalar_f32, scalar_i64, vector, vector, vector];
        let standard = attributes("standard");
        let cases: [(&[InferInput<'_>], &[Attribute<'_>], usize, &str); 8] = [
            (&good, &attributes("heavy"), 2, "mode 'heavy'"),
            (
                &good,
                &standard[1..],
                2,
                "required attribute 'alpha' is missing",
            ),
            (&good[..4], &standard, 2, "the node has 4 inputs"),
            (&good, &standard, 3, "needs 2 outputs, not 3"),
            (
                &[scalar_f32, scalar_i64, ints, ints, ints],
                &standard,
                2,
                "X 1 has dtype i32",
            ),
            (
                &[scalar_f32, scalar_f32, vector, vector, vector],
                &standard,
                2,
                "T has dtype f32",
            ),
            (
                &[matrix, scalar_i64, vector, vector, vector],
                &standard,
                2,
                "R has shape [2,2]",
            ),
            (
                &[scalar_f32, scalar_i64, vector, matrix, vector],
                &standard,
                2,
                "G 1 is f32 [2,2]",
            ),
        ];
        for (inputs, attributes, outputs, expected) in cases {
            let err = infer_operator::<Momentum>(inputs, attributes, outputs).unwrap_err();
            assert!(err.contains(expected), "{err} lacks {expected}");
        }
    }
}
