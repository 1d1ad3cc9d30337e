//! A kernel's shape as the `i64` dims inference sees, so that one shape check serves both,
//! without heap allocation.

use opal_kernel_support::{broadcast::MAX_RANK, check::check_rank};
use opal_plugin_api::prelude::*;
use std::ops::Deref;

/// The dims of a shape of rank ≤ [`MAX_RANK`] as `i64`; derefs to the slice.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Dims {
    values: [i64; MAX_RANK],
    rank: usize,
}

impl Dims {
    /// The dims of `shape`; an error naming `op` beyond [`MAX_RANK`].
    pub(crate) fn new(op: &str, shape: &[usize]) -> KernelResult<Self> {
        check_rank(op, shape.len())?;
        let mut values = [0i64; MAX_RANK];
        for (v, &d) in values.iter_mut().zip(shape) {
            *v = d as i64;
        }
        Ok(Dims {
            values,
            rank: shape.len(),
        })
    }
}

impl Deref for Dims {
    type Target = [i64];

    fn deref(&self) -> &[i64] {
        &self.values[..self.rank]
    }
}
