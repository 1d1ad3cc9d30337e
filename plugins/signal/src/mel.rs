//! ONNX `MelWeightMatrix` (opset 17): the `[dft_length/2 + 1, num_mel_bins]` matrix that maps
//! a one-sided spectrum to mel bands, as onnxruntime and the ONNX reference compute it: the
//! mel scale `2595·log10(1 + hz/700)` between the lower and upper edge split into
//! `num_mel_bins + 2` steps, each edge's frequency rounded down to a spectrogram bin
//! (`⌊(dft_length + 1)·hz / sample_rate⌋`), and a triangle from each band's left edge up to its
//! centre and down to its right edge. Values are computed in f64 and written as
//! `output_datatype` (default f32); edges past the spectrum's last bin are left out.

use crate::values::{float_scalar, int_scalar, output_datatype, Values};
use opal_kernel_support::check::error;
use opal_plugin_api::prelude::*;
use std::f64::consts::LN_10;

const OP: &str = "MelWeightMatrix";

/// ONNX `MelWeightMatrix`, opset 17.
pub struct MelWeightMatrix;

/// The `[spectrogram bins, mel bins]` shape from `num_mel_bins` and `dft_length`.
fn shape(num_mel_bins: i64, dft_length: i64) -> KernelResult<[usize; 2]> {
    match (usize::try_from(num_mel_bins), usize::try_from(dft_length)) {
        (Ok(mel), Ok(dft)) if dft >= 1 => Ok([dft / 2 + 1, mel]),
        _ => Err(error(
            OP,
            format_args!(
                "num_mel_bins {num_mel_bins} must not be negative and dft_length {dft_length} must be at least 1"
            ),
        )),
    }
}

fn hz_to_mel(hz: f64) -> f64 {
    2595.0 * (hz / 700.0).ln_1p() / LN_10
}

fn mel_to_hz(mel: f64) -> f64 {
    700.0 * (mel / 2595.0 * LN_10).exp_m1()
}

impl Operator for MelWeightMatrix {
    const OP_TYPE: &'static str = OP;
    const SINCE_VERSION: i64 = 17;
    const VALUE_INPUTS: &'static [usize] = &[0, 1];

    fn infer(cx: &InferContext<'_>) -> KernelResult<Vec<OutputType>> {
        let dtype = output_datatype(OP, &cx.attributes())?;
        let (mel, dft) = (cx.input(0)?.value(), cx.input(1)?.value());
        let dims = match (mel, dft) {
            (Some(mel), Some(dft)) => {
                let [rows, columns] = shape(
                    int_scalar(OP, "num_mel_bins", mel)?,
                    int_scalar(OP, "dft_length", dft)?,
                )?;
                vec![rows as i64, columns as i64]
            }
            _ => vec![-1, -1],
        };
        Ok(vec![OutputType::new(dtype, dims)])
    }

    fn compute(cx: &mut KernelContext<'_>) -> KernelResult<()> {
        let num_mel_bins = int_scalar(OP, "num_mel_bins", cx.input(0)?)?;
        let dft_length = int_scalar(OP, "dft_length", cx.input(1)?)?;
        let sample_rate = int_scalar(OP, "sample_rate", cx.input(2)?)?;
        let lower = float_scalar(OP, "lower_edge_hertz", cx.input(3)?)?;
        let upper = float_scalar(OP, "upper_edge_hertz", cx.input(4)?)?;
        let [rows, columns] = shape(num_mel_bins, dft_length)?;
        if sample_rate <= 0 {
            return Err(error(
                OP,
                format_args!("sample_rate {sample_rate} must be positive"),
            ));
        }
        let out = cx.output(0)?;
        if out.shape() != [rows, columns] {
            return Err(error(
                OP,
                format_args!(
                    "the output has {} values, expected [{rows},{columns}]",
                    out.len()
                ),
            ));
        }
        let mut values = Values::new(OP, out)?;
        for i in 0..rows * columns {
            values.set(i, 0.0);
        }
        let (low_mel, high_mel) = (hz_to_mel(lower), hz_to_mel(upper));
        let step = (high_mel - low_mel) / (columns + 2) as f64;
        // The spectrogram bin of band edge `e`, of `columns + 2` edges.
        let edge = |e: usize| {
            let hz = mel_to_hz(low_mel + e as f64 * step);
            ((dft_length + 1) as f64 * hz / sample_rate as f64).floor() as i64
        };
        let mut set = |row: i64, column: usize, value: f64| {
            if let Ok(row) = usize::try_from(row) {
                if row < rows {
                    values.set(row * columns + column, value);
                }
            }
        };
        for band in 0..columns {
            let (left, centre, right) = (edge(band), edge(band + 1), edge(band + 2));
            if centre == left {
                set(centre, band, 1.0);
            } else {
                for row in left..=centre {
                    set(row, band, (row - left) as f64 / (centre - left) as f64);
                }
            }
            for row in centre..right {
                set(row, band, (right - row) as f64 / (right - centre) as f64);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opal_plugin_api::testing::{run_operator, OwnedTensor};

    #[test]
    fn bands_are_triangles_over_the_spectrum() {
        let int = |v: i32| OwnedTensor::new(&[], &[v]);
        let float = |v: f32| OwnedTensor::f32(&[], &[v]);
        let y = run_operator::<MelWeightMatrix>(
            &[int(8), int(16), int(8192), float(0.0), float(4096.0)],
            &[],
            1,
        )
        .unwrap();
        assert_eq!(y[0].shape(), [9, 8]);
        let y = y[0].to_vec::<f32>();
        // Every band peaks at 1 somewhere; no weight is outside [0, 1].
        for band in 0..8 {
            let column: Vec<f32> = (0..9).map(|row| y[row * 8 + band]).collect();
            assert!(column.contains(&1.0), "band {band}: {column:?}");
            assert!(column.iter().all(|v| (0.0..=1.0).contains(v)), "{column:?}");
        }
    }

    #[test]
    fn the_mel_scale_round_trips() {
        for hz in [0.0, 100.0, 1000.0, 8000.0] {
            assert!((mel_to_hz(hz_to_mel(hz)) - hz).abs() < 1e-9);
        }
        assert!((hz_to_mel(1000.0) - 1000.0).abs() < 0.5);
    }
}
