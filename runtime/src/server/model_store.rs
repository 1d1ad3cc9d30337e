//! The directory the server owns for model files sent inline with a load request
//! (`server.model_store`, or a temporary directory removed at exit). Each load writes into a
//! directory of its own, so a model being served is never overwritten; that directory is
//! removed when the model loaded from it is dropped.

use std::{
    path::{Component, Path, PathBuf},
    sync::atomic::{AtomicU64, Ordering},
};

/// Where inline model files go.
pub(crate) struct ModelStore {
    root: PathBuf,
    /// Numbers each load's directory.
    loads: AtomicU64,
}

/// The files of one load; their directory is removed when this is dropped.
#[derive(Debug)]
pub(crate) struct StoredFiles {
    dir: PathBuf,
}

impl StoredFiles {
    /// The directory the files were written under, keeping the paths they were sent with.
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for StoredFiles {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            tracing::warn!(dir = %self.dir.display(), error = %e, "cannot remove a stored model's files");
        }
    }
}

impl ModelStore {
    /// A store under `root`, which is created if missing.
    pub(crate) fn new(root: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(root)?;
        Ok(ModelStore {
            root: root.to_owned(),
            loads: AtomicU64::new(0),
        })
    }

    /// Writes `files` (paths relative to the model's directory, such as `1/model.onnx`, and
    /// their contents) into a new directory for model `model`.
    pub(crate) fn store(
        &self,
        model: &str,
        files: &[(String, Vec<u8>)],
    ) -> Result<StoredFiles, String> {
        for (path, _) in files {
            check_relative(path)?;
        }
        let safe_name: String = model
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let load = self.loads.fetch_add(1, Ordering::Relaxed);
        let dir = self
            .root
            .join(format!("{safe_name}-{}-{load}", std::process::id()));
        // Owned from here on: a failed write removes what was written.
        let stored = StoredFiles { dir };
        for (path, bytes) in files {
            let target = stored.dir.join(path);
            let written = target
                .parent()
                .map_or(Ok(()), std::fs::create_dir_all)
                .and_then(|()| std::fs::write(&target, bytes));
            written.map_err(|e| {
                format!(
                    "cannot store file '{path}' of model '{model}' under {}: {e}",
                    self.root.display()
                )
            })?;
        }
        Ok(stored)
    }
}

/// Refuses a sent path that is empty, absolute or leaves the model's directory.
fn check_relative(path: &str) -> Result<(), String> {
    let as_path = Path::new(path);
    let inside = !path.is_empty()
        && as_path
            .components()
            .all(|c| matches!(c, Component::Normal(_)));
    if inside {
        Ok(())
    } else {
        Err(format!(
            "file 'file:{path}': a file's path must be relative and stay inside the model's directory, such as 'file:1/model.onnx'"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_load_gets_its_own_directory_removed_with_it() {
        let root = tempfile::tempdir().unwrap();
        let store = ModelStore::new(root.path()).unwrap();
        let files = vec![("1/model.onnx".to_owned(), b"first".to_vec())];
        let a = store.store("m", &files).unwrap();
        let b = store.store("m", &files).unwrap();
        assert_ne!(a.dir(), b.dir());
        assert_eq!(
            std::fs::read(a.dir().join("1/model.onnx")).unwrap(),
            b"first"
        );
        let kept = a.dir().to_owned();
        drop(a);
        assert!(!kept.exists());
        assert!(b.dir().join("1/model.onnx").is_file());
    }

    #[test]
    fn paths_leaving_the_directory_are_refused() {
        let root = tempfile::tempdir().unwrap();
        let store = ModelStore::new(root.path()).unwrap();
        for path in ["../escape.onnx", "/etc/passwd", "", "1/../../x"] {
            let err = store
                .store("m", &[(path.to_owned(), Vec::new())])
                .unwrap_err();
            assert!(err.contains("must be relative"), "{path}: {err}");
        }
    }
}
