//! Float tensors read and written through f64, whatever their dtype: inputs of f32, f64, f16
//! and bf16 read as f64, and outputs of any numeric dtype written from f64 (rounded to nearest
//! for floats, truncated toward zero and saturated for integers). For kernels that compute in
//! f64, such as the signal transforms and the tree ensembles.

use crate::{
    check::{error, is_numeric},
    half::{bits_to_f32, encode},
};
use opal_plugin_api::prelude::*;

/// Whether `dtype` is a float type these operators read and write.
pub fn is_float(dtype: DType) -> bool {
    matches!(dtype, DType::F32 | DType::F64 | DType::F16 | DType::BF16)
}

/// Fails unless input `what` of `op` has a float dtype.
pub fn expect_float(op: &str, what: &str, dtype: DType) -> KernelResult<()> {
    if is_float(dtype) {
        Ok(())
    } else {
        Err(error(
            op,
            format_args!("{what} has dtype {dtype}, expected f32, f64, f16 or bf16"),
        ))
    }
}

/// A float tensor's elements, read as f64.
#[derive(Clone, Copy)]
pub enum Floats<'a> {
    F32(&'a [f32]),
    F64(&'a [f64]),
    /// f16 or bf16, little-endian bits.
    Half(DType, &'a [u8]),
}

impl<'a> Floats<'a> {
    /// The elements of `tensor`, input `what` of `op`; an error unless it is a float tensor.
    pub fn new(op: &str, what: &str, tensor: TensorRef<'a>) -> KernelResult<Self> {
        match tensor.dtype() {
            DType::F32 => Ok(Floats::F32(tensor.as_slice()?)),
            DType::F64 => Ok(Floats::F64(tensor.as_slice()?)),
            dtype @ (DType::F16 | DType::BF16) => Ok(Floats::Half(dtype, tensor.bytes())),
            dtype => Err(expect_float(op, what, dtype).unwrap_err()),
        }
    }

    /// How many elements there are.
    pub fn len(&self) -> usize {
        match self {
            Floats::F32(v) => v.len(),
            Floats::F64(v) => v.len(),
            Floats::Half(_, bytes) => bytes.len() / 2,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Element `i` (which must exist).
    #[inline(always)]
    pub fn get(&self, i: usize) -> f64 {
        match self {
            Floats::F32(v) => f64::from(v[i]),
            Floats::F64(v) => v[i],
            Floats::Half(dtype, bytes) => f64::from(bits_to_f32(
                *dtype,
                u16::from_le_bytes([bytes[2 * i], bytes[2 * i + 1]]),
            )),
        }
    }
}

/// An output's elements, written from f64: rounded to nearest for floats, truncated toward
/// zero and saturated for integers.
pub enum Values<'a> {
    F32(&'a mut [f32]),
    F64(&'a mut [f64]),
    /// Any other numeric dtype, element by element in its bytes.
    Bytes(DType, &'a mut [u8]),
}

impl<'a> Values<'a> {
    /// The elements of output `out` of `op`; an error unless its dtype is numeric.
    pub fn new(op: &str, out: TensorMut<'a>) -> KernelResult<Self> {
        match out.dtype() {
            DType::F32 => Ok(Values::F32(out.f32_mut()?)),
            DType::F64 => Ok(Values::F64(out.as_slice_mut()?)),
            dtype if is_numeric(dtype) => Ok(Values::Bytes(dtype, out.bytes_mut())),
            dtype => Err(error(
                op,
                format_args!("cannot write an output of dtype {dtype}"),
            )),
        }
    }

    /// How many elements there are.
    pub fn len(&self) -> usize {
        match self {
            Values::F32(v) => v.len(),
            Values::F64(v) => v.len(),
            Values::Bytes(dtype, bytes) => bytes.len() / dtype.size().unwrap_or(1),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The first `mid` elements and the rest.
    pub fn split_at(self, mid: usize) -> (Self, Self) {
        match self {
            Values::F32(v) => {
                let (a, b) = v.split_at_mut(mid);
                (Values::F32(a), Values::F32(b))
            }
            Values::F64(v) => {
                let (a, b) = v.split_at_mut(mid);
                (Values::F64(a), Values::F64(b))
            }
            Values::Bytes(dtype, bytes) => {
                let (a, b) = bytes.split_at_mut(mid * dtype.size().unwrap_or(1));
                (Values::Bytes(dtype, a), Values::Bytes(dtype, b))
            }
        }
    }

    /// Sets element `i` (which must exist) to `value`.
    #[inline(always)]
    pub fn set(&mut self, i: usize, value: f64) {
        match self {
            Values::F32(v) => v[i] = value as f32,
            Values::F64(v) => v[i] = value,
            Values::Bytes(dtype, bytes) => {
                let size = dtype.size().unwrap_or(1);
                let element = &mut bytes[i * size..(i + 1) * size];
                match *dtype {
                    DType::F16 | DType::BF16 => encode(*dtype, &[value], element),
                    DType::I8 => element.copy_from_slice(&(value as i8).to_ne_bytes()),
                    DType::I16 => element.copy_from_slice(&(value as i16).to_ne_bytes()),
                    DType::I32 => element.copy_from_slice(&(value as i32).to_ne_bytes()),
                    DType::I64 => element.copy_from_slice(&(value as i64).to_ne_bytes()),
                    DType::U8 => element.copy_from_slice(&(value as u8).to_ne_bytes()),
                    DType::U16 => element.copy_from_slice(&(value as u16).to_ne_bytes()),
                    DType::U32 => element.copy_from_slice(&(value as u32).to_ne_bytes()),
                    DType::U64 => element.copy_from_slice(&(value as u64).to_ne_bytes()),
                    // `Values::new` admits only the dtypes above.
                    _ => {}
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integer_outputs_truncate_and_saturate() {
        let mut bytes = [0u8; 4];
        let mut values = Values::Bytes(DType::U8, &mut bytes);
        values.set(0, 0.99);
        values.set(1, 1.0);
        values.set(2, 300.0);
        values.set(3, -2.0);
        assert_eq!(bytes, [0, 1, 255, 0]);
    }

    #[test]
    fn half_inputs_and_outputs_round_trip() {
        let mut bytes = [0u8; 4];
        let mut out = Values::Bytes(DType::F16, &mut bytes);
        out.set(0, 0.5);
        out.set(1, -3.0);
        let read = Floats::Half(DType::F16, &bytes);
        assert_eq!((read.get(0), read.get(1)), (0.5, -3.0));
    }
}
