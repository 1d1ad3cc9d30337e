//! Floating-point dtypes seen as f32: the kernels of this plugin compute in f32, and inputs and
//! outputs of dtype f64, f16 or bf16 are converted through host scratch (f16 and bf16 by bit
//! manipulation, round to nearest even).

use opal_kernel_support::check::error;
use opal_plugin_api::{infer::InferTensor, prelude::*};

/// The dtypes the float kernels accept.
pub(crate) fn is_float(dtype: DType) -> bool {
    matches!(dtype, DType::F32 | DType::F64 | DType::F16 | DType::BF16)
}

/// Fails unless input `index` has a floating-point dtype.
pub(crate) fn expect_float(op: &str, index: usize, input: &InferTensor<'_>) -> KernelResult<()> {
    if !is_float(input.dtype) {
        return Err(error(
            op,
            format_args!(
                "input {index} has dtype {}, expected f32, f64, f16 or bf16",
                input.dtype
            ),
        ));
    }
    Ok(())
}

/// The f32 value of IEEE half-precision bits.
pub(crate) fn f16_to_f32(bits: u16) -> f32 {
    let sign = ((bits as u32) & 0x8000) << 16;
    let exponent = ((bits >> 10) & 0x1f) as u32;
    let mantissa = (bits & 0x3ff) as u32;
    let magnitude = match exponent {
        0 => {
            // Zero or subnormal: mantissa * 2^-24.
            return sign_of(sign) * (mantissa as f32) * (1.0 / 16_777_216.0);
        }
        0x1f => 0x7f80_0000 | (mantissa << 13),
        _ => ((exponent + 112) << 23) | (mantissa << 13),
    };
    f32::from_bits(sign | magnitude)
}

fn sign_of(sign_bit: u32) -> f32 {
    if sign_bit != 0 {
        -1.0
    } else {
        1.0
    }
}

/// The IEEE half-precision bits nearest to `value` (ties to even; overflow to infinity).
pub(crate) fn f32_to_f16(value: f32) -> u16 {
    let bits = value.to_bits();
    let sign = ((bits >> 16) & 0x8000) as u16;
    let exponent = ((bits >> 23) & 0xff) as i32;
    let mantissa = bits & 0x7f_ffff;
    if exponent == 0xff {
        let nan = if mantissa != 0 { 0x200 } else { 0 };
        return sign | 0x7c00 | nan;
    }
    let half_exponent = exponent - 112;
    if half_exponent >= 0x1f {
        return sign | 0x7c00;
    }
    if half_exponent <= 0 {
        // Subnormal (or zero) in half precision.
        if half_exponent < -10 {
            return sign;
        }
        let full = mantissa | 0x80_0000;
        let shift = (14 - half_exponent) as u32;
        let half = full >> shift;
        let rest = full & ((1 << shift) - 1);
        let midpoint = 1 << (shift - 1);
        let round = rest > midpoint || (rest == midpoint && half & 1 == 1);
        return sign | (half + round as u32) as u16;
    }
    let half = ((half_exponent as u32) << 10) | (mantissa >> 13);
    let rest = mantissa & 0x1fff;
    let round = rest > 0x1000 || (rest == 0x1000 && half & 1 == 1);
    // A carry out of the mantissa correctly bumps the exponent (up to infinity).
    sign | (half + round as u32) as u16
}

/// The f32 value of bfloat16 bits.
pub(crate) fn bf16_to_f32(bits: u16) -> f32 {
    f32::from_bits((bits as u32) << 16)
}

/// The bfloat16 bits nearest to `value` (ties to even).
pub(crate) fn f32_to_bf16(value: f32) -> u16 {
    let bits = value.to_bits();
    if value.is_nan() {
        return ((bits >> 16) as u16) | 0x40;
    }
    let round = 0x7fff + ((bits >> 16) & 1);
    ((bits + round) >> 16) as u16
}

/// Converts `bytes` of `dtype` into `out` (as many elements as `out` holds).
fn decode(op: &str, dtype: DType, bytes: &[u8], out: &mut [f32]) -> KernelResult<()> {
    match dtype {
        DType::F64 => {
            for (v, b) in out.iter_mut().zip(bytes.chunks_exact(8)) {
                let array: [u8; 8] = b.try_into().unwrap_or([0; 8]);
                *v = f64::from_le_bytes(array) as f32;
            }
        }
        DType::F16 => {
            for (v, b) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                *v = f16_to_f32(u16::from_le_bytes([b[0], b[1]]));
            }
        }
        DType::BF16 => {
            for (v, b) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                *v = bf16_to_f32(u16::from_le_bytes([b[0], b[1]]));
            }
        }
        _ => {
            return Err(error(
                op,
                format_args!("dtype {dtype} is not a floating-point type"),
            ))
        }
    }
    Ok(())
}

/// Writes `values` into `bytes` of `dtype`.
fn encode(op: &str, dtype: DType, values: &[f32], bytes: &mut [u8]) -> KernelResult<()> {
    match dtype {
        DType::F64 => {
            for (&v, b) in values.iter().zip(bytes.chunks_exact_mut(8)) {
                b.copy_from_slice(&(v as f64).to_le_bytes());
            }
        }
        DType::F16 => {
            for (&v, b) in values.iter().zip(bytes.chunks_exact_mut(2)) {
                b.copy_from_slice(&f32_to_f16(v).to_le_bytes());
            }
        }
        DType::BF16 => {
            for (&v, b) in values.iter().zip(bytes.chunks_exact_mut(2)) {
                b.copy_from_slice(&f32_to_bf16(v).to_le_bytes());
            }
        }
        _ => {
            return Err(error(
                op,
                format_args!("dtype {dtype} is not a floating-point type"),
            ))
        }
    }
    Ok(())
}

/// A float tensor's values as f32: the tensor itself when it is f32, else converted into scratch.
pub(crate) fn as_f32<'a>(
    cx: &KernelContext<'a>,
    op: &str,
    tensor: TensorRef<'a>,
) -> KernelResult<&'a [f32]> {
    if tensor.dtype() == DType::F32 {
        return tensor.f32();
    }
    let values = cx.scratch::<f32>(tensor.len())?;
    decode(op, tensor.dtype(), tensor.bytes(), values)?;
    Ok(values)
}

/// Input `index` as f32 values (see [`as_f32`]).
pub(crate) fn input_f32<'a>(
    cx: &KernelContext<'a>,
    op: &str,
    index: usize,
) -> KernelResult<&'a [f32]> {
    as_f32(cx, op, cx.input(index)?)
}

/// Optional input `index` as f32 values, or `None` when omitted.
pub(crate) fn optional_input_f32<'a>(
    cx: &KernelContext<'a>,
    op: &str,
    index: usize,
) -> KernelResult<Option<&'a [f32]>> {
    cx.optional_input(index)
        .map(|t| as_f32(cx, op, t))
        .transpose()
}

/// Where f32 results go once computed: nowhere more when the output is f32, else converted
/// into the output's bytes.
pub(crate) struct Sink<'a> {
    target: Option<(DType, &'a mut [u8])>,
}

impl Sink<'_> {
    /// Stores `values` (the slice [`output_f32`] returned) into the output.
    pub(crate) fn finish(self, op: &str, values: &[f32]) -> KernelResult<()> {
        match self.target {
            None => Ok(()),
            Some((dtype, bytes)) => encode(op, dtype, values, bytes),
        }
    }
}

/// Output `index` as a zeroed-or-host-filled f32 buffer to compute into, and the [`Sink`] that
/// stores it. For f32 outputs the buffer is the output itself.
pub(crate) fn output_f32<'a>(
    cx: &mut KernelContext<'a>,
    index: usize,
) -> KernelResult<(&'a mut [f32], Sink<'a>)> {
    let output = cx.output(index)?;
    if output.dtype() == DType::F32 {
        return Ok((output.f32_mut()?, Sink { target: None }));
    }
    let dtype = output.dtype();
    let values = cx.scratch::<f32>(output.len())?;
    Ok((
        values,
        Sink {
            target: Some((dtype, output.bytes_mut())),
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_precision_round_trips() {
        for bits in 0..=u16::MAX {
            let value = f16_to_f32(bits);
            if value.is_nan() {
                assert!(f16_to_f32(f32_to_f16(value)).is_nan());
            } else {
                assert_eq!(f32_to_f16(value), bits, "bits {bits:#x} value {value}");
            }
        }
    }

    #[test]
    fn half_precision_rounds_to_nearest_even() {
        assert_eq!(f32_to_f16(1.0), 0x3c00);
        assert_eq!(f32_to_f16(1.0 + 1.0 / 2048.0), 0x3c00);
        assert_eq!(f32_to_f16(1.0 + 3.0 / 2048.0), 0x3c02);
        assert_eq!(f32_to_f16(65520.0), 0x7c00);
        assert_eq!(f32_to_f16(1e-8), 0);
        assert_eq!(f16_to_f32(0x0001), 5.960_464_5e-8);
    }

    #[test]
    fn bfloat16_rounds_to_nearest_even() {
        assert_eq!(f32_to_bf16(1.0), 0x3f80);
        assert_eq!(bf16_to_f32(f32_to_bf16(3.140625)), 3.140625);
        assert!(bf16_to_f32(f32_to_bf16(f32::NAN)).is_nan());
    }
}
