//! ONNX `CausalConvWithState` (opset 27): a causal depthwise 1-D convolution over
//! `[batch, channels, length]` whose left padding is the carried state of the previous call
//! (`past_state`, `[batch, channels, k - 1]`, zeros when absent), with an optional per-channel
//! bias and a fused SiLU. `present_state` is the last `k - 1` positions of the state followed by
//! the input. Computes in f32 (f16/bf16 through scratch, rounded where the reference rounds).

use crate::{
    dims::{same, Dims},
    half::{expect_float_like, round_to, widened, FloatOut},
};
use opal_kernel_support::{
    check::{error, Shape},
    fast_math::sigmoid,
    parallel::for_each_chunk,
};
use opal_plugin_api::prelude::*;

const OP: &str = "CausalConvWithState";

/// ONNX `CausalConvWithState`, opset 27.
pub struct CausalConvWithState;

/// Output work (multiply-adds) under which one thread does it all.
const GRAIN: usize = 1 << 15;

/// Whether the `activation` attribute asks for SiLU (`"silu"` and its alias `"swish"`).
fn silu(attributes: &Attributes<'_>) -> KernelResult<bool> {
    match attributes.string("activation", "none")? {
        "none" => Ok(false),
        "silu" | "swish" => Ok(true),
        other => Err(error(
            OP,
            format_args!("activation '{other}' is not one of 'none', 'silu' or 'swish'"),
        )),
    }
}

/// Checks the shapes of input, weight, bias and past state against each other (unknown dims,
/// which are negative, match anything); returns the kernel size (-1 when unknown).
fn check_shapes(
    input: &[i64],
    weight: &[i64],
    bias: Option<&[i64]>,
    past: Option<&[i64]>,
) -> KernelResult<i64> {
    if input.len() != 3 {
        return Err(error(
            OP,
            format_args!(
                "input {} must have rank 3 (batch, channels, length)",
                Shape(input)
            ),
        ));
    }
    let k = weight.get(2).copied().unwrap_or(-1);
    if weight.len() != 3 || !same(weight[0], input[1]) || !same(weight[1], 1) || k == 0 {
        return Err(error(
            OP,
            format_args!(
                "weight {} must be (channels, 1, k) with k ≥ 1 for input {}",
                Shape(weight),
                Shape(input)
            ),
        ));
    }
    if let Some(bias) = bias {
        if bias.len() != 1 || !same(bias[0], input[1]) {
            return Err(error(
                OP,
                format_args!(
                    "bias {} must hold one value per channel of input {}",
                    Shape(bias),
                    Shape(input)
                ),
            ));
        }
    }
    if let Some(past) = past {
        let state = if k < 0 { -1 } else { k - 1 };
        if past.len() != 3
            || !same(past[0], input[0])
            || !same(past[1], input[1])
            || !same(past[2], state)
        {
            return Err(error(
                OP,
                format_args!(
                    "past_state {} must be (batch, channels, k - 1) for input {} and weight {}",
                    Shape(past),
                    Shape(input),
                    Shape(weight)
                ),
            ));
        }
    }
    Ok(k)
}

impl Operator for CausalConvWithState {
    const OP_TYPE: &'static str = "CausalConvWithState";
    const SINCE_VERSION: i64 = 27;

    fn infer(cx: &InferContext<'_>) -> KernelResult<Vec<OutputType>> {
        let input = cx.input(0)?;
        let weight = cx.input(1)?;
        let bias = cx.optional_input(2)?;
        let past = cx.optional_input(3)?;
        expect_float_like(
            OP,
            "the input",
            input.dtype,
            &[(0, Some(input)), (1, Some(weight)), (2, bias), (3, past)],
        )?;
        silu(&cx.attributes())?;
        let k = check_shapes(
            input.shape,
            weight.shape,
            bias.map(|t| t.shape),
            past.map(|t| t.shape),
        )?;
        let state = if k < 0 { -1 } else { k - 1 };
        Ok(vec![
            OutputType::new(input.dtype, input.shape.to_vec()),
            OutputType::new(input.dtype, vec![input.shape[0], input.shape[1], state]),
        ])
    }

    fn compute(cx: &mut KernelContext<'_>) -> KernelResult<()> {
        let (input, weight) = (cx.input(0)?, cx.input(1)?);
        let (bias, past) = (cx.optional_input(2), cx.optional_input(3));
        let silu = silu(&cx.attributes())?;
        let dims = |t: TensorRef<'_>| Dims::new(OP, t.shape());
        let bias_dims = bias.map(dims).transpose()?;
        let past_dims = past.map(dims).transpose()?;
        check_shapes(
            &dims(input)?,
            &dims(weight)?,
            bias_dims.as_deref(),
            past_dims.as_deref(),
        )?;
        let [_, channels, len] = [input.shape()[0], input.shape()[1], input.shape()[2]];
        let k = weight.shape()[2];
        let carry = k - 1;
        let dtype = input.dtype();

        let x = widened(OP, cx, input)?;
        let w = widened(OP, cx, weight)?;
        let bias = bias.map(|t| widened(OP, cx, t)).transpose()?;
        let past = past.map(|t| widened(OP, cx, t)).transpose()?;
        // Position `p` of row `row` of the padded sequence (the carried state, then the input).
        let padded = |row: usize, p: usize| -> f32 {
            if p < carry {
                past.map_or(0.0, |past| past[row * carry + p])
            } else {
                x[row * len + p - carry]
            }
        };

        let out = cx.output(0)?;
        let out = FloatOut::new(OP, cx, out)?;
        if len > 0 {
            for_each_chunk(cx, out.values, len, GRAIN / k.max(1), |start, chunk| {
                for (r, y) in chunk.chunks_exact_mut(len).enumerate() {
                    let row = start / len + r;
                    let c = row % channels;
                    let w = &w[c * k..(c + 1) * k];
                    let b = bias.map_or(0.0, |bias| bias[c]);
                    for (t, y) in y.iter_mut().enumerate() {
                        let mut acc = b;
                        for (j, &w) in w.iter().enumerate() {
                            acc += w * padded(row, t + j);
                        }
                        // The reference rounds the convolution to the input's dtype before
                        // the activation, which it computes in f32.
                        let conv = round_to(dtype, acc);
                        *y = if silu { conv * sigmoid(conv) } else { conv };
                    }
                }
            });
        }
        out.finish();

        let state = cx.output(1)?;
        let state = FloatOut::new(OP, cx, state)?;
        if carry > 0 {
            for (row, s) in state.values.chunks_exact_mut(carry).enumerate() {
                for (q, s) in s.iter_mut().enumerate() {
                    *s = padded(row, len + q);
                }
            }
        }
        state.finish();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opal_plugin_api::testing::{run_operator, string_attr, OwnedTensor};

    #[test]
    fn convolves_over_the_carried_state_and_carries_the_tail() {
        // One channel, k = 3: y[t] = 1·p[t] + 10·p[t+1] + 100·p[t+2] over p = past ++ x.
        let x = OwnedTensor::f32(&[1, 1, 2], &[1.0, 2.0]);
        let w = OwnedTensor::f32(&[1, 1, 3], &[1.0, 10.0, 100.0]);
        let bias = OwnedTensor::f32(&[1], &[0.5]);
        let past = OwnedTensor::f32(&[1, 1, 2], &[3.0, 4.0]);
        let y = run_operator::<CausalConvWithState>(&[x, w, bias, past], &[], 2).unwrap();
        assert_eq!(y[0].shape(), [1, 1, 2]);
        assert_eq!(y[0].to_vec::<f32>(), [143.5, 214.5]);
        assert_eq!(y[1].shape(), [1, 1, 2]);
        assert_eq!(y[1].to_vec::<f32>(), [1.0, 2.0]);
    }

    #[test]
    fn short_inputs_keep_part_of_the_zero_padding_as_state() {
        let x = OwnedTensor::f32(&[1, 1, 1], &[2.0]);
        let w = OwnedTensor::f32(&[1, 1, 3], &[1.0, 1.0, 1.0]);
        let y = run_operator::<CausalConvWithState>(&[x, w], &[], 2).unwrap();
        assert_eq!(y[0].to_vec::<f32>(), [2.0]);
        assert_eq!(y[1].to_vec::<f32>(), [0.0, 2.0]);
    }

    #[test]
    fn silu_and_swish_gate_the_convolution() {
        let x = OwnedTensor::f32(&[1, 1, 2], &[1.0, -2.0]);
        let w = OwnedTensor::f32(&[1, 1, 1], &[1.0]);
        for name in ["silu", "swish"] {
            let attributes = [string_attr("activation", name)];
            let y = run_operator::<CausalConvWithState>(&[x.clone(), w.clone()], &attributes, 2)
                .unwrap();
            let expected: Vec<f32> = [1.0f32, -2.0]
                .iter()
                .map(|v| v / (1.0 + (-v).exp()))
                .collect();
            opal_plugin_api::testing::assert_close(&y[0].to_vec::<f32>(), &expected, 1e-6);
            assert_eq!(y[1].shape(), [1, 1, 0]);
        }
    }

    #[test]
    fn a_past_state_of_the_wrong_length_is_an_error() {
        let x = OwnedTensor::f32(&[1, 1, 2], &[0.0; 2]);
        let w = OwnedTensor::f32(&[1, 1, 3], &[0.0; 3]);
        let past = OwnedTensor::f32(&[1, 1, 3], &[0.0; 3]);
        let error =
            run_operator::<CausalConvWithState>(&[x, w, OwnedTensor::absent(), past], &[], 2)
                .unwrap_err();
        assert!(error.contains("past_state"), "{error}");
    }
}
