//! Deployment files: the TOML that says which plugins to load, how the engine and its memory
//! behave, and which models to serve. Unknown keys and wrong types are errors naming the file,
//! line and key; relative paths resolve against the file's directory.

use opal_plugin_api::Isa;
use serde::Deserialize;
use std::{
    collections::BTreeMap,
    fmt,
    path::{Path, PathBuf},
};

/// The deployment `opal` uses when none is given, embedded in the binary.
pub const DEFAULT_DEPLOYMENT: &str = include_str!("../../config/default.toml");

/// The path the embedded default is reported as, and against whose directory its relative
/// paths resolve: the `config/` folder of the source tree the binary was built from.
pub const DEFAULT_DEPLOYMENT_PATH: &str =
    concat!(env!("CARGO_MANIFEST_DIR"), "/../config/default.toml");

/// A parsed deployment, with every path resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct Deployment {
    /// The file it was read from.
    pub source: PathBuf,
    pub engine: EngineConfig,
    pub pool: PoolSettings,
    pub plugins: Vec<PluginSpec>,
    /// Operator (`op_type` or `domain:op_type`) → name of the plugin that wins when two provide it.
    pub operators: BTreeMap<String, String>,
    pub models: Vec<ModelSpec>,
    pub run: RunSettings,
    pub server: ServerSettings,
}

/// `[engine]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EngineConfig {
    /// Threads kernels may use through `parallel_for`; 1 runs everything on the caller's thread.
    pub threads: usize,
    /// The largest number of bytes the engine may hold at once, tensors and scratch included.
    pub memory_limit: u64,
    /// The largest scratch a single kernel call may take.
    pub scratch_limit: u64,
    /// Let kernels absorb the nodes that consume their output (an activation after a
    /// convolution, say) when their plugin offers it. Off, every node is its own kernel call.
    pub fusion: bool,
    /// The instruction set kernels are capped to (`avx512`, `avx2`, `neon`, `baseline`); the
    /// best the CPU offers when absent. `OPAL_ISA` in the environment overrides it.
    #[serde(deserialize_with = "isa_name")]
    pub isa: Option<Isa>,
}

/// `engine.isa`: a known instruction set's name.
fn isa_name<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Isa>, D::Error> {
    let name = String::deserialize(d)?;
    name.parse().map(Some).map_err(serde::de::Error::custom)
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            threads: 1,
            memory_limit: 8 << 30,
            scratch_limit: 1 << 30,
            fusion: true,
            isa: None,
        }
    }
}

/// `[pool]`: the tensor pool, with the seed's defaults.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PoolSettings {
    pub max_per_key: usize,
    pub bypass_bytes: usize,
    pub preallocate: Vec<Preallocation>,
}

impl Default for PoolSettings {
    fn default() -> Self {
        PoolSettings {
            max_per_key: 20,
            bypass_bytes: 1 << 20,
            preallocate: Vec::new(),
        }
    }
}

/// One `[[pool.preallocate]]` entry: tensors put in the pool at start.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Preallocation {
    /// `f32`, `i64`, … (see [`opal_plugin_api::DType::name`]).
    pub dtype: String,
    pub shape: Vec<usize>,
    #[serde(default = "one")]
    pub count: usize,
}

fn one() -> usize {
    1
}

/// One plugin to load (a `[[plugins]]` path, or one file of a `[[plugins]]` dir).
#[derive(Debug, Clone, PartialEq)]
pub struct PluginSpec {
    /// As written in the file.
    pub path: String,
    /// Where it resolved to.
    pub resolved: PathBuf,
    /// Reload the plugin when its file changes (`opal serve`).
    pub watch: bool,
}

/// `[server]`: what `opal serve` listens on and accepts.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSettings {
    /// Address and port, e.g. `127.0.0.1:8000`.
    pub listen: String,
    /// The largest request body accepted, in bytes.
    pub max_request_bytes: usize,
    /// How long a request may take, in milliseconds, queueing included, before it is answered
    /// with 504; its run stops at the next kernel boundary.
    pub request_timeout_ms: u64,
    /// A run still inside one kernel this many milliseconds after its request timed out is
    /// reported stuck (log and `/metrics`); it keeps its `max_concurrent` slot until it returns.
    pub stuck_after_ms: u64,
    /// The bearer token that endpoints changing the server (plugin reloads) require. Without
    /// one (here or in `OPAL_ADMIN_TOKEN`), they answer loopback clients only.
    #[serde(deserialize_with = "admin_token")]
    pub admin_token: Option<AdminToken>,
    /// Apply changes of the deployment file while serving (as `opal serve --watch-config`).
    pub watch_config: bool,
    /// Where models sent inline with a load request are stored, one directory per load; a
    /// temporary directory removed at exit when absent. Relative to the deployment's directory.
    pub model_store: Option<PathBuf>,
}

impl Default for ServerSettings {
    fn default() -> Self {
        ServerSettings {
            listen: "127.0.0.1:8000".to_owned(),
            max_request_bytes: 64 << 20,
            request_timeout_ms: 30_000,
            stuck_after_ms: 5_000,
            admin_token: None,
            watch_config: false,
            model_store: None,
        }
    }
}

/// A secret that grants admin access; it never appears in debug output or logs.
#[derive(Clone, PartialEq, Eq)]
pub struct AdminToken(String);

impl AdminToken {
    /// A token from `value`; `None` when it is empty or only whitespace.
    pub fn new(value: &str) -> Option<AdminToken> {
        let value = value.trim();
        (!value.is_empty()).then(|| AdminToken(value.to_owned()))
    }

    pub fn secret(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AdminToken(redacted)")
    }
}

/// `server.admin_token`: a token that is not empty.
fn admin_token<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<AdminToken>, D::Error> {
    let value = String::deserialize(d)?;
    AdminToken::new(&value).map(Some).ok_or_else(|| {
        serde::de::Error::custom("the admin token is empty; remove the key or set a token")
    })
}

/// One `[[models]]` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelSpec {
    pub name: String,
    pub path: PathBuf,
    /// Values for symbolic dims of the model's inputs.
    pub dims: BTreeMap<String, usize>,
    /// Whole shapes for inputs, by name, where the model leaves dims unnamed or unknown.
    pub shapes: BTreeMap<String, Vec<usize>>,
    /// Requests for this model that run at once (`opal serve`); more wait in its queue.
    pub max_concurrent: usize,
    /// Requests that may wait for one of the `max_concurrent` runs; past it, `opal serve`
    /// answers 503 with `Retry-After` at once.
    pub max_queue: usize,
}

/// `[run]`: what `opal run` does without arguments.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RunSettings {
    /// Name of the model to run; the first declared model when absent.
    pub model: Option<String>,
    pub iterations: usize,
    /// Runs before the ones that are measured.
    pub warmup: usize,
}

impl Default for RunSettings {
    fn default() -> Self {
        RunSettings {
            model: None,
            iterations: 10,
            warmup: 2,
        }
    }
}

/// The file's shape, as serde reads it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDeployment {
    #[serde(default)]
    engine: EngineConfig,
    #[serde(default)]
    pool: PoolSettings,
    #[serde(default)]
    plugins: Vec<RawPlugin>,
    #[serde(default)]
    operators: BTreeMap<String, String>,
    #[serde(default)]
    models: Vec<RawModel>,
    #[serde(default)]
    run: RunSettings,
    #[serde(default)]
    server: ServerSettings,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPlugin {
    /// A plugin file.
    path: Option<String>,
    /// A directory: every `.so` file in it is a plugin.
    dir: Option<String>,
    #[serde(default)]
    watch: bool,
}

/// A `[[models]]` entry; `N` is its name's type (optional where the caller knows the name).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawModel<N = String> {
    name: N,
    path: String,
    #[serde(default)]
    dims: BTreeMap<String, usize>,
    #[serde(default)]
    shapes: BTreeMap<String, Vec<usize>>,
    #[serde(default = "default_concurrency")]
    max_concurrent: usize,
    #[serde(default = "default_queue")]
    max_queue: usize,
}

impl RawModel {
    /// What a parsed entry must also hold.
    fn check(&self) -> Result<(), String> {
        if self.max_concurrent == 0 {
            return Err(format!(
                "models '{}': max_concurrent must be at least 1",
                self.name
            ));
        }
        Ok(())
    }

    /// The entry with its path resolved against `dir`.
    fn resolve(self, dir: &Path) -> ModelSpec {
        ModelSpec {
            path: normalize(&dir.join(&self.path)),
            name: self.name,
            dims: self.dims,
            shapes: self.shapes,
            max_concurrent: self.max_concurrent,
            max_queue: self.max_queue,
        }
    }
}

/// A `[[models]]` array of one entry, as a load request's `config` may send it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawModelList {
    models: Vec<RawModel<Option<String>>>,
}

impl ModelSpec {
    /// The model `text` declares as one `[[models]]` table (its keys, or a `[[models]]` array
    /// of one entry), for model `name`; `name` may be left out, and `path` resolves against
    /// `dir`. `origin` names where the text came from in errors, which give line and key.
    pub fn from_toml(text: &str, name: &str, dir: &Path, origin: &str) -> Result<Self, String> {
        let fail = |e: toml::de::Error| format!("{origin}: {}", describe_toml_error(&e, text));
        let table: toml::Table = toml::from_str(text).map_err(fail)?;
        let raw = if table.get("models").is_some_and(toml::Value::is_array) {
            let mut list = toml::from_str::<RawModelList>(text).map_err(fail)?.models;
            if list.len() != 1 {
                return Err(format!(
                    "{origin}: declares {} [[models]] entries; send the one for model '{name}'",
                    list.len()
                ));
            }
            list.pop().expect("one entry")
        } else {
            toml::from_str::<RawModel<Option<String>>>(text).map_err(fail)?
        };
        if let Some(declared) = raw.name.as_deref().filter(|n| *n != name) {
            return Err(format!(
                "{origin}: name is '{declared}', but the request loads model '{name}'"
            ));
        }
        let raw = RawModel {
            name: name.to_owned(),
            path: raw.path,
            dims: raw.dims,
            shapes: raw.shapes,
            max_concurrent: raw.max_concurrent,
            max_queue: raw.max_queue,
        };
        raw.check().map_err(|e| format!("{origin}: {e}"))?;
        Ok(raw.resolve(dir))
    }
}

fn default_concurrency() -> usize {
    4
}

fn default_queue() -> usize {
    64
}

/// A deployment file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read deployment file {path}: {cause}")]
    Read {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("deployment file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("deployment file {path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

impl Deployment {
    /// Reads and validates the deployment at `path`.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|cause| ConfigError::Read {
            path: path.to_owned(),
            cause,
        })?;
        Deployment::parse(&text, path)
    }

    /// The embedded default deployment (`config/default.toml`).
    pub fn embedded_default() -> Result<Self, ConfigError> {
        Deployment::parse(
            DEFAULT_DEPLOYMENT,
            &normalize(Path::new(DEFAULT_DEPLOYMENT_PATH)),
        )
    }

    /// Parses `text` as if read from `path`: relative paths resolve against its directory.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let raw: RawDeployment = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: describe_toml_error(&e, text),
        })?;
        let dir = path.parent().unwrap_or(Path::new("."));
        let invalid = |message: String| ConfigError::Invalid {
            path: path.to_owned(),
            message,
        };
        if raw.engine.threads == 0 {
            return Err(invalid("engine.threads must be at least 1".into()));
        }
        for p in &raw.pool.preallocate {
            if opal_dtype(&p.dtype).is_none() {
                return Err(invalid(format!(
                    "pool.preallocate: unknown dtype '{}' (use f32, f64, i32, i64, u8, i8, bool, …)",
                    p.dtype
                )));
            }
        }
        let mut names = std::collections::HashSet::new();
        for m in &raw.models {
            if !names.insert(m.name.as_str()) {
                return Err(invalid(format!("model '{}' is declared twice", m.name)));
            }
        }
        if let Some(model) = &raw.run.model {
            if !names.contains(model.as_str()) {
                return Err(invalid(format!(
                    "run.model is '{model}', but no [[models]] entry has that name"
                )));
            }
        }
        let mut plugins = Vec::new();
        for (k, p) in raw.plugins.into_iter().enumerate() {
            match (p.path, p.dir) {
                (Some(file), None) => plugins.push(PluginSpec {
                    resolved: resolve_plugin_path(&file, dir),
                    path: file,
                    watch: p.watch,
                }),
                (None, Some(folder)) => {
                    let folder_path = normalize(&dir.join(&folder));
                    let mut files: Vec<PathBuf> = std::fs::read_dir(&folder_path)
                        .map_err(|e| invalid(format!("plugins[{k}].dir {}: {e}", folder_path.display())))?
                        .filter_map(Result::ok)
                        .map(|e| e.path())
                        .filter(|f| f.extension().is_some_and(|x| x == "so"))
                        .collect();
                    files.sort();
                    plugins.extend(files.into_iter().map(|f| PluginSpec {
                        path: f.display().to_string(),
                        resolved: f,
                        watch: p.watch,
                    }));
                }
                _ => {
                    return Err(invalid(format!(
                        "plugins[{k}] must have exactly one of `path` (a plugin file) or `dir` (a directory of them)"
                    )))
                }
            }
        }
        for m in &raw.models {
            m.check().map_err(invalid)?;
        }
        let mut server = raw.server;
        server.model_store = server.model_store.map(|store| normalize(&dir.join(store)));
        Ok(Deployment {
            source: path.to_owned(),
            engine: raw.engine,
            pool: raw.pool,
            plugins,
            operators: raw.operators,
            models: raw.models.into_iter().map(|m| m.resolve(dir)).collect(),
            run: raw.run,
            server,
        })
    }

    /// The model called `name`.
    pub fn model(&self, name: &str) -> Option<&ModelSpec> {
        self.models.iter().find(|m| m.name == name)
    }

    /// The model `opal run` runs by default: `run.model`, or the first one declared.
    pub fn default_model(&self) -> Option<&ModelSpec> {
        match &self.run.model {
            Some(name) => self.model(name),
            None => self.models.first(),
        }
    }
}

/// The dtype a deployment names (`f32`, `i64`, …).
pub fn opal_dtype(name: &str) -> Option<opal_plugin_api::DType> {
    (0..=16)
        .map(opal_plugin_api::DType)
        .find(|d| d.size().is_some() && d.name() == name)
}

/// Where a plugin path points. A bare file name (`libopal_core_math.so`) is searched for in
/// `$OPAL_PLUGIN_PATH` and then beside the running executable, where cargo puts the plugins it
/// builds; any other relative path is relative to the deployment's directory.
pub fn resolve_plugin_path(path: &str, dir: &Path) -> PathBuf {
    let as_given = Path::new(path);
    if as_given.is_absolute() {
        return as_given.to_owned();
    }
    if !is_bare_name(path) {
        return normalize(&dir.join(as_given));
    }
    plugin_search_path()
        .into_iter()
        .map(|d| d.join(as_given))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| normalize(&dir.join(as_given)))
}

/// Whether a plugin path is a bare file name, searched for rather than taken as a path.
pub fn is_bare_name(path: &str) -> bool {
    let as_given = Path::new(path);
    !as_given.is_absolute() && as_given.components().count() == 1
}

/// `path` with `.` and `name/..` components removed, without touching the file system.
pub fn normalize(path: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir
                if matches!(out.components().next_back(), Some(Component::Normal(_))) =>
            {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

/// Directories a host other than the `opal` executable searches for bare plugin file names.
static HOST_PLUGIN_DIRS: parking_lot::Mutex<Vec<PathBuf>> = parking_lot::Mutex::new(Vec::new());

/// Searches `dir` for bare plugin file names from now on, after `$OPAL_PLUGIN_PATH` and before
/// the executable's directory: for hosts whose executable is not beside the plugins (the
/// Python package names the build it came from).
pub fn search_plugins_in(dir: PathBuf) {
    let mut dirs = HOST_PLUGIN_DIRS.lock();
    if !dirs.contains(&dir) {
        dirs.push(dir);
    }
}

/// The directories bare plugin file names are searched in.
pub fn plugin_search_path() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("OPAL_PLUGIN_PATH")
        .map(|v| std::env::split_paths(&v).collect())
        .unwrap_or_default();
    dirs.extend(HOST_PLUGIN_DIRS.lock().iter().cloned());
    if let Some(exe_dir) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_owned))
    {
        // Test binaries live in target/<profile>/deps, beside which cargo also puts the plugins.
        if exe_dir.ends_with("deps") {
            if let Some(profile_dir) = exe_dir.parent() {
                dirs.push(profile_dir.to_owned());
            }
        }
        dirs.push(exe_dir);
    }
    dirs
}

/// A TOML error as `line L, column C: message (key `k`)`, from its span in `text`.
fn describe_toml_error(error: &toml::de::Error, text: &str) -> String {
    let message = error.message().trim_end();
    let Some(span) = error.span() else {
        return message.to_owned();
    };
    let before = &text[..span.start.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    let snippet = text.lines().nth(line - 1).unwrap_or("").trim();
    format!("line {line}, column {column}: {message} (at `{snippet}`)")
}

impl PluginSpec {
    /// The directories a bare file name was searched in, in order, the deployment's last; `None`
    /// for a path given with its directory.
    pub fn searched_dirs(&self) -> Option<Vec<PathBuf>> {
        if !is_bare_name(&self.path) {
            return None;
        }
        let mut dirs = plugin_search_path();
        dirs.extend(self.resolved.parent().map(Path::to_owned));
        let mut seen = std::collections::HashSet::new();
        dirs.retain(|d| seen.insert(d.clone()));
        Some(dirs)
    }
}

impl fmt::Display for PluginSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.resolved.display())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Deployment, ConfigError> {
        Deployment::parse(text, Path::new("/srv/opal/deploy.toml"))
    }

    #[test]
    fn the_embedded_default_parses() {
        let d = Deployment::embedded_default().unwrap();
        assert!(!d.plugins.is_empty());
        assert!(d.default_model().is_some());
    }

    #[test]
    fn relative_paths_resolve_against_the_file() {
        let d = parse("[[models]]\nname = \"m\"\npath = \"models/m.onnx\"\n[[plugins]]\npath = \"p/libx.so\"\n").unwrap();
        assert_eq!(d.models[0].path, Path::new("/srv/opal/models/m.onnx"));
        assert_eq!(d.plugins[0].resolved, Path::new("/srv/opal/p/libx.so"));
    }

    #[test]
    fn a_model_queue_is_bounded_by_default_and_may_be_zero() {
        let d = parse("[[models]]\nname = \"a\"\npath = \"a.onnx\"\n[[models]]\nname = \"b\"\npath = \"b.onnx\"\nmax_queue = 0\n").unwrap();
        assert_eq!((d.models[0].max_concurrent, d.models[0].max_queue), (4, 64));
        assert_eq!(d.models[1].max_queue, 0);
        let err = parse("[[models]]\nname = \"a\"\npath = \"a.onnx\"\nmax_queue = -1\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 4") && err.contains("max_queue"), "{err}");
    }

    #[test]
    fn unknown_keys_name_the_file_line_and_key() {
        let err = parse("[engine]\nthreads = 2\nthredas = 4\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("/srv/opal/deploy.toml"), "{err}");
        assert!(err.contains("line 3"), "{err}");
        assert!(err.contains("thredas"), "{err}");
    }

    #[test]
    fn wrong_types_name_the_line() {
        let err = parse("[pool]\nmax_per_key = \"many\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 2"), "{err}");
        assert!(err.contains("max_per_key"), "{err}");
    }

    #[test]
    fn an_instruction_set_is_named_or_refused_with_its_line() {
        let d = parse("[engine]\nisa = \"avx2\"\n").unwrap();
        assert_eq!(d.engine.isa, Some(Isa::Avx2));
        let err = parse("[engine]\nthreads = 1\nisa = \"sse9\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 3"), "{err}");
        assert!(
            err.contains("unknown instruction set 'sse9': use one of avx512, avx2, neon, baseline"),
            "{err}"
        );
    }

    #[test]
    fn a_model_table_alone_parses_with_or_without_its_header() {
        let dir = Path::new("/srv/store/b");
        for text in [
            "path = \"1/model.onnx\"\nmax_concurrent = 2\n",
            "[[models]]\nname = \"b\"\npath = \"1/model.onnx\"\nmax_concurrent = 2\n",
        ] {
            let spec = ModelSpec::from_toml(text, "b", dir, "config").unwrap();
            assert_eq!(spec.path, Path::new("/srv/store/b/1/model.onnx"));
            assert_eq!((spec.name.as_str(), spec.max_concurrent), ("b", 2));
        }
        let err =
            ModelSpec::from_toml("path = \"m.onnx\"\nmax_concurent = 2\n", "b", dir, "config")
                .unwrap_err();
        assert!(
            err.contains("line 2") && err.contains("max_concurent"),
            "{err}"
        );
        let err = ModelSpec::from_toml("name = \"a\"\npath = \"m.onnx\"\n", "b", dir, "config")
            .unwrap_err();
        assert!(err.contains("name is 'a'") && err.contains("'b'"), "{err}");
        let err = ModelSpec::from_toml(
            "path = \"m.onnx\"\nmax_concurrent = 0\n",
            "b",
            dir,
            "config",
        )
        .unwrap_err();
        assert!(err.contains("max_concurrent must be at least 1"), "{err}");
    }

    #[test]
    fn a_model_store_resolves_against_the_file() {
        let d = parse("[server]\nwatch_config = true\nmodel_store = \"store\"\n").unwrap();
        assert!(d.server.watch_config);
        assert_eq!(
            d.server.model_store.as_deref(),
            Some(Path::new("/srv/opal/store"))
        );
    }

    #[test]
    fn a_run_model_must_be_declared() {
        let err = parse("[run]\nmodel = \"nope\"\n").unwrap_err().to_string();
        assert!(err.contains("'nope'"), "{err}");
    }
}
