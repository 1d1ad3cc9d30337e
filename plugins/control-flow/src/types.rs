//! Output types from subgraph types: what a value's shape is known to be when several shapes
//! are possible (two branches, the iterations of a loop).

use opal_plugin_api::{
    value::ValueType, DType, InferContext, KernelError, KernelResult, OutputType, TensorRef,
    ValueKind,
};

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

/// The kind and type of a value that is `a` or `b` (a tensor, sequence or optional on either
/// path); an error naming `what` when their kinds or dtypes differ. A sequence or optional
/// whose dtype one path leaves undefined (an empty sequence, none) takes the other's.
pub(crate) fn merge_value_types(
    what: &str,
    a: &ValueType,
    b: &ValueType,
) -> KernelResult<ValueType> {
    let (kind_a, kind_b) = (a.kind, b.kind);
    let kind = if kind_a == kind_b {
        kind_a
    } else if kind_a.element() == kind_b.element() && (kind_a.is_optional() || kind_b.is_optional())
    {
        kind_a.optional()
    } else {
        return Err(KernelError::new(format!(
            "{what} is {} on one path and {} on the other",
            kind_a.described(),
            kind_b.described()
        )));
    };
    let ty = if kind != ValueKind::TENSOR && a.ty.dtype == DType::UNDEFINED {
        b.ty.clone()
    } else if kind != ValueKind::TENSOR && b.ty.dtype == DType::UNDEFINED {
        a.ty.clone()
    } else {
        merge_types(what, &a.ty, &b.ty)?
    };
    Ok(ValueType { kind, ty })
}

/// Declares each output's kind from `types` and returns their tensor types.
pub(crate) fn declare_kinds(
    cx: &InferContext<'_>,
    types: Vec<ValueType>,
) -> KernelResult<Vec<OutputType>> {
    types
        .into_iter()
        .enumerate()
        .map(|(k, t)| {
            if t.kind != ValueKind::TENSOR {
                cx.set_output_kind(k, t.kind)?;
            }
            Ok(t.ty)
        })
        .collect()
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
