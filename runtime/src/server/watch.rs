//! Watching plugin files: a watched plugin is reloaded, exactly as
//! `POST /v2/plugins/{name}/reload` would, once per change of its deployed file's contents.
//!
//! Events are filtered by kind (reads and opens are not changes; a reload itself reads the
//! file), a burst of events is coalesced until the directory has been quiet for [`SETTLE`], and
//! a file whose contents equal what the plugin was loaded from is left alone. The directory is
//! watched rather than the file, so that every way of replacing a file is seen: a build's hard
//! link, `cp` writing in place, `install` and editors' rename over it, delete and re-create.

use super::state::AppState;
use notify::{
    event::{AccessKind, AccessMode, EventKind},
    RecursiveMode, Watcher,
};
use opal_runtime::plugin::ContentDigest;
use std::{
    collections::{BTreeMap, BTreeSet},
    ffi::OsString,
    path::{Path, PathBuf},
    sync::{mpsc, Arc},
    time::Duration,
};

/// How long a plugin's directory must stay quiet before its file is looked at.
const SETTLE: Duration = Duration::from_millis(300);

/// A watched plugin's deployed file, split the way change events name it.
struct WatchedFile {
    plugin: String,
    /// The file as the deployment gave it, for logs.
    shown: PathBuf,
    /// The absolute directory, as the watcher reports paths in it.
    dir: PathBuf,
    name: OsString,
}

impl WatchedFile {
    fn is(&self, path: &Path) -> bool {
        path.file_name() == Some(self.name.as_os_str()) && path.parent() == Some(&self.dir)
    }
}

/// Starts watching `plugins` (plugin name → deployed file); returns the watcher, which stops
/// when dropped.
pub(crate) fn watch_plugins(
    state: Arc<AppState>,
    plugins: BTreeMap<String, PathBuf>,
) -> notify::Result<Option<notify::RecommendedWatcher>> {
    if plugins.is_empty() {
        return Ok(None);
    }
    let mut files = Vec::new();
    for (plugin, file) in plugins {
        let absolute = std::path::absolute(&file).map_err(notify::Error::io)?;
        let (Some(dir), Some(name)) = (absolute.parent(), absolute.file_name()) else {
            return Err(notify::Error::generic(&format!(
                "plugin '{plugin}': '{}' does not name a file",
                file.display()
            )));
        };
        files.push(WatchedFile {
            dir: dir.to_owned(),
            name: name.to_owned(),
            plugin,
            shown: file,
        });
    }
    let (events, changes) = mpsc::channel::<PathBuf>();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let Ok(event) = event else { return };
        if is_change(&event.kind) {
            for path in event.paths {
                let _ = events.send(path);
            }
        }
    })?;
    let dirs: BTreeSet<&Path> = files.iter().map(|f| f.dir.as_path()).collect();
    for dir in dirs {
        watcher.watch(dir, RecursiveMode::NonRecursive)?;
    }
    std::thread::Builder::new()
        .name("opal-plugin-watch".into())
        .spawn(move || {
            while let Ok(first) = changes.recv() {
                let mut changed = BTreeSet::from([first]);
                while let Ok(more) = changes.recv_timeout(SETTLE) {
                    changed.insert(more);
                }
                for file in &files {
                    if changed.iter().any(|path| file.is(path)) {
                        reload_if_changed(&state, file);
                    }
                }
            }
        })
        .map_err(notify::Error::io)?;
    Ok(Some(watcher))
}

/// Whether an event can change a file's contents or identity: anything but an access, except
/// the close of a file written to.
fn is_change(kind: &EventKind) -> bool {
    match kind {
        EventKind::Access(access) => *access == AccessKind::Close(AccessMode::Write),
        _ => true,
    }
}

/// Reloads the plugin when its file now holds other contents than the loaded library's.
fn reload_if_changed(state: &AppState, file: &WatchedFile) {
    let shown = file.shown.display();
    let current = match ContentDigest::of_file(&file.dir.join(&file.name)) {
        Ok(digest) => digest,
        Err(e) => {
            tracing::info!(plugin = %file.plugin, file = %shown, error = %e,
                "plugin file is gone; the loaded plugin keeps serving until it is back");
            return;
        }
    };
    let registry = state.engine.registry();
    let loaded = registry.plugins().iter().find(|p| p.name() == file.plugin);
    if loaded.is_some_and(|p| p.digest() == current) {
        tracing::debug!(plugin = %file.plugin, file = %shown, "plugin file unchanged");
        return;
    }
    tracing::info!(plugin = %file.plugin, file = %shown, "plugin file changed");
    // The outcome is logged and counted by `reload`.
    let _ = state.reload(&file.plugin);
}
