//! A node's subgraphs as the host serves them to its kernel: typed during inference by
//! compiling them for the types the kernel names, and run during a call as plans of their own
//! with run states kept per node, so that a steady loop compiles and allocates nothing.

use super::{Binding, Plan, Step, ValueRef, INLINE_INPUTS};
use crate::{
    engine::Engine,
    onnx::Model,
    plugin::{Registry, SubgraphRunner, SubgraphTypes, SubgraphValues},
    run_state::{RunError, RunState},
    tensor::TensorRef,
    value::{Value, ValueView},
};
use opal_plugin_api::{infer::InferInput, tensor::TensorView, value::ValueType, ValueKind};
use smallvec::SmallVec;
use std::{cell::RefCell, sync::Arc};

/// A subgraph being typed, with how it sees the values it reads from its node's graph.
pub(crate) struct TypedSubgraph<'a> {
    pub attribute: &'a str,
    pub graph: &'a Arc<Model>,
    pub captures: Vec<Binding>,
}

/// Inference of a node that has subgraphs: the kernel names a subgraph and the types of its
/// declared inputs, the host compiles it to tell the output types.
pub(crate) struct SubgraphTyping<'a> {
    pub engine: &'a Engine,
    pub registry: &'a Arc<Registry>,
    pub subgraphs: Vec<TypedSubgraph<'a>>,
}

impl SubgraphTypes for SubgraphTyping<'_> {
    fn has(&self, name: &str) -> bool {
        self.subgraphs.iter().any(|s| s.attribute == name)
    }

    fn types(
        &self,
        name: &str,
        inputs: &[InferInput<'_>],
        kinds: &[ValueKind],
    ) -> Result<Vec<ValueType>, String> {
        let subgraph = self
            .subgraphs
            .iter()
            .find(|s| s.attribute == name)
            .ok_or_else(|| format!("the node has no graph attribute '{name}'"))?;
        let graph = subgraph.graph;
        check_count(name, graph, inputs.len())?;
        let bindings: Vec<Binding> = inputs
            .iter()
            .zip(kinds)
            .map(|(i, &kind)| Binding::Runtime(kind, i.dtype, i.shape.to_vec()))
            .chain(subgraph.captures.iter().cloned())
            .collect();
        Plan::infer_bound(self.engine, graph, &bindings, self.registry.clone())
            .map_err(|e| format!("subgraph '{name}': {}", e.within_file()))
    }
}

fn check_count(name: &str, graph: &Model, given: usize) -> Result<(), String> {
    if given == graph.declared_inputs {
        return Ok(());
    }
    Err(format!(
        "subgraph '{name}' declares {} inputs, {given} were given",
        graph.declared_inputs
    ))
}

/// One compiled subgraph of a step with its run state, for one set of input types.
struct Execution {
    /// Index of the subgraph in its step.
    subgraph: usize,
    state: RunState,
}

/// A step's subgraph executions, kept by its run's state across runs.
#[derive(Default)]
pub(crate) struct SubgraphRuns {
    executions: Vec<Execution>,
    /// Per subgraph of the step, the execution that ran last.
    last: SmallVec<[Option<usize>; 2]>,
}

impl SubgraphRuns {
    /// Returns the outputs the executions hold to the pool, once the node's call is over.
    pub(crate) fn release(&mut self, engine: &Engine) {
        for execution in &mut self.executions {
            execution.state.release(engine);
        }
        self.last.clear();
    }
}

/// A kernel call's access to its step's subgraphs.
pub(crate) struct SubgraphCall<'a> {
    pub engine: &'a Engine,
    pub plan: &'a Plan,
    pub step: &'a Step,
    /// The values the subgraphs read, in the order of [`Step::reads`] after the inputs.
    pub captures: &'a [Option<ValueView<'a>>],
    pub runs: RefCell<&'a mut SubgraphRuns>,
}

impl SubgraphCall<'_> {
    /// The captured values of subgraph `index`, with where each comes from.
    fn captures_of(&self, index: usize) -> impl Iterator<Item = (ValueRef, Option<ValueView<'_>>)> {
        let start: usize = self.step.subgraphs[..index]
            .iter()
            .map(|s| s.captures.len())
            .sum();
        let subgraph = &self.step.subgraphs[index];
        subgraph.captures.iter().copied().zip(
            self.captures[start..start + subgraph.captures.len()]
                .iter()
                .copied(),
        )
    }

    /// Whether `state`'s plan was compiled for these inputs and captured values.
    fn fits(&self, index: usize, state: &RunState, inputs: &[ValueView<'_>]) -> bool {
        let expected = state.plan().input_values();
        let runtime_captures = self
            .captures_of(index)
            .filter(|(at, _)| !matches!(at, ValueRef::Constant(_)))
            .map(|(_, value)| value.unwrap_or(ValueView::None));
        let given = inputs.iter().copied().chain(runtime_captures);
        let mut count = 0;
        for (value, expected) in given.zip(expected) {
            if !expected.accepts(&value) {
                return false;
            }
            count += 1;
        }
        count == expected.len()
    }

    /// Compiles subgraph `index` for these inputs.
    fn compile(&self, index: usize, inputs: &[ValueView<'_>]) -> Result<RunState, String> {
        let subgraph = &self.step.subgraphs[index];
        let mut bindings: Vec<Binding> = inputs.iter().map(Binding::given).collect();
        for (at, value) in self.captures_of(index) {
            bindings.push(match (at, value) {
                (ValueRef::Constant(c), _) => {
                    Binding::Constant(self.plan.shared_constant(c).clone())
                }
                (_, Some(v)) => Binding::given(&v),
                (_, None) => {
                    return Err(format!(
                        "subgraph '{}' reads a value the run does not hold",
                        subgraph.attribute
                    ))
                }
            });
        }
        let plan = Plan::compile_bound(
            self.engine,
            &subgraph.graph,
            &bindings,
            self.plan.registry().clone(),
        )
        .map_err(|e| format!("subgraph '{}': {}", subgraph.attribute, e.within_file()))?;
        Ok(RunState::new(self.engine, Arc::new(plan)))
    }

    /// The execution of subgraph `name` that ran last in this call.
    fn last_state<'r>(runs: &'r SubgraphRuns, step: &Step, name: &str) -> Option<&'r RunState> {
        let at = step
            .subgraphs
            .iter()
            .position(|s| s.attribute == name)
            .and_then(|s| runs.last.get(s).copied().flatten())?;
        Some(&runs.executions[at].state)
    }
}

impl SubgraphRunner for SubgraphCall<'_> {
    fn has(&self, name: &str) -> bool {
        self.step.subgraphs.iter().any(|s| s.attribute == name)
    }

    fn run(&self, name: &str, inputs: &[TensorView<'_>]) -> Result<usize, String> {
        let values: SmallVec<[ValueView<'_>; INLINE_INPUTS]> = inputs
            .iter()
            .map(|v| {
                ValueView::Tensor(TensorRef::new(
                    v.dtype,
                    v.shape.as_slice(),
                    v.data.as_slice(),
                ))
            })
            .collect();
        self.run_values(name, &values)
    }

    fn with_output(&self, name: &str, index: usize, f: &mut dyn FnMut(Option<TensorView<'_>>)) {
        let runs = self.runs.borrow();
        let output = Self::last_state(&runs, self.step, name).and_then(|s| s.output(index));
        f(output.map(TensorRef::to_abi));
    }
}

impl SubgraphValues for SubgraphCall<'_> {
    fn run_values(&self, name: &str, inputs: &[ValueView<'_>]) -> Result<usize, String> {
        let index = self
            .step
            .subgraphs
            .iter()
            .position(|s| s.attribute == name)
            .ok_or_else(|| format!("the node has no graph attribute '{name}'"))?;
        let subgraph = &self.step.subgraphs[index];
        check_count(name, &subgraph.graph, inputs.len())?;
        let mut runs = self.runs.borrow_mut();
        let found = runs
            .executions
            .iter()
            .position(|e| e.subgraph == index && self.fits(index, &e.state, inputs));
        let at = match found {
            Some(at) => at,
            None => {
                let state = self.compile(index, inputs)?;
                runs.executions.push(Execution {
                    subgraph: index,
                    state,
                });
                runs.executions.len() - 1
            }
        };
        if runs.last.len() <= index {
            runs.last.resize(self.step.subgraphs.len(), None);
        }
        runs.last[index] = Some(at);
        let values: SmallVec<[ValueView<'_>; INLINE_INPUTS]> = inputs
            .iter()
            .copied()
            .chain(
                self.captures_of(index)
                    .filter(|(at, _)| !matches!(at, ValueRef::Constant(_)))
                    .filter_map(|(_, value)| value),
            )
            .collect();
        let state = &mut runs.executions[at].state;
        state
            .run(self.engine, &values)
            .map_err(|e| format!("subgraph '{name}': {}", without_file(&e, &subgraph.graph)))?;
        Ok(state.plan().outputs().len())
    }

    fn take_output(&self, name: &str, index: usize) -> Option<Value> {
        let mut runs = self.runs.borrow_mut();
        let at = self
            .step
            .subgraphs
            .iter()
            .position(|s| s.attribute == name)
            .and_then(|s| runs.last.get(s).copied().flatten())?;
        runs.executions[at].state.take_output(self.engine, index)
    }

    fn with_output_value(&self, name: &str, index: usize, f: &mut dyn FnMut(ValueView<'_>)) {
        let runs = self.runs.borrow();
        if let Some(value) =
            Self::last_state(&runs, self.step, name).and_then(|s| s.output_value(index))
        {
            f(value);
        }
    }
}

/// A run error's message without the `model <file>: ` it starts with, for a subgraph's error
/// reported inside its node's.
fn without_file(error: &RunError, graph: &Model) -> String {
    let text = error.to_string();
    let prefix = format!("model {}: ", graph.path().display());
    text.strip_prefix(&prefix)
        .map_or(text.clone(), str::to_owned)
}
