//! Half-precision floats (f16 and bf16), which have no element type in the plugin API: kernels
//! widen such inputs to f32 in scratch, compute in f32, and narrow the result into the output's
//! bytes (rounding to nearest even).

use crate::check::error;
use half::{bf16, f16};
use opal_plugin_api::prelude::*;

/// The f32 value of the half float in `bytes` (two little-endian bytes) of `dtype`.
fn half_to_f32(dtype: DType, bytes: [u8; 2]) -> f32 {
    let bits = u16::from_le_bytes(bytes);
    if dtype == DType::BF16 {
        bf16::from_bits(bits).to_f32()
    } else {
        f16::from_bits(bits).to_f32()
    }
}

/// The bits of `value` as a half float of `dtype`.
fn f64_to_half(dtype: DType, value: f64) -> [u8; 2] {
    let bits = if dtype == DType::BF16 {
        bf16::from_f64(value).to_bits()
    } else {
        f16::from_f64(value).to_bits()
    };
    bits.to_le_bytes()
}

/// Decodes half floats of `dtype` from `bytes` into `out` (f32 or f64, both exact).
pub(crate) fn decode<T: From<f32>>(dtype: DType, bytes: &[u8], out: &mut [T]) {
    for (y, b) in out.iter_mut().zip(bytes.chunks_exact(2)) {
        *y = T::from(half_to_f32(dtype, [b[0], b[1]]));
    }
}

/// Encodes `values` as half floats of `dtype` into `bytes`.
pub(crate) fn encode<T: Copy + Into<f64>>(dtype: DType, values: &[T], bytes: &mut [u8]) {
    for (b, &v) in bytes.chunks_exact_mut(2).zip(values) {
        b.copy_from_slice(&f64_to_half(dtype, v.into()));
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
        dtype => Err(error(op, format_args!("cannot widen {dtype} to f32"))),
    }
}

/// An f32 buffer a kernel writes instead of a half-float output, narrowed by [`Narrow::finish`].
pub(crate) struct Narrow<'a> {
    dtype: DType,
    pub(crate) values: &'a mut [f32],
    bytes: &'a mut [u8],
}

impl<'a> Narrow<'a> {
    /// A scratch f32 buffer standing for half-float output `out`.
    pub(crate) fn new(cx: &KernelContext<'a>, out: TensorMut<'a>) -> KernelResult<Self> {
        let dtype = out.dtype();
        let len = out.len();
        Ok(Narrow {
            dtype,
            values: cx.scratch::<f32>(len)?,
            bytes: out.bytes_mut(),
        })
    }

    /// Writes the values into the output as half floats.
    pub(crate) fn finish(self) {
        encode(self.dtype, self.values, self.bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rounds_to_nearest_even() {
        let mut bytes = [0u8; 8];
        encode(DType::F16, &[1.0f32, -2.5, 65504.0, 1.0e-8], &mut bytes);
        let mut back = [0.0f32; 4];
        decode(DType::F16, &bytes, &mut back);
        assert_eq!(back, [1.0, -2.5, 65504.0, 0.0]);
        // 1 + 2^-8 is halfway between two bf16 values: ties go to the even one (1.0).
        encode(DType::BF16, &[1.0f32 + 1.0 / 256.0, 3.0], &mut bytes[..4]);
        decode(DType::BF16, &bytes[..4], &mut back[..2]);
        assert_eq!(back[..2], [1.0, 3.0]);
    }
}
