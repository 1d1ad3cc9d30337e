//! Watching files: a watched plugin is reloaded, exactly as `POST /v2/plugins/{name}/reload`
//! would, once per change of its deployed file's contents; a watched deployment file is
//! applied, as `opal reload-config` would, once per change of its contents.
//!
//! Events are filtered by kind (reads and opens are not changes; a reload itself reads the
//! file), a burst of events is coalesced until the directory has been quiet for [`SETTLE`], and
//! a file whose contents equal what the plugin was loaded from is left alone. The directory is
//! watched rather than the file, so that every way of replacing a file is seen: a build's hard
//! link, `cp` writing in place, `install` and editors' rename over it, delete and re-create.

use super::{config_reload, state::AppState};
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

/// How long a watched file's directory must stay quiet before the file is looked at.
const SETTLE: Duration = Duration::from_millis(300);

/// A watched file, split the way change events name it.
struct WatchedFile {
    /// The absolute directory, as the watcher reports paths in it.
    dir: PathBuf,
    name: OsString,
}

impl WatchedFile {
    fn new(file: &Path) -> notify::Result<Self> {
        let absolute = std::path::absolute(file).map_err(notify::Error::io)?;
        let (Some(dir), Some(name)) = (absolute.parent(), absolute.file_name()) else {
            return Err(notify::Error::generic(&format!(
                "'{}' does not name a file",
                file.display()
            )));
        };
        Ok(WatchedFile {
            dir: dir.to_owned(),
            name: name.to_owned(),
        })
    }

    fn is(&self, path: &Path) -> bool {
        path.file_name() == Some(self.name.as_os_str()) && path.parent() == Some(&self.dir)
    }
}

/// Starts watching `files`, calling `on_change` on a thread named `thread` with the index of
/// each file a settled burst of events touched; returns the watcher, which stops when dropped.
fn watch_files(
    files: &[PathBuf],
    thread: &str,
    mut on_change: impl FnMut(usize) + Send + 'static,
) -> notify::Result<Option<notify::RecommendedWatcher>> {
    if files.is_empty() {
        return Ok(None);
    }
    let files = files
        .iter()
        .map(|f| WatchedFile::new(f))
        .collect::<notify::Result<Vec<_>>>()?;
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
        .name(thread.into())
        .spawn(move || {
            while let Ok(first) = changes.recv() {
                let mut changed = BTreeSet::from([first]);
                while let Ok(more) = changes.recv_timeout(SETTLE) {
                    changed.insert(more);
                }
                for (k, file) in files.iter().enumerate() {
                    if changed.iter().any(|path| file.is(path)) {
                        on_change(k);
                    }
                }
            }
        })
        .map_err(notify::Error::io)?;
    Ok(Some(watcher))
}

/// Starts watching `plugins` (plugin name → deployed file): a plugin is reloaded when its file
/// holds other contents than the loaded library's.
pub(crate) fn watch_plugins(
    state: Arc<AppState>,
    plugins: BTreeMap<String, PathBuf>,
) -> notify::Result<Option<notify::RecommendedWatcher>> {
    let (names, files): (Vec<String>, Vec<PathBuf>) = plugins.into_iter().unzip();
    let watched = files.clone();
    watch_files(&watched, "opal-plugin-watch", move |k| {
        reload_if_changed(&state, &names[k], &files[k]);
    })
}

/// Starts watching the deployment file: its changes are applied as `opal reload-config`
/// applies them, once per change of its contents.
pub(crate) fn watch_deployment(
    state: Arc<AppState>,
    file: PathBuf,
) -> notify::Result<Option<notify::RecommendedWatcher>> {
    watch_files(&[file], "opal-config-watch", move |_| {
        config_reload::reload_if_changed(&state);
    })
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
fn reload_if_changed(state: &AppState, plugin: &str, file: &Path) {
    let shown = file.display();
    let current = match ContentDigest::of_file(file) {
        Ok(digest) => digest,
        Err(e) => {
            tracing::info!(plugin = %plugin, file = %shown, error = %e,
                "plugin file is gone; the loaded plugin keeps serving until it is back");
            return;
        }
    };
    let registry = state.engine.registry();
    let loaded = registry.plugins().iter().find(|p| p.name() == plugin);
    if loaded.is_some_and(|p| p.digest() == current) {
        tracing::debug!(plugin = %plugin, file = %shown, "plugin file unchanged");
        return;
    }
    tracing::info!(plugin = %plugin, file = %shown, "plugin file changed");
    // The outcome is logged and counted by `reload`.
    let _ = state.reload(plugin);
}
