//! Half-precision floats (f16 and bf16), which have no element type in the plugin API: kernels
//! widen such inputs to f32 in scratch, compute in f32, and narrow results back into the output's
//! bytes, rounding to nearest even.

use crate::check::error;
use half::{bf16, f16};
use opal_plugin_api::prelude::*;

/// The value of half-float `bits` of `dtype` (bf16, else f16).
pub fn bits_to_f32(dtype: DType, bits: u16) -> f32 {
    if dtype == DType::BF16 {
        bf16::from_bits(bits).to_f32()
    } else {
        f16::from_bits(bits).to_f32()
    }
}

/// The bits of the half float of `dtype` (bf16, else f16) nearest to `value`, ties to even.
pub fn f32_to_bits(dtype: DType, value: f32) -> u16 {
    if dtype == DType::BF16 {
        bf16::from_f32(value).to_bits()
    } else {
        f16::from_f32(value).to_bits()
    }
}

/// Decodes half floats of `dtype` (f16 or bf16, little-endian) from `bytes` into `out`; f32 and
/// f64 both hold them exactly.
pub fn decode<T: From<f32>>(dtype: DType, bytes: &[u8], out: &mut [T]) {
    for (y, b) in out.iter_mut().zip(bytes.chunks_exact(2)) {
        *y = T::from(bits_to_f32(dtype, u16::from_le_bytes([b[0], b[1]])));
    }
}

/// Encodes `values` as half floats of `dtype` into `bytes`, each rounded once to nearest even.
pub fn encode<T: Copy + Into<f64>>(dtype: DType, values: &[T], bytes: &mut [u8]) {
    for (b, &v) in bytes.chunks_exact_mut(2).zip(values) {
        let bits = if dtype == DType::BF16 {
            bf16::from_f64(v.into()).to_bits()
        } else {
            f16::from_f64(v.into()).to_bits()
        };
        b.copy_from_slice(&bits.to_le_bytes());
    }
}

/// `value` rounded to the precision of float `dtype` (unchanged for any other dtype).
pub fn round_to(dtype: DType, value: f32) -> f32 {
    match dtype {
        DType::F16 => f16::from_f32(value).to_f32(),
        DType::BF16 => bf16::from_f32(value).to_f32(),
        _ => value,
    }
}

/// Input `tensor` as f32 values: its own data when f32, a widened copy in scratch when f16 or
/// bf16, an error naming `op` otherwise.
pub fn widened<'a>(
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
        assert_eq!(round_to(DType::BF16, 1.0 + 1.0 / 256.0), 1.0);
        assert_eq!(round_to(DType::F32, 1.0 + 1.0 / 256.0), 1.0 + 1.0 / 256.0);
    }

    /// The f32 value of half-float bits of `dtype`, and back.
    fn to_f32(dtype: DType, bits: u16) -> f32 {
        let mut out = [0.0f32];
        decode(dtype, &bits.to_le_bytes(), &mut out);
        out[0]
    }

    fn to_bits(dtype: DType, value: f32) -> u16 {
        let mut bytes = [0u8; 2];
        encode(dtype, &[value], &mut bytes);
        u16::from_le_bytes(bytes)
    }

    #[test]
    fn every_f16_value_round_trips() {
        for bits in 0..=u16::MAX {
            let value = to_f32(DType::F16, bits);
            if value.is_nan() {
                assert!(to_f32(DType::F16, to_bits(DType::F16, value)).is_nan());
            } else {
                assert_eq!(
                    to_bits(DType::F16, value),
                    bits,
                    "bits {bits:#x} value {value}"
                );
            }
        }
    }

    #[test]
    fn f16_rounds_to_nearest_even_and_saturates_to_infinity() {
        assert_eq!(to_bits(DType::F16, 1.0), 0x3c00);
        assert_eq!(to_bits(DType::F16, 1.0 + 1.0 / 2048.0), 0x3c00);
        assert_eq!(to_bits(DType::F16, 1.0 + 3.0 / 2048.0), 0x3c02);
        assert_eq!(to_bits(DType::F16, 65520.0), 0x7c00);
        assert_eq!(to_bits(DType::F16, 1e-8), 0);
        assert_eq!(to_f32(DType::F16, 0x0001), 5.960_464_5e-8);
    }

    #[test]
    fn bf16_rounds_to_nearest_even() {
        assert_eq!(to_bits(DType::BF16, 1.0), 0x3f80);
        assert_eq!(
            to_f32(DType::BF16, to_bits(DType::BF16, 3.140625)),
            3.140625
        );
        assert!(to_f32(DType::BF16, to_bits(DType::BF16, f32::NAN)).is_nan());
    }
}
