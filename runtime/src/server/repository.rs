//! The served models by name, each READY (serving), LOADING (a first load is compiling) or
//! UNAVAILABLE (unloaded, or its load failed), with the reason. A request takes the model's
//! `Arc` and runs on it to the end, so replacing a model is one pointer swap: requests see the
//! old model or the new one, and the old one (plan, slab, prepared weights, mapping) is freed
//! when its last request ends.

use super::state::ServedModel;
use parking_lot::RwLock;
use std::{collections::BTreeMap, sync::Arc};

/// A model's state, as the repository index reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ModelState {
    Ready,
    Loading,
    Unavailable,
}

impl ModelState {
    pub(crate) fn name(self) -> &'static str {
        match self {
            ModelState::Ready => "READY",
            ModelState::Loading => "LOADING",
            ModelState::Unavailable => "UNAVAILABLE",
        }
    }
}

struct Entry {
    serving: Option<Arc<ServedModel>>,
    state: ModelState,
    reason: String,
}

/// Why a model cannot take a request.
pub(crate) enum NotServing {
    /// No model of that name was ever declared or loaded; the known names.
    Unknown(Vec<String>),
    /// Known, not serving: its state and why.
    Unavailable(ModelState, String),
}

/// One row of the repository index.
pub(crate) struct IndexRow {
    pub(crate) name: String,
    pub(crate) state: ModelState,
    pub(crate) reason: String,
}

/// The models by name.
#[derive(Default)]
pub(crate) struct ModelRepository {
    entries: RwLock<BTreeMap<String, Entry>>,
}

impl ModelRepository {
    pub(crate) fn new(models: impl IntoIterator<Item = (String, Arc<ServedModel>)>) -> Self {
        let entries = models
            .into_iter()
            .map(|(name, model)| {
                let entry = Entry {
                    serving: Some(model),
                    state: ModelState::Ready,
                    reason: String::new(),
                };
                (name, entry)
            })
            .collect();
        ModelRepository {
            entries: RwLock::new(entries),
        }
    }

    /// The model serving under `name`, for one request.
    pub(crate) fn get(&self, name: &str) -> Result<Arc<ServedModel>, NotServing> {
        let entries = self.entries.read();
        match entries.get(name) {
            Some(Entry {
                serving: Some(model),
                ..
            }) => Ok(model.clone()),
            Some(entry) => Err(NotServing::Unavailable(entry.state, entry.reason.clone())),
            None => Err(NotServing::Unknown(entries.keys().cloned().collect())),
        }
    }

    /// Whether `name` was ever declared or loaded.
    pub(crate) fn knows(&self, name: &str) -> bool {
        self.entries.read().contains_key(name)
    }

    /// The models serving now.
    pub(crate) fn serving(&self) -> Vec<(String, Arc<ServedModel>)> {
        self.entries
            .read()
            .iter()
            .filter_map(|(name, e)| Some((name.clone(), e.serving.clone()?)))
            .collect()
    }

    /// Serves `model` under `name` from now on; returns the model it replaces.
    pub(crate) fn publish(&self, name: &str, model: Arc<ServedModel>) -> Option<Arc<ServedModel>> {
        let entry = Entry {
            serving: Some(model),
            state: ModelState::Ready,
            reason: String::new(),
        };
        self.entries.write().insert(name.to_owned(), entry)?.serving
    }

    /// Marks `name` as loading, unless a version of it serves meanwhile.
    pub(crate) fn loading(&self, name: &str) {
        let mut entries = self.entries.write();
        let entry = entries.entry(name.to_owned()).or_insert(Entry {
            serving: None,
            state: ModelState::Unavailable,
            reason: String::new(),
        });
        if entry.serving.is_none() {
            entry.state = ModelState::Loading;
            entry.reason = "loading".to_owned();
        }
    }

    /// A load of `name` failed: a version serving meanwhile keeps serving; otherwise the model
    /// is unavailable for `reason`.
    pub(crate) fn load_failed(&self, name: &str, reason: &str) {
        let mut entries = self.entries.write();
        if let Some(entry) = entries.get_mut(name).filter(|e| e.serving.is_none()) {
            entry.state = ModelState::Unavailable;
            entry.reason = format!("the last load failed: {reason}");
        }
    }

    /// Stops serving `name` for `reason`; returns the model that served (`None` if none did),
    /// or `Err` if the name is unknown.
    pub(crate) fn unload(
        &self,
        name: &str,
        reason: &str,
    ) -> Result<Option<Arc<ServedModel>>, NotServing> {
        let mut entries = self.entries.write();
        let known: Vec<String> = entries.keys().cloned().collect();
        let entry = entries.get_mut(name).ok_or(NotServing::Unknown(known))?;
        entry.state = ModelState::Unavailable;
        entry.reason = reason.to_owned();
        Ok(entry.serving.take())
    }

    /// Forgets `name` altogether (a model removed from the deployment).
    pub(crate) fn remove(&self, name: &str) -> Option<Arc<ServedModel>> {
        self.entries.write().remove(name)?.serving
    }

    /// Every model, serving or not, by name.
    pub(crate) fn index(&self) -> Vec<IndexRow> {
        self.entries
            .read()
            .iter()
            .map(|(name, e)| IndexRow {
                name: name.clone(),
                state: e.state,
                reason: e.reason.clone(),
            })
            .collect()
    }
}
