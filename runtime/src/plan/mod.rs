//! Plans: a model compiled once for concrete input shapes into an immutable, shareable schedule —
//! nodes in topological order, kernels resolved through a registry snapshot, every value's dtype
//! and shape inferred by the plugins, constant nodes folded, and each intermediate given a place:
//! an offset in the run's slab (when its shape is known ahead) or a tensor from the pool.

mod compile;
mod fusion;
mod invoke;
mod memory_plan;
mod order;
mod prepared;
mod subgraphs;

pub use compile::{Binding, PlanError};
pub(crate) use invoke::{invoke, CallScope};
pub use prepared::PreparedData;
pub(crate) use subgraphs::{SubgraphCall, SubgraphRuns, SubgraphTyping, TypedSubgraph};

use crate::{
    memory::Owner,
    onnx::{Constant, Model, NodeAttributes, ValueId},
    plugin::{OperatorEntry, Registry},
    tensor::{Shape, TensorRef},
    value::{RunInput, ValueView},
};
use opal_plugin_api::{DType, ValueKind};
use smallvec::SmallVec;
use std::{ops::Range, sync::Arc};

/// Inputs a call lends without a heap allocation; fusion grows a step no further.
pub(crate) const INLINE_INPUTS: usize = 24;

/// Where a node input or graph output comes from at run time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueRef {
    /// An omitted optional input.
    Absent,
    /// The k-th graph input, as the caller passed it.
    Input(usize),
    /// A constant of the plan.
    Constant(usize),
    /// An intermediate, held in the run's slot.
    Slot(usize),
}

/// Bit `i` set: step input `i` (of the first 64) is a constant of the plan.
fn constant_mask(inputs: &[ValueRef]) -> u64 {
    inputs
        .iter()
        .take(64)
        .enumerate()
        .filter(|(_, at)| matches!(at, ValueRef::Constant(_)))
        .fold(0u64, |mask, (i, _)| mask | 1 << i)
}

/// A constant a plan reads: an initializer of the model (or of an enclosing graph, for a
/// subgraph's plan), or a node output folded while compiling.
#[derive(Debug, Clone)]
enum PlanConstant {
    Model(Arc<Constant>),
    Folded(Arc<Constant>),
}

impl PlanConstant {
    fn tensor(&self) -> TensorRef<'_> {
        match self {
            PlanConstant::Model(c) | PlanConstant::Folded(c) => Constant::as_ref(c),
        }
    }

    fn shared(&self) -> &Arc<Constant> {
        match self {
            PlanConstant::Model(c) | PlanConstant::Folded(c) => c,
        }
    }
}

/// Where an intermediate lives during a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Place {
    /// At these bytes of the run's slab; the shape is known ahead.
    Slab(Range<usize>),
    /// In a tensor from the engine's pool: graph outputs, which outlive the run, and tensors
    /// whose shape is only known at run time.
    Pool,
}

/// An intermediate value.
#[derive(Debug, Clone)]
pub struct SlotInfo {
    /// The value it holds; `None` for an optional output the node omits.
    pub value: Option<ValueId>,
    /// A tensor, a sequence or an optional; those other than tensors live in the pool.
    pub kind: ValueKind,
    /// The dtype of the tensor, or of a sequence's elements.
    pub dtype: DType,
    /// The shape, when known before the run.
    pub shape: Option<Shape>,
    pub place: Place,
}

/// One kernel call of a run.
#[derive(Debug)]
pub struct Step {
    /// Index of the node in the model.
    pub node: usize,
    pub kernel: OperatorEntry,
    /// The account of the kernel's plugin, for memory it borrows.
    pub owner: Owner,
    pub attributes: NodeAttributes,
    pub inputs: SmallVec<[ValueRef; 4]>,
    /// The slot each output is written to.
    pub outputs: SmallVec<[usize; 2]>,
    /// Output shapes depend on input values only known at run time: infer before the call.
    pub infer_at_run_time: bool,
    /// Pool slots whose last reader is this step: returned to the pool after it.
    pub release: SmallVec<[usize; 4]>,
    /// Bit `i` set: input `i` is a constant of the plan.
    pub constant_inputs: u64,
    /// What the kernel derived from its constant inputs, kept for every run.
    pub prepared: PreparedData,
    /// The nodes the kernel absorbed, when it fused any.
    pub fusion: Option<Fusion>,
    /// Bit `i` set: output `i`'s shape is known only once the kernel has run; the kernel
    /// gives it during the call.
    pub unshaped: u64,
    /// The node's subgraphs, which the kernel runs through the host.
    pub subgraphs: Vec<StepSubgraph>,
}

impl Step {
    /// Every value the step reads: its inputs, then what its subgraphs read from its graph.
    pub fn reads(&self) -> impl Iterator<Item = ValueRef> + '_ {
        self.inputs.iter().copied().chain(
            self.subgraphs
                .iter()
                .flat_map(|s| s.captures.iter().copied()),
        )
    }
}

/// A subgraph of a step's node, with where the values it reads from the step's graph are.
#[derive(Debug)]
pub struct StepSubgraph {
    /// The graph attribute holding it.
    pub attribute: String,
    pub graph: Arc<Model>,
    /// One per captured input of `graph`, in order.
    pub captures: SmallVec<[ValueRef; 4]>,
}

/// Nodes fused into a step's kernel call: their work is done by the step's kernel, their
/// inputs follow the step node's own, and the step writes the last one's output.
#[derive(Debug)]
pub struct Fusion {
    /// The absorbed nodes (indices in the model), in the order they were absorbed.
    pub nodes: Vec<usize>,
    /// The operator's description of the fused work, lent back on every call.
    pub description: Vec<u8>,
}

/// The type of a value a plan was compiled to take: what was given (a tensor, a sequence, or
/// none as an optional of dtype `UNDEFINED`), with its (elements') dtype and dims.
#[derive(Debug, Clone, PartialEq)]
pub struct InputType {
    /// The kind the graph declares.
    pub kind: ValueKind,
    pub given: ValueKind,
    pub dtype: DType,
    pub dims: Vec<i64>,
}

impl InputType {
    /// The kind a value held as `value` has where this input's is declared `kind`.
    pub fn kind_of(kind: ValueKind, value: &ValueView<'_>) -> ValueKind {
        match value {
            ValueView::Tensor(_) if kind == ValueKind::OPTIONAL_TENSOR => kind,
            ValueView::Tensor(_) => ValueKind::TENSOR,
            ValueView::Sequence(_) if kind == ValueKind::OPTIONAL_SEQUENCE => kind,
            ValueView::Sequence(_) => ValueKind::SEQUENCE,
            ValueView::None if kind.is_optional() => kind,
            ValueView::None => ValueKind::OPTIONAL_TENSOR,
        }
    }

    /// Whether `value` has this type, compared without allocating for tensors.
    pub fn accepts(&self, value: &ValueView<'_>) -> bool {
        let held_fits = match value {
            ValueView::Tensor(_) => self.given == ValueKind::TENSOR,
            ValueView::Sequence(_) => self.given == ValueKind::SEQUENCE,
            ValueView::None => self.given.is_optional(),
        };
        held_fits && value.has_type(self.dtype, &self.dims)
    }
}

/// A model compiled for one set of input shapes.
#[derive(Debug)]
pub struct Plan {
    model: Arc<Model>,
    registry: Arc<Registry>,
    input_types: Vec<(DType, Shape)>,
    input_values: Vec<InputType>,
    constants: Vec<PlanConstant>,
    slots: Vec<SlotInfo>,
    steps: Vec<Step>,
    outputs: Vec<ValueRef>,
    slab_bytes: usize,
    liveness_lower_bound: usize,
}

impl Plan {
    pub fn model(&self) -> &Arc<Model> {
        &self.model
    }

    /// The registry snapshot whose kernels this plan calls; it keeps their libraries loaded.
    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// The dtype and shape each graph input must have (a sequence's elements', 0 for dims
    /// they do not share).
    pub fn input_types(&self) -> &[(DType, Shape)] {
        &self.input_types
    }

    /// The type each graph input must have, values other than tensors included.
    pub fn input_values(&self) -> &[InputType] {
        &self.input_values
    }

    /// Whether the plan was compiled for inputs of the types of `inputs`.
    pub fn accepts<I: RunInput>(&self, inputs: &[I]) -> bool {
        self.input_values.len() == inputs.len()
            && self
                .input_values
                .iter()
                .zip(inputs)
                .all(|(t, i)| t.accepts(&i.value()))
    }

    pub fn steps(&self) -> &[Step] {
        &self.steps
    }

    pub fn slots(&self) -> &[SlotInfo] {
        &self.slots
    }

    /// Where each graph output comes from.
    pub fn outputs(&self) -> &[ValueRef] {
        &self.outputs
    }

    /// Constant `index`.
    pub fn constant(&self, index: usize) -> TensorRef<'_> {
        self.constants[index].tensor()
    }

    /// Constant `index`, shared, for the plans of subgraphs that read it.
    pub(crate) fn shared_constant(&self, index: usize) -> &Arc<Constant> {
        self.constants[index].shared()
    }

    /// How many nodes were folded into constants at compile time.
    pub fn folded_nodes(&self) -> usize {
        self.model.nodes.len() - self.steps.len() - self.fused_nodes()
    }

    /// How many nodes run inside another node's kernel call (see [`Fusion`]).
    pub fn fused_nodes(&self) -> usize {
        self.steps
            .iter()
            .filter_map(|step| step.fusion.as_ref())
            .map(|fusion| fusion.nodes.len())
            .sum()
    }

    /// Bytes of the constants made by folding nodes at compile time (Constant nodes' values,
    /// shape computations, weights built by ConstantOfShape, …).
    pub fn folded_bytes(&self) -> usize {
        self.constants
            .iter()
            .map(|c| match c {
                PlanConstant::Folded(c) => c.bytes().len(),
                PlanConstant::Model(_) => 0,
            })
            .sum()
    }

    /// The step's node, and the nodes fused into it: `node 'a' (Conv) fused with node 'b'
    /// (Relu)`.
    pub fn describe_step(&self, step: &Step) -> String {
        let mut text = self.model.nodes[step.node].describe();
        if let Some(fusion) = &step.fusion {
            let absorbed: Vec<String> = fusion
                .nodes
                .iter()
                .map(|&n| self.model.nodes[n].describe())
                .collect();
            text.push_str(" fused with ");
            text.push_str(&absorbed.join(", "));
        }
        text
    }

    /// Bytes of data kernels derived from constant inputs (packed weights), kept with the
    /// plan's steps once their first run made them.
    pub fn prepared_bytes(&self) -> usize {
        self.steps.iter().map(|step| step.prepared.bytes()).sum()
    }

    /// Bytes of the slab holding the intermediates whose shapes are known ahead.
    pub fn slab_bytes(&self) -> usize {
        self.slab_bytes
    }

    /// The largest total of slab intermediates alive at one step: no placement can use less.
    pub fn liveness_lower_bound(&self) -> usize {
        self.liveness_lower_bound
    }
}
