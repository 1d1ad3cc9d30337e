//! A call's string outputs (ABI 1.9), the `extern "C"` side: the host copies each string a
//! kernel stores into bytes kept for its output, which the output's tensor takes over after
//! the call (and checks that every element views them).

use super::host_services::call_host;
use crate::{
    memory::{Owner, StringBytes},
    tensor::Tensor,
};
use abi_stable::std_types::RStr;
use opal_plugin_api::{tensor::StringView, DType};
use smallvec::SmallVec;
use std::{cell::RefCell, ffi::c_void};

/// The bytes stored for each string output of one call.
pub struct StringOutputs {
    owner: Owner,
    /// The deployment's memory limit, which stored strings count against.
    limit: u64,
    /// Per output: its bytes if it is a string tensor.
    bytes: RefCell<SmallVec<[Option<StringBytes>; 4]>>,
}

impl StringOutputs {
    /// The string outputs among outputs of `dtypes`, their bytes accounted to `owner`; `None`
    /// when there are none.
    pub fn new(dtypes: &[DType], owner: &Owner, limit: u64) -> Option<Self> {
        if !dtypes.contains(&DType::STRING) {
            return None;
        }
        let bytes = dtypes
            .iter()
            .map(|&d| (d == DType::STRING).then(|| StringBytes::new(owner)))
            .collect();
        Some(StringOutputs {
            owner: owner.clone(),
            limit,
            bytes: RefCell::new(bytes),
        })
    }

    /// Copies `value` for output `index`; `None` when it is no string output or the memory
    /// limit does not allow it.
    fn store(&self, index: usize, value: &[u8]) -> Option<StringView> {
        let current = self.owner.tracker().current_bytes() as u64;
        if current.saturating_add(value.len() as u64) > self.limit {
            return None;
        }
        let mut bytes = self.bytes.try_borrow_mut().ok()?;
        bytes.get_mut(index)?.as_mut()?.store(value)
    }

    /// Gives `tensor`, output `index` of the call, the bytes stored for it; an error when an
    /// element is not a view of them. Tensors of other dtypes are left as they are.
    pub fn attach(&self, index: usize, tensor: &mut Tensor) -> Result<(), String> {
        if tensor.dtype() != DType::STRING {
            return Ok(());
        }
        let stored = self
            .bytes
            .borrow_mut()
            .get_mut(index)
            .and_then(Option::take)
            .unwrap_or_else(|| StringBytes::new(&self.owner));
        tensor
            .attach_strings(stored)
            .map_err(|e| format!("output {index}: {e}"))
    }
}

pub(super) unsafe extern "C" fn host_store_string(
    ctx: *const c_void,
    index: usize,
    value: RStr<'_>,
) -> StringView {
    // SAFETY: the plugin passes back the context it was lent for this call.
    let host = unsafe { call_host(ctx) };
    host.strings
        .and_then(|s| s.store(index, value.as_str().as_bytes()))
        .unwrap_or(StringView::EMPTY)
}
