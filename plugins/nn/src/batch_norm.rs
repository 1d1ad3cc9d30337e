//! BatchNormalization: inference with the running statistics (`y = scale * (x - mean) /
//! sqrt(var + epsilon) + bias` per channel), and training mode (opset 14 on) with the batch's
//! statistics and updated running mean and variance as outputs 1 and 2. In inference mode the
//! elementwise nodes after it can be fused into its output pass.

use crate::{
    float::{expect_float, expect_float_channels, input_f32, output_f32},
    moments::mean_variance_of,
};
use opal_kernel_support::{
    check::{error, Shape},
    epilogue::{absorb, batch_norm_affine, Epilogue},
    parallel::for_each_chunk,
};
use opal_plugin_api::prelude::*;

/// Values below which planes are normalised on one thread.
const GRAIN: usize = 1 << 15;

/// BatchNormalization of every opset.
pub struct BatchNormalization;

const OP: &str = "BatchNormalization";

impl Operator for BatchNormalization {
    const OP_TYPE: &'static str = OP;

    fn infer(cx: &InferContext<'_>) -> KernelResult<Vec<OutputType>> {
        let x = cx.input(0)?;
        expect_float_channels(OP, &x)?;
        let channels = x.shape[1];
        for index in 1..5 {
            let input = cx.input(index)?;
            expect_float(OP, index, &input)?;
            let fits = input.shape.len() == 1
                && (channels < 0 || input.shape[0] < 0 || input.shape[0] == channels);
            if !fits {
                return Err(error(
                    OP,
                    format_args!(
                        "input {index} has shape {}, expected [{channels}]",
                        Shape(input.shape)
                    ),
                ));
            }
        }
        let mut outputs = vec![OutputType::new(x.dtype, x.shape.to_vec())];
        let statistics = cx.input(3)?;
        for _ in 1..cx.output_count() {
            outputs.push(OutputType::new(statistics.dtype, vec![channels]));
        }
        Ok(outputs)
    }

    fn compute(cx: &mut KernelContext<'_>) -> KernelResult<()> {
        let shape = cx.input(0)?.shape();
        let channels = shape[1];
        let plane: usize = shape[2..].iter().product();
        let attributes = cx.attributes();
        let epsilon = attributes.float("epsilon", 1e-5)?;
        let momentum = attributes.float("momentum", 0.9)?;
        let training = attributes.int("training_mode", 0)? != 0;
        let x = input_f32(cx, OP, 0)?;
        let [scale, bias, running_mean, running_var] = [1, 2, 3, 4].map(|i| input_f32(cx, OP, i));
        let (scale, bias) = (scale?, bias?);
        let (running_mean, running_var) = (running_mean?, running_var?);
        // Inference checks these only when their shapes are known before the run.
        for (index, values) in [scale, bias, running_mean, running_var].iter().enumerate() {
            if values.len() != channels {
                return Err(error(
                    OP,
                    format_args!(
                        "input {} holds {} values, expected {channels} (one per channel)",
                        index + 1,
                        values.len()
                    ),
                ));
            }
        }
        let (mean, var) = if training {
            let mean = cx.scratch::<f32>(channels)?;
            let var = cx.scratch::<f32>(channels)?;
            let batch = x.len() / (channels * plane).max(1);
            for c in 0..channels {
                let runs = (0..batch).map(|n| &x[(n * channels + c) * plane..][..plane]);
                (mean[c], var[c]) = mean_variance_of(runs);
            }
            (&*mean, &*var)
        } else {
            (running_mean, running_var)
        };
        let (y, sink) = output_f32(cx, 0)?;
        if plane > 0 {
            for_each_chunk(
                cx,
                y,
                plane,
                GRAIN,
                #[inline(always)]
                |start, chunk| {
                    for (p, y) in chunk.chunks_exact_mut(plane).enumerate() {
                        let c = (start / plane + p) % channels;
                        let (a, b) = batch_norm_affine(scale[c], bias[c], mean[c], var[c], epsilon);
                        let x = &x[(start / plane + p) * plane..][..plane];
                        for (y, &x) in y.iter_mut().zip(x) {
                            *y = x * a + b;
                        }
                    }
                },
            );
        }
        if let Some(epilogue) = Epilogue::from_call(cx, OP, channels, y.len())? {
            epilogue.apply(cx, y, channels, plane);
        }
        sink.finish(OP, y)?;
        for (index, (running, batch)) in [(running_mean, mean), (running_var, var)]
            .into_iter()
            .enumerate()
        {
            if index + 1 >= cx.output_count() {
                break;
            }
            let (out, sink) = output_f32(cx, index + 1)?;
            for ((o, &r), &b) in out.iter_mut().zip(running).zip(batch) {
                *o = if training {
                    r * momentum + b * (1.0 - momentum)
                } else {
                    r
                };
            }
            sink.finish(OP, out)?;
        }
        Ok(())
    }

    /// In inference mode, absorbs the elementwise nodes that follow (a scale and shift, an
    /// activation) into its output pass.
    fn fuse(query: &FuseQuery<'_>) -> Option<Vec<u8>> {
        let training = query.attributes().int("training_mode", 0).ok()? != 0;
        if training {
            return None;
        }
        absorb(query)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opal_plugin_api::testing::{assert_close, OwnedTensor, TestHost};

    fn per_channel(values: &[f32]) -> OwnedTensor {
        OwnedTensor::f32(&[values.len()], values)
    }

    #[test]
    fn normalises_each_channel_with_the_running_statistics() {
        let x = OwnedTensor::f32(&[1, 2, 1, 2], &[1.0, 3.0, 2.0, 6.0]);
        let inputs = [
            x,
            per_channel(&[1.0, 2.0]),
            per_channel(&[0.0, 1.0]),
            per_channel(&[2.0, 4.0]),
            per_channel(&[1.0, 4.0]),
        ];
        let y = TestHost::new()
            .run::<BatchNormalization>(&inputs, &[], 1)
            .unwrap();
        assert_close(y[0].as_slice(), &[-1.0, 1.0, -1.0, 3.0], 1e-4);
    }

    #[test]
    fn statistics_shorter_than_the_channels_are_an_error_when_their_shape_was_not_inferred() {
        // The scale's shape known only at run time: inference cannot compare it with the
        // channels (tests/fuzz/regressions/model_plan/ holds a model doing this).
        let x = OwnedTensor::f32(&[1, 3, 1, 1], &[1.0, 2.0, 3.0]);
        let inputs = [
            x,
            per_channel(&[1.0, 1.0]),
            per_channel(&[0.0, 0.0, 0.0]),
            per_channel(&[0.0, 0.0, 0.0]),
            per_channel(&[1.0, 1.0, 1.0]),
        ];
        let err = TestHost::new()
            .run_time_shapes(0b10)
            .run::<BatchNormalization>(&inputs, &[], 1)
            .unwrap_err();
        assert!(
            err.contains("input 1 holds 2 values, expected 3 (one per channel)"),
            "{err}"
        );
    }
}
