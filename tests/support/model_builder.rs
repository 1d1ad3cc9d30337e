//! Writing small ONNX models from the tests, with the runtime's own protobuf messages.

use opal_runtime::onnx::proto::{
    tensor_shape_proto::{dimension::Value as DimValue, Dimension},
    type_proto, AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto,
    StringStringEntryProto, TensorProto, TensorShapeProto, TypeProto, ValueInfoProto,
};
use prost::Message;
use std::path::{Path, PathBuf};

/// A graph under construction; `write` saves it as an .onnx file.
#[derive(Default)]
pub struct ModelBuilder {
    graph: GraphProto,
    opsets: Vec<OperatorSetIdProto>,
}

impl ModelBuilder {
    /// A model importing the default domain at `opset`.
    pub fn new(opset: i64) -> Self {
        ModelBuilder {
            graph: GraphProto {
                name: "test".into(),
                ..Default::default()
            },
            opsets: vec![OperatorSetIdProto {
                domain: String::new(),
                version: opset,
            }],
        }
    }

    /// Also imports `domain` at `version`.
    pub fn opset(mut self, domain: &str, version: i64) -> Self {
        self.opsets.push(OperatorSetIdProto {
            domain: domain.into(),
            version,
        });
        self
    }

    /// A graph input of f32 with the given dims.
    pub fn input(mut self, name: &str, dims: &[i64]) -> Self {
        self.graph.input.push(value_info(name, dims));
        self
    }

    /// A graph input of int64 with the given dims.
    pub fn input_i64(mut self, name: &str, dims: &[i64]) -> Self {
        self.graph.input.push(typed(value_info(name, dims), 7));
        self
    }

    /// A graph output of f32 with the given dims.
    pub fn output(mut self, name: &str, dims: &[i64]) -> Self {
        self.graph.output.push(value_info(name, dims));
        self
    }

    /// A graph output of ONNX element type `elem_type` with the given dims.
    pub fn output_typed(mut self, name: &str, elem_type: i32, dims: &[i64]) -> Self {
        self.graph
            .output
            .push(typed(value_info(name, dims), elem_type));
        self
    }

    /// An f32 initializer.
    pub fn initializer(mut self, name: &str, dims: &[i64], values: &[f32]) -> Self {
        self.graph.initializer.push(TensorProto {
            name: name.into(),
            dims: dims.to_vec(),
            data_type: 1,
            float_data: values.to_vec(),
            ..Default::default()
        });
        self
    }

    /// An f32 initializer whose bytes are in the external file `location` (relative to the
    /// model) at `offset`.
    pub fn external_initializer(
        mut self,
        name: &str,
        dims: &[i64],
        location: &str,
        offset: usize,
    ) -> Self {
        let length: i64 = dims.iter().product::<i64>() * 4;
        let entry = |key: &str, value: String| StringStringEntryProto {
            key: key.into(),
            value,
        };
        self.graph.initializer.push(TensorProto {
            name: name.into(),
            dims: dims.to_vec(),
            data_type: 1,
            data_location: 1,
            external_data: vec![
                entry("location", location.into()),
                entry("offset", offset.to_string()),
                entry("length", length.to_string()),
            ],
            ..Default::default()
        });
        self
    }

    /// A node of `domain`/`op_type` with integer attributes.
    pub fn node(
        mut self,
        name: &str,
        domain: &str,
        op_type: &str,
        inputs: &[&str],
        outputs: &[&str],
        int_attributes: &[(&str, i64)],
    ) -> Self {
        self.graph.node.push(NodeProto {
            name: name.into(),
            domain: domain.into(),
            op_type: op_type.into(),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: outputs.iter().map(|s| s.to_string()).collect(),
            attribute: int_attributes
                .iter()
                .map(|(n, v)| AttributeProto {
                    name: n.to_string(),
                    r#type: 2,
                    i: *v,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        });
        self
    }

    /// A graph input of ONNX element type `elem_type` with the given dims.
    pub fn input_typed(mut self, name: &str, elem_type: i32, dims: &[i64]) -> Self {
        self.graph
            .input
            .push(typed(value_info(name, dims), elem_type));
        self
    }

    /// A graph input that is a sequence of tensors of ONNX element type `elem_type` and dims.
    pub fn input_sequence(mut self, name: &str, elem_type: i32, dims: &[i64]) -> Self {
        self.graph
            .input
            .push(wrapped(name, elem_type, dims, Wrap::Sequence));
        self
    }

    /// A graph input that is an optional tensor of ONNX element type `elem_type` and dims.
    pub fn input_optional(mut self, name: &str, elem_type: i32, dims: &[i64]) -> Self {
        self.graph
            .input
            .push(wrapped(name, elem_type, dims, Wrap::Optional));
        self
    }

    /// A graph output that is a sequence of tensors of ONNX element type `elem_type` and dims.
    pub fn output_sequence(mut self, name: &str, elem_type: i32, dims: &[i64]) -> Self {
        self.graph
            .output
            .push(wrapped(name, elem_type, dims, Wrap::Sequence));
        self
    }

    /// An int64 initializer.
    pub fn initializer_i64(mut self, name: &str, dims: &[i64], values: &[i64]) -> Self {
        self.graph.initializer.push(TensorProto {
            name: name.into(),
            dims: dims.to_vec(),
            data_type: 7,
            int64_data: values.to_vec(),
            ..Default::default()
        });
        self
    }

    /// A node of the default domain with graph-valued attributes (If's branches, Loop's body),
    /// each a graph built with [`into_graph`](Self::into_graph).
    pub fn graph_node(
        self,
        name: &str,
        op_type: &str,
        inputs: &[&str],
        outputs: &[&str],
        graphs: Vec<(&str, GraphProto)>,
    ) -> Self {
        self.graph_node_in("", name, op_type, inputs, outputs, graphs)
    }

    /// As [`graph_node`](Self::graph_node), for an operator of `domain`.
    pub fn graph_node_in(
        mut self,
        domain: &str,
        name: &str,
        op_type: &str,
        inputs: &[&str],
        outputs: &[&str],
        graphs: Vec<(&str, GraphProto)>,
    ) -> Self {
        self.graph.node.push(NodeProto {
            name: name.into(),
            domain: domain.into(),
            op_type: op_type.into(),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: outputs.iter().map(|s| s.to_string()).collect(),
            attribute: graphs
                .into_iter()
                .map(|(n, g)| AttributeProto {
                    name: n.to_string(),
                    r#type: 5,
                    g: Some(g),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        });
        self
    }

    /// Adds integer attribute `name` to the node added last (one with subgraphs, say).
    pub fn int_attribute(self, name: &str, value: i64) -> Self {
        self.attribute_on_last(AttributeProto {
            name: name.into(),
            r#type: 2,
            i: value,
            ..Default::default()
        })
    }

    /// Adds integer-list attribute `name` to the node added last.
    pub fn ints_attribute(self, name: &str, values: &[i64]) -> Self {
        self.attribute_on_last(AttributeProto {
            name: name.into(),
            r#type: 7,
            ints: values.to_vec(),
            ..Default::default()
        })
    }

    fn attribute_on_last(mut self, attribute: AttributeProto) -> Self {
        self.graph
            .node
            .last_mut()
            .expect("a node to give the attribute to")
            .attribute
            .push(attribute);
        self
    }

    /// The graph alone, to be a subgraph of another model's node.
    pub fn into_graph(self) -> GraphProto {
        self.graph
    }

    /// Gives the node added last a string attribute.
    pub fn string_attribute(mut self, name: &str, value: &str) -> Self {
        let node = self
            .graph
            .node
            .last_mut()
            .expect("a node to give the attribute to");
        node.attribute.push(AttributeProto {
            name: name.into(),
            r#type: 3,
            s: value.as_bytes().to_vec().into(),
            ..Default::default()
        });
        self
    }

    /// Gives the node added last a string-list attribute.
    pub fn strings_attribute(self, name: &str, values: &[&str]) -> Self {
        self.attribute_on_last(AttributeProto {
            name: name.into(),
            r#type: 8,
            strings: values
                .iter()
                .map(|v| v.as_bytes().to_vec().into())
                .collect(),
            ..Default::default()
        })
    }

    /// The encoded model.
    pub fn encode(self) -> Vec<u8> {
        ModelProto {
            ir_version: 8,
            opset_import: self.opsets,
            producer_name: "opal-tests".into(),
            graph: Some(self.graph),
            ..Default::default()
        }
        .encode_to_vec()
    }

    /// Writes the model to `dir/name` and returns the path.
    pub fn write(self, dir: &Path, name: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, self.encode()).expect("the test can write its model");
        path
    }
}

/// What a value of tensors is wrapped in.
enum Wrap {
    Sequence,
    Optional,
}

/// A sequence or optional of tensors of `elem_type` and `dims`.
fn wrapped(name: &str, elem_type: i32, dims: &[i64], wrap: Wrap) -> ValueInfoProto {
    let tensor = typed(value_info(name, dims), elem_type).r#type;
    let value = match wrap {
        Wrap::Sequence => type_proto::Value::SequenceType(type_proto::Sequence {
            elem_type: tensor.map(Box::new),
        }),
        Wrap::Optional => type_proto::Value::OptionalType(type_proto::Optional {
            elem_type: tensor.map(Box::new),
        }),
    };
    ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            value: Some(value),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// `info` with its element type set to `elem_type`.
fn typed(mut info: ValueInfoProto, elem_type: i32) -> ValueInfoProto {
    if let Some(type_proto::Value::TensorType(t)) =
        info.r#type.as_mut().and_then(|t| t.value.as_mut())
    {
        t.elem_type = elem_type;
    }
    info
}

fn value_info(name: &str, dims: &[i64]) -> ValueInfoProto {
    ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: 1,
                shape: Some(TensorShapeProto {
                    dim: dims
                        .iter()
                        .map(|&d| Dimension {
                            value: Some(if d >= 0 {
                                DimValue::DimValue(d)
                            } else {
                                DimValue::DimParam(format!("d{}", -d))
                            }),
                            ..Default::default()
                        })
                        .collect(),
                }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}
