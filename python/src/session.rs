//! `opal.InferenceSession`: one model on an engine, used as onnxruntime's sessions are:
//! `run(output_names, input_feed)` with NumPy arrays, `get_inputs()` and `get_outputs()`, and
//! `memory_stats()`. A run checks the feed against the model's declared inputs, reads the
//! arrays in place (sequences are lists of arrays, an optional without a value `None`) and
//! runs without the GIL; sessions of the pool let threads run at once.

use crate::{
    arrays::onnx_type,
    deployment::{engine_for, Deployment},
    errors::{session_error, ConfigError, InputError, ModelError},
    feed::{onnx_value_type, output_value, FedInput, FedInputs},
    stats::report_dict,
};
use opal_runtime::{
    config::ModelSpec,
    input_check::{runnable_values, shape_mismatch, unknown_input},
    onnx::{Dim, Model},
    session_pool::SessionPool,
    value::ValueView,
    Engine,
};
use pyo3::{
    prelude::*,
    types::{PyBytes, PyDict},
};
use std::{collections::BTreeMap, path::PathBuf, sync::Arc};

/// What a model file or bytes is called in messages when it has no path.
const MODEL_BYTES: &str = "<bytes>";

/// A model's input or output, as onnxruntime's `NodeArg` describes it.
#[pyclass(module = "opal", frozen, get_all)]
pub(crate) struct NodeArg {
    name: String,
    /// Dims: an int where fixed, the symbol's name where named, `None` where unknown.
    shape: Py<PyAny>,
    /// `tensor(float)`, `tensor(int64)`, …
    r#type: String,
}

#[pymethods]
impl NodeArg {
    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        Ok(format!(
            "NodeArg(name='{}', type='{}', shape={})",
            self.name,
            self.r#type,
            self.shape.bind(py).repr()?
        ))
    }
}

/// A model loaded on an engine, ready to run.
#[pyclass(module = "opal", frozen)]
pub(crate) struct InferenceSession {
    pool: Arc<SessionPool>,
}

impl InferenceSession {
    pub(crate) fn from_pool(pool: Arc<SessionPool>) -> Self {
        InferenceSession { pool }
    }
}

#[pymethods]
impl InferenceSession {
    /// `model`: a path or the model's bytes. `plugins`: plugin files loaded besides the
    /// deployment's. `config`: a deployment file (the embedded default when absent) or an
    /// `opal.Deployment`, whose engine the session then shares. `threads`: threads kernels may
    /// use (the deployment's `engine.threads` when absent).
    #[new]
    #[pyo3(signature = (model, plugins = None, config = None, threads = None))]
    fn new(
        py: Python<'_>,
        model: &Bound<'_, PyAny>,
        plugins: Option<Vec<PathBuf>>,
        config: Option<&Bound<'_, PyAny>>,
        threads: Option<usize>,
    ) -> PyResult<Self> {
        let engine = match config.map(|c| c.cast::<Deployment>()) {
            Some(Ok(deployment)) => {
                if plugins.is_some() || threads.is_some() {
                    return Err(ConfigError::new_err(format!(
                        "a session on deployment {} uses its plugins and threads; list them in that file instead of passing plugins= or threads=",
                        deployment.get().source().display()
                    )));
                }
                deployment.get().engine().clone()
            }
            _ => {
                let config = config.map(|c| c.extract::<PathBuf>()).transpose()?;
                engine_for(py, config, plugins.unwrap_or_default(), threads)?
            }
        };
        let (spec, model) = load_model(py, &engine, model)?;
        Ok(InferenceSession {
            pool: Arc::new(SessionPool::new(&engine, spec, model)),
        })
    }

    /// Runs the model on `input_feed` (input name → NumPy array) and returns the outputs named
    /// in `output_names` (all of them when `None` or empty), in that order, as new arrays.
    #[pyo3(signature = (output_names, input_feed))]
    fn run<'py>(
        &self,
        py: Python<'py>,
        output_names: Option<Vec<String>>,
        input_feed: &Bound<'py, PyDict>,
    ) -> PyResult<Vec<Bound<'py, PyAny>>> {
        let (spec, model) = (self.pool.spec(), self.pool.model());
        let names = input_feed
            .keys()
            .iter()
            .map(|key| {
                key.extract::<String>().map_err(|_| {
                    InputError::new_err(format!("input names are strings; the feed has {key}"))
                })
            })
            .collect::<PyResult<Vec<String>>>()?;
        unknown_input(&spec.name, model, names.iter().map(String::as_str))
            .map_err(InputError::new_err)?;
        let wanted = output_indices(spec, model, output_names)?;
        // Held until the run is over, so the arrays outlive the views of their bytes even if
        // another thread changes the feed meanwhile.
        let engine = self.pool.engine();
        let mut given = Vec::with_capacity(model.inputs.len());
        let mut fed = FedInputs::new(engine, model.inputs.len());
        for &id in &model.inputs {
            let value = &model.values[id];
            let item = input_feed.get_item(&value.name)?.ok_or_else(|| {
                InputError::new_err(format!(
                    "input '{}' is missing; model '{}' takes {:?}",
                    value.name,
                    spec.name,
                    input_names(model)
                ))
            })?;
            let input = FedInput::read(engine, value, &item)?;
            if let FedInput::Array(view) = &input {
                if let Some(declared) = shape_mismatch(spec, value, &view.shape) {
                    return Err(InputError::new_err(format!(
                        "input '{}': the model takes shape {declared}, the array has shape {:?}",
                        value.name,
                        view.shape.as_slice()
                    )));
                }
            }
            given.push(item);
            fed.push(input);
        }
        let mut session = self.pool.checkout();
        let running = &mut session;
        let (result, fed) = py.detach(move || {
            // SAFETY: `given` holds every array viewed until after this closure returns.
            let views: Vec<ValueView<'_>> = fed.iter().map(|v| unsafe { v.view() }).collect();
            let result = running.run(&views).map(|_| ());
            drop(views);
            (result, fed)
        });
        drop(fed);
        drop(given);
        result.map_err(session_error)?;
        let state = session.last_run().expect("a run just finished");
        wanted
            .into_iter()
            .map(|k| {
                let value = state
                    .output_value(k)
                    .expect("a finished run holds every output");
                output_value(py, value)
            })
            .collect()
    }

    /// The model's inputs (initializers excepted), in order.
    fn get_inputs(&self, py: Python<'_>) -> PyResult<Vec<NodeArg>> {
        node_args(py, self.pool.model(), &self.pool.model().inputs)
    }

    /// The model's outputs, in order.
    fn get_outputs(&self, py: Python<'_>) -> PyResult<Vec<NodeArg>> {
        node_args(py, self.pool.model(), &self.pool.model().outputs)
    }

    /// The statistics block of the engine the session runs on, as a dict.
    fn memory_stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        report_dict(py, &self.pool.engine().report())
    }

    fn __repr__(&self) -> String {
        format!("InferenceSession('{}')", self.pool.spec().name)
    }
}

/// Loads `model` (a path or bytes) on `engine`, without the GIL.
fn load_model(
    py: Python<'_>,
    engine: &Arc<Engine>,
    model: &Bound<'_, PyAny>,
) -> PyResult<(ModelSpec, Arc<Model>)> {
    let (path, loaded) = if let Ok(bytes) = model.cast::<PyBytes>() {
        let bytes = bytes::Bytes::copy_from_slice(bytes.as_bytes());
        let path = PathBuf::from(MODEL_BYTES);
        let loaded =
            py.detach(|| Model::from_bytes(bytes, &path, engine.weights_owner()).map(Arc::new));
        (path, loaded)
    } else {
        let path: PathBuf = model.extract().map_err(|_| {
            ModelError::new_err(format!(
                "a model is a path or bytes, not {}",
                model
                    .get_type()
                    .name()
                    .map_or_else(|_| "another type".to_owned(), |n| n.to_string())
            ))
        })?;
        let loaded = py.detach(|| engine.load_model(&path));
        (path, loaded)
    };
    let loaded = loaded.map_err(|e| ModelError::new_err(e.to_string()))?;
    runnable_values(&loaded)
        .map_err(|e| ModelError::new_err(format!("model {}: {e}", path.display())))?;
    let spec = ModelSpec {
        name: path.display().to_string(),
        path,
        dims: BTreeMap::new(),
        shapes: BTreeMap::new(),
        max_concurrent: 1,
        max_queue: 0,
    };
    Ok((spec, loaded))
}

fn input_names(model: &Model) -> Vec<&str> {
    model
        .inputs
        .iter()
        .map(|&id| model.value_name(id))
        .collect()
}

/// The graph outputs `names` asks for, by index; all of them when `None` or empty.
fn output_indices(
    spec: &ModelSpec,
    model: &Model,
    names: Option<Vec<String>>,
) -> PyResult<Vec<usize>> {
    let outputs: Vec<&str> = model
        .outputs
        .iter()
        .map(|&id| model.value_name(id))
        .collect();
    match names.filter(|n| !n.is_empty()) {
        None => Ok((0..outputs.len()).collect()),
        Some(names) => names
            .iter()
            .map(|name| {
                outputs.iter().position(|o| o == name).ok_or_else(|| {
                    InputError::new_err(format!(
                        "model '{}' has no output '{name}'; its outputs are {outputs:?}",
                        spec.name
                    ))
                })
            })
            .collect(),
    }
}

fn node_args(py: Python<'_>, model: &Model, ids: &[usize]) -> PyResult<Vec<NodeArg>> {
    ids.iter().map(|&id| node_arg(py, model, id)).collect()
}

fn node_arg(py: Python<'_>, model: &Model, id: usize) -> PyResult<NodeArg> {
    let value = &model.values[id];
    let dims: Vec<Py<PyAny>> = value
        .shape
        .iter()
        .flatten()
        .map(|d| -> PyResult<Py<PyAny>> {
            Ok(match d {
                Dim::Fixed(n) => n.into_pyobject(py)?.into_any().unbind(),
                Dim::Symbol(s) => s.into_pyobject(py)?.into_any().unbind(),
                Dim::Unknown => py.None(),
            })
        })
        .collect::<PyResult<_>>()?;
    Ok(NodeArg {
        name: value.name.clone(),
        shape: dims.into_pyobject(py)?.into_any().unbind(),
        r#type: onnx_value_type(value.kind, onnx_type(value.dtype)),
    })
}
