//! Element access for the signal operators, which compute in f64 whatever the tensors hold:
//! float inputs and outputs through kernel-support's [`Floats`] and [`Values`], integer
//! scalars (i32, i64), and the `output_datatype` attribute.

use opal_kernel_support::check::{error, is_numeric};
pub(crate) use opal_kernel_support::float_values::{expect_float, Floats, Values};
pub(crate) use opal_kernel_support::int_values::int_scalar;
use opal_plugin_api::prelude::*;

/// Whether the last dim of `shape` holds a real (1) or complex (2) value, or is not known yet
/// (negative).
pub(crate) fn is_real_or_complex<T: Copy + TryInto<i64>>(shape: &[T]) -> bool {
    matches!(
        shape.last().and_then(|&d| d.try_into().ok()),
        Some(1 | 2) | Some(..=-1)
    )
}

/// The dtype an `output_datatype` attribute names (f32 when absent); an error unless numeric.
pub(crate) fn output_datatype(op: &str, attributes: &Attributes<'_>) -> KernelResult<DType> {
    let code = attributes.int("output_datatype", i64::from(DType::F32.0))?;
    let dtype = i32::try_from(code).map(DType).unwrap_or(DType::UNDEFINED);
    if is_numeric(dtype) {
        Ok(dtype)
    } else {
        Err(error(
            op,
            format_args!("output_datatype {code} is not a numeric type opal supports"),
        ))
    }
}

/// Optional integer scalar input `index` as inference knows it: `Some(None)` when the node
/// omits it, `Some(Some(value))` when its value is known, `None` when it is given but its value
/// is not known yet.
pub(crate) fn inferred_int_scalar(
    op: &str,
    what: &str,
    cx: &InferContext<'_>,
    index: usize,
) -> KernelResult<Option<Option<i64>>> {
    Ok(match cx.optional_input(index)? {
        None => Some(None),
        Some(t) => t
            .value()
            .map(|v| int_scalar(op, what, v))
            .transpose()?
            .map(Some),
    })
}

/// The value of a one-element float tensor, input `what` of `op`.
pub(crate) fn float_scalar(op: &str, what: &str, tensor: TensorRef<'_>) -> KernelResult<f64> {
    let values = Floats::new(op, what, tensor)?;
    if tensor.len() != 1 {
        return Err(error(
            op,
            format_args!("{what} must hold one value, it holds {}", tensor.len()),
        ));
    }
    Ok(values.get(0))
}
