//! Validation shared by the operators: dtypes, rank limits, axes, and shapes in messages.

use crate::broadcast::MAX_RANK;
use opal_plugin_api::{infer::InferTensor, DType, KernelError, KernelResult};
use std::fmt;

/// A shape as messages print it: `[2,3]`, with unknown dims (negative) as `?`.
pub struct Shape<'a, T>(pub &'a [T]);

impl<T: Copy + TryInto<i64>> fmt::Display for Shape<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[")?;
        for (i, &d) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            match d.try_into() {
                Ok(d) if d >= 0 => write!(f, "{d}")?,
                _ => f.write_str("?")?,
            }
        }
        f.write_str("]")
    }
}

/// One of the eight integer types.
pub fn is_int(dtype: DType) -> bool {
    matches!(
        dtype,
        DType::I8
            | DType::I16
            | DType::I32
            | DType::I64
            | DType::U8
            | DType::U16
            | DType::U32
            | DType::U64
    )
}

/// Any integer or float type, f16 and bf16 included.
pub fn is_numeric(dtype: DType) -> bool {
    is_int(dtype) || matches!(dtype, DType::F32 | DType::F64 | DType::F16 | DType::BF16)
}

/// An error prefixed with the operator's name.
pub fn error(op: &str, message: impl fmt::Display) -> KernelError {
    KernelError::new(format!("{op}: {message}"))
}

/// Fails unless input `index` has dtype f32.
pub fn expect_f32(op: &str, index: usize, input: &InferTensor<'_>) -> KernelResult<()> {
    if input.dtype != DType::F32 {
        return Err(error(
            op,
            format_args!(
                "input {index} has dtype {}, only f32 is supported",
                input.dtype
            ),
        ));
    }
    Ok(())
}

/// Fails if a tensor of this dtype has no fixed element size (strings, unknown types): its
/// elements cannot be copied as bytes. A string element is a view of bytes kept elsewhere, so
/// strings are refused too, though their views have a size.
pub fn expect_fixed_size(op: &str, dtype: DType) -> KernelResult<usize> {
    dtype
        .size()
        .filter(|_| dtype != DType::STRING)
        .ok_or_else(|| error(op, format_args!("dtype {dtype} has no fixed element size")))
}

/// Fails if `rank` exceeds what the kernels' fixed-size index arrays hold.
pub fn check_rank(op: &str, rank: usize) -> KernelResult<()> {
    if rank > MAX_RANK {
        return Err(error(
            op,
            format_args!("rank {rank} exceeds the supported maximum of {MAX_RANK}"),
        ));
    }
    Ok(())
}

/// `axis` (which may count from the end) as an index into `0..bound`.
pub fn normalize_axis(op: &str, axis: i64, bound: usize) -> KernelResult<usize> {
    let bound_i = bound as i64;
    let normalized = if axis < 0 { axis + bound_i } else { axis };
    if (0..bound_i).contains(&normalized) {
        Ok(normalized as usize)
    } else {
        Err(error(
            op,
            format_args!("axis {axis} is out of range for rank {}", bound),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_print_compactly() {
        assert_eq!(Shape(&[2i64, -1, 3]).to_string(), "[2,?,3]");
        assert_eq!(Shape(&[4usize]).to_string(), "[4]");
        assert_eq!(Shape::<usize>(&[]).to_string(), "[]");
    }

    #[test]
    fn axes_count_from_the_end() {
        assert_eq!(normalize_axis("Op", -1, 3).unwrap(), 2);
        assert_eq!(normalize_axis("Op", 0, 3).unwrap(), 0);
        assert!(normalize_axis("Op", 3, 3).is_err());
        assert!(normalize_axis("Op", -4, 3).is_err());
    }
}
