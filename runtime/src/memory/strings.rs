//! The bytes of a string tensor: tracked chunks that never move once made, so the
//! [`StringView`]s a string tensor's elements hold stay valid for as long as the tensor lives.
//! Views are resolved back to bytes by address, without `unsafe`: a view that does not lie
//! within a chunk (one a plugin made up) resolves to nothing.

use super::{AlignedBuffer, Owner};
use opal_plugin_api::tensor::StringView;

/// The smallest chunk a string tensor allocates; larger strings get a chunk of their own size.
const MIN_CHUNK: usize = 4096;

/// A string tensor's UTF-8 bytes, accounted to an owner.
#[derive(Debug)]
pub struct StringBytes {
    owner: Owner,
    chunks: Vec<AlignedBuffer>,
    /// Bytes used in the last chunk.
    used: usize,
}

impl StringBytes {
    /// No bytes yet; chunks are accounted to `owner`.
    pub fn new(owner: &Owner) -> Self {
        StringBytes {
            owner: owner.clone(),
            chunks: Vec::new(),
            used: 0,
        }
    }

    /// Bytes allocated for strings.
    pub fn allocated(&self) -> usize {
        self.chunks.iter().map(AlignedBuffer::len).sum()
    }

    /// Copies `bytes` and returns the view of the copy; `None` when out of memory. The empty
    /// string is the empty view and takes no memory.
    pub fn store(&mut self, bytes: &[u8]) -> Option<StringView> {
        if bytes.is_empty() {
            return Some(StringView::EMPTY);
        }
        let fits = self
            .chunks
            .last()
            .is_some_and(|c| c.len() - self.used >= bytes.len());
        if !fits {
            let size = bytes.len().max(MIN_CHUNK);
            self.chunks.push(AlignedBuffer::zeroed(size, &self.owner)?);
            self.used = 0;
        }
        let chunk = self.chunks.last_mut()?;
        let start = self.used;
        let place = chunk.as_mut_slice().get_mut(start..start + bytes.len())?;
        place.copy_from_slice(bytes);
        self.used += bytes.len();
        Some(StringView {
            ptr: place.as_ptr(),
            len: bytes.len(),
        })
    }

    /// The bytes `view` names, if it lies within one chunk (the empty view is `""`).
    pub fn resolve(&self, view: StringView) -> Option<&[u8]> {
        if view.len == 0 {
            return Some(&[]);
        }
        let at = view.ptr as usize;
        self.chunks.iter().find_map(|chunk| {
            let bytes = chunk.as_slice();
            let start = at.checked_sub(bytes.as_ptr() as usize)?;
            bytes.get(start..start.checked_add(view.len)?)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::MemoryTracker;

    #[test]
    fn stored_strings_resolve_and_made_up_views_do_not() {
        let tracker = MemoryTracker::new();
        let owner = tracker.owner("strings");
        let mut strings = StringBytes::new(&owner);
        let a = strings.store(b"first").unwrap();
        let long = vec![b'x'; MIN_CHUNK + 1];
        let b = strings.store(&long).unwrap();
        let c = strings.store(b"third").unwrap();
        assert_eq!(strings.resolve(a), Some(&b"first"[..]));
        assert_eq!(strings.resolve(b), Some(&long[..]));
        assert_eq!(strings.resolve(c), Some(&b"third"[..]));
        assert_eq!(strings.store(b""), Some(StringView::EMPTY));
        assert_eq!(strings.resolve(StringView::EMPTY), Some(&[][..]));
        let outside = b"not stored here";
        let made_up = StringView {
            ptr: outside.as_ptr(),
            len: outside.len(),
        };
        assert_eq!(strings.resolve(made_up), None);
        let overrun = StringView {
            ptr: a.ptr,
            len: 2 * MIN_CHUNK,
        };
        assert_eq!(strings.resolve(overrun), None);
        assert_eq!(owner.current_bytes(), strings.allocated());
        drop(strings);
        assert_eq!(owner.current_bytes(), 0);
    }
}
