//! Unloading a plugin library, and noticing when the loader keeps it mapped: a thread the
//! plugin started, or a thread-local with a destructor it registered, pins its code in memory
//! until that thread ends. Such a library is reported (log and [`libraries_left_mapped`])
//! instead of leaking silently.

use parking_lot::Mutex;
use std::path::{Path, PathBuf};

/// A plugin library that was unloaded but is still mapped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeftMapped {
    pub plugin: String,
    pub version: String,
    /// The file the deployment names.
    pub source: PathBuf,
}

static LEFT_MAPPED: Mutex<Vec<LeftMapped>> = Mutex::new(Vec::new());

/// Plugin libraries this process unloaded that the loader kept mapped.
pub fn libraries_left_mapped() -> Vec<LeftMapped> {
    LEFT_MAPPED.lock().clone()
}

/// Closes `library`, loaded from `loaded` (a copy of `source`), and reports it if it stays
/// mapped.
pub(crate) fn close(
    library: libloading::Library,
    plugin: &str,
    version: &str,
    source: &Path,
    loaded: &Path,
) {
    if let Err(e) = library.close() {
        tracing::warn!(plugin, file = %source.display(), error = %e, "unloading a plugin failed");
    }
    if !is_mapped(loaded) {
        return;
    }
    tracing::warn!(
        plugin,
        version,
        file = %source.display(),
        "plugin '{plugin}' stays mapped after it was unloaded: it started a thread or keeps a thread-local with a destructor, which pins its code until that thread ends; plugins should do neither (lend work to the host's threads through parallel_for)"
    );
    LEFT_MAPPED.lock().push(LeftMapped {
        plugin: plugin.to_owned(),
        version: version.to_owned(),
        source: source.to_owned(),
    });
}

/// Whether the file `path` is mapped into this process (`/proc/self/maps`; `false` where that
/// cannot be read).
fn is_mapped(path: &Path) -> bool {
    let Ok(maps) = std::fs::read_to_string("/proc/self/maps") else {
        return false;
    };
    let path = path.to_string_lossy();
    maps.lines().any(|line| {
        // The path is the sixth field; a removed file is listed with " (deleted)" after it.
        line.splitn(6, char::is_whitespace)
            .nth(5)
            .map(str::trim_start)
            .is_some_and(|mapped| {
                mapped
                    .strip_prefix(&*path)
                    .is_some_and(|rest| rest.is_empty() || rest == " (deleted)")
            })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mapped_file_is_seen_and_an_unmapped_one_is_not() {
        let exe = std::env::current_exe().unwrap();
        assert!(
            is_mapped(&exe),
            "{} is not in /proc/self/maps",
            exe.display()
        );
        assert!(!is_mapped(Path::new("/nonexistent/libnothing.so")));
    }
}
