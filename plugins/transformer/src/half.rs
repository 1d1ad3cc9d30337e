//! Half-precision floats (f16 and bf16), which have no element type in the plugin API: kernels
//! widen such inputs to f32 in scratch, compute in f32, and narrow results into the output's
//! bytes (rounding to nearest even).

use half::{bf16, f16};
use opal_kernel_support::check::error;
use opal_plugin_api::prelude::*;

/// Whether `dtype` is a float type the kernels of this plugin compute in f32.
pub(crate) fn is_float(dtype: DType) -> bool {
    matches!(dtype, DType::F32 | DType::F16 | DType::BF16)
}

/// `value` rounded to the precision of float `dtype` (unchanged for f32).
pub(crate) fn round_to(dtype: DType, value: f32) -> f32 {
    match dtype {
        DType::F16 => f16::from_f32(value).to_f32(),
        DType::BF16 => bf16::from_f32(value).to_f32(),
        _ => value,
    }
}

/// Decodes half floats of `dtype` from `bytes` into `out`.
fn decode(dtype: DType, bytes: &[u8], out: &mut [f32]) {
    for (y, b) in out.iter_mut().zip(bytes.chunks_exact(2)) {
        let bits = u16::from_le_bytes([b[0], b[1]]);
        *y = if dtype == DType::BF16 {
            bf16::from_bits(bits).to_f32()
        } else {
            f16::from_bits(bits).to_f32()
        };
    }
}

/// Encodes `values` as half floats of `dtype` into `bytes`.
fn encode(dtype: DType, values: &[f32], bytes: &mut [u8]) {
    for (b, &v) in bytes.chunks_exact_mut(2).zip(values) {
        let bits = if dtype == DType::BF16 {
            bf16::from_f32(v).to_bits()
        } else {
            f16::from_f32(v).to_bits()
        };
        b.copy_from_slice(&bits.to_le_bytes());
    }
}

/// Input `tensor` as f32 values: its own data when f32, a widened copy in scratch when f16 or
/// bf16, an error otherwise.
pub(crate) fn widened<'a>(
    op: &str,
    cx: &KernelContext<'a>,
    tensor: TensorRef<'a>,
) -> KernelResult<&'a [f32]> {
    match tensor.dtype() {
        DType::F32 => tensor.f32(),
        dtype @ (DType::F16 | DType::BF16) => {
            let out = cx.scratch::<f32>(tensor.len())?;
            decode(dtype, tensor.bytes(), out);
            Ok(out)
        }
        dtype => Err(error(op, format_args!("cannot read {dtype} as f32"))),
    }
}

/// An f32 view of a float output: the output itself when f32, else a scratch buffer narrowed
/// into the output's bytes by [`FloatOut::finish`].
pub(crate) struct FloatOut<'a> {
    dtype: DType,
    pub(crate) values: &'a mut [f32],
    bytes: Option<&'a mut [u8]>,
}

impl<'a> FloatOut<'a> {
    pub(crate) fn new(op: &str, cx: &KernelContext<'a>, out: TensorMut<'a>) -> KernelResult<Self> {
        let dtype = out.dtype();
        match dtype {
            DType::F32 => Ok(FloatOut {
                dtype,
                values: out.f32_mut()?,
                bytes: None,
            }),
            DType::F16 | DType::BF16 => Ok(FloatOut {
                dtype,
                values: cx.scratch::<f32>(out.len())?,
                bytes: Some(out.bytes_mut()),
            }),
            _ => Err(error(
                op,
                format_args!("cannot write f32 values as {dtype}"),
            )),
        }
    }

    /// Writes the values into the output (a no-op for f32 outputs).
    pub(crate) fn finish(self) {
        if let Some(bytes) = self.bytes {
            encode(self.dtype, self.values, bytes);
        }
    }
}
