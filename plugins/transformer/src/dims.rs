//! Shapes as the `i64` dims inference sees, where a negative dim is unknown: a kernel's shape
//! in that form without heap allocation, so that one shape check serves both, and the
//! comparisons and arithmetic of possibly unknown dims.

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

/// Whether two dims can be equal (unknown dims match anything).
pub(crate) fn same(a: i64, b: i64) -> bool {
    a < 0 || b < 0 || a == b
}

/// `a / b`, unknown when `a` is.
pub(crate) fn div_known(a: i64, b: i64) -> i64 {
    if a < 0 {
        -1
    } else {
        a / b
    }
}

impl Deref for Dims {
    type Target = [i64];

    fn deref(&self) -> &[i64] {
        &self.values[..self.rank]
    }
}
