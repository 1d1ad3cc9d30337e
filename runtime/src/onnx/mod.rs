//! ONNX model files: protobuf messages.

pub mod proto;
