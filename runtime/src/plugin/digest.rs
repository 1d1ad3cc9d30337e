//! What a plugin file held when it was loaded, so that a watcher can tell a change of its
//! contents from a read, a `touch`, or a rewrite with the same bytes.

use std::{
    hash::{DefaultHasher, Hasher},
    io,
    path::Path,
};

/// The length and a hash of a file's contents.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ContentDigest {
    len: u64,
    hash: u64,
}

impl ContentDigest {
    pub fn of_bytes(bytes: &[u8]) -> Self {
        let mut hasher = DefaultHasher::new();
        hasher.write(bytes);
        ContentDigest {
            len: bytes.len() as u64,
            hash: hasher.finish(),
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
