//! The mutable half of execution: one run's intermediates and scratch arena over a shared
//! [`Plan`]. Intermediates whose shapes the plan knows live in the run's slab; graph outputs and
//! tensors shaped at run time come from the engine's pool and go back after their last reader.
//! Once the pool is warm, a run of a plan without run-time shapes allocates nothing.

use crate::{
    engine::Engine,
    memory::{ScratchArena, Slab},
    plan::{
        invoke, Binding, CallScope, InputType, Place, Plan, Step, SubgraphCall, SubgraphRuns,
        SubgraphTyping, TypedSubgraph, ValueRef, INLINE_INPUTS,
    },
    plugin::{
        CallValues, InferScope, ShapedOutputs, StringOutputs, SubgraphRunner, SubgraphTypes,
        SubgraphValues,
    },
    run_control::RunControl,
    tensor::{byte_size, Tensor, TensorRef},
    value::{RunInput, Value, ValueView},
};
use abi_stable::std_types::{RNone, RSome};
use opal_plugin_api::{
    infer::InferInput, operator::InferCall, tensor::TensorViewMut, DType, OutputType, ValueKind,
};
use smallvec::SmallVec;
use std::{
    cell::RefCell,
    ops::Range,
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

/// Why a run failed. The state stays usable: the next run starts clean.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RunError {
    #[error("model {path}: input '{name}': {reason}")]
    Input {
        path: PathBuf,
        name: String,
        reason: String,
    },
    #[error("model {path}: {node}: plugin '{plugin}' failed in operator {operator}: {message}")]
    Kernel {
        path: PathBuf,
        node: String,
        plugin: String,
        operator: String,
        message: String,
    },
    #[error("model {path}: the run was cancelled after {completed} of its {total} steps")]
    Cancelled {
        path: PathBuf,
        completed: usize,
        total: usize,
    },
    #[error("model {path}: {node}: {reason}")]
    Memory {
        path: PathBuf,
        node: String,
        reason: String,
    },
}

/// What a slot holds during a run.
enum SlotValue {
    Empty,
    /// Written to its place in the slab.
    InSlab,
    Pooled(Tensor),
    /// A sequence, its elements from the pool.
    Sequence(Vec<Tensor>),
    /// An optional without a value.
    None,
}

impl SlotValue {
    fn from_value(value: Value) -> Self {
        match value {
            Value::Tensor(t) => SlotValue::Pooled(t),
            Value::Sequence(elements) => SlotValue::Sequence(elements),
            Value::None => SlotValue::None,
        }
    }

    /// Returns its tensors to the pool.
    fn release(self, engine: &Engine) {
        match self {
            SlotValue::Pooled(t) => engine.pool().put(t),
            SlotValue::Sequence(elements) => Value::Sequence(elements).release(engine),
            SlotValue::Empty | SlotValue::InSlab | SlotValue::None => {}
        }
    }
}

/// One run's intermediates over a plan; reuse it for the next run with the same shapes.
pub struct RunState {
    plan: Arc<Plan>,
    slab: Option<Slab>,
    slots: Vec<SlotValue>,
    /// Graph outputs that are graph inputs, copied so they outlive the caller's inputs.
    passthrough: Vec<Option<Value>>,
    /// Graph outputs too large for the pool (they bypass it), kept for the next run's same
    /// output instead of being freed and allocated again.
    kept: Vec<Option<Tensor>>,
    arena: RefCell<ScratchArena>,
    /// Per step, the compiled subgraphs its kernel ran, kept for the next runs.
    subgraph_runs: Vec<SubgraphRuns>,
    /// Time spent in each step over the runs since profiling was turned on.
    step_times: Option<Vec<Duration>>,
}

impl RunState {
    /// A state for `plan`, with its slab allocated (accounted to the tensors owner).
    pub fn new(engine: &Engine, plan: Arc<Plan>) -> Self {
        RunState {
            slab: Slab::new(plan.slab_bytes(), engine.tensor_owner()),
            slots: (0..plan.slots().len()).map(|_| SlotValue::Empty).collect(),
            passthrough: (0..plan.outputs().len()).map(|_| None).collect(),
            kept: (0..plan.slots().len()).map(|_| None).collect(),
            subgraph_runs: (0..plan.steps().len())
                .map(|_| SubgraphRuns::default())
                .collect(),
            arena: RefCell::new(ScratchArena::new(
                engine.scratch_owner().clone(),
                engine.config().scratch_limit as usize,
            )),
            plan,
            step_times: None,
        }
    }

    /// Starts (or stops) adding up the time each step takes, from zero.
    pub fn set_profiling(&mut self, on: bool) {
        self.step_times = on.then(|| vec![Duration::ZERO; self.plan.steps().len()]);
    }

    /// Time spent in each step of the plan over the runs since profiling was turned on.
    pub fn step_times(&self) -> Option<&[Duration]> {
        self.step_times.as_deref()
    }

    pub fn plan(&self) -> &Arc<Plan> {
        &self.plan
    }

    /// Runs the plan on `inputs` (graph inputs in declaration order). The outputs stay in the
    /// state until the next run or [`RunState::release`].
    pub fn run<I: RunInput>(&mut self, engine: &Engine, inputs: &[I]) -> Result<(), RunError> {
        self.run_steps(engine, inputs, None)
    }

    /// [`RunState::run`], stopping at the first kernel boundary after `control` is cancelled.
    pub fn run_with<I: RunInput>(
        &mut self,
        engine: &Engine,
        inputs: &[I],
        control: &RunControl,
    ) -> Result<(), RunError> {
        control.start(&self.plan);
        let result = self.run_steps(engine, inputs, Some(control));
        control.leave();
        result
    }

    fn run_steps<I: RunInput>(
        &mut self,
        engine: &Engine,
        inputs: &[I],
        control: Option<&RunControl>,
    ) -> Result<(), RunError> {
        self.release(engine);
        self.check_inputs(inputs)?;
        let plan = self.plan.clone();
        for (s, step) in plan.steps().iter().enumerate() {
            if let Some(control) = control {
                if control.is_cancelled() {
                    self.release(engine);
                    return Err(RunError::Cancelled {
                        path: plan.model().path().to_owned(),
                        completed: s,
                        total: plan.steps().len(),
                    });
                }
                control.enter(s);
            }
            let start = self.step_times.is_some().then(Instant::now);
            if let Err(e) = self.run_step(engine, &plan, s, inputs) {
                self.release(engine);
                return Err(e);
            }
            if let (Some(times), Some(start)) = (&mut self.step_times, start) {
                times[s] += start.elapsed();
            }
            for &slot in &step.release {
                std::mem::replace(&mut self.slots[slot], SlotValue::Empty).release(engine);
            }
        }
        self.copy_passthrough_outputs(engine, inputs)
    }

    fn run_step<I: RunInput>(
        &mut self,
        engine: &Engine,
        plan: &Plan,
        step_index: usize,
        inputs: &[I],
    ) -> Result<(), RunError> {
        let step = &plan.steps()[step_index];
        let model = plan.model();
        let node = || plan.describe_step(step);
        let RunState {
            slab,
            slots,
            arena,
            kept,
            subgraph_runs,
            ..
        } = self;
        let slab_range = |slot: usize| match &plan.slots()[slot].place {
            Place::Slab(range) => Some(range.clone()),
            Place::Pool => None,
        };
        let reads: SmallVec<[Range<usize>; INLINE_INPUTS]> = step
            .reads()
            .filter_map(|at| match at {
                ValueRef::Slot(s) => slab_range(s),
                _ => None,
            })
            .collect();
        let writes: SmallVec<[Range<usize>; 4]> =
            step.outputs.iter().filter_map(|&s| slab_range(s)).collect();
        let (slab_reads, slab_writes) = match slab {
            Some(slab) => slab
                .split(&reads, &writes)
                .ok_or_else(|| RunError::Memory {
                    path: model.path().to_owned(),
                    node: node(),
                    reason: "the plan placed an output over a live tensor".to_owned(),
                })?,
            None if reads.is_empty() && writes.is_empty() => Default::default(),
            None => {
                return Err(RunError::Memory {
                    path: model.path().to_owned(),
                    node: node(),
                    reason: format!(
                        "the run's slab of {} bytes could not be allocated",
                        plan.slab_bytes()
                    ),
                })
            }
        };
        let mut slab_reads = slab_reads.into_iter();
        let all_views: SmallVec<[Option<ValueView<'_>>; INLINE_INPUTS]> = step
            .reads()
            .map(|at| match at {
                ValueRef::Absent => None,
                ValueRef::Input(i) => Some(inputs[i].value()),
                ValueRef::Constant(c) => Some(ValueView::Tensor(plan.constant(c))),
                ValueRef::Slot(s) => {
                    let info = &plan.slots()[s];
                    match (&slots[s], &info.shape) {
                        (SlotValue::Pooled(t), _) => Some(ValueView::Tensor(t.as_ref())),
                        (SlotValue::Sequence(elements), _) => Some(ValueView::Sequence(elements)),
                        (SlotValue::None, _) => Some(ValueView::None),
                        (SlotValue::InSlab, Some(shape)) => slab_reads.next().map(|bytes| {
                            ValueView::Tensor(TensorRef::new(info.dtype, shape, bytes))
                        }),
                        _ => None,
                    }
                }
            })
            .collect();
        let (views, captures) = all_views.split_at(step.inputs.len());

        let inferred = if step.infer_at_run_time {
            Some(
                infer_now(engine, plan, step, views, captures)
                    .map_err(|message| kernel_error(plan, step, message))?,
            )
        } else {
            None
        };
        let kinds: SmallVec<[ValueKind; 4]> = step
            .outputs
            .iter()
            .enumerate()
            .map(|(k, &slot)| match &inferred {
                Some((_, kinds)) => kinds.get(k).copied().unwrap_or(ValueKind::TENSOR),
                None => plan.slots()[slot].kind,
            })
            .collect();
        let mut pooled: SmallVec<[Option<Tensor>; 4]> = SmallVec::new();
        let mut unshaped = step.unshaped;
        for (k, &slot) in step.outputs.iter().enumerate() {
            let info = &plan.slots()[slot];
            let bit = 1u64.checked_shl(k as u32).unwrap_or(0);
            if let Place::Slab(_) = info.place {
                pooled.push(None);
                continue;
            }
            if kinds[k] != ValueKind::TENSOR {
                // An optional tensor is shaped in the call; sequences are grown in it.
                if !kinds[k].holds_sequence() {
                    unshaped |= bit;
                }
                pooled.push(None);
                continue;
            }
            if unshaped & bit != 0 {
                pooled.push(None);
                continue;
            }
            let (dtype, shape) = match &inferred {
                Some((types, _)) => {
                    let ty = types.get(k).ok_or_else(|| {
                        kernel_error(
                            plan,
                            step,
                            format!("inference at run time gave no output {k}"),
                        )
                    })?;
                    if ty.shape.iter().any(|&d| d < 0)
                        && step.kernel.shapes_outputs_in_call()
                        && bit != 0
                    {
                        unshaped |= bit;
                        pooled.push(None);
                        continue;
                    }
                    let shape: SmallVec<[usize; 8]> = ty
                        .shape
                        .iter()
                        .map(|&d| usize::try_from(d))
                        .collect::<Result<_, _>>()
                        .map_err(|_| {
                            kernel_error(
                                plan,
                                step,
                                format!(
                                    "inference at run time left output {k} with shape {:?}",
                                    ty.shape.as_slice()
                                ),
                            )
                        })?;
                    (ty.dtype, shape)
                }
                None => (info.dtype, info.shape.clone().unwrap_or_default()),
            };
            if let Some(tensor) = kept[slot]
                .take()
                .filter(|t| t.dtype() == dtype && t.shape() == shape.as_slice())
            {
                pooled.push(Some(tensor));
                continue;
            }
            let bytes = byte_size(dtype, &shape).unwrap_or(usize::MAX);
            let limit = engine.config().memory_limit;
            if (engine.tracker().current_bytes() as u64).saturating_add(bytes as u64) > limit {
                return Err(RunError::Memory {
                    path: model.path().to_owned(),
                    node: node(),
                    reason: format!(
                        "an output of {dtype} {shape:?} would exceed the deployment's memory limit of {limit} bytes (engine.memory_limit)"
                    ),
                });
            }
            let tensor = engine
                .pool()
                .get(dtype, &shape)
                .map_err(|e| RunError::Memory {
                    path: model.path().to_owned(),
                    node: node(),
                    reason: e.to_string(),
                })?;
            pooled.push(Some(tensor));
        }

        let mut slab_writes = slab_writes.into_iter();
        let output_views: SmallVec<[TensorViewMut<'_>; 4]> = step
            .outputs
            .iter()
            .enumerate()
            .zip(pooled.iter_mut())
            .map(|((k, &slot), tensor)| match tensor {
                Some(t) => t.to_abi_mut(),
                None if is_bit(unshaped, k) || kinds[k] != ValueKind::TENSOR => {
                    let dtype = match &inferred {
                        Some((types, _)) => types.get(k).map_or(DType::UNDEFINED, |t| t.dtype),
                        None => plan.slots()[slot].dtype,
                    };
                    TensorViewMut::new(dtype, &[], &mut [])
                }
                None => {
                    let info = &plan.slots()[slot];
                    let shape = info.shape.as_deref().unwrap_or_default();
                    TensorViewMut::new(info.dtype, shape, slab_writes.next().unwrap_or_default())
                }
            })
            .collect();
        let dtypes: SmallVec<[DType; 4]> = step
            .outputs
            .iter()
            .enumerate()
            .map(|(k, &s)| match &inferred {
                Some((types, _)) => types.get(k).map_or(DType::UNDEFINED, |t| t.dtype),
                None => plan.slots()[s].dtype,
            })
            .collect();
        let shaped = (unshaped != 0).then(|| ShapedOutputs::new(engine, unshaped, dtypes.clone()));
        let strings =
            StringOutputs::new(&dtypes, engine.tensor_owner(), engine.config().memory_limit);
        let values = (kinds.iter().any(|&k| k != ValueKind::TENSOR) || !step.subgraphs.is_empty())
            .then(|| CallValues::new(engine, kinds.clone(), dtypes));
        let runs = &mut subgraph_runs[step_index];
        let subgraphs = (!step.subgraphs.is_empty()).then(|| SubgraphCall {
            engine,
            plan,
            step,
            captures,
            runs: RefCell::new(&mut *runs),
        });
        let result = invoke(
            engine,
            &step.kernel,
            &step.owner,
            &step.attributes,
            views,
            &output_views,
            arena,
            Some(step),
            CallScope {
                subgraphs: subgraphs.as_ref().map(|s| s as &dyn SubgraphRunner),
                subgraph_values: subgraphs.as_ref().map(|s| s as &dyn SubgraphValues),
                shaped: shaped.as_ref(),
                values: values.as_ref(),
                strings: strings.as_ref(),
            },
        );
        if let Some(call) = subgraphs {
            call.runs.into_inner().release(engine);
        }
        drop(output_views);
        drop(all_views);
        let mut shaped = shaped.map(ShapedOutputs::into_tensors);
        let mut missing = None;
        let mut value_error = None;
        for (k, (&slot, mut tensor)) in step.outputs.iter().zip(pooled).enumerate() {
            let mut shaped_tensor = shaped
                .as_mut()
                .and_then(|s| s.get_mut(k))
                .and_then(Option::take);
            if let (Some(strings), true) = (&strings, result.is_ok()) {
                for t in tensor.iter_mut().chain(shaped_tensor.iter_mut()) {
                    if let Err(e) = strings.attach(k, t) {
                        value_error.get_or_insert(e);
                    }
                }
            }
            let value = match &values {
                Some(values) if result.is_ok() => match values.take(k, shaped_tensor) {
                    Ok(value) => value.map(SlotValue::from_value),
                    Err(e) => {
                        value_error.get_or_insert(e);
                        Some(SlotValue::Empty)
                    }
                },
                _ => shaped_tensor.map(SlotValue::Pooled),
            };
            slots[slot] = match (tensor, value) {
                (Some(t), _) => SlotValue::Pooled(t),
                (None, Some(value)) => value,
                (None, None) if is_bit(unshaped, k) => {
                    missing.get_or_insert(k);
                    SlotValue::Empty
                }
                (None, None) => SlotValue::InSlab,
            };
        }
        if let Some(values) = &values {
            values.release();
        }
        result.map_err(|message| kernel_error(plan, step, message))?;
        if let Some(message) = value_error {
            return Err(kernel_error(plan, step, message));
        }
        match missing {
            Some(k) => Err(kernel_error(
                plan,
                step,
                format!("the kernel gave output {k} no shape; its shape is known only from the call, so the kernel must give it"),
            )),
            None => Ok(()),
        }
    }

    fn copy_passthrough_outputs<I: RunInput>(
        &mut self,
        engine: &Engine,
        inputs: &[I],
    ) -> Result<(), RunError> {
        let model = self.plan.model();
        for (k, &at) in self.plan.outputs().iter().enumerate() {
            if let ValueRef::Input(i) = at {
                let copy = inputs[i]
                    .value()
                    .to_owned(engine)
                    .map_err(|e| RunError::Input {
                        path: model.path().to_owned(),
                        name: model.value_name(model.inputs[i]).to_owned(),
                        reason: e.to_string(),
                    })?;
                self.passthrough[k] = Some(copy);
            }
        }
        Ok(())
    }

    /// Graph output `k` of the last run, when it is a tensor.
    pub fn output(&self, k: usize) -> Option<TensorRef<'_>> {
        self.output_value(k)?.tensor()
    }

    /// Graph output `k` of the last run, of any kind.
    pub fn output_value(&self, k: usize) -> Option<ValueView<'_>> {
        match *self.plan.outputs().get(k)? {
            ValueRef::Slot(s) => match &self.slots[s] {
                SlotValue::Pooled(t) => Some(ValueView::Tensor(t.as_ref())),
                SlotValue::Sequence(elements) => Some(ValueView::Sequence(elements)),
                SlotValue::None => Some(ValueView::None),
                _ => None,
            },
            ValueRef::Constant(c) => Some(ValueView::Tensor(self.plan.constant(c))),
            ValueRef::Input(_) => self.passthrough[k].as_ref().map(Value::view),
            ValueRef::Absent => None,
        }
    }

    /// Takes graph output `k` of the last run out of the state, a copy when the state does
    /// not own it alone (a constant, or the slot of another output too).
    pub fn take_output(&mut self, engine: &Engine, k: usize) -> Option<Value> {
        let at = *self.plan.outputs().get(k)?;
        let shared = self.plan.outputs().iter().filter(|&&o| o == at).count() > 1;
        match at {
            ValueRef::Slot(s) if !shared => {
                match std::mem::replace(&mut self.slots[s], SlotValue::Empty) {
                    SlotValue::Pooled(t) => Some(Value::Tensor(t)),
                    SlotValue::Sequence(elements) => Some(Value::Sequence(elements)),
                    SlotValue::None => Some(Value::None),
                    other => {
                        self.slots[s] = other;
                        None
                    }
                }
            }
            ValueRef::Input(_) if !shared => self.passthrough[k].take(),
            _ => self.output_value(k)?.to_owned(engine).ok(),
        }
    }

    /// Every graph output of the last run, in order.
    pub fn outputs(&self) -> impl Iterator<Item = TensorRef<'_>> + '_ {
        (0..self.plan.outputs().len()).filter_map(|k| self.output(k))
    }

    /// Returns every pooled tensor the state holds to the pool.
    pub fn release(&mut self, engine: &Engine) {
        let model = self.plan.model();
        for (s, slot) in self.slots.iter_mut().enumerate() {
            match std::mem::replace(slot, SlotValue::Empty) {
                SlotValue::Pooled(t) => {
                    let is_output = self.plan.slots()[s]
                        .value
                        .is_some_and(|v| model.outputs.contains(&v));
                    let reusable = t.dtype() != DType::STRING;
                    if is_output && reusable && engine.pool().bypasses(t.bytes().len()) {
                        self.kept[s] = Some(t);
                    } else {
                        engine.pool().put(t);
                    }
                }
                other => other.release(engine),
            }
        }
        for value in self.passthrough.iter_mut().filter_map(Option::take) {
            value.release(engine);
        }
    }

    fn check_inputs<I: RunInput>(&self, inputs: &[I]) -> Result<(), RunError> {
        let model = self.plan.model();
        let error = |k: usize, reason: String| RunError::Input {
            path: model.path().to_owned(),
            name: model
                .inputs
                .get(k)
                .map_or("?", |&id| model.value_name(id))
                .to_owned(),
            reason,
        };
        let expected = self.plan.input_values();
        if inputs.len() != expected.len() {
            return Err(error(
                inputs.len().min(expected.len()),
                format!(
                    "the model takes {} inputs, {} were given",
                    expected.len(),
                    inputs.len()
                ),
            ));
        }
        for (k, (input, expected)) in inputs.iter().zip(expected).enumerate() {
            let value = input.value();
            if !expected.accepts(&value) {
                let (dtype, dims) = value.infer_type();
                let reason = match value {
                    ValueView::Tensor(_) if expected.given == ValueKind::TENSOR => format!(
                        "the plan expects {} {:?}, got {dtype} {dims:?}",
                        expected.dtype, expected.dims
                    ),
                    _ => format!(
                        "the plan expects {} of {} {:?}, got a {} of {dtype} {dims:?}",
                        expected.given.described(),
                        expected.dtype,
                        expected.dims,
                        value.describe()
                    ),
                };
                return Err(error(k, reason));
            }
            let tensors: &[TensorRef<'_>] = match &value {
                ValueView::Tensor(t) => std::slice::from_ref(t),
                _ => &[],
            };
            let elements = match value {
                ValueView::Sequence(elements) => elements,
                _ => &[],
            };
            let sizes_fit = tensors
                .iter()
                .copied()
                .chain(elements.iter().map(Tensor::as_ref))
                .all(|t| {
                    Some(t.data.len()) == byte_size(t.dtype, t.shape) && t.strings_are_valid()
                });
            if !sizes_fit {
                return Err(error(
                    k,
                    "its bytes do not match its dtype and shape".to_owned(),
                ));
            }
        }
        Ok(())
    }
}

/// Whether bit `k` of `mask` is set.
fn is_bit(mask: u64, k: usize) -> bool {
    u32::try_from(k)
        .ok()
        .and_then(|k| 1u64.checked_shl(k))
        .is_some_and(|bit| mask & bit != 0)
}

/// Output types and kinds from the kernel's inference function, on the actual inputs (and,
/// for a node with subgraphs, the values they read).
fn infer_now(
    engine: &Engine,
    plan: &Plan,
    step: &Step,
    inputs: &[Option<ValueView<'_>>],
    captures: &[Option<ValueView<'_>>],
) -> Result<(Vec<OutputType>, SmallVec<[ValueKind; 4]>), String> {
    let types: Vec<(DType, Vec<i64>)> = inputs
        .iter()
        .map(|v| v.map_or((DType::UNDEFINED, Vec::new()), |v| v.infer_type()))
        .collect();
    let model_inputs = &plan.model().nodes[step.node].inputs;
    let input_kinds: SmallVec<[ValueKind; 8]> = inputs
        .iter()
        .zip(&step.inputs)
        .map(|(v, at)| {
            let planned = match *at {
                ValueRef::Slot(s) => plan.slots()[s].kind,
                ValueRef::Input(k) => plan.input_values()[k].kind,
                ValueRef::Constant(_) | ValueRef::Absent => ValueKind::TENSOR,
            };
            v.map_or(ValueKind::TENSOR, |v| InputType::kind_of(planned, &v))
        })
        .collect();
    let input_name = |i: usize| {
        model_inputs
            .get(i)
            .copied()
            .flatten()
            .map_or("?", |id| plan.model().value_name(id))
    };
    if !step.kernel.reads_value_kinds() {
        if let Some(i) = input_kinds.iter().position(|&k| k != ValueKind::TENSOR) {
            let name = input_name(i);
            return Err(format!(
                "input '{name}' is {}, but the operator takes tensors only",
                input_kinds[i].described()
            ));
        }
    }
    if !step.kernel.takes_strings() {
        if let Some(i) = types.iter().position(|(dtype, _)| *dtype == DType::STRING) {
            let name = input_name(i);
            return Err(format!(
                "input '{name}' is a string tensor, but the operator does not take strings"
            ));
        }
    }
    let infer_inputs: Vec<InferInput<'_>> = inputs
        .iter()
        .zip(&types)
        .enumerate()
        .map(|(i, (v, (dtype, shape)))| InferInput {
            dtype: *dtype,
            shape: shape.as_slice().into(),
            value: match v {
                Some(ValueView::Tensor(t)) if step.kernel.needs_value(i) => RSome(t.to_abi()),
                _ => RNone,
            },
        })
        .collect();
    let registry = plan.registry().clone();
    let mut captured = captures.iter();
    let typing = SubgraphTyping {
        engine,
        registry: &registry,
        subgraphs: step
            .subgraphs
            .iter()
            .map(|s| TypedSubgraph {
                attribute: &s.attribute,
                graph: &s.graph,
                captures: s
                    .captures
                    .iter()
                    .zip(captured.by_ref())
                    .map(|(&at, value)| match (at, value) {
                        (ValueRef::Constant(c), _) => {
                            Binding::Constant(plan.shared_constant(c).clone())
                        }
                        (_, Some(v)) => Binding::given(v),
                        (_, None) => {
                            Binding::Runtime(ValueKind::TENSOR, DType::UNDEFINED, Vec::new())
                        }
                    })
                    .collect(),
            })
            .collect(),
    };
    let scope = InferScope::new(
        (!step.subgraphs.is_empty()).then_some(&typing as &dyn SubgraphTypes),
        &input_kinds,
        step.outputs.len(),
    );
    let types = step.attributes.with_abi(|attributes| {
        let call = InferCall {
            inputs: infer_inputs.as_slice().into(),
            attributes: attributes.into(),
            output_count: step.outputs.len(),
        };
        step.kernel.infer_in(&call, &scope)
    })?;
    Ok((types, scope.into_output_kinds()))
}

fn kernel_error(plan: &Plan, step: &Step, message: String) -> RunError {
    let model = plan.model();
    RunError::Kernel {
        path: model.path().to_owned(),
        node: plan.describe_step(step),
        plugin: step.kernel.plugin_name().to_owned(),
        operator: step.kernel.describe(),
        message,
    }
}
