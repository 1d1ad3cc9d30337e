//! AlignedBuffer: a 64-byte aligned, zero-initialised heap block accounted to an owner.

use super::Owner;
use std::{
    alloc::{alloc_zeroed, dealloc, Layout},
    ptr::NonNull,
};

/// Alignment of every host allocation: one cache line, the width of an AVX-512 register.
pub const ALIGNMENT: usize = 64;

/// Bytes owned by the host, aligned to [`ALIGNMENT`], freed (and un-accounted) on drop.
#[derive(Debug)]
pub struct AlignedBuffer {
    ptr: NonNull<u8>,
    len: usize,
    owner: Owner,
}

// SAFETY: the buffer exclusively owns its allocation; the owner handle is thread-safe.
unsafe impl Send for AlignedBuffer {}
// SAFETY: shared access only hands out `&[u8]`.
unsafe impl Sync for AlignedBuffer {}

impl AlignedBuffer {
    /// Allocates `len` zeroed bytes for `owner`, or `None` if the system has no memory for it.
    pub fn zeroed(len: usize, owner: &Owner) -> Option<Self> {
        let ptr = if len == 0 {
            // A dangling pointer with the right alignment; never dereferenced for 0 bytes.
            NonNull::new(ALIGNMENT as *mut u8)?
        } else {
            let layout = Layout::from_size_align(len, ALIGNMENT).ok()?;
            // SAFETY: `layout` has a non-zero size.
            NonNull::new(unsafe { alloc_zeroed(layout) })?
        };
        owner.record_alloc(len);
        Some(AlignedBuffer {
            ptr,
            len,
            owner: owner.clone(),
        })
    }

    /// A buffer holding a copy of `bytes`.
    pub fn copy_of(bytes: &[u8], owner: &Owner) -> Option<Self> {
        let mut buffer = AlignedBuffer::zeroed(bytes.len(), owner)?;
        buffer.as_mut_slice().copy_from_slice(bytes);
        Some(buffer)
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: `ptr` is valid for `len` initialised bytes owned by `self`.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as in `as_slice`, and `&mut self` makes the access unique.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }

    pub fn as_mut_ptr(&mut self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// Accounts these bytes to `owner` from now on.
    pub fn set_owner(&mut self, owner: &Owner) {
        self.owner.transfer(owner, self.len);
        self.owner = owner.clone();
    }

    /// Releases a raw allocation made by `raw_alloc`.
    ///
    /// # Safety
    /// `ptr` must come from [`AlignedBuffer::into_raw`] with the same `len`, not freed since.
    pub unsafe fn from_raw(ptr: *mut u8, len: usize, owner: &Owner) -> Self {
        AlignedBuffer {
            // SAFETY: the caller passes a pointer `into_raw` returned, which is non-null.
            ptr: unsafe { NonNull::new_unchecked(ptr) },
            len,
            owner: owner.clone(),
        }
    }

    /// Gives up ownership without freeing; [`AlignedBuffer::from_raw`] takes it back.
    pub fn into_raw(self) -> *mut u8 {
        let ptr = self.ptr.as_ptr();
        std::mem::forget(self);
        ptr
    }
}

impl Drop for AlignedBuffer {
    fn drop(&mut self) {
        if self.len > 0 {
            // SAFETY: allocated in `zeroed` with this exact layout and not freed since.
            unsafe {
                dealloc(
                    self.ptr.as_ptr(),
                    Layout::from_size_align_unchecked(self.len, ALIGNMENT),
                )
            };
        }
        self.owner.record_free(self.len);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::MemoryTracker;

    #[test]
    fn buffers_are_aligned_zeroed_and_accounted() {
        let tracker = MemoryTracker::new();
        let owner = tracker.owner("tensors");
        let buffer = AlignedBuffer::zeroed(1000, &owner).unwrap();
        assert_eq!(buffer.as_slice().as_ptr() as usize % ALIGNMENT, 0);
        assert!(buffer.as_slice().iter().all(|&b| b == 0));
        assert_eq!(tracker.current_bytes(), 1000);
        drop(buffer);
        assert_eq!(tracker.current_bytes(), 0);
    }

    #[test]
    fn an_empty_buffer_needs_no_allocation() {
        let tracker = MemoryTracker::new();
        let buffer = AlignedBuffer::zeroed(0, &tracker.owner("t")).unwrap();
        assert!(buffer.as_slice().is_empty());
    }
}
