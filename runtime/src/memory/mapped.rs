//! Memory-mapped files: model weights are used in place from the mapping, never copied to the
//! heap. The mapping is shared as [`Bytes`], so any slice of it keeps it alive.

use bytes::Bytes;
use std::{fs::File, io, path::Path};

/// Maps `path` read-only and returns its bytes; an empty file maps to empty bytes.
pub fn map_file(path: &Path) -> io::Result<Bytes> {
    let file = File::open(path)?;
    if file.metadata()?.len() == 0 {
        return Ok(Bytes::new());
    }
    // SAFETY: the mapping is read-only and private. Like every runtime that maps its weights,
    // opal assumes model files are not truncated or rewritten in place while loaded (a rewrite
    // that replaces the file, as editors and `cp` to a new inode do, is safe).
    let map = unsafe { memmap2::Mmap::map(&file)? };
    Ok(Bytes::from_owner(map))
}

/// Whether `inner` lies inside `outer`'s memory.
pub fn contains(outer: &[u8], inner: &[u8]) -> bool {
    let outer = outer.as_ptr_range();
    let inner = inner.as_ptr_range();
    outer.start <= inner.start && inner.end <= outer.end
}
