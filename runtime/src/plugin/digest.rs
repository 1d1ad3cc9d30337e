//! What a plugin file held when it was loaded, so that a watcher can tell a change of its
//! contents from a read, a `touch`, or a rewrite with the same bytes.

use std::{io, path::Path};

/// The length and a hash of a file's contents (XXH3, which hashes the megabytes of a plugin in
/// a fraction of the time SipHash takes: it runs on every load, before the first output).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ContentDigest {
    len: u64,
    hash: u64,
}

impl ContentDigest {
    pub fn of_bytes(bytes: &[u8]) -> Self {
        ContentDigest {
            len: bytes.len() as u64,
            hash: xxhash_rust::xxh3::xxh3_64(bytes),
        }
    }

    pub fn of_file(path: &Path) -> io::Result<Self> {
        std::fs::read(path).map(|bytes| Self::of_bytes(&bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_contents_have_equal_digests_and_any_change_shows() {
        let a = ContentDigest::of_bytes(b"\x7fELF plugin");
        assert_eq!(a, ContentDigest::of_bytes(b"\x7fELF plugin"));
        assert_ne!(a, ContentDigest::of_bytes(b"\x7fELF plugiN"));
        assert_ne!(a, ContentDigest::of_bytes(b"\x7fELF plugin\0"));
    }
}
