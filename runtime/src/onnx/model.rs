//! A loaded ONNX model: the file memory-mapped and decoded, its graph turned into numbered
//! values and nodes, its initializers decoded into [`Constant`]s (views into the mapping, or into
//! mapped external-data files, where possible). Immutable once loaded, and shared by every plan compiled from it.

use super::{
    constant::Constant,
    external::ExternalFiles,
    proto::{
        tensor_shape_proto::dimension::Value as DimValue, type_proto, AttributeProto, GraphProto,
        ModelProto, ValueInfoProto,
    },
};
use crate::memory::{map_file, Owner};
use bytes::Bytes;
use opal_plugin_api::{DType, ValueKind};
use prost::Message;
use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::Arc,
};

/// ONNX's `AttributeType` of a graph-valued attribute.
const GRAPH_ATTRIBUTE: i32 = 5;

/// Index of a value (a named tensor) in [`Model::values`].
pub type ValueId = usize;

/// One dim of a declared input or output shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dim {
    Fixed(usize),
    /// A named dim whose size is given at run time (`batch`, `N`, …).
    Symbol(String),
    Unknown,
}

/// A named tensor of the graph.
#[derive(Debug, Clone)]
pub struct Value {
    pub name: String,
    /// The declared dtype, when the model declares one.
    pub dtype: Option<DType>,
    /// The declared shape, when the model declares one.
    pub shape: Option<Vec<Dim>>,
    /// The kind of value the model declares: a tensor, a sequence of tensors, or an
    /// optional of either (for these the dtype and shape are those of the tensor or elements).
    pub kind: ValueKind,
    /// A kind the model declares that opal does not run (`map`, `sparse tensor`, a sequence
    /// of sequences, …).
    pub unsupported: Option<&'static str>,
}

/// A node of the graph, with inputs and outputs as value ids (`None`: an omitted optional one).
#[derive(Debug, Clone)]
pub struct Node {
    pub name: String,
    pub domain: String,
    pub op_type: String,
    pub inputs: Vec<Option<ValueId>>,
    pub outputs: Vec<Option<ValueId>>,
    /// Attributes other than graphs.
    pub attributes: Vec<AttributeProto>,
    /// Graph-valued attributes (If's branches, Loop's body), each read as a graph of its own.
    pub subgraphs: Vec<Subgraph>,
}

/// A graph-valued attribute of a node, read as a [`Model`] whose inputs are the graph's
/// declared inputs followed by the values it reads from enclosing graphs.
#[derive(Debug, Clone)]
pub struct Subgraph {
    /// The attribute's name.
    pub attribute: String,
    pub graph: Arc<Model>,
    /// The enclosing graph's values the subgraph reads, one per input of `graph` after its
    /// declared ones, in order.
    pub captures: Vec<ValueId>,
}

impl Node {
    /// Every value the node reads: its inputs, then what its subgraphs read from its graph.
    pub fn reads(&self) -> impl Iterator<Item = ValueId> + '_ {
        self.inputs.iter().flatten().copied().chain(
            self.subgraphs
                .iter()
                .flat_map(|s| s.captures.iter().copied()),
        )
    }

    /// How errors name the node: `node 'fc1' (Gemm)`.
    pub fn describe(&self) -> String {
        let op = if self.domain.is_empty() || self.domain == "ai.onnx" {
            self.op_type.clone()
        } else {
            format!("{}:{}", self.domain, self.op_type)
        };
        format!("node '{}' ({op})", self.name)
    }
}

/// A model ready to be compiled into plans.
#[derive(Debug)]
pub struct Model {
    path: PathBuf,
    /// The whole mapped file: constants in place are slices of it.
    mapping: Bytes,
    pub values: Vec<Value>,
    /// Graph inputs that are not initializers, in declaration order; for a subgraph, followed
    /// by the values it reads from enclosing graphs.
    pub inputs: Vec<ValueId>,
    /// How many of `inputs` the graph declares (the rest, of a subgraph, are captured).
    pub declared_inputs: usize,
    pub outputs: Vec<ValueId>,
    /// Initializers, by value; shared with the plans of subgraphs that read them.
    pub constants: HashMap<ValueId, Arc<Constant>>,
    pub nodes: Vec<Node>,
    /// Opset version per domain (`""` for the default domain).
    pub opsets: HashMap<String, i64>,
}

/// A model file that cannot be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("cannot read model file {path}: {cause}")]
    Read {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("model file {path} is not a valid ONNX model: {reason}; is the file complete and an .onnx file?")]
    NotOnnx { path: PathBuf, reason: String },
    #[error("model file {path}: {reason}")]
    Invalid { path: PathBuf, reason: String },
}

impl Model {
    /// Maps and decodes the model at `path`; `weights` owns whatever constants need copying.
    pub fn load(path: &Path, weights: &Owner) -> Result<Self, ModelError> {
        let mapping = map_file(path).map_err(|cause| ModelError::Read {
            path: path.to_owned(),
            cause,
        })?;
        Model::from_bytes(mapping, path, weights)
    }

    /// Decodes a model held in memory as if read from `path`: errors name `path`, and
    /// external-data files are looked for in its directory. Constants whose raw data is aligned
    /// stay views into `mapping`.
    pub fn from_bytes(mapping: Bytes, path: &Path, weights: &Owner) -> Result<Self, ModelError> {
        let not_onnx = |reason: String| ModelError::NotOnnx {
            path: path.to_owned(),
            reason,
        };
        if mapping.is_empty() {
            return Err(not_onnx("the file is empty".into()));
        }
        let proto = ModelProto::decode(mapping.clone())
            .map_err(|e| not_onnx(format!("protobuf decoding failed ({e})")))?;
        if proto.ir_version <= 0 {
            return Err(not_onnx("it has no ir_version".into()));
        }
        let Some(graph) = proto.graph else {
            return Err(not_onnx("it has no graph".into()));
        };
        let invalid = |reason: String| ModelError::Invalid {
            path: path.to_owned(),
            reason,
        };
        let mut opsets = HashMap::new();
        for opset in &proto.opset_import {
            let domain = if opset.domain == "ai.onnx" {
                ""
            } else {
                &opset.domain
            };
            opsets.insert(domain.to_owned(), opset.version);
        }
        if !opsets.contains_key("") && proto.ir_version < 3 {
            opsets.insert(String::new(), 1);
        }
        let mut model = Model::empty(path.to_owned(), mapping, opsets);
        model.read_graph(graph, weights).map_err(invalid)?;
        Ok(model)
    }

    /// A model of the file at `path` (mapped as `mapping`) with no graph read yet.
    fn empty(path: PathBuf, mapping: Bytes, opsets: HashMap<String, i64>) -> Self {
        Model {
            path,
            mapping,
            values: Vec::new(),
            inputs: Vec::new(),
            declared_inputs: 0,
            outputs: Vec::new(),
            constants: HashMap::new(),
            nodes: Vec::new(),
            opsets,
        }
    }

    /// Reads `graph`, the value of attribute `attribute` of `node` in this model, as a model
    /// sharing this one's file and opsets. Returns it with the names it reads from enclosing
    /// graphs, which became its inputs after the declared ones.
    fn subgraph(
        &self,
        node: &str,
        attribute: &str,
        graph: GraphProto,
        weights: &Owner,
    ) -> Result<(Model, Vec<String>), String> {
        let mut sub = Model::empty(self.path.clone(), self.mapping.clone(), self.opsets.clone());
        sub.read_graph(graph, weights)
            .map_err(|e| format!("node '{node}', attribute '{attribute}': {e}"))?;
        let mut defined = vec![false; sub.values.len()];
        for &id in sub.inputs.iter().chain(sub.constants.keys()) {
            defined[id] = true;
        }
        for id in sub.nodes.iter().flat_map(|n| n.outputs.iter().flatten()) {
            defined[*id] = true;
        }
        let mut captured = Vec::new();
        for (id, defined) in defined.into_iter().enumerate() {
            if !defined {
                sub.inputs.push(id);
                captured.push(sub.values[id].name.clone());
            }
        }
        Ok((sub, captured))
    }

    fn read_graph(&mut self, graph: GraphProto, weights: &Owner) -> Result<(), String> {
        let mut external = ExternalFiles::new(self.path.parent().unwrap_or(Path::new(".")));
        let mut ids: HashMap<String, ValueId> = HashMap::new();
        let mut intern = |values: &mut Vec<Value>, name: &str| -> ValueId {
            *ids.entry(name.to_owned()).or_insert_with(|| {
                values.push(Value {
                    name: name.to_owned(),
                    dtype: None,
                    shape: None,
                    kind: ValueKind::TENSOR,
                    unsupported: None,
                });
                values.len() - 1
            })
        };
        for init in &graph.initializer {
            if init.name.is_empty() {
                return Err("an initializer has no name".into());
            }
            let id = intern(&mut self.values, &init.name);
            let constant = if init.data_location == 1 || !init.external_data.is_empty() {
                external
                    .bytes(init)
                    .and_then(|bytes| Constant::from_external(init, bytes, weights))
            } else {
                Constant::from_proto(init, weights)
            }
            .map_err(|e| format!("initializer '{}': {e}", init.name))?;
            self.values[id].dtype = Some(constant.dtype);
            self.values[id].shape = Some(constant.shape.iter().map(|&d| Dim::Fixed(d)).collect());
            self.constants.insert(id, Arc::new(constant));
        }
        for info in &graph.input {
            let id = intern(&mut self.values, &info.name);
            if !self.constants.contains_key(&id) {
                declare(&mut self.values[id], info);
                self.inputs.push(id);
            }
        }
        self.declared_inputs = self.inputs.len();
        for info in graph.output.iter() {
            let id = intern(&mut self.values, &info.name);
            declare(&mut self.values[id], info);
            self.outputs.push(id);
        }
        for (index, node) in graph.node.into_iter().enumerate() {
            let name = if node.name.is_empty() {
                format!("#{index}")
            } else {
                node.name
            };
            let mut ids_of = |names: &[String]| -> Vec<Option<ValueId>> {
                names
                    .iter()
                    .map(|n| (!n.is_empty()).then(|| intern(&mut self.values, n)))
                    .collect()
            };
            let inputs = ids_of(&node.input);
            let outputs = ids_of(&node.output);
            let mut attributes = node.attribute;
            let mut subgraphs = Vec::new();
            for attribute in &mut attributes {
                let Some(graph) = attribute.g.take() else {
                    continue;
                };
                let (graph, captured) = self.subgraph(&name, &attribute.name, graph, weights)?;
                let captures = captured
                    .iter()
                    .map(|n| intern(&mut self.values, n))
                    .collect();
                subgraphs.push(Subgraph {
                    attribute: attribute.name.clone(),
                    graph: Arc::new(graph),
                    captures,
                });
            }
            attributes.retain(|a| a.r#type != GRAPH_ATTRIBUTE);
            self.nodes.push(Node {
                name,
                domain: node.domain,
                op_type: node.op_type,
                inputs,
                outputs,
                attributes,
                subgraphs,
            });
        }
        Ok(())
    }

    /// The file the model was loaded from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The mapped bytes of the file.
    pub fn mapping(&self) -> &[u8] {
        &self.mapping
    }

    /// The opset version the model imports for `domain`.
    pub fn opset(&self, domain: &str) -> Option<i64> {
        let domain = if domain == "ai.onnx" { "" } else { domain };
        self.opsets.get(domain).copied()
    }

    pub fn value_name(&self, id: ValueId) -> &str {
        &self.values[id].name
    }

    /// Every node of the model and of its subgraphs, with the graph each belongs to.
    pub fn all_nodes(&self) -> Vec<(&Model, &Node)> {
        let mut nodes = Vec::new();
        for node in &self.nodes {
            nodes.push((self, node));
            for subgraph in &node.subgraphs {
                nodes.extend(subgraph.graph.all_nodes());
            }
        }
        nodes
    }

    /// The value called `name`.
    pub fn value_id(&self, name: &str) -> Option<ValueId> {
        self.values.iter().position(|v| v.name == name)
    }
}

/// Records a `ValueInfoProto`'s declared type on `value`: its kind, and the dtype and shape of
/// the tensor it is or holds.
fn declare(value: &mut Value, info: &ValueInfoProto) {
    let Some(declared) = info.r#type.as_ref().and_then(|t| t.value.as_ref()) else {
        return;
    };
    let (kind, tensor) = match unwrap_type(declared) {
        Ok(found) => found,
        Err(unsupported) => {
            value.unsupported = Some(unsupported);
            return;
        }
    };
    value.kind = kind;
    let Some(tensor) = tensor else {
        return;
    };
    if tensor.elem_type != 0 {
        value.dtype = Some(DType(tensor.elem_type));
    }
    if let Some(shape) = &tensor.shape {
        let dims = shape
            .dim
            .iter()
            .map(|d| match &d.value {
                Some(DimValue::DimValue(v)) if *v >= 0 => Dim::Fixed(*v as usize),
                // Exporters write -1 for a dim of any size.
                Some(DimValue::DimValue(_)) => Dim::Unknown,
                Some(DimValue::DimParam(p)) if !p.is_empty() => Dim::Symbol(p.clone()),
                _ => Dim::Unknown,
            })
            .collect();
        value.shape = Some(dims);
    }
}

/// The kind of a declared type and the dtype of the tensor it is or holds (`UNDEFINED` when the
/// model leaves it out); the name of a kind opal does not run otherwise.
pub(crate) fn declared_type(
    declared: &type_proto::Value,
) -> Result<(ValueKind, DType), &'static str> {
    let (kind, tensor) = unwrap_type(declared)?;
    Ok((kind, DType(tensor.map_or(0, |t| t.elem_type))))
}

/// The kind of a declared type and the tensor type it is or holds (`None` when the model
/// leaves it out); the name of a kind opal does not run otherwise.
fn unwrap_type(
    declared: &type_proto::Value,
) -> Result<(ValueKind, Option<&type_proto::Tensor>), &'static str> {
    match declared {
        type_proto::Value::TensorType(tensor) => Ok((ValueKind::TENSOR, Some(tensor))),
        type_proto::Value::SequenceType(sequence) => {
            match sequence.elem_type.as_ref().and_then(|t| t.value.as_ref()) {
                None => Ok((ValueKind::SEQUENCE, None)),
                Some(type_proto::Value::TensorType(tensor)) => {
                    Ok((ValueKind::SEQUENCE, Some(tensor)))
                }
                Some(_) => Err("sequence of non-tensors"),
            }
        }
        type_proto::Value::OptionalType(optional) => {
            match optional.elem_type.as_ref().and_then(|t| t.value.as_ref()) {
                None => Ok((ValueKind::OPTIONAL_TENSOR, None)),
                Some(type_proto::Value::OptionalType(_)) => Err("optional of an optional"),
                Some(inner) => {
                    let (kind, tensor) = unwrap_type(inner)?;
                    Ok((kind.optional(), tensor))
                }
            }
        }
        type_proto::Value::MapType(_) => Err("map"),
        type_proto::Value::SparseTensorType(_) => Err("sparse tensor"),
    }
}
