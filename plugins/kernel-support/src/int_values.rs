//! Integer tensors of either index type, i32 or i64, read in place as i64: the axes,
//! positions, lengths and counts operators take as inputs; and single elements of any integer
//! type, widened to i128.

use crate::check::error;
use opal_plugin_api::{DType, KernelResult, TensorRef};
use std::fmt;

/// The elements of an i32 or i64 tensor, read as i64.
#[derive(Clone, Copy)]
pub enum Ints<'a> {
    I32(&'a [i32]),
    I64(&'a [i64]),
}

impl<'a> Ints<'a> {
    /// The elements of `tensor`, input `what` of operator `op`; an error unless it is i32/i64.
    pub fn from_tensor(op: &str, what: &str, tensor: TensorRef<'a>) -> KernelResult<Self> {
        match tensor.dtype() {
            DType::I32 => Ok(Ints::I32(tensor.as_slice()?)),
            DType::I64 => Ok(Ints::I64(tensor.as_slice()?)),
            other => Err(error(
                op,
                format_args!("{what} must be i32 or i64, got {other}"),
            )),
        }
    }

    pub fn len(&self) -> usize {
        match self {
            Ints::I32(v) => v.len(),
            Ints::I64(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Element `i` (which must exist).
    pub fn get(&self, i: usize) -> i64 {
        match self {
            Ints::I32(v) => i64::from(v[i]),
            Ints::I64(v) => v[i],
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = i64> + '_ {
        (0..self.len()).map(|i| self.get(i))
    }

    /// The single element of a scalar (or one-element) tensor, input `what` of `op`.
    pub fn scalar(&self, op: &str, what: &str) -> KernelResult<i64> {
        if self.len() != 1 {
            return Err(error(
                op,
                format_args!("{what} must hold one value, it holds {}", self.len()),
            ));
        }
        Ok(self.get(0))
    }
}

/// Written as a list of the values, as a slice of them would be.
impl fmt::Debug for Ints<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// Element `index` of a tensor of one of the eight integer types, widened to i128; `None` for a
/// tensor of any other dtype.
pub fn integer_at(tensor: TensorRef<'_>, index: usize) -> KernelResult<Option<i128>> {
    macro_rules! at {
        ($ty:ty) => {
            i128::from(tensor.as_slice::<$ty>()?[index])
        };
    }
    Ok(Some(match tensor.dtype() {
        DType::I8 => at!(i8),
        DType::I16 => at!(i16),
        DType::I32 => at!(i32),
        DType::I64 => at!(i64),
        DType::U8 => at!(u8),
        DType::U16 => at!(u16),
        DType::U32 => at!(u32),
        DType::U64 => at!(u64),
        _ => return Ok(None),
    }))
}

/// The value of a one-element i32 or i64 tensor, input `what` of `op`.
pub fn int_scalar(op: &str, what: &str, tensor: TensorRef<'_>) -> KernelResult<i64> {
    Ints::from_tensor(op, what, tensor)?.scalar(op, what)
}
