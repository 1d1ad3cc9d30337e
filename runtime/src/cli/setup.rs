//! What `opal run` and `opal bench` share: picking the model (a file or a deployment's model),
//! building the engine with the thread count asked for, and reading or generating inputs.

use anyhow::{bail, Context};
use opal_plugin_api::ValueKind;
use opal_runtime::{
    config::ModelSpec,
    input_check::unknown_input,
    onnx::{Constant, Model},
    synthetic::synthetic_tensor,
    tensor_file::read_tensor,
    value::{RunInput, Value, ValueView},
    value_file::read_value,
    Deployment, Engine, Session,
};
use std::{
    collections::BTreeMap,
    path::PathBuf,
    sync::{Arc, OnceLock},
    time::Instant,
};

/// When the command started, as early in `main` as it can be read.
pub(crate) static COMMAND_START: OnceLock<Instant> = OnceLock::new();

/// Options that say which model to run on what.
#[derive(clap::Args)]
pub(crate) struct ModelArgs {
    /// An .onnx file, or the name of a model in the deployment; the deployment's default model
    /// when absent.
    pub(crate) model: Option<String>,
    /// Deployment file; the embedded default when absent.
    #[arg(long)]
    pub(crate) config: Option<PathBuf>,
    /// An input from a .npy or ONNX TensorProto .pb file (a SequenceProto or OptionalProto
    /// .pb file for a sequence or optional), as NAME=PATH (repeatable); tensor inputs not
    /// given are generated from their declared shapes.
    #[arg(long = "input", value_parser = parse_pair::<PathBuf>)]
    pub(crate) inputs: Vec<(String, PathBuf)>,
    /// The size of a symbolic input dim, as SYMBOL=N (repeatable).
    #[arg(long = "dim", value_parser = parse_pair::<usize>)]
    pub(crate) dims: Vec<(String, usize)>,
    /// Threads kernels may use (default: the deployment's engine.threads).
    #[arg(long)]
    pub(crate) threads: Option<usize>,
}

fn parse_pair<T: std::str::FromStr>(s: &str) -> Result<(String, T), String> {
    let (name, value) = s
        .split_once('=')
        .ok_or_else(|| format!("'{s}' is not NAME=VALUE"))?;
    let value = value
        .parse()
        .map_err(|_| format!("'{value}' in '{s}' is not a valid value"))?;
    Ok((name.to_owned(), value))
}

/// An input of the runs: a tensor, or a sequence or optional read from its file.
pub(crate) enum Input {
    Tensor(Constant),
    Value(Value),
}

impl RunInput for Input {
    fn value(&self) -> ValueView<'_> {
        match self {
            Input::Tensor(constant) => ValueView::Tensor(constant.as_ref()),
            Input::Value(value) => value.view(),
        }
    }
}

/// A model loaded on an engine, with its inputs ready.
pub(crate) struct Prepared {
    pub(crate) deployment: Deployment,
    pub(crate) spec: ModelSpec,
    pub(crate) engine: Arc<Engine>,
    pub(crate) model: Arc<Model>,
    pub(crate) session: Session,
    pub(crate) inputs: Vec<Input>,
    /// Milliseconds from the command's start (loading plugins and the model, compiling the
    /// plan) to the end of the first run, once it ran.
    pub(crate) first_output_ms: Option<f64>,
}

impl Prepared {
    pub(crate) fn new(args: ModelArgs) -> anyhow::Result<Self> {
        let mut deployment = super::deployment(args.config.as_ref())?;
        if let Some(threads) = args.threads {
            anyhow::ensure!(threads >= 1, "--threads must be at least 1");
            deployment.engine.threads = threads;
        }
        let spec = pick_model(&deployment, args.model.as_deref())?;
        let engine = Engine::new(&deployment)?;
        let model = engine.load_model(&spec.path)?;
        let mut dims = spec.dims.clone();
        dims.extend(args.dims);
        let session =
            Session::new(engine.clone(), model.clone(), dims).with_shapes(spec.shapes.clone());
        let declared = session.declared_input_types();
        let owner = engine.tracker().owner("inputs");
        let mut given: BTreeMap<String, PathBuf> = args.inputs.into_iter().collect();
        unknown_input(&spec.name, &model, given.keys().map(String::as_str))
            .map_err(anyhow::Error::msg)?;
        let mut inputs = Vec::with_capacity(model.inputs.len());
        for (k, &id) in model.inputs.iter().enumerate() {
            let name = model.value_name(id);
            let kind = model.values[id].kind;
            let tensor = match given.remove(name) {
                Some(path) if kind != ValueKind::TENSOR => {
                    let value = read_value(&path, kind, &owner).map_err(anyhow::Error::msg)?;
                    inputs.push(Input::Value(value));
                    continue;
                }
                Some(path) => read_tensor(&path, &owner).map_err(anyhow::Error::msg)?,
                None if kind != ValueKind::TENSOR => bail!(
                    "input '{name}' is {}, which opal does not make up; give it as a SequenceProto or OptionalProto .pb file (--input {name}=PATH)", kind.described()
                ),
                None => {
                    let types = declared.as_ref().map_err(|e| anyhow::anyhow!("{e}"))?;
                    let (dtype, shape) = &types[k];
                    synthetic_tensor(*dtype, shape, k as u64 + 1, &owner)
                        .with_context(|| format!("cannot make a {dtype} {shape:?} input '{name}'"))?
                        .into()
                }
            };
            inputs.push(Input::Tensor(tensor));
        }
        Ok(Prepared {
            deployment,
            spec,
            engine,
            model,
            session,
            inputs,
            first_output_ms: None,
        })
    }
}

/// Timings and heap allocations of measured runs.
pub(crate) struct Measured {
    /// Milliseconds per run, sorted.
    pub(crate) times_ms: Vec<f64>,
    /// Heap allocations over all the runs, by the host and by the plugins' own allocators.
    pub(crate) host_allocations: u64,
    pub(crate) plugin_allocations: u64,
}

impl Measured {
    /// The `p`-th quantile (0 to 1) of the run times.
    pub(crate) fn percentile(&self, p: f64) -> f64 {
        self.times_ms[((self.times_ms.len() - 1) as f64 * p).round() as usize]
    }
}

impl Prepared {
    /// Runs the model `iterations` times (at least once), timing each run and counting the
    /// heap allocations they make.
    pub(crate) fn measure(&mut self, iterations: usize) -> anyhow::Result<Measured> {
        let inputs = &self.inputs;
        let mut times_ms = Vec::with_capacity(iterations.max(1));
        let (host_before, plugins_before) = allocations(&self.engine);
        for _ in 0..iterations.max(1) {
            let start = Instant::now();
            self.session.run(inputs)?;
            times_ms.push(start.elapsed().as_secs_f64() * 1e3);
            if self.first_output_ms.is_none() {
                let since_start = COMMAND_START.get().map(Instant::elapsed);
                self.first_output_ms = since_start.map(|t| t.as_secs_f64() * 1e3);
            }
        }
        let (host_after, plugins_after) = allocations(&self.engine);
        times_ms.sort_by(f64::total_cmp);
        Ok(Measured {
            times_ms,
            host_allocations: host_after - host_before,
            plugin_allocations: plugins_after - plugins_before,
        })
    }
}

/// Heap allocations made so far by the process and by every plugin's own allocator.
fn allocations(engine: &Engine) -> (u64, u64) {
    let plugins = engine
        .registry()
        .plugins()
        .iter()
        .filter_map(|p| p.own_heap_allocations())
        .sum();
    (opal_runtime::memory::heap_allocations(), plugins)
}

/// The deployment's model named `wanted`, or an ad-hoc entry for an .onnx path.
fn pick_model(deployment: &Deployment, wanted: Option<&str>) -> anyhow::Result<ModelSpec> {
    match wanted {
        None => deployment.default_model().cloned().with_context(|| {
            format!(
                "deployment {} declares no model; give one: opal run MODEL.onnx",
                deployment.source.display()
            )
        }),
        Some(name) => match deployment.model(name) {
            Some(spec) => Ok(spec.clone()),
            None if name.ends_with(".onnx") || std::path::Path::new(name).exists() => {
                Ok(ModelSpec {
                    name: name.to_owned(),
                    path: PathBuf::from(name),
                    dims: BTreeMap::new(),
                    shapes: BTreeMap::new(),
                    max_concurrent: 1,
                    max_queue: 0,
                })
            }
            None => bail!(
                "'{name}' is neither an .onnx file nor a model of deployment {}",
                deployment.source.display()
            ),
        },
    }
}
