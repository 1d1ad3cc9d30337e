//! ONNX `DFT` (opset 17: `axis` an attribute, default 1; opset 20: `axis` an optional input,
//! default -2): the discrete Fourier transform along one signal axis of a real (last dim 1) or
//! complex (last dim 2) input, forward or inverse (divided by the length), zero-padded or cut
//! to an optional `dft_length`. `onesided` keeps the first `n/2 + 1` frequencies of a forward
//! transform; with `inverse` it takes them and returns the real signal of length `n` they are
//! half of (numpy's `irfft`; `n` defaults to twice the input length less 2).

use crate::{
    blocks::for_each_block,
    fft::Fft,
    values::{expect_float, inferred_int_scalar, int_scalar, is_real_or_complex, Floats, Values},
};
use opal_kernel_support::check::{error, Shape};
use opal_plugin_api::prelude::*;

const OP: &str = "DFT";

/// ONNX `DFT`, opsets 17 to 19, with `axis` an attribute.
pub struct Dft17;

/// ONNX `DFT` since opset 20, with `axis` input 2.
pub struct Dft20;

impl Operator for Dft17 {
    const OP_TYPE: &'static str = OP;
    const SINCE_VERSION: i64 = 17;
    const UNTIL_VERSION: i64 = 19;
    const VALUE_INPUTS: &'static [usize] = &[1];

    fn infer(cx: &InferContext<'_>) -> KernelResult<Vec<OutputType>> {
        infer(cx, Some(cx.attributes().int("axis", 1)?))
    }

    fn compute(cx: &mut KernelContext<'_>) -> KernelResult<()> {
        let axis = cx.attributes().int("axis", 1)?;
        compute(cx, axis)
    }
}

impl Operator for Dft20 {
    const OP_TYPE: &'static str = OP;
    const SINCE_VERSION: i64 = 20;
    const VALUE_INPUTS: &'static [usize] = &[1, 2];

    fn infer(cx: &InferContext<'_>) -> KernelResult<Vec<OutputType>> {
        let axis = inferred_int_scalar(OP, "axis", cx, 2)?;
        infer(cx, axis.map(|axis| axis.unwrap_or(-2)))
    }

    fn compute(cx: &mut KernelContext<'_>) -> KernelResult<()> {
        let axis = cx
            .optional_input(2)
            .map(|v| int_scalar(OP, "axis", v))
            .transpose()?
            .unwrap_or(-2);
        compute(cx, axis)
    }
}

/// What the node's attributes ask for.
#[derive(Clone, Copy)]
struct Mode {
    inverse: bool,
    onesided: bool,
}

impl Mode {
    fn new(attributes: &Attributes<'_>) -> KernelResult<Self> {
        Ok(Mode {
            inverse: attributes.int("inverse", 0)? != 0,
            onesided: attributes.int("onesided", 0)? != 0,
        })
    }

    /// An inverse transform of one-sided frequencies into a real signal.
    fn real_inverse(self) -> bool {
        self.inverse && self.onesided
    }

    /// The transform's length, from `dft_length` or the input's `len` values along the axis.
    fn length(self, len: usize, dft_length: Option<i64>) -> KernelResult<usize> {
        match dft_length {
            Some(n) => usize::try_from(n)
                .ok()
                .filter(|&n| n >= 1)
                .ok_or_else(|| error(OP, format_args!("dft_length {n} must be at least 1"))),
            None if self.real_inverse() && len >= 2 => Ok(2 * (len - 1)),
            None if self.real_inverse() => Err(error(
                OP,
                format_args!(
                    "a one-sided inverse of {len} frequencies needs a dft_length (by default it is 2·{len} - 2)"
                ),
            )),
            None if len >= 1 => Ok(len),
            None => Err(error(OP, "the transformed axis is empty")),
        }
    }

    /// How many values the output holds along the axis for a transform of length `n`.
    fn output_len(self, n: usize) -> usize {
        if self.onesided && !self.inverse {
            n / 2 + 1
        } else {
            n
        }
    }

    /// The output's last dim: 2 (complex), or 1 for a real inverse.
    fn output_channels(self) -> usize {
        if self.real_inverse() {
            1
        } else {
            2
        }
    }
}

/// `axis` as an index of one of the signal dims of an input of `rank` (all but the last).
fn signal_axis(axis: i64, rank: usize) -> KernelResult<usize> {
    let rank_i = rank as i64;
    let normalized = if axis < 0 { axis + rank_i } else { axis };
    if (0..rank_i - 1).contains(&normalized) {
        Ok(normalized as usize)
    } else {
        Err(error(
            OP,
            format_args!(
                "axis {axis} is not a signal axis of a rank-{rank} input (the last dim holds the real and imaginary parts)"
            ),
        ))
    }
}

/// Fails unless `shape` is signal dims followed by 1 (real) or 2 (complex) values; unknown
/// dims (negative) pass.
fn check_input_shape<T: Copy + TryInto<i64>>(shape: &[T]) -> KernelResult<()> {
    if shape.len() < 2 || !is_real_or_complex(shape) {
        return Err(error(
            OP,
            format_args!(
                "input {} must be signal dims followed by 1 (real) or 2 (complex) values",
                Shape(shape)
            ),
        ));
    }
    Ok(())
}

/// Output dtype and shape; `axis` is `None` when it is an input whose value is not known yet.
fn infer(cx: &InferContext<'_>, axis: Option<i64>) -> KernelResult<Vec<OutputType>> {
    let x = cx.input(0)?;
    expect_float(OP, "input", x.dtype)?;
    check_input_shape(x.shape)?;
    let mode = Mode::new(&cx.attributes())?;
    let dft_length = inferred_int_scalar(OP, "dft_length", cx, 1)?;
    let rank = x.shape.len();
    let mut shape = x.shape.to_vec();
    shape[rank - 1] = mode.output_channels() as i64;
    match axis {
        Some(axis) => {
            let axis = signal_axis(axis, rank)?;
            shape[axis] = match (dft_length, usize::try_from(x.shape[axis])) {
                (Some(Some(n)), _) => mode.output_len(mode.length(0, Some(n))?) as i64,
                (Some(None), Ok(len)) => mode.output_len(mode.length(len, None)?) as i64,
                _ => -1,
            };
        }
        // Every signal dim keeps its length unless the transform changes it along the axis.
        None if dft_length != Some(None) || mode.onesided => shape[..rank - 1].fill(-1),
        None => {}
    }
    Ok(vec![OutputType::new(x.dtype, shape)])
}

fn compute(cx: &mut KernelContext<'_>, axis: i64) -> KernelResult<()> {
    let x = cx.input(0)?;
    let shape = x.shape();
    check_input_shape(shape)?;
    let rank = shape.len();
    let axis = signal_axis(axis, rank)?;
    let mode = Mode::new(&cx.attributes())?;
    let dft_length = cx
        .optional_input(1)
        .map(|t| int_scalar(OP, "dft_length", t))
        .transpose()?;
    let (len, channels) = (shape[axis], shape[rank - 1]);
    let n = mode.length(len, dft_length)?;
    let (len_out, channels_out) = (mode.output_len(n), mode.output_channels());
    let outer: usize = shape[..axis].iter().product();
    let inner: usize = shape[axis + 1..rank - 1].iter().product();
    let out = cx.output(0)?;
    let block_len = len_out * inner * channels_out;
    if out.len() != outer * block_len || out.dtype() != x.dtype() {
        return Err(error(
            OP,
            format_args!(
                "the output is {} {}, expected {} values of {}",
                out.dtype(),
                Shape(out.shape()),
                outer * block_len,
                x.dtype()
            ),
        ));
    }
    let input = Floats::new(OP, "input", x)?;
    let fft = Fft::new(cx, n)?;
    let buffer_len = fft.buffer_len();
    let cost = inner * buffer_len * (buffer_len.ilog2() as usize + 1);
    // The first `kept` values along the axis are used; the rest of the line up to `n` is 0.
    let kept = len.min(if mode.real_inverse() { n / 2 + 1 } else { n });
    let out = Values::new(OP, out)?;
    for_each_block(cx, out, block_len, buffer_len, cost, |o, block, re, im| {
        for i in 0..inner {
            for t in 0..kept {
                let at = ((o * len + t) * inner + i) * channels;
                re[t] = input.get(at);
                im[t] = if channels == 2 {
                    input.get(at + 1)
                } else {
                    0.0
                };
            }
            re[kept..n].fill(0.0);
            im[kept..n].fill(0.0);
            if mode.real_inverse() {
                // The other half of a real signal's spectrum: X[n-k] = conj(X[k]).
                for k in 1..=(n - 1) / 2 {
                    re[n - k] = re[k];
                    im[n - k] = -im[k];
                }
            }
            fft.transform(re, im, mode.inverse);
            for k in 0..len_out {
                let at = (k * inner + i) * channels_out;
                block.set(at, re[k]);
                if channels_out == 2 {
                    block.set(at + 1, im[k]);
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use opal_plugin_api::{
        testing::{assert_close, int_attr, run_operator, OwnedTensor, TestHost},
        Attribute,
    };

    fn dft(x: OwnedTensor, axis: i64, attributes: &[Attribute<'_>]) -> OwnedTensor {
        let axis = OwnedTensor::i64(&[], &[axis]);
        run_operator::<Dft20>(&[x, OwnedTensor::absent(), axis], attributes, 1)
            .unwrap()
            .remove(0)
    }

    #[test]
    fn real_input_gives_the_complex_spectrum() {
        let x = OwnedTensor::f32(&[1, 4, 1], &[1.0, 2.0, 3.0, 4.0]);
        let y = dft(x, 1, &[]);
        assert_eq!(y.shape(), [1, 4, 2]);
        assert_close(
            &y.to_vec::<f32>(),
            &[10.0, 0.0, -2.0, 2.0, -2.0, 0.0, -2.0, -2.0],
            1e-6,
        );
    }

    #[test]
    fn onesided_forward_and_inverse_round_trip_a_real_signal() {
        let signal = [0.5f32, -1.0, 2.0, 3.5, 0.0, 1.0];
        let x = OwnedTensor::f32(&[1, 6, 1], &signal);
        let half = dft(x, 1, &[int_attr("onesided", 1)]);
        assert_eq!(half.shape(), [1, 4, 2]);
        let back = dft(half, 1, &[int_attr("onesided", 1), int_attr("inverse", 1)]);
        assert_eq!(back.shape(), [1, 6, 1]);
        assert_close(&back.to_vec::<f32>(), &signal, 1e-6);
    }

    #[test]
    fn dft_length_pads_or_cuts_the_signal_along_an_inner_axis() {
        // Two columns; the transform runs down each, padded to 3 (from 2).
        let x = OwnedTensor::f32(&[2, 2, 1], &[1.0, 10.0, 2.0, 20.0]);
        let length = OwnedTensor::i64(&[], &[3]);
        let axis = OwnedTensor::i64(&[], &[0]);
        let y = run_operator::<Dft20>(&[x, length, axis], &[], 1).unwrap();
        assert_eq!(y[0].shape(), [3, 2, 2]);
        let (c, s) = (
            (2.0 * std::f32::consts::PI / 3.0).cos(),
            (2.0 * std::f32::consts::PI / 3.0).sin(),
        );
        let column = |a: f32, b: f32| [a + b, 0.0, a + b * c, -b * s, a + b * c, b * s];
        let (first, second) = (column(1.0, 2.0), column(10.0, 20.0));
        let mut expected = Vec::new();
        for k in 0..3 {
            expected.extend_from_slice(&first[2 * k..2 * k + 2]);
            expected.extend_from_slice(&second[2 * k..2 * k + 2]);
        }
        assert_close(&y[0].to_vec::<f32>(), &expected, 1e-6);
        // Cut to 1: each column's first value.
        let x = OwnedTensor::f32(&[2, 2, 1], &[1.0, 10.0, 2.0, 20.0]);
        let length = OwnedTensor::i64(&[], &[1]);
        let axis = OwnedTensor::i64(&[], &[0]);
        let y = run_operator::<Dft20>(&[x, length, axis], &[], 1).unwrap();
        assert_eq!(y[0].shape(), [1, 2, 2]);
        assert_eq!(y[0].to_vec::<f32>(), [1.0, 0.0, 10.0, 0.0]);
    }

    #[test]
    fn the_opset_17_form_reads_axis_from_its_attribute() {
        let x = OwnedTensor::f32(&[2, 2], &[1.0, 0.0, 0.0, 1.0]);
        let y =
            run_operator::<Dft17>(&[x], &[int_attr("axis", 0), int_attr("inverse", 1)], 1).unwrap();
        // (1 + i·0, 0 + i·1) inverted: (1 + i, 1 - i) / 2.
        assert_close(&y[0].to_vec::<f32>(), &[0.5, 0.5, 0.5, -0.5], 1e-6);
    }

    #[test]
    fn threads_split_the_lines_without_changing_them() {
        let values: Vec<f32> = (0..16 * 1024).map(|i| (i * 7919 % 1000) as f32).collect();
        let inputs = || {
            let x = OwnedTensor::f32(&[16, 1024, 1], &values);
            [x, OwnedTensor::absent(), OwnedTensor::i64(&[], &[1])]
        };
        let one = run_operator::<Dft20>(&inputs(), &[], 1).unwrap();
        let four = TestHost::new()
            .threads(4)
            .run::<Dft20>(&inputs(), &[], 1)
            .unwrap();
        assert_eq!(one[0].to_vec::<f32>(), four[0].to_vec::<f32>());
    }

    #[test]
    fn the_complex_dim_is_no_axis() {
        let x = OwnedTensor::f32(&[1, 4, 1], &[0.0; 4]);
        let axis = OwnedTensor::i64(&[], &[-1]);
        let err = run_operator::<Dft20>(&[x, OwnedTensor::absent(), axis], &[], 1).unwrap_err();
        assert!(err.contains("not a signal axis"), "{err}");
    }
}
