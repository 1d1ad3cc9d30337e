//! Loading a plugin through a shadow copy: the file is copied to a unique path and the copy is
//! loaded, so the deployed file can be rebuilt or replaced while the old code stays mapped, and
//! `dlopen` never hands back an already loaded library for a path it has seen.

use super::{ContentDigest, PluginError, PluginLibrary};
use std::{
    path::{Path, PathBuf},
    sync::{atomic::AtomicU64, atomic::Ordering, Arc},
};

static NEXT_COPY: AtomicU64 = AtomicU64::new(0);

/// The directory shadow copies are made in.
pub fn shadow_dir() -> PathBuf {
    std::env::temp_dir().join("opal-plugins")
}

/// Loads a fresh copy of the plugin at `source`. The copy is removed once loaded: its mapping
/// stays valid until the library is unloaded.
pub fn load_shadow_copy(source: &Path) -> Result<Arc<PluginLibrary>, PluginError> {
    if !source.is_file() {
        return Err(PluginError::NotFound {
            path: source.to_owned(),
        });
    }
    let dir = shadow_dir();
    let stem = source
        .file_stem()
        .map_or_else(|| "plugin".into(), |s| s.to_string_lossy());
    let copy = dir.join(format!(
        "{stem}-{}-{}.so",
        std::process::id(),
        NEXT_COPY.fetch_add(1, Ordering::Relaxed)
    ));
    let shadow_error = |e| PluginError::Shadow {
        path: source.to_owned(),
        cause: e,
    };
    std::fs::create_dir_all(&dir).map_err(shadow_error)?;
    std::fs::copy(source, &copy).map_err(shadow_error)?;
    // The copy's digest describes exactly the bytes loaded, even if the source changes now.
    let loaded = ContentDigest::of_file(&copy)
        .map_err(shadow_error)
        .and_then(|digest| PluginLibrary::load_as(&copy, source, digest));
    let _ = std::fs::remove_file(&copy);
    loaded
}
