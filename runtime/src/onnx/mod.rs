//! ONNX model files: the protobuf messages, loading a model from a memory-mapped file, its
//! constants, and node attributes as plugins see them.

mod attributes;
mod constant;
mod external;
mod model;
pub(crate) mod packed;
pub mod proto;

pub use attributes::NodeAttributes;
pub use constant::{Constant, ConstantData};
pub use model::{Dim, Model, ModelError, Node, Value, ValueId};
