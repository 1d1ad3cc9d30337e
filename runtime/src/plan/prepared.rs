//! Data a kernel derives once from its node's constant inputs (weights packed for a matrix
//! product, transformed filters) and the host keeps with the compiled node, in the plugin's
//! tracked memory, for every later call and run of the plan.

use crate::memory::{AlignedBuffer, Owner};
use parking_lot::Mutex;

/// One node's prepared data: empty until its kernel first asks for it.
#[derive(Debug, Default)]
pub struct PreparedData {
    buffer: Mutex<Option<AlignedBuffer>>,
}

impl PreparedData {
    /// The node's `size` bytes: those kept, or new zeroed bytes accounted to `owner` that `fill`
    /// fills (kept when it returns true). Concurrent runs of the plan wait for the first fill.
    /// `None` when `fill` fails, the memory is refused, or `size` differs from the kept bytes.
    pub fn get_or_fill(
        &self,
        size: usize,
        owner: &Owner,
        fill: impl FnOnce(&mut [u8]) -> bool,
    ) -> Option<*const u8> {
        let mut kept = self.buffer.lock();
        if let Some(buffer) = kept.as_ref() {
            return (buffer.len() == size).then(|| buffer.as_slice().as_ptr());
        }
        let mut buffer = AlignedBuffer::zeroed(size, owner)?;
        if !fill(buffer.as_mut_slice()) {
            return None;
        }
        // The heap bytes do not move with the buffer, so the pointer stays valid while kept.
        let ptr = buffer.as_slice().as_ptr();
        *kept = Some(buffer);
        Some(ptr)
    }

    /// Bytes kept so far.
    pub fn bytes(&self) -> usize {
        self.buffer.lock().as_ref().map_or(0, AlignedBuffer::len)
    }
}
