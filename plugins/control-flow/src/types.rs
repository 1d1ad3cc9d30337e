//! Output types from subgraph types: what a value's shape is known to be when several shapes
//! are possible (two branches, the iterations of a loop).

use opal_plugin_api::{DType, KernelError, KernelResult, OutputType, TensorRef};

/// The shape both `a` and `b` fit: their dims where they agree, -1 where they differ. When
/// their ranks differ, no shape fits: all dims are -1 (at least one), so the host shapes the
/// value only once it is computed and infers its consumers again then.
pub(crate) fn merge_shapes(a: &[i64], b: &[i64]) -> Vec<i64> {
    if a.len() != b.len() {
        return vec![-1; a.len().max(b.len()).max(1)];
    }
    a.iter()
        .zip(b)
        .map(|(&x, &y)| if x == y { x } else { -1 })
        .collect()
}

/// The type of a value that is `a` or `b`; an error naming `what` when their dtypes differ.
pub(crate) fn merge_types(what: &str, a: &OutputType, b: &OutputType) -> KernelResult<OutputType> {
    if a.dtype != b.dtype {
        return Err(KernelError::new(format!(
            "{what} is {} on one path and {} on the other; both must have one dtype",
            a.dtype, b.dtype
        )));
    }
    Ok(OutputType::new(a.dtype, merge_shapes(&a.shape, &b.shape)))
}

/// The single element of a one-element tensor (a loop's trip count or condition, a branch
/// condition), read as an i64 or a bool.
pub(crate) fn scalar_i64(what: &str, value: TensorRef<'_>) -> KernelResult<i64> {
    if value.len() != 1 || value.dtype() != DType::I64 {
        return Err(KernelError::new(format!(
            "{what} must be one int64, got {} of shape {:?}",
            value.dtype(),
            value.shape()
        )));
    }
    Ok(value.as_slice::<i64>()?[0])
}

/// As [`scalar_i64`], for a bool.
pub(crate) fn scalar_bool(what: &str, value: TensorRef<'_>) -> KernelResult<bool> {
    if value.len() != 1 || value.dtype() != DType::BOOL {
        return Err(KernelError::new(format!(
            "{what} must be one bool, got {} of shape {:?}",
            value.dtype(),
            value.shape()
        )));
    }
    Ok(value.bytes()[0] != 0)
}
