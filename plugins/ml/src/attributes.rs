//! Reading the attributes the ml operators require, with errors that name the operator and
//! the attribute.

use opal_kernel_support::check::error;
use opal_plugin_api::prelude::*;

/// The error for required attribute `name` of `op` being absent.
pub(crate) fn missing(op: &str, name: &str) -> KernelError {
    error(
        op,
        format_args!("the required attribute '{name}' is missing"),
    )
}

/// Required int-list attribute `name` of `op`.
pub(crate) fn required_ints<'a>(
    op: &str,
    attributes: &Attributes<'a>,
    name: &str,
) -> KernelResult<&'a [i64]> {
    attributes
        .ints(name)
        .map_err(|e| error(op, e))?
        .ok_or_else(|| missing(op, name))
}
