//! opal's host runtime: memory, plugin loading, ONNX models and their execution.

pub mod memory;
pub mod onnx;
pub mod plugin;
pub mod tensor;
