//! Compiling a model into a [`Plan`] for concrete input types: resolve each node's kernel, infer
//! its outputs through the plugin, fold nodes whose inputs are constant (or read only for their
//! known shapes), and place each intermediate in the slab or the pool.

use super::{
    constant_mask,
    fusion::{fuse_steps, ValueTypes},
    invoke,
    memory_plan::{place, Lifetime},
    order::topological_order,
    subgraphs::{SubgraphTyping, TypedSubgraph},
    CallScope, InputType, Place, Plan, PlanConstant, PreparedData, SlotInfo, Step, StepSubgraph,
    ValueRef,
};
use crate::{
    engine::Engine,
    memory::{AlignedBuffer, Owner, ScratchArena},
    onnx::{Constant, Dim, Model, Node, NodeAttributes},
    plugin::{InferScope, OperatorEntry, Registry, StringOutputs, SubgraphTypes},
    tensor::{byte_size, Shape, Tensor, TensorRef},
    value::ValueView,
};
use abi_stable::std_types::{RNone, RSome};
use opal_plugin_api::{
    infer::InferInput, operator::InferCall, tensor::TensorViewMut, value::ValueType, DType,
    OutputType, ValueKind,
};
use smallvec::SmallVec;
use std::{cell::RefCell, fmt, path::PathBuf, sync::Arc};

/// A model that cannot be compiled: names the file and, where one is at fault, the node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanError {
    pub path: PathBuf,
    /// `node 'name' (OpType)`, when a node is at fault.
    pub node: Option<String>,
    pub reason: String,
}

impl fmt::Display for PlanError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "model {}: ", self.path.display())?;
        if let Some(node) = &self.node {
            write!(f, "{node}: ")?;
        }
        f.write_str(&self.reason)
    }
}

impl std::error::Error for PlanError {}

impl PlanError {
    /// The error without the file, for a subgraph's error reported inside its node's.
    pub fn within_file(&self) -> String {
        match &self.node {
            Some(node) => format!("{node}: {}", self.reason),
            None => self.reason.clone(),
        }
    }
}

/// What an input of a graph being compiled is bound to.
#[derive(Debug, Clone)]
pub enum Binding {
    /// A value the caller passes on each run, of this kind, dtype and shape (of a sequence's
    /// elements; a dim of -1 is known only then: such a graph is compiled only to infer its
    /// output types, unless the kind is a sequence). A none given for an optional is bound as
    /// an optional of dtype `UNDEFINED`.
    Runtime(ValueKind, DType, Vec<i64>),
    /// A constant of an enclosing graph's plan, read by a subgraph.
    Constant(Arc<Constant>),
}

impl Binding {
    /// A tensor given on each run, of known shape.
    pub fn runtime(dtype: DType, shape: &[usize]) -> Self {
        Binding::Runtime(ValueKind::TENSOR, dtype, dims_of(shape))
    }

    /// The binding of a value given on each run.
    pub fn given(value: &ValueView<'_>) -> Self {
        let (dtype, dims) = value.infer_type();
        let kind = match value {
            ValueView::Tensor(_) => ValueKind::TENSOR,
            ValueView::Sequence(_) => ValueKind::SEQUENCE,
            ValueView::None => ValueKind::OPTIONAL_TENSOR,
        };
        Binding::Runtime(kind, dtype, dims)
    }
}

/// What compilation knows of a value: where it is, its dtype, and its dims (-1: known only at
/// run time).
#[derive(Clone)]
struct Known {
    at: ValueRef,
    kind: ValueKind,
    dtype: DType,
    shape: Vec<i64>,
}

impl Known {
    /// The dims of a tensor, when all are known.
    fn fixed_shape(&self) -> Option<Shape> {
        if self.kind != ValueKind::TENSOR {
            return None;
        }
        self.shape
            .iter()
            .map(|&d| usize::try_from(d).ok())
            .collect()
    }
}

fn dims_of(shape: &[usize]) -> Vec<i64> {
    shape.iter().map(|&d| d as i64).collect()
}

/// A subgraph of the node being compiled, with what it reads from this graph.
struct NodeSubgraph {
    attribute: String,
    graph: Arc<Model>,
    captures: Vec<Known>,
}

/// The subgraphs of a step, reading their captured values where this graph holds them.
fn step_subgraphs(subgraphs: Vec<NodeSubgraph>) -> Vec<StepSubgraph> {
    subgraphs
        .into_iter()
        .map(|s| StepSubgraph {
            attribute: s.attribute,
            graph: s.graph,
            captures: s.captures.into_iter().map(|k| k.at).collect(),
        })
        .collect()
}

/// An output as inference left it: its value, dtype, and shape if known ahead.
type InferredOutput = (Option<usize>, DType, Option<Shape>);

impl Plan {
    /// Compiles `model` for graph inputs of `input_types`, with the engine's current registry.
    pub fn compile(
        engine: &Engine,
        model: &Arc<Model>,
        input_types: &[(DType, Shape)],
    ) -> Result<Plan, PlanError> {
        Plan::compile_with(engine, model, input_types, engine.registry())
    }

    /// Compiles with the kernels of `registry` rather than the engine's current snapshot (to
    /// try a candidate registry before it is published).
    pub fn compile_with(
        engine: &Engine,
        model: &Arc<Model>,
        input_types: &[(DType, Shape)],
        registry: Arc<Registry>,
    ) -> Result<Plan, PlanError> {
        let bindings: Vec<Binding> = input_types
            .iter()
            .map(|(dtype, shape)| Binding::runtime(*dtype, shape))
            .collect();
        Compiler::new(engine, model, registry, DeclaredShapes::Enforced).compile(&bindings)
    }

    /// Compiles a subgraph (or any graph) whose inputs are bound to `bindings`, one per input
    /// of `graph`; the plan's inputs are the runtime ones, in order, whose shapes must be known.
    pub fn compile_bound(
        engine: &Engine,
        graph: &Arc<Model>,
        bindings: &[Binding],
        registry: Arc<Registry>,
    ) -> Result<Plan, PlanError> {
        Compiler::new(engine, graph, registry, DeclaredShapes::Hints).compile(bindings)
    }

    /// The output kinds and types of `graph` with its inputs bound to `bindings` (dims of -1
    /// allowed): its nodes inferred and folded as a compilation would, nothing placed.
    pub fn infer_bound(
        engine: &Engine,
        graph: &Arc<Model>,
        bindings: &[Binding],
        registry: Arc<Registry>,
    ) -> Result<Vec<ValueType>, PlanError> {
        Compiler::new(engine, graph, registry, DeclaredShapes::Hints).infer_outputs(bindings)
    }
}

/// Whether the shapes a graph declares for its inputs are checked against the ones bound.
#[derive(Clone, Copy, PartialEq, Eq)]
enum DeclaredShapes {
    /// A model's inputs: a shape that does not fit is refused.
    Enforced,
    /// A subgraph's inputs: the shapes its node passes are the ones it runs with. Exporters
    /// declare a Loop body's iteration number or condition as `[1]` where the Loop passes a
    /// scalar, and onnxruntime runs such bodies.
    Hints,
}

struct Compiler<'e> {
    engine: &'e Engine,
    model: &'e Arc<Model>,
    registry: Arc<Registry>,
    declared_shapes: DeclaredShapes,
    known: Vec<Option<Known>>,
    constants: Vec<PlanConstant>,
    /// Bytes of the constants folded so far: they are held as long as the plan.
    folded_bytes: u64,
    slots: Vec<SlotInfo>,
    steps: Vec<Step>,
    /// The declared kind of each input given at run time.
    runtime_kinds: Vec<ValueKind>,
}

impl<'e> Compiler<'e> {
    fn new(
        engine: &'e Engine,
        model: &'e Arc<Model>,
        registry: Arc<Registry>,
        declared_shapes: DeclaredShapes,
    ) -> Self {
        Compiler {
            engine,
            model,
            registry,
            declared_shapes,
            known: vec![None; model.values.len()],
            constants: Vec::new(),
            folded_bytes: 0,
            slots: Vec::new(),
            steps: Vec::new(),
            runtime_kinds: Vec::new(),
        }
    }

    fn error(&self, node: Option<&Node>, reason: impl Into<String>) -> PlanError {
        PlanError {
            path: self.model.path().to_owned(),
            node: node.map(Node::describe),
            reason: reason.into(),
        }
    }

    /// Binds the inputs and constants, then infers (and folds) every node in order.
    fn add_nodes(&mut self, bindings: &[Binding]) -> Result<(), PlanError> {
        self.check_operators()?;
        self.bind_inputs(bindings)?;
        for (&id, constant) in &self.model.constants {
            self.known[id] = Some(Known {
                at: ValueRef::Constant(self.constants.len()),
                kind: ValueKind::TENSOR,
                dtype: constant.dtype,
                shape: dims_of(&constant.shape),
            });
            self.constants.push(PlanConstant::Model(constant.clone()));
        }
        let order = topological_order(self.model)
            .map_err(|(node, reason)| self.error(Some(&self.model.nodes[node]), reason))?;
        for index in order {
            self.add_node(index)?;
        }
        Ok(())
    }

    fn infer_outputs(mut self, bindings: &[Binding]) -> Result<Vec<ValueType>, PlanError> {
        self.add_nodes(bindings)?;
        self.model
            .outputs
            .iter()
            .map(|&id| match &self.known[id] {
                Some(k) => Ok(ValueType {
                    kind: k.kind,
                    ty: OutputType::new(k.dtype, k.shape.clone()),
                }),
                None => Err(self.error(
                    None,
                    format!(
                        "graph output '{}' is not produced by any node",
                        self.model.value_name(id)
                    ),
                )),
            })
            .collect()
    }

    fn compile(mut self, bindings: &[Binding]) -> Result<Plan, PlanError> {
        self.add_nodes(bindings)?;
        let input_values: Vec<InputType> = bindings
            .iter()
            .filter_map(|b| match b {
                Binding::Runtime(given, dtype, dims) => Some((*given, *dtype, dims)),
                Binding::Constant(_) => None,
            })
            .zip(&self.runtime_kinds)
            .map(|((given, dtype, dims), &kind)| InputType {
                kind,
                given,
                dtype,
                dims: dims.clone(),
            })
            .collect();
        let input_types: Vec<(DType, Shape)> = input_values
            .iter()
            .map(|t| {
                let dims = t.dims.iter().map(|&d| usize::try_from(d).unwrap_or(0));
                (t.dtype, dims.collect())
            })
            .collect();
        if self.engine.config().fusion {
            self.fuse(&input_types);
        }
        let (slab_bytes, liveness_lower_bound) = self.place_intermediates();
        let limit = self.engine.config().memory_limit;
        if slab_bytes as u64 > limit {
            return Err(self.error(
                None,
                format!(
                    "its intermediates need {slab_bytes} bytes at once (at least {liveness_lower_bound}), more than the deployment's memory limit of {limit} bytes (engine.memory_limit)"
                ),
            ));
        }
        let outputs = self
            .model
            .outputs
            .iter()
            .map(|&id| match &self.known[id] {
                Some(k) => Ok(k.at),
                None => Err(self.error(
                    None,
                    format!(
                        "graph output '{}' is not produced by any node",
                        self.model.value_name(id)
                    ),
                )),
            })
            .collect::<Result<_, _>>()?;
        Ok(Plan {
            model: self.model.clone(),
            registry: self.registry,
            input_types,
            input_values,
            constants: self.constants,
            slots: self.slots,
            steps: self.steps,
            outputs,
            slab_bytes,
            liveness_lower_bound,
        })
    }

    fn bind_inputs(&mut self, bindings: &[Binding]) -> Result<(), PlanError> {
        let model = self.model;
        if bindings.len() != model.inputs.len() {
            return Err(self.error(
                None,
                format!(
                    "the model has {} inputs, {} were given",
                    model.declared_inputs,
                    bindings.len()
                        - (model.inputs.len() - model.declared_inputs).min(bindings.len())
                ),
            ));
        }
        for &id in model.inputs.iter().chain(&model.outputs) {
            if let Some(kind) = model.values[id].unsupported {
                return Err(self.error(
                    None,
                    format!(
                        "graph input or output '{}' has type {kind}; opal runs tensors, sequences of tensors and optionals of either",
                        model.value_name(id)
                    ),
                ));
            }
        }
        let mut runtime_inputs = 0;
        for (position, (&id, binding)) in model.inputs.iter().zip(bindings).enumerate() {
            let (given, dtype, shape) = match binding {
                Binding::Constant(constant) => {
                    self.known[id] = Some(Known {
                        at: ValueRef::Constant(self.constants.len()),
                        kind: ValueKind::TENSOR,
                        dtype: constant.dtype,
                        shape: dims_of(&constant.shape),
                    });
                    self.constants.push(PlanConstant::Model(constant.clone()));
                    continue;
                }
                Binding::Runtime(given, dtype, shape) => (*given, *dtype, shape),
            };
            let declared = &model.values[id];
            let is_none = given.is_optional() && dtype == DType::UNDEFINED;
            // A value a subgraph reads from an enclosing graph has the kind it has there.
            let declared_kind = if position < model.declared_inputs {
                declared.kind
            } else {
                given
            };
            let fits = if is_none {
                declared_kind.is_optional()
            } else {
                given.holds_sequence() == declared_kind.holds_sequence()
            };
            if !fits {
                let what = if is_none {
                    "none".to_owned()
                } else {
                    given.element().described()
                };
                return Err(self.error(
                    None,
                    format!(
                        "input '{}' is declared {}, but {what} was given",
                        declared.name,
                        declared.kind.described()
                    ),
                ));
            }
            let kind = declared_kind;
            self.runtime_kinds.push(kind);
            // An empty sequence, or none, has the dtype its declaration gives.
            let dtype = match declared.dtype {
                Some(expected) if dtype == DType::UNDEFINED && kind != ValueKind::TENSOR => {
                    expected
                }
                _ => dtype,
            };
            if kind != ValueKind::TENSOR {
                self.known[id] = Some(Known {
                    at: ValueRef::Input(runtime_inputs),
                    kind,
                    dtype,
                    shape: shape.clone(),
                });
                runtime_inputs += 1;
                continue;
            }
            let declared = &model.values[id];
            if let Some(expected) = declared.dtype {
                if expected != dtype {
                    return Err(self.error(
                        None,
                        format!("input '{}' must be {expected}, got {dtype}", declared.name),
                    ));
                }
            }
            let checked_shape = match self.declared_shapes {
                DeclaredShapes::Enforced => declared.shape.as_ref(),
                DeclaredShapes::Hints => None,
            };
            if let Some(dims) = checked_shape {
                let fits = dims.len() == shape.len()
                    && dims.iter().zip(shape).all(|(d, &n)| match d {
                        Dim::Fixed(f) => n < 0 || *f as i64 == n,
                        _ => true,
                    });
                if !fits {
                    return Err(self.error(
                        None,
                        format!(
                            "input '{}' must have shape {}, got {}",
                            declared.name,
                            describe_dims(dims),
                            describe_known(shape)
                        ),
                    ));
                }
            }
            self.known[id] = Some(Known {
                at: ValueRef::Input(runtime_inputs),
                kind,
                dtype,
                shape: shape.clone(),
            });
            runtime_inputs += 1;
        }
        Ok(())
    }

    fn add_node(&mut self, index: usize) -> Result<(), PlanError> {
        let model = self.model;
        let node = &model.nodes[index];
        let kernel = self.resolve(node)?;
        let inputs: Vec<Option<Known>> = node
            .inputs
            .iter()
            .map(|i| i.and_then(|id| self.known[id].clone()))
            .collect();
        let attributes = NodeAttributes::new(&node.attributes, self.engine.weights_owner())
            .map_err(|e| self.error(Some(node), e))?;
        let subgraphs = self.subgraphs_of(node)?;
        let read = || {
            inputs
                .iter()
                .flatten()
                .chain(subgraphs.iter().flat_map(|s| &s.captures))
        };
        if !kernel.reads_value_kinds() {
            let given = node.inputs.iter().zip(&inputs).find_map(|(id, k)| {
                let k = k.as_ref().filter(|k| k.kind != ValueKind::TENSOR)?;
                Some((id.map_or("?", |id| model.value_name(id)), k.kind))
            });
            if let Some((name, kind)) = given {
                return Err(self.error(
                    Some(node),
                    format!(
                        "input '{name}' is {}, but operator {} of plugin '{}' takes tensors only",
                        kind.described(),
                        kernel.describe(),
                        kernel.plugin_name()
                    ),
                ));
            }
        }
        if !kernel.takes_strings() {
            let given = node.inputs.iter().zip(&inputs).find_map(|(id, k)| {
                k.as_ref().filter(|k| k.dtype == DType::STRING)?;
                Some(id.map_or("?", |id| model.value_name(id)))
            });
            if let Some(name) = given {
                return Err(self.error(
                    Some(node),
                    format!(
                        "input '{name}' is a string tensor, but operator {} of plugin '{}' does not take strings",
                        kernel.describe(),
                        kernel.plugin_name()
                    ),
                ));
            }
        }
        let untyped_input =
            read().any(|k| k.kind == ValueKind::TENSOR && k.dtype == DType::UNDEFINED);
        let inputs_known = read().all(|k| k.fixed_shape().is_some());
        let types = if untyped_input {
            None
        } else {
            match self.infer(node, &kernel, &attributes, &inputs, &subgraphs) {
                Ok(types) => Some(types),
                // Dims known only at run time may make a rank other than inference assumed
                // upstream (a Squeeze of unknown dims): the run infers again with the real ones.
                Err(_) if !inputs_known => None,
                Err(error) => return Err(error),
            }
        };
        let Some((types, kinds)) = types else {
            self.add_untyped(index, kernel, attributes, inputs, subgraphs);
            return Ok(());
        };
        if !kernel.takes_strings() {
            if let Some(k) = types.iter().position(|t| t.dtype == DType::STRING) {
                let name = node.outputs.get(k).copied().flatten();
                return Err(self.error(
                    Some(node),
                    format!(
                        "output '{}' would be a string tensor, but operator {} of plugin '{}' does not make strings",
                        name.map_or("?", |id| model.value_name(id)),
                        kernel.describe(),
                        kernel.plugin_name()
                    ),
                ));
            }
        }
        let owner = self.engine.plugin_owner(kernel.plugin_name());
        let mut outputs: Vec<InferredOutput> = Vec::with_capacity(node.outputs.len());
        for ((out, ty), &kind) in node.outputs.iter().zip(&types).zip(&kinds) {
            let name = out.map(|id| model.value_name(id));
            let shape = if kind == ValueKind::TENSOR {
                self.checked_shape(node, kernel.plugin_name(), name, ty)?
            } else {
                None
            };
            outputs.push((*out, ty.dtype, shape));
        }
        let only_tensors = kinds.iter().all(|&k| k == ValueKind::TENSOR)
            && read().all(|k| k.kind == ValueKind::TENSOR);
        let foldable = only_tensors
            && subgraphs.is_empty()
            && !kernel.draws_at_random()
            && inputs.iter().enumerate().all(|(i, k)| match k {
                None => true,
                Some(k) => {
                    matches!(k.at, ValueRef::Constant(_))
                        || (kernel.reads_only_shape(i) && k.fixed_shape().is_some())
                }
            });
        // An input of unknown dims may have another rank than inference assumed (a Squeeze
        // of dims known only at run time): outputs inferred from it are inferred again then.
        let shapes_known = inputs_known && outputs.iter().all(|(_, _, shape)| shape.is_some());
        // Inference at run time would see what it saw now when every input shape is known
        // and it reads no values: outputs it left unshaped are then shaped by the kernel.
        let inputs_fixed = inputs_known
            && inputs.iter().enumerate().all(|(i, k)| match k {
                None => true,
                Some(k) => !kernel.needs_value(i) || matches!(k.at, ValueRef::Constant(_)),
            });
        let unshaped = if !shapes_known && inputs_fixed && kernel.shapes_outputs_in_call() {
            outputs
                .iter()
                .zip(&kinds)
                .take(64)
                .enumerate()
                .filter(|(_, ((_, _, shape), &kind))| shape.is_none() && !kind.holds_sequence())
                .fold(0u64, |mask, (k, _)| mask | 1 << k)
        } else {
            0
        };
        if foldable && shapes_known {
            return self.fold(node, &kernel, &owner, &attributes, &inputs, outputs);
        }
        let step_inputs: SmallVec<[ValueRef; 4]> = inputs
            .iter()
            .map(|k| k.as_ref().map_or(ValueRef::Absent, |k| k.at))
            .collect();
        let constant_inputs = constant_mask(&step_inputs);
        let mut step = Step {
            node: index,
            kernel,
            owner,
            attributes,
            inputs: step_inputs,
            outputs: SmallVec::new(),
            infer_at_run_time: !shapes_known && unshaped == 0,
            release: SmallVec::new(),
            constant_inputs,
            prepared: PreparedData::default(),
            fusion: None,
            unshaped,
            subgraphs: step_subgraphs(subgraphs),
        };
        for (((out, dtype, shape), ty), &kind) in outputs.into_iter().zip(&types).zip(&kinds) {
            let slot = self.slots.len();
            self.slots.push(SlotInfo {
                value: out,
                kind,
                dtype,
                // When one output's shape waits for the run, all are inferred then, unless
                // the kernel shapes that one in its call.
                shape: shape.filter(|_| shapes_known || unshaped != 0),
                // Placed in the slab later, once every lifetime is known.
                place: Place::Pool,
            });
            if let Some(id) = out {
                self.known[id] = Some(Known {
                    at: ValueRef::Slot(slot),
                    kind,
                    dtype,
                    shape: ty.shape.to_vec(),
                });
            }
            step.outputs.push(slot);
        }
        self.steps.push(step);
        Ok(())
    }

    /// Adds a step whose inputs' types are known only at run time: its outputs are typed by
    /// the inference the run makes before the call.
    fn add_untyped(
        &mut self,
        index: usize,
        kernel: OperatorEntry,
        attributes: NodeAttributes,
        inputs: Vec<Option<Known>>,
        subgraphs: Vec<NodeSubgraph>,
    ) {
        let node = &self.model.nodes[index];
        let step_inputs: SmallVec<[ValueRef; 4]> = inputs
            .iter()
            .map(|k| k.as_ref().map_or(ValueRef::Absent, |k| k.at))
            .collect();
        let mut outputs = SmallVec::new();
        for &out in &node.outputs {
            let slot = self.slots.len();
            self.slots.push(SlotInfo {
                value: out,
                kind: ValueKind::TENSOR,
                dtype: DType::UNDEFINED,
                shape: None,
                place: Place::Pool,
            });
            if let Some(id) = out {
                self.known[id] = Some(Known {
                    at: ValueRef::Slot(slot),
                    kind: ValueKind::TENSOR,
                    dtype: DType::UNDEFINED,
                    shape: Vec::new(),
                });
            }
            outputs.push(slot);
        }
        self.steps.push(Step {
            node: index,
            owner: self.engine.plugin_owner(kernel.plugin_name()),
            kernel,
            attributes,
            constant_inputs: constant_mask(&step_inputs),
            inputs: step_inputs,
            outputs,
            infer_at_run_time: true,
            release: SmallVec::new(),
            prepared: PreparedData::default(),
            fusion: None,
            unshaped: 0,
            subgraphs: step_subgraphs(subgraphs),
        });
    }

    /// Checks that a loaded kernel provides every node of the graph and of its subgraphs
    /// before any is inferred: a branch that inference leaves untyped (one its inputs can never
    /// take) still needs its operators.
    fn check_operators(&self) -> Result<(), PlanError> {
        match missing_operator(self.model, &self.registry) {
            None => Ok(()),
            Some((node, reason)) => Err(PlanError {
                path: self.model.path().to_owned(),
                node: Some(node),
                reason,
            }),
        }
    }

    /// The kernel for `node` at the model's opset for its domain.
    fn resolve(&self, node: &Node) -> Result<OperatorEntry, PlanError> {
        resolve(self.model, &self.registry, node).map_err(|reason| self.error(Some(node), reason))
    }

    /// The node's subgraphs, with what each reads from this graph.
    fn subgraphs_of(&self, node: &Node) -> Result<Vec<NodeSubgraph>, PlanError> {
        node.subgraphs
            .iter()
            .map(|s| {
                let captures = s
                    .captures
                    .iter()
                    .map(|&id| {
                        self.known[id].clone().ok_or_else(|| {
                            self.error(
                                Some(node),
                                format!(
                                    "its subgraph '{}' reads '{}', which no node produces and which is no graph input or initializer",
                                    s.attribute,
                                    self.model.value_name(id)
                                ),
                            )
                        })
                    })
                    .collect::<Result<_, _>>()?;
                Ok(NodeSubgraph {
                    attribute: s.attribute.clone(),
                    graph: s.graph.clone(),
                    captures,
                })
            })
            .collect()
    }

    /// The outputs' types from the kernel's inference function.
    fn infer(
        &self,
        node: &Node,
        kernel: &OperatorEntry,
        attributes: &NodeAttributes,
        inputs: &[Option<Known>],
        subgraphs: &[NodeSubgraph],
    ) -> Result<(Vec<OutputType>, SmallVec<[ValueKind; 4]>), PlanError> {
        let shapes: Vec<&[i64]> = inputs
            .iter()
            .map(|k| k.as_ref().map_or(&[][..], |k| k.shape.as_slice()))
            .collect();
        let infer_inputs: Vec<InferInput<'_>> = inputs
            .iter()
            .zip(&shapes)
            .map(|(k, shape)| match k {
                None => InferInput {
                    dtype: DType::UNDEFINED,
                    shape: (*shape).into(),
                    value: RNone,
                },
                Some(k) => InferInput {
                    dtype: k.dtype,
                    shape: (*shape).into(),
                    value: match k.at {
                        ValueRef::Constant(c) if k.kind == ValueKind::TENSOR => {
                            RSome(self.constants[c].tensor().to_abi())
                        }
                        _ => RNone,
                    },
                },
            })
            .collect();
        let typing = SubgraphTyping {
            engine: self.engine,
            registry: &self.registry,
            subgraphs: subgraphs
                .iter()
                .map(|s| TypedSubgraph {
                    attribute: &s.attribute,
                    graph: &s.graph,
                    captures: s.captures.iter().map(|k| self.binding(k)).collect(),
                })
                .collect(),
        };
        let input_kinds: SmallVec<[ValueKind; 8]> = inputs
            .iter()
            .map(|k| k.as_ref().map_or(ValueKind::TENSOR, |k| k.kind))
            .collect();
        let scope = InferScope::new(
            (!subgraphs.is_empty()).then_some(&typing as &dyn SubgraphTypes),
            &input_kinds,
            node.outputs.len(),
        );
        let types = attributes
            .with_abi(|attributes| {
                let call = InferCall {
                    inputs: infer_inputs.as_slice().into(),
                    attributes: attributes.into(),
                    output_count: node.outputs.len(),
                };
                kernel.infer_in(&call, &scope)
            })
            .map_err(|e| {
                self.error(
                    Some(node),
                    format!("plugin '{}': {e}", kernel.plugin_name()),
                )
            })?;
        if types.len() < node.outputs.len() {
            return Err(self.error(
                Some(node),
                format!(
                    "the node has {} outputs, but plugin '{}' inferred {}",
                    node.outputs.len(),
                    kernel.plugin_name(),
                    types.len()
                ),
            ));
        }
        Ok((types, scope.into_output_kinds()))
    }

    /// How a subgraph sees a value of this graph it reads: a constant, or a tensor of the
    /// known dtype and shape given on each run.
    fn binding(&self, known: &Known) -> Binding {
        match known.at {
            ValueRef::Constant(c) => Binding::Constant(self.constants[c].shared().clone()),
            _ => Binding::Runtime(known.kind, known.dtype, known.shape.clone()),
        }
    }

    /// An output shape `plugin` inferred: `None` if some dim is only known at run time; an
    /// error if a dim is negative, or its size overflows or exceeds the deployment's memory
    /// limit.
    fn checked_shape(
        &self,
        node: &Node,
        plugin: &str,
        output: Option<&str>,
        ty: &OutputType,
    ) -> Result<Option<Shape>, PlanError> {
        let name = output.unwrap_or("(omitted)");
        if ty.dtype.size().is_none() {
            return Err(self.error(
                Some(node),
                format!(
                    "plugin '{plugin}' inferred dtype {} for output '{name}', which opal does not support",
                    ty.dtype
                ),
            ));
        }
        if ty.shape.iter().any(|&d| d < -1) {
            return Err(self.error(
                Some(node),
                format!(
                    "plugin '{plugin}' inferred the invalid shape {:?} for output '{name}'; its shape inference is at fault",
                    ty.shape.as_slice()
                ),
            ));
        }
        let Some(shape) = ty
            .shape
            .iter()
            .map(|&d| usize::try_from(d).ok())
            .collect::<Option<Shape>>()
        else {
            return Ok(None);
        };
        let bytes = byte_size(ty.dtype, &shape).ok_or_else(|| {
            self.error(
                Some(node),
                format!(
                    "plugin '{plugin}' inferred dtype {} and shape {shape:?} for output '{name}', whose size overflows",
                    ty.dtype
                ),
            )
        })?;
        let limit = self.engine.config().memory_limit;
        if bytes as u64 > limit {
            return Err(self.error(
                Some(node),
                format!(
                    "output '{name}' of shape {shape:?} needs {bytes} bytes, more than the deployment's memory limit of {limit} bytes (engine.memory_limit)"
                ),
            ));
        }
        Ok(Some(shape))
    }

    /// Runs a node whose inputs are all constant (or read only for their known shapes) now,
    /// and records its outputs as constants.
    fn fold(
        &mut self,
        node: &Node,
        kernel: &OperatorEntry,
        owner: &Owner,
        attributes: &NodeAttributes,
        inputs: &[Option<Known>],
        outputs: Vec<InferredOutput>,
    ) -> Result<(), PlanError> {
        let weights = self.engine.weights_owner();
        let sizes: Vec<usize> = outputs
            .iter()
            .map(|(_, dtype, shape)| {
                byte_size(*dtype, shape.as_deref().unwrap_or_default()).unwrap_or(0)
            })
            .collect();
        let bytes: u64 = sizes.iter().map(|&size| size as u64).sum();
        let limit = self.engine.config().memory_limit;
        let held = self.folded_bytes.saturating_add(bytes);
        if held > limit {
            return Err(self.error(
                Some(node),
                format!(
                    "folding it would hold {held} bytes of constants computed while compiling ({bytes} of them its outputs), more than the deployment's memory limit of {limit} bytes (engine.memory_limit)"
                ),
            ));
        }
        self.folded_bytes = held;
        let mut tensors = outputs
            .iter()
            .zip(&sizes)
            .map(|((_, dtype, shape), &bytes)| {
                AlignedBuffer::zeroed(bytes, weights)
                    .map(|data| Tensor::from_parts(*dtype, shape.clone().unwrap_or_default(), data))
                    .ok_or_else(|| {
                        self.error(Some(node), format!("out of memory folding {bytes} bytes"))
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let shapes: Vec<Shape> = inputs
            .iter()
            .map(|k| k.as_ref().and_then(Known::fixed_shape).unwrap_or_default())
            .collect();
        let views: Vec<Option<ValueView<'_>>> = inputs
            .iter()
            .zip(&shapes)
            .map(|(k, shape)| {
                k.as_ref().map(|k| match k.at {
                    ValueRef::Constant(c) => ValueView::Tensor(self.constants[c].tensor()),
                    // A shape-only input: the kernel reads its shape, never its data.
                    _ => ValueView::Tensor(TensorRef::new(k.dtype, shape, &[])),
                })
            })
            .collect();
        let arena = RefCell::new(ScratchArena::new(
            self.engine.scratch_owner().clone(),
            self.engine.config().scratch_limit as usize,
        ));
        let output_views: Vec<TensorViewMut<'_>> =
            tensors.iter_mut().map(Tensor::to_abi_mut).collect();
        let dtypes: Vec<DType> = outputs.iter().map(|(_, dtype, _)| *dtype).collect();
        let strings = StringOutputs::new(&dtypes, weights, limit);
        let result = invoke(
            self.engine,
            kernel,
            owner,
            attributes,
            &views,
            &output_views,
            &arena,
            None,
            CallScope {
                strings: strings.as_ref(),
                ..CallScope::default()
            },
        );
        drop(output_views);
        result
            .and_then(|()| match &strings {
                Some(strings) => tensors
                    .iter_mut()
                    .enumerate()
                    .try_for_each(|(k, t)| strings.attach(k, t)),
                None => Ok(()),
            })
            .map_err(|e| {
                self.error(
                    Some(node),
                    format!(
                        "plugin '{}' failed while folding constants: {e}",
                        kernel.plugin_name()
                    ),
                )
            })?;
        for ((out, _, _), tensor) in outputs.into_iter().zip(tensors) {
            let Some(id) = out else { continue };
            self.known[id] = Some(Known {
                at: ValueRef::Constant(self.constants.len()),
                kind: ValueKind::TENSOR,
                dtype: tensor.dtype(),
                shape: dims_of(tensor.shape()),
            });
            self.constants
                .push(PlanConstant::Folded(Arc::new(Constant::from(tensor))));
        }
        Ok(())
    }

    /// Lets kernels absorb the steps that consume their output (see [`fusion`](super::fusion)).
    fn fuse(&mut self, input_types: &[(DType, Shape)]) {
        let (model, constants) = (self.model, &self.constants);
        let constant = |c: usize| constants[c].tensor();
        let types = ValueTypes {
            model,
            slots: &self.slots,
            input_types,
            constant: &constant,
        };
        let steps = std::mem::take(&mut self.steps);
        self.steps = fuse_steps(steps, &types);
    }

    /// Gives each intermediate its place: graph outputs and tensors of run-time shape come from
    /// the pool, the latter released after their last reader; the rest share a slab by lifetime.
    /// Returns the slab's size and the liveness lower bound.
    fn place_intermediates(&mut self) -> (usize, usize) {
        let mut last_reader: Vec<Option<usize>> = vec![None; self.slots.len()];
        let mut producer: Vec<Option<usize>> = vec![None; self.slots.len()];
        for (s, step) in self.steps.iter().enumerate() {
            for input in step.reads() {
                if let ValueRef::Slot(slot) = input {
                    last_reader[slot] = Some(s);
                }
            }
            for &slot in &step.outputs {
                producer[slot] = Some(s);
            }
        }
        let mut in_slab = Vec::new();
        let mut lifetimes = Vec::new();
        for (slot, info) in self.slots.iter().enumerate() {
            // A value computed inside a fused step is never written.
            let Some(producer) = producer[slot] else {
                continue;
            };
            let is_output = info.value.is_some_and(|v| self.model.outputs.contains(&v));
            let last = last_reader[slot].unwrap_or(producer);
            match &info.shape {
                _ if is_output => {}
                // A string tensor owns its bytes beside its views: it lives in the pool.
                Some(shape) if info.dtype != DType::STRING => {
                    in_slab.push(slot);
                    lifetimes.push(Lifetime {
                        bytes: byte_size(info.dtype, shape).unwrap_or(0),
                        first: producer,
                        last,
                    });
                }
                _ => self.steps[last].release.push(slot),
            }
        }
        let placement = place(&lifetimes);
        for (k, &slot) in in_slab.iter().enumerate() {
            let start = placement.offsets[k];
            self.slots[slot].place = Place::Slab(start..start + lifetimes[k].bytes);
        }
        (placement.slab_bytes, placement.lower_bound)
    }
}

/// Dims as `[2, 3]`, with `?` for one known only at run time.
fn describe_known(dims: &[i64]) -> String {
    let parts: Vec<String> = dims
        .iter()
        .map(|&d| if d < 0 { "?".to_owned() } else { d.to_string() })
        .collect();
    format!("[{}]", parts.join(", "))
}

fn describe_dims(dims: &[Dim]) -> String {
    let parts: Vec<String> = dims
        .iter()
        .map(|d| match d {
            Dim::Fixed(n) => n.to_string(),
            Dim::Symbol(s) => s.clone(),
            Dim::Unknown => "?".to_owned(),
        })
        .collect();
    format!("[{}]", parts.join(", "))
}
/// The kernel for `node` of `model` at the model's opset for its domain, or why none is.
fn resolve(model: &Model, registry: &Registry, node: &Node) -> Result<OperatorEntry, String> {
    let domain = if node.domain.is_empty() {
        "ai.onnx"
    } else {
        &node.domain
    };
    let opset = model
        .opset(&node.domain)
        .ok_or_else(|| format!("the model imports no opset for domain '{domain}'"))?;
    if let Some(entry) = registry.lookup(&node.domain, &node.op_type, opset) {
        return Ok(entry.clone());
    }
    let entries = registry.entries(&node.domain, &node.op_type);
    let reason = if entries.is_empty() {
        format!(
            "no loaded plugin provides operator '{}' (domain '{domain}'); load a plugin that does (`opal plugins` lists what is loaded)",
            node.op_type
        )
    } else {
        let provided: Vec<String> = entries
            .iter()
            .map(|e| {
                let until = if e.until_version() == i64::MAX {
                    String::from("+")
                } else {
                    format!("-{}", e.until_version())
                };
                format!(
                    "{}{until} (plugin '{}')",
                    e.since_version(),
                    e.plugin_name()
                )
            })
            .collect();
        format!(
            "opset {opset} of '{}' is not supported; loaded plugins provide opsets {}",
            node.op_type,
            provided.join(", ")
        )
    };
    Err(reason)
}

/// The first node of `model`, or of its subgraphs at any depth, that no loaded kernel provides:
/// the node as errors name it (within the subgraph chain leading to it) and why.
fn missing_operator(model: &Model, registry: &Registry) -> Option<(String, String)> {
    for node in &model.nodes {
        if let Err(reason) = resolve(model, registry, node) {
            return Some((node.describe(), reason));
        }
        for subgraph in &node.subgraphs {
            if let Some((inner, reason)) = missing_operator(&subgraph.graph, registry) {
                let reason = format!("subgraph '{}': {inner}: {reason}", subgraph.attribute);
                return Some((node.describe(), reason));
            }
        }
    }
    None
}
