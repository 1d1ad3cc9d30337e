//! ONNX `STFT` (opset 17): the short-time Fourier transform of `[batch, length, 1 or 2]`
//! signals: frames of `frame_length` values every `frame_step`, each multiplied by the optional
//! window and transformed; `onesided` (the default) keeps the first `frame_length/2 + 1`
//! frequencies. The output is `[batch, frames, frequencies, 2]`.

use crate::{
    blocks::for_each_block,
    fft::Fft,
    values::{expect_float, inferred_int_scalar, int_scalar, is_real_or_complex, Floats, Values},
};
use opal_kernel_support::check::{error, Shape};
use opal_plugin_api::prelude::*;

const OP: &str = "STFT";

/// ONNX `STFT`, opset 17.
pub struct Stft;

/// The frames of one call.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Frames {
    /// Values per frame: the transform's length.
    length: usize,
    step: usize,
    count: usize,
    /// Frequencies kept of each frame's transform.
    frequencies: usize,
}

impl Frames {
    /// The frames of a signal of `signal_len` values, from the frame step, the frame length
    /// (input 3) and the window's length, when given; `None` when some of them is not known.
    fn new(
        signal_len: Option<usize>,
        step: Option<i64>,
        frame_length: Option<Option<i64>>,
        window_len: Option<Option<usize>>,
        onesided: bool,
    ) -> KernelResult<Option<Self>> {
        let length = match (frame_length, window_len) {
            (Some(Some(n)), Some(Some(w))) if usize::try_from(n) != Ok(w) => {
                return Err(error(
                    OP,
                    format_args!("frame_length {n} differs from the window's length {w}"),
                ))
            }
            (Some(Some(n)), _) => Some(
                usize::try_from(n)
                    .map_err(|_| error(OP, format_args!("frame_length {n} must be at least 1")))?,
            ),
            (Some(None), Some(Some(w))) => Some(w),
            (Some(None), Some(None)) => signal_len,
            _ => None,
        };
        let (Some(length), Some(step), Some(signal_len)) = (length, step, signal_len) else {
            return Ok(None);
        };
        if length == 0 || length > signal_len {
            return Err(error(
                OP,
                format_args!(
                    "frames of {length} values do not fit a signal of {signal_len} (at least 1, at most the signal)"
                ),
            ));
        }
        let step = usize::try_from(step)
            .ok()
            .filter(|&s| s >= 1)
            .ok_or_else(|| error(OP, format_args!("frame_step {step} must be at least 1")))?;
        Ok(Some(Frames {
            length,
            step,
            count: 1 + (signal_len - length) / step,
            frequencies: if onesided { length / 2 + 1 } else { length },
        }))
    }
}

/// Fails unless `shape` is `[batch, length, 1 or 2]`; unknown dims (negative) pass.
fn check_signal_shape<T: Copy + TryInto<i64>>(shape: &[T]) -> KernelResult<()> {
    if shape.len() != 3 || !is_real_or_complex(shape) {
        return Err(error(
            OP,
            format_args!(
                "signal {} must be [batch, length, 1 (real) or 2 (complex)]",
                Shape(shape)
            ),
        ));
    }
    Ok(())
}

fn onesided(attributes: &Attributes<'_>) -> KernelResult<bool> {
    Ok(attributes.int("onesided", 1)? != 0)
}

impl Operator for Stft {
    const OP_TYPE: &'static str = OP;
    const SINCE_VERSION: i64 = 17;
    const VALUE_INPUTS: &'static [usize] = &[1, 3];

    fn infer(cx: &InferContext<'_>) -> KernelResult<Vec<OutputType>> {
        let signal = cx.input(0)?;
        expect_float(OP, "the signal", signal.dtype)?;
        check_signal_shape(signal.shape)?;
        let step = cx
            .input(1)?
            .value()
            .map(|v| int_scalar(OP, "frame_step", v))
            .transpose()?;
        let window_len = match cx.optional_input(2)? {
            None => Some(None),
            Some(window) => {
                expect_float(OP, "the window", window.dtype)?;
                if window.shape.len() != 1 {
                    return Err(error(
                        OP,
                        format_args!("the window {} must have rank 1", Shape(window.shape)),
                    ));
                }
                usize::try_from(window.shape[0]).ok().map(Some)
            }
        };
        let frame_length = inferred_int_scalar(OP, "frame_length", cx, 3)?;
        let frames = Frames::new(
            usize::try_from(signal.shape[1]).ok(),
            step,
            frame_length,
            window_len,
            onesided(&cx.attributes())?,
        )?;
        let (count, frequencies) =
            frames.map_or((-1, -1), |f| (f.count as i64, f.frequencies as i64));
        Ok(vec![OutputType::new(
            signal.dtype,
            vec![signal.shape[0], count, frequencies, 2],
        )])
    }

    fn compute(cx: &mut KernelContext<'_>) -> KernelResult<()> {
        let signal = cx.input(0)?;
        let shape = signal.shape();
        check_signal_shape(shape)?;
        let (batch, signal_len, channels) = (shape[0], shape[1], shape[2]);
        let step = int_scalar(OP, "frame_step", cx.input(1)?)?;
        let window = cx
            .optional_input(2)
            .map(|w| Floats::new(OP, "the window", w).map(|values| (values, w.len())))
            .transpose()?;
        let frame_length = cx
            .optional_input(3)
            .map(|t| int_scalar(OP, "frame_length", t))
            .transpose()?;
        let frames = Frames::new(
            Some(signal_len),
            Some(step),
            Some(frame_length),
            Some(window.map(|(_, len)| len)),
            onesided(&cx.attributes())?,
        )?
        .ok_or_else(|| error(OP, "the frames are not known"))?;
        let out = cx.output(0)?;
        let block_len = frames.frequencies * 2;
        if out.shape() != [batch, frames.count, frames.frequencies, 2]
            || out.dtype() != signal.dtype()
        {
            return Err(error(
                OP,
                format_args!(
                    "the output is {} {}, expected {} [{batch},{},{},2]",
                    out.dtype(),
                    Shape(out.shape()),
                    signal.dtype(),
                    frames.count,
                    frames.frequencies
                ),
            ));
        }
        let input = Floats::new(OP, "the signal", signal)?;
        let fft = Fft::new(cx, frames.length)?;
        let buffer_len = fft.buffer_len();
        let cost = buffer_len * (buffer_len.ilog2() as usize + 1);
        let out = Values::new(OP, out)?;
        for_each_block(
            cx,
            out,
            block_len,
            buffer_len,
            cost,
            |block, values, re, im| {
                let (b, frame) = (block / frames.count, block % frames.count);
                let start = b * signal_len + frame * frames.step;
                for t in 0..frames.length {
                    let at = (start + t) * channels;
                    let weight = window.map_or(1.0, |(w, _)| w.get(t));
                    re[t] = input.get(at) * weight;
                    im[t] = if channels == 2 {
                        input.get(at + 1) * weight
                    } else {
                        0.0
                    };
                }
                fft.transform(re, im, false);
                for k in 0..frames.frequencies {
                    values.set(2 * k, re[k]);
                    values.set(2 * k + 1, im[k]);
                }
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opal_plugin_api::testing::{assert_close, int_attr, run_operator, OwnedTensor};

    #[test]
    fn frames_step_through_the_signal() {
        let frames = Frames::new(Some(128), Some(8), Some(Some(16)), Some(None), true).unwrap();
        assert_eq!(
            frames,
            Some(Frames {
                length: 16,
                step: 8,
                count: 15,
                frequencies: 9
            })
        );
        let unknown = Frames::new(Some(128), None, Some(Some(16)), Some(None), true).unwrap();
        assert_eq!(unknown, None);
        assert!(Frames::new(Some(8), Some(1), Some(Some(4)), Some(Some(5)), true).is_err());
        assert!(Frames::new(Some(8), Some(0), Some(Some(4)), Some(None), true).is_err());
    }

    #[test]
    fn each_windowed_frame_is_transformed() {
        // Frames [1, 2], [3, 4] (step 2), windowed by [1, 0.5]: sums and differences.
        let signal = OwnedTensor::f32(&[1, 5, 1], &[1.0, 2.0, 3.0, 4.0, 5.0]);
        let step = OwnedTensor::i64(&[], &[2]);
        let window = OwnedTensor::f32(&[2], &[1.0, 0.5]);
        let y =
            run_operator::<Stft>(&[signal, step, window], &[int_attr("onesided", 0)], 1).unwrap();
        assert_eq!(y[0].shape(), [1, 2, 2, 2]);
        assert_close(
            &y[0].to_vec::<f32>(),
            &[2.0, 0.0, 0.0, 0.0, 5.0, 0.0, 1.0, 0.0],
            1e-6,
        );
    }
}
