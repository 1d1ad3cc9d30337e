//! Watching plugin files: when a watched plugin's deployed file changes, it is reloaded (after
//! the writes settle), exactly as `POST /v2/plugins/{name}/reload` would.

use super::state::AppState;
use notify::{RecursiveMode, Watcher};
use std::{
    collections::{BTreeMap, BTreeSet},
    path::PathBuf,
    sync::{mpsc, Arc},
    time::Duration,
};

/// How long a file must stay quiet before it is reloaded.
const SETTLE: Duration = Duration::from_millis(300);

/// Starts watching `plugins` (plugin name → deployed file); returns the watcher, which stops
/// when dropped.
pub(crate) fn watch_plugins(
    state: Arc<AppState>,
    plugins: BTreeMap<String, PathBuf>,
) -> notify::Result<Option<notify::RecommendedWatcher>> {
    if plugins.is_empty() {
        return Ok(None);
    }
    let (events, changes) = mpsc::channel::<PathBuf>();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if let Ok(event) = event {
            for path in event.paths {
                let _ = events.send(path);
            }
        }
    })?;
    let dirs: BTreeSet<PathBuf> = plugins
        .values()
        .filter_map(|p| p.parent().map(PathBuf::from))
        .collect();
    for dir in &dirs {
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
                for (name, file) in &plugins {
                    if changed.contains(file) {
                        tracing::info!(plugin = %name, file = %file.display(), "plugin file changed");
                        let _ = state.reload(name);
                    }
                }
            }
        })
        .map_err(notify::Error::io)?;
    Ok(Some(watcher))
}
