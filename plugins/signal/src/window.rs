//! ONNX `HannWindow`, `HammingWindow` and `BlackmanWindow` (opset 17): the cosine-sum windows
//! `a0 - a1·cos(2πk/N) + a2·cos(4πk/N)` for `k < size` (input 0), where `N` is `size` for a
//! periodic window (`periodic = 1`, the default) and `size - 1` for a symmetric one, computed
//! in f64 and written as `output_datatype` (default f32). A symmetric window of one value is
//! `[1]`, as torch and scipy make it.

use crate::values::{int_scalar, output_datatype, Values};
use opal_kernel_support::check::error;
use opal_plugin_api::prelude::*;
use std::f64::consts::PI;

/// The window's length, input 0.
fn size(op: &str, tensor: TensorRef<'_>) -> KernelResult<usize> {
    let size = int_scalar(op, "size", tensor)?;
    usize::try_from(size).map_err(|_| error(op, format_args!("size {size} must not be negative")))
}

fn infer(op: &str, cx: &InferContext<'_>) -> KernelResult<Vec<OutputType>> {
    let dtype = output_datatype(op, &cx.attributes())?;
    let size = cx.input(0)?.value().map(|v| size(op, v)).transpose()?;
    Ok(vec![OutputType::new(
        dtype,
        vec![size.map_or(-1, |s| s as i64)],
    )])
}

fn compute(op: &str, cx: &mut KernelContext<'_>, [a0, a1, a2]: [f64; 3]) -> KernelResult<()> {
    let size = size(op, cx.input(0)?)?;
    let periodic = cx.attributes().int("periodic", 1)? != 0;
    let out = cx.output(0)?;
    if out.len() != size {
        return Err(error(
            op,
            format_args!("the output holds {} values, expected {size}", out.len()),
        ));
    }
    let mut values = Values::new(op, out)?;
    let period = if periodic {
        size
    } else {
        size.saturating_sub(1)
    };
    if period == 0 {
        if size == 1 {
            values.set(0, 1.0);
        }
        return Ok(());
    }
    for k in 0..size {
        let angle = 2.0 * PI * k as f64 / period as f64;
        values.set(k, a0 - a1 * angle.cos() + a2 * (2.0 * angle).cos());
    }
    Ok(())
}

/// A window operator with its coefficients `[a0, a1, a2]`.
macro_rules! cosine_window {
    ($(#[$doc:meta])* $name:ident, $coefficients:expr) => {
        $(#[$doc])*
        pub struct $name;

        impl Operator for $name {
            const OP_TYPE: &'static str = stringify!($name);
            const SINCE_VERSION: i64 = 17;
            const VALUE_INPUTS: &'static [usize] = &[0];

            fn infer(cx: &InferContext<'_>) -> KernelResult<Vec<OutputType>> {
                infer(Self::OP_TYPE, cx)
            }

            fn compute(cx: &mut KernelContext<'_>) -> KernelResult<()> {
                compute(Self::OP_TYPE, cx, $coefficients)
            }
        }
    };
}

cosine_window!(
    /// ONNX `HannWindow`: `0.5 - 0.5·cos(2πk/N)`.
    HannWindow,
    [0.5, 0.5, 0.0]
);
cosine_window!(
    /// ONNX `HammingWindow`: `25/46 - 21/46·cos(2πk/N)`.
    HammingWindow,
    [25.0 / 46.0, 21.0 / 46.0, 0.0]
);
cosine_window!(
    /// ONNX `BlackmanWindow`: `0.42 - 0.5·cos(2πk/N) + 0.08·cos(4πk/N)`.
    BlackmanWindow,
    [0.42, 0.5, 0.08]
);

#[cfg(test)]
mod tests {
    use super::*;
    use opal_plugin_api::testing::{assert_close, int_attr, run_operator, OwnedTensor};

    #[test]
    fn periodic_and_symmetric_hann_windows() {
        let size = || OwnedTensor::new(&[], &[4i32]);
        let periodic = run_operator::<HannWindow>(&[size()], &[], 1).unwrap();
        assert_close(&periodic[0].to_vec::<f32>(), &[0.0, 0.5, 1.0, 0.5], 1e-7);
        let symmetric =
            run_operator::<HannWindow>(&[size()], &[int_attr("periodic", 0)], 1).unwrap();
        assert_close(&symmetric[0].to_vec::<f32>(), &[0.0, 0.75, 0.75, 0.0], 1e-7);
    }

    #[test]
    fn output_datatype_chooses_the_dtype() {
        let size = OwnedTensor::i64(&[], &[3]);
        let y = run_operator::<BlackmanWindow>(
            &[size],
            &[int_attr("output_datatype", 11), int_attr("periodic", 0)],
            1,
        )
        .unwrap();
        assert_eq!(y[0].dtype(), DType::F64);
        let y = y[0].to_vec::<f64>();
        assert!(y[0].abs() < 1e-15 && (y[1] - 1.0).abs() < 1e-15, "{y:?}");
    }

    #[test]
    fn short_windows() {
        let one = OwnedTensor::i64(&[], &[1]);
        let y = run_operator::<HammingWindow>(&[one], &[int_attr("periodic", 0)], 1).unwrap();
        assert_eq!(y[0].to_vec::<f32>(), [1.0]);
        let none = OwnedTensor::i64(&[], &[0]);
        let y = run_operator::<HammingWindow>(&[none], &[], 1).unwrap();
        assert_eq!(y[0].shape(), [0]);
        let negative = OwnedTensor::i64(&[], &[-2]);
        assert!(run_operator::<HammingWindow>(&[negative], &[], 1).is_err());
    }
}
