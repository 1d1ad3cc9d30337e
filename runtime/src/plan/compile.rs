//! Compiling a model into a [`Plan`] for concrete input types: resolve each node's kernel, infer
//! its outputs through the plugin, fold nodes whose inputs are constant (or read only for their
//! known shapes), and place each intermediate in the slab or the pool.

use super::{
    constant_mask,
    fusion::{fuse_steps, ValueTypes},
    invoke,
    memory_plan::{place, Lifetime},
    order::topological_order,
    Place, Plan, PlanConstant, PreparedData, SlotInfo, Step, ValueRef,
};
use crate::{
    engine::Engine,
    memory::{AlignedBuffer, Owner, ScratchArena},
    onnx::{Constant, ConstantData, Dim, Model, Node, NodeAttributes},
    plugin::{OperatorEntry, Registry},
    tensor::{byte_size, Shape, Tensor, TensorRef},
};
use abi_stable::std_types::{RNone, RSome};
use opal_plugin_api::{
    infer::InferInput, operator::InferCall, tensor::TensorViewMut, DType, OutputType,
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

/// What compilation knows of a value: where it is, its dtype, and its dims (-1: known only at
/// run time).
#[derive(Clone)]
struct Known {
    at: ValueRef,
    dtype: DType,
    shape: Vec<i64>,
}

impl Known {
    /// The dims, when all are known.
    fn fixed_shape(&self) -> Option<Shape> {
        self.shape
            .iter()
            .map(|&d| usize::try_from(d).ok())
            .collect()
    }
}

fn dims_of(shape: &[usize]) -> Vec<i64> {
    shape.iter().map(|&d| d as i64).collect()
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
        Compiler::new(engine, model, registry).compile(input_types)
    }
}

struct Compiler<'e> {
    engine: &'e Engine,
    model: &'e Arc<Model>,
    registry: Arc<Registry>,
    known: Vec<Option<Known>>,
    constants: Vec<PlanConstant>,
    /// Bytes of the constants folded so far: they are held as long as the plan.
    folded_bytes: u64,
    slots: Vec<SlotInfo>,
    steps: Vec<Step>,
}

impl<'e> Compiler<'e> {
    fn new(engine: &'e Engine, model: &'e Arc<Model>, registry: Arc<Registry>) -> Self {
        Compiler {
            engine,
            model,
            registry,
            known: vec![None; model.values.len()],
            constants: Vec::new(),
            folded_bytes: 0,
            slots: Vec::new(),
            steps: Vec::new(),
        }
    }

    fn error(&self, node: Option<&Node>, reason: impl Into<String>) -> PlanError {
        PlanError {
            path: self.model.path().to_owned(),
            node: node.map(Node::describe),
            reason: reason.into(),
        }
    }

    fn compile(mut self, input_types: &[(DType, Shape)]) -> Result<Plan, PlanError> {
        self.bind_inputs(input_types)?;
        for (&id, constant) in &self.model.constants {
            self.known[id] = Some(Known {
                at: ValueRef::Constant(self.constants.len()),
                dtype: constant.dtype,
                shape: dims_of(&constant.shape),
            });
            self.constants.push(PlanConstant::Model(id));
        }
        let order = topological_order(self.model)
            .map_err(|(node, reason)| self.error(Some(&self.model.nodes[node]), reason))?;
        for index in order {
            self.add_node(index)?;
        }
        if self.engine.config().fusion {
            self.fuse(input_types);
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
            input_types: input_types.to_vec(),
            constants: self.constants,
            slots: self.slots,
            steps: self.steps,
            outputs,
            slab_bytes,
            liveness_lower_bound,
        })
    }

    fn bind_inputs(&mut self, input_types: &[(DType, Shape)]) -> Result<(), PlanError> {
        let model = self.model;
        if input_types.len() != model.inputs.len() {
            return Err(self.error(
                None,
                format!(
                    "the model has {} inputs, {} were given",
                    model.inputs.len(),
                    input_types.len()
                ),
            ));
        }
        for &id in model.inputs.iter().chain(&model.outputs) {
            if let Some(kind) = model.values[id].non_tensor {
                return Err(self.error(
                    None,
                    format!(
                        "graph input or output '{}' has type {kind}; opal runs models whose inputs and outputs are tensors",
                        model.value_name(id)
                    ),
                ));
            }
        }
        for (k, (&id, (dtype, shape))) in model.inputs.iter().zip(input_types).enumerate() {
            let declared = &model.values[id];
            if let Some(expected) = declared.dtype {
                if expected != *dtype {
                    return Err(self.error(
                        None,
                        format!("input '{}' must be {expected}, got {dtype}", declared.name),
                    ));
                }
            }
            if let Some(dims) = &declared.shape {
                let fits = dims.len() == shape.len()
                    && dims
                        .iter()
                        .zip(shape)
                        .all(|(d, &n)| !matches!(d, Dim::Fixed(f) if *f != n));
                if !fits {
                    return Err(self.error(
                        None,
                        format!(
                            "input '{}' must have shape {}, got {shape:?}",
                            declared.name,
                            describe_dims(dims)
                        ),
                    ));
                }
            }
            self.known[id] = Some(Known {
                at: ValueRef::Input(k),
                dtype: *dtype,
                shape: dims_of(shape),
            });
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
        let types = self.infer(node, &kernel, &attributes, &inputs)?;
        let owner = self.engine.plugin_owner(kernel.plugin_name());
        let mut outputs: Vec<InferredOutput> = Vec::with_capacity(node.outputs.len());
        for (out, ty) in node.outputs.iter().zip(&types) {
            let name = out.map(|id| model.value_name(id));
            let shape = self.checked_shape(node, kernel.plugin_name(), name, ty)?;
            outputs.push((*out, ty.dtype, shape));
        }
        let foldable = inputs.iter().enumerate().all(|(i, k)| match k {
            None => true,
            Some(k) => {
                matches!(k.at, ValueRef::Constant(_))
                    || (kernel.reads_only_shape(i) && k.fixed_shape().is_some())
            }
        });
        let shapes_known = outputs.iter().all(|(_, _, shape)| shape.is_some());
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
            infer_at_run_time: !shapes_known,
            release: SmallVec::new(),
            constant_inputs,
            prepared: PreparedData::default(),
            fusion: None,
        };
        for ((out, dtype, shape), ty) in outputs.into_iter().zip(&types) {
            let slot = self.slots.len();
            self.slots.push(SlotInfo {
                value: out,
                dtype,
                // When one output's shape waits for the run, all are inferred then.
                shape: shape.filter(|_| shapes_known),
                // Placed in the slab later, once every lifetime is known.
                place: Place::Pool,
            });
            if let Some(id) = out {
                self.known[id] = Some(Known {
                    at: ValueRef::Slot(slot),
                    dtype,
                    shape: ty.shape.to_vec(),
                });
            }
            step.outputs.push(slot);
        }
        self.steps.push(step);
        Ok(())
    }

    /// The kernel for `node` at the model's opset for its domain.
    fn resolve(&self, node: &Node) -> Result<OperatorEntry, PlanError> {
        let domain = if node.domain.is_empty() {
            "ai.onnx"
        } else {
            &node.domain
        };
        let opset = self.model.opset(&node.domain).ok_or_else(|| {
            self.error(
                Some(node),
                format!("the model imports no opset for domain '{domain}'"),
            )
        })?;
        if let Some(entry) = self.registry.lookup(&node.domain, &node.op_type, opset) {
            return Ok(entry.clone());
        }
        let entries = self.registry.entries(&node.domain, &node.op_type);
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
        Err(self.error(Some(node), reason))
    }

    /// The outputs' types from the kernel's inference function.
    fn infer(
        &self,
        node: &Node,
        kernel: &OperatorEntry,
        attributes: &NodeAttributes,
        inputs: &[Option<Known>],
    ) -> Result<Vec<OutputType>, PlanError> {
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
                        ValueRef::Constant(c) => {
                            RSome(self.constants[c].tensor(self.model).to_abi())
                        }
                        _ => RNone,
                    },
                },
            })
            .collect();
        let types = attributes
            .with_abi(|attributes| {
                kernel.infer(&InferCall {
                    inputs: infer_inputs.as_slice().into(),
                    attributes: attributes.into(),
                    output_count: node.outputs.len(),
                })
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
        Ok(types)
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
        let views: Vec<Option<TensorRef<'_>>> = inputs
            .iter()
            .zip(&shapes)
            .map(|(k, shape)| {
                k.as_ref().map(|k| match k.at {
                    ValueRef::Constant(c) => self.constants[c].tensor(self.model),
                    // A shape-only input: the kernel reads its shape, never its data.
                    _ => TensorRef::new(k.dtype, shape, &[]),
                })
            })
            .collect();
        let arena = RefCell::new(ScratchArena::new(
            self.engine.scratch_owner().clone(),
            self.engine.config().scratch_limit as usize,
        ));
        let output_views: Vec<TensorViewMut<'_>> =
            tensors.iter_mut().map(Tensor::to_abi_mut).collect();
        invoke(
            self.engine,
            kernel,
            owner,
            attributes,
            &views,
            &output_views,
            &arena,
            None,
        )
        .map_err(|e| {
            self.error(
                Some(node),
                format!(
                    "plugin '{}' failed while folding constants: {e}",
                    kernel.plugin_name()
                ),
            )
        })?;
        drop(output_views);
        for ((out, _, _), tensor) in outputs.into_iter().zip(tensors) {
            let Some(id) = out else { continue };
            let (dtype, shape, data) = tensor.into_parts();
            self.known[id] = Some(Known {
                at: ValueRef::Constant(self.constants.len()),
                dtype,
                shape: dims_of(&shape),
            });
            self.constants.push(PlanConstant::Folded(Constant {
                dtype,
                shape,
                data: ConstantData::Owned(data),
            }));
        }
        Ok(())
    }

    /// Lets kernels absorb the steps that consume their output (see [`fusion`](super::fusion)).
    fn fuse(&mut self, input_types: &[(DType, Shape)]) {
        let (model, constants) = (self.model, &self.constants);
        let constant = |c: usize| constants[c].tensor(model);
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
            for input in &step.inputs {
                if let ValueRef::Slot(slot) = input {
                    last_reader[*slot] = Some(s);
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
                Some(shape) => {
                    in_slab.push(slot);
                    lifetimes.push(Lifetime {
                        bytes: byte_size(info.dtype, shape).unwrap_or(0),
                        first: producer,
                        last,
                    });
                }
                None => self.steps[last].release.push(slot),
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
