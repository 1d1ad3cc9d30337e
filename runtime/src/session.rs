//! A session: one model on one engine, compiling a plan for each new set of input shapes and
//! reusing it (and its run state) while the shapes stay the same.

use crate::{
    engine::Engine,
    onnx::{Dim, Model},
    plan::{Binding, Plan, PlanError},
    run_control::RunControl,
    run_state::{RunError, RunState},
    tensor::Shape,
    value::RunInput,
};
use opal_plugin_api::DType;
use std::{collections::BTreeMap, fmt, sync::Arc};

/// Why a session run failed.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error(transparent)]
    Run(#[from] RunError),
    /// An output the run produced that cannot be sent as it is.
    #[error("output '{name}': {reason}")]
    Output { name: String, reason: String },
}

/// A model ready to run on an engine.
pub struct Session {
    engine: Arc<Engine>,
    model: Arc<Model>,
    /// Values of symbolic input dims.
    dims: BTreeMap<String, usize>,
    /// Whole input shapes by input name, overriding what the model declares.
    shapes: BTreeMap<String, Vec<usize>>,
    state: Option<RunState>,
    /// The engine's registry generation the state's plan was compiled under.
    generation: u64,
    /// Whether run states add up the time of each step.
    profiling: bool,
}

impl Session {
    pub fn new(engine: Arc<Engine>, model: Arc<Model>, dims: BTreeMap<String, usize>) -> Self {
        Session {
            engine,
            model,
            dims,
            shapes: BTreeMap::new(),
            state: None,
            generation: 0,
            profiling: false,
        }
    }

    /// Starts adding up the time each kernel call takes, from zero (and again from zero when
    /// a new plan is compiled); see [`Session::profile`].
    pub fn set_profiling(&mut self, on: bool) {
        self.profiling = on;
        if let Some(state) = &mut self.state {
            state.set_profiling(on);
        }
    }

    /// The current plan and the time spent in each of its steps since profiling started.
    pub fn profile(&self) -> Option<(&Arc<Plan>, &[std::time::Duration])> {
        let state = self.state.as_ref()?;
        Some((state.plan(), state.step_times()?))
    }

    /// Gives inputs whole shapes (by input name), for models that leave dims unnamed.
    pub fn with_shapes(mut self, shapes: BTreeMap<String, Vec<usize>>) -> Self {
        self.shapes = shapes;
        self
    }

    pub fn model(&self) -> &Arc<Model> {
        &self.model
    }

    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    /// The graph inputs' types as declared, with symbolic dims filled from the session's dims.
    /// A sequence or optional input, whose shape only its value tells, is its dtype (undefined
    /// when not declared) with no dims.
    pub fn declared_input_types(&self) -> Result<Vec<(DType, Shape)>, PlanError> {
        let model = &self.model;
        let error = |reason: String| PlanError {
            path: model.path().to_owned(),
            node: None,
            reason,
        };
        model
            .inputs
            .iter()
            .map(|&id| {
                let value = &model.values[id];
                if value.kind != opal_plugin_api::ValueKind::TENSOR {
                    return Ok((value.dtype.unwrap_or(DType::UNDEFINED), Shape::new()));
                }
                let dtype = value
                    .dtype
                    .ok_or_else(|| error(format!("input '{}' declares no dtype", value.name)))?;
                if let Some(shape) = self.shapes.get(&value.name) {
                    let declared = value.shape.as_ref().map_or(shape.len(), Vec::len);
                    if declared != shape.len() {
                        return Err(error(format!(
                            "input '{}' has rank {declared}, but the shape given for it is {shape:?}",
                            value.name
                        )));
                    }
                    return Ok((dtype, Shape::from_slice(shape)));
                }
                let dims = value
                    .shape
                    .as_ref()
                    .ok_or_else(|| error(format!("input '{}' declares no shape; pass an input", value.name)))?;
                let shape = dims
                    .iter()
                    .map(|d| match d {
                        Dim::Fixed(n) => Ok(*n),
                        Dim::Symbol(s) => self.dims.get(s).copied().ok_or_else(|| {
                            error(format!(
                                "input '{}' has the symbolic dim '{s}'; give its size (--dim {s}=N, or dims in the deployment)",
                                value.name
                            ))
                        }),
                        Dim::Unknown => Err(error(format!(
                            "input '{}' has a dim of unknown size; pass an input or give its shape (shapes in the deployment)",
                            value.name
                        ))),
                    })
                    .collect::<Result<Shape, _>>()?;
                Ok((dtype, shape))
            })
            .collect()
    }

    /// Runs the model on `inputs`, compiling a plan first if their shapes are new or a new
    /// registry snapshot was published. The outputs are read from the returned state.
    pub fn run<I: RunInput>(&mut self, inputs: &[I]) -> Result<&RunState, SessionError> {
        self.run_inner(inputs, None)
    }

    /// [`Session::run`], stopping at the first kernel boundary after `control` is cancelled
    /// ([`RunError::Cancelled`]); the session stays usable.
    pub fn run_with<I: RunInput>(
        &mut self,
        inputs: &[I],
        control: &RunControl,
    ) -> Result<&RunState, SessionError> {
        self.run_inner(inputs, Some(control))
    }

    fn run_inner<I: RunInput>(
        &mut self,
        inputs: &[I],
        control: Option<&RunControl>,
    ) -> Result<&RunState, SessionError> {
        let generation = self.engine.generation();
        let fits = generation == self.generation
            && self
                .state
                .as_ref()
                .is_some_and(|s| s.plan().accepts(inputs));
        if !fits {
            let bindings: Vec<Binding> =
                inputs.iter().map(|i| Binding::given(&i.value())).collect();
            if let Some(mut old) = self.state.take() {
                old.release(&self.engine);
            }
            let plan = Arc::new(Plan::compile_bound(
                &self.engine,
                &self.model,
                &bindings,
                self.engine.registry(),
            )?);
            let mut state = RunState::new(&self.engine, plan);
            state.set_profiling(self.profiling);
            self.state = Some(state);
            self.generation = generation;
        }
        let state = self.state.as_mut().expect("a state was just made");
        match control {
            Some(control) => state.run_with(&self.engine, inputs, control)?,
            None => state.run(&self.engine, inputs)?,
        }
        Ok(state)
    }

    /// Whether the session's plan was compiled with the engine's current registry snapshot (a
    /// stale one still holds the libraries of replaced plugins).
    pub fn is_current(&self) -> bool {
        self.state.is_some() && self.generation == self.engine.generation()
    }

    /// The state of the last run: its outputs stay there until the next run.
    pub fn last_run(&self) -> Option<&RunState> {
        self.state.as_ref()
    }

    /// The plan of the last run.
    pub fn plan(&self) -> Option<&Arc<Plan>> {
        self.state.as_ref().map(RunState::plan)
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if let Some(state) = &mut self.state {
            state.release(&self.engine);
        }
    }
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("model", &self.model.path())
            .finish_non_exhaustive()
    }
}
