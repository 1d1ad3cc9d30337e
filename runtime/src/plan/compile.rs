//! Compiling a model into a [`Plan`] for concrete input types: resolve each node's kernel, infer
//! its outputs through the plugin, fold nodes whose inputs are all constant, and record each
//! intermediate's last reader.

use super::{invoke, order::topological_order, Plan, PlanConstant, SlotInfo, Step, ValueRef};
use crate::{
    engine::Engine,
    memory::{AlignedBuffer, ScratchArena},
    onnx::{Constant, ConstantData, Dim, Model, Node, NodeAttributes},
    plugin::{OperatorEntry, Registry},
    tensor::{byte_size, Shape, Tensor, TensorRef},
};
use abi_stable::std_types::{RNone, RSome};
use opal_plugin_api::{infer::InferInput, operator::InferCall, DType, OutputType};
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

/// What compilation knows of a value.
#[derive(Clone)]
struct Known {
    at: ValueRef,
    dtype: DType,
    shape: Shape,
}

impl Plan {
    /// Compiles `model` for graph inputs of `input_types`, with the engine's current registry.
    pub fn compile(
        engine: &Engine,
        model: &Arc<Model>,
        input_types: &[(DType, Shape)],
    ) -> Result<Plan, PlanError> {
        Compiler::new(engine, model).compile(input_types)
    }
}

struct Compiler<'e> {
    engine: &'e Engine,
    model: &'e Arc<Model>,
    registry: Arc<Registry>,
    known: Vec<Option<Known>>,
    constants: Vec<PlanConstant>,
    slots: Vec<SlotInfo>,
    steps: Vec<Step>,
}

impl<'e> Compiler<'e> {
    fn new(engine: &'e Engine, model: &'e Arc<Model>) -> Self {
        Compiler {
            engine,
            model,
            registry: engine.registry(),
            known: vec![None; model.values.len()],
            constants: Vec::new(),
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
                shape: constant.shape.clone(),
            });
            self.constants.push(PlanConstant::Model(id));
        }
        let order = topological_order(self.model)
            .map_err(|(node, reason)| self.error(Some(&self.model.nodes[node]), reason))?;
        for index in order {
            self.add_node(index)?;
        }
        self.release_after_last_use();
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
                shape: shape.clone(),
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
        let mut outputs = Vec::with_capacity(node.outputs.len());
        for (out, ty) in node.outputs.iter().zip(&types) {
            let shape = self.concrete_shape(node, out.map(|id| model.value_name(id)), ty)?;
            outputs.push((*out, ty.dtype, shape));
        }
        let all_constant = inputs.iter().all(|k| {
            k.as_ref()
                .is_none_or(|k| matches!(k.at, ValueRef::Constant(_)))
        });
        if all_constant {
            return self.fold(node, &kernel, &owner, &attributes, &inputs, outputs);
        }
        let mut step = Step {
            node: index,
            kernel,
            owner,
            attributes,
            inputs: inputs
                .iter()
                .map(|k| k.as_ref().map_or(ValueRef::Absent, |k| k.at))
                .collect(),
            outputs: SmallVec::new(),
            release: SmallVec::new(),
        };
        for (out, dtype, shape) in outputs {
            let slot = self.slots.len();
            self.slots.push(SlotInfo {
                value: out,
                dtype,
                bytes: byte_size(dtype, &shape).unwrap_or(0),
                shape: shape.clone(),
            });
            if let Some(id) = out {
                self.known[id] = Some(Known {
                    at: ValueRef::Slot(slot),
                    dtype,
                    shape,
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
        let shapes: Vec<Vec<i64>> = inputs
            .iter()
            .map(|k| {
                k.as_ref()
                    .map_or(Vec::new(), |k| k.shape.iter().map(|&d| d as i64).collect())
            })
            .collect();
        let infer_inputs: Vec<InferInput<'_>> = inputs
            .iter()
            .zip(&shapes)
            .map(|(k, shape)| match k {
                None => InferInput {
                    dtype: DType::UNDEFINED,
                    shape: shape.as_slice().into(),
                    value: RNone,
                },
                Some(k) => InferInput {
                    dtype: k.dtype,
                    shape: shape.as_slice().into(),
                    value: match k.at {
                        ValueRef::Constant(c) => RSome(self.constant(c).to_abi()),
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

    fn constant(&self, index: usize) -> TensorRef<'_> {
        self.constants[index].tensor(self.model)
    }

    /// An inferred output shape, checked to be known, to fit in memory, and within the limit.
    fn concrete_shape(
        &self,
        node: &Node,
        output: Option<&str>,
        ty: &OutputType,
    ) -> Result<Shape, PlanError> {
        let name = output.unwrap_or("(omitted)");
        let shape = ty
            .shape
            .iter()
            .map(|&d| usize::try_from(d))
            .collect::<Result<Shape, _>>()
            .map_err(|_| {
                self.error(
                    Some(node),
                    format!(
                        "the shape of output '{name}' ({:?}) depends on input values, which is not supported yet",
                        ty.shape.as_slice()
                    ),
                )
            })?;
        let bytes = byte_size(ty.dtype, &shape).ok_or_else(|| {
            self.error(
                Some(node),
                format!(
                    "output '{name}' of dtype {} and shape {shape:?} has a size that overflows",
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
        Ok(shape)
    }

    /// Runs a node whose inputs are all constant now, and records its outputs as constants.
    fn fold(
        &mut self,
        node: &Node,
        kernel: &OperatorEntry,
        owner: &crate::memory::Owner,
        attributes: &NodeAttributes,
        inputs: &[Option<Known>],
        outputs: Vec<(Option<usize>, DType, Shape)>,
    ) -> Result<(), PlanError> {
        let weights = self.engine.weights_owner();
        let mut tensors = outputs
            .iter()
            .map(|(_, dtype, shape)| {
                let bytes = byte_size(*dtype, shape).unwrap_or(0);
                AlignedBuffer::zeroed(bytes, weights)
                    .map(|data| Tensor::from_parts(*dtype, shape.clone(), data))
                    .ok_or_else(|| {
                        self.error(Some(node), format!("out of memory folding {bytes} bytes"))
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let views: Vec<Option<TensorRef<'_>>> = inputs
            .iter()
            .map(|k| {
                k.as_ref().map(|k| match k.at {
                    ValueRef::Constant(c) => self.constant(c),
                    _ => unreachable!("only nodes with constant inputs are folded"),
                })
            })
            .collect();
        let arena = RefCell::new(ScratchArena::new(
            self.engine.scratch_owner().clone(),
            self.engine.config().scratch_limit as usize,
        ));
        invoke(
            self.engine,
            kernel,
            owner,
            attributes,
            &views,
            &mut tensors,
            &arena,
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
        for ((out, _, _), tensor) in outputs.into_iter().zip(tensors) {
            let Some(id) = out else { continue };
            let (dtype, shape, data) = tensor.into_parts();
            self.known[id] = Some(Known {
                at: ValueRef::Constant(self.constants.len()),
                dtype,
                shape: shape.clone(),
            });
            self.constants.push(PlanConstant::Folded(Constant {
                dtype,
                shape,
                data: ConstantData::Owned(data),
            }));
        }
        Ok(())
    }

    /// Marks each slot for release after its last reader; graph outputs are kept.
    fn release_after_last_use(&mut self) {
        let mut last_reader: Vec<Option<usize>> = vec![None; self.slots.len()];
        let mut producer = vec![0; self.slots.len()];
        for (s, step) in self.steps.iter().enumerate() {
            for input in &step.inputs {
                if let ValueRef::Slot(slot) = input {
                    last_reader[*slot] = Some(s);
                }
            }
            for &slot in &step.outputs {
                producer[slot] = s;
            }
        }
        for (slot, info) in self.slots.iter().enumerate() {
            if info.value.is_some_and(|v| self.model.outputs.contains(&v)) {
                continue;
            }
            let at = last_reader[slot].unwrap_or(producer[slot]);
            self.steps[at].release.push(slot);
        }
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
