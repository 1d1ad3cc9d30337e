//! What a plugin file held when it was loaded, so that a watcher can tell a change of its
//! contents from a read, a `touch`, or a rewrite with the same bytes.

use std::{
    io::{self, Read},
    path::Path,
};

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

    /// The digest of the file at `path`, read in pieces: a plugin is megabytes, and one buffer
    /// that large per reload would stay behind in the allocator of whichever thread read it.
    pub fn of_file(path: &Path) -> io::Result<Self> {
        let mut file = std::fs::File::open(path)?;
        let mut hasher = xxhash_rust::xxh3::Xxh3::new();
        let mut piece = [0u8; 64 * 1024];
        let mut len = 0u64;
        loop {
            match file.read(&mut piece) {
                Ok(0) => break,
                Ok(n) => {
                    hasher.update(&piece[..n]);
                    len += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(ContentDigest {
            len,
            hash: hasher.digest(),
        })
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

    #[test]
    fn a_file_read_in_pieces_has_the_digest_of_its_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("plugin.so");
        let bytes: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
        std::fs::write(&path, &bytes).unwrap();
        assert_eq!(
            ContentDigest::of_file(&path).unwrap(),
            ContentDigest::of_bytes(&bytes)
        );
    }
}
