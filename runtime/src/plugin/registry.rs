//! The operator registry: operators of loaded plugins by (domain, op_type), looked up by opset.
//! A registry is immutable once built; swapping a plugin builds a new one.

use super::{OperatorEntry, PluginLibrary};
use std::{collections::HashMap, fmt, sync::Arc};

/// (domain, op_type), with the default domain spelled `""`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OperatorKey {
    pub domain: String,
    pub op_type: String,
}

impl OperatorKey {
    pub fn new(domain: &str, op_type: &str) -> Self {
        OperatorKey {
            domain: normalize_domain(domain).to_owned(),
            op_type: op_type.to_owned(),
        }
    }
}

impl fmt::Display for OperatorKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.domain.is_empty() {
            f.write_str(&self.op_type)
        } else {
            write!(f, "{}:{}", self.domain, self.op_type)
        }
    }
}

/// `ai.onnx` and `""` are the same domain.
pub(crate) fn normalize_domain(domain: &str) -> &str {
    if domain == "ai.onnx" {
        ""
    } else {
        domain
    }
}

/// Why a registry could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    #[error("operator {key} (opsets {first_range} and {second_range}) is provided by both plugin '{first}' ({first_path}) and plugin '{second}' ({second_path}); say which wins in the deployment's [operators] table, e.g. \"{key}\" = \"{first}\"")]
    Conflict {
        key: OperatorKey,
        first: String,
        first_path: String,
        first_range: String,
        second: String,
        second_path: String,
        second_range: String,
    },
    #[error("the deployment says plugin '{plugin}' wins for operator {key}, but no loaded plugin of that name provides it")]
    UnknownPreference { key: OperatorKey, plugin: String },
    #[error("two loaded plugins are both named '{name}': {first} and {second}")]
    DuplicatePlugin {
        name: String,
        first: String,
        second: String,
    },
}

/// Operators by key, each key's entries sorted by opset and non-overlapping.
#[derive(Debug, Default)]
pub struct Registry {
    plugins: Vec<Arc<PluginLibrary>>,
    operators: HashMap<OperatorKey, Vec<OperatorEntry>>,
}

impl Registry {
    /// Builds a registry from `plugins`. Where two plugins provide overlapping opsets of one
    /// operator, `winners` (operator key → plugin name) says which to keep; otherwise it is an error.
    #[allow(
        clippy::result_large_err,
        reason = "built once per deployment or swap; the error carries names and paths to report"
    )]
    pub fn build(
        plugins: Vec<Arc<PluginLibrary>>,
        winners: &HashMap<OperatorKey, String>,
    ) -> Result<Self, RegistryError> {
        for (i, a) in plugins.iter().enumerate() {
            if let Some(b) = plugins[i + 1..].iter().find(|b| b.name() == a.name()) {
                return Err(RegistryError::DuplicatePlugin {
                    name: a.name().to_owned(),
                    first: a.source().display().to_string(),
                    second: b.source().display().to_string(),
                });
            }
        }
        let mut operators: HashMap<OperatorKey, Vec<OperatorEntry>> = HashMap::new();
        for entry in plugins.iter().flat_map(|p| p.operators()) {
            let key = OperatorKey::new(entry.domain(), entry.op_type());
            operators.entry(key).or_default().push(entry);
        }
        for (key, plugin) in winners {
            let provided = operators
                .get(key)
                .is_some_and(|entries| entries.iter().any(|e| e.plugin_name() == plugin));
            if !provided {
                return Err(RegistryError::UnknownPreference {
                    key: key.clone(),
                    plugin: plugin.clone(),
                });
            }
        }
        for (key, entries) in operators.iter_mut() {
            resolve_overlaps(key, entries, winners.get(key))?;
        }
        Ok(Registry { plugins, operators })
    }

    /// The kernel for `domain`/`op_type` at opset `version`.
    pub fn lookup(&self, domain: &str, op_type: &str, version: i64) -> Option<&OperatorEntry> {
        let key = OperatorKey::new(domain, op_type);
        self.operators
            .get(&key)?
            .iter()
            .find(|e| e.since_version() <= version && version <= e.until_version())
    }

    /// Every entry for `domain`/`op_type`, whatever the opset.
    pub fn entries(&self, domain: &str, op_type: &str) -> &[OperatorEntry] {
        self.operators
            .get(&OperatorKey::new(domain, op_type))
            .map_or(&[], Vec::as_slice)
    }

    pub fn plugins(&self) -> &[Arc<PluginLibrary>] {
        &self.plugins
    }

    /// Number of registered kernels (an operator with two opset ranges counts twice).
    pub fn operator_count(&self) -> usize {
        self.operators.values().map(Vec::len).sum()
    }

    /// All entries, sorted by key and opset.
    pub fn all(&self) -> Vec<(&OperatorKey, &OperatorEntry)> {
        let mut all: Vec<_> = self
            .operators
            .iter()
            .flat_map(|(k, es)| es.iter().map(move |e| (k, e)))
            .collect();
        all.sort_by(|a, b| {
            a.0.cmp(b.0)
                .then(a.1.since_version().cmp(&b.1.since_version()))
        });
        all
    }
}

#[allow(clippy::result_large_err, reason = "see `Registry::build`")]
fn resolve_overlaps(
    key: &OperatorKey,
    entries: &mut Vec<OperatorEntry>,
    winner: Option<&String>,
) -> Result<(), RegistryError> {
    if let Some(winner) = winner {
        let overlaps_winner = |e: &OperatorEntry| {
            e.plugin_name() != winner && entries_of(winner, entries).any(|w| overlaps(w, e))
        };
        let losers: Vec<bool> = entries.iter().map(overlaps_winner).collect();
        let mut index = 0;
        entries.retain(|_| {
            index += 1;
            !losers[index - 1]
        });
    }
    entries.sort_by_key(OperatorEntry::since_version);
    for pair in entries.windows(2) {
        if overlaps(&pair[0], &pair[1]) {
            let (a, b) = (&pair[0], &pair[1]);
            return Err(RegistryError::Conflict {
                key: key.clone(),
                first: a.plugin_name().to_owned(),
                first_path: a.library().source().display().to_string(),
                first_range: range(a),
                second: b.plugin_name().to_owned(),
                second_path: b.library().source().display().to_string(),
                second_range: range(b),
            });
        }
    }
    Ok(())
}

fn entries_of<'a>(
    plugin: &'a str,
    entries: &'a [OperatorEntry],
) -> impl Iterator<Item = &'a OperatorEntry> + 'a {
    entries.iter().filter(move |e| e.plugin_name() == plugin)
}

fn overlaps(a: &OperatorEntry, b: &OperatorEntry) -> bool {
    a.since_version() <= b.until_version() && b.since_version() <= a.until_version()
}

fn range(e: &OperatorEntry) -> String {
    if e.until_version() == i64::MAX {
        format!("{}+", e.since_version())
    } else {
        format!("{}-{}", e.since_version(), e.until_version())
    }
}
