//! What the string operators share: checking that an input holds strings.

use opal_kernel_support::check::error;
use opal_plugin_api::prelude::*;

/// Fails unless input `index` of inference is a string tensor.
pub(crate) fn expect_strings(op: &str, cx: &InferContext<'_>, index: usize) -> KernelResult<()> {
    let dtype = cx.input(index)?.dtype;
    if dtype != DType::STRING {
        return Err(error(
            op,
            format_args!("input {index} has dtype {dtype}; it takes strings"),
        ));
    }
    Ok(())
}
