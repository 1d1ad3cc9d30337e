//! opal's core math plugin: f32 arithmetic, activations, matrix products and softmax, and the
//! dtype-agnostic shape operators, as ONNX operators behind the plugin ABI.
//!
//! No kernel allocates on the heap: temporaries come from the host's scratch arena, index
//! arithmetic uses fixed arrays (rank ≤ `MAX_RANK`), and parallel work
//! goes through the host's `parallel_for`.

mod binary;
mod gemm;
mod matmul;
mod shape;
mod softmax;
mod unary;

use opal_kernel_support::{broadcast, check, parallel, sgemm};

pub use binary::{Add, Div, Mul, Sub};
pub use gemm::Gemm;
pub use matmul::MatMul;
pub use shape::{Identity, Reshape, Transpose};
pub use softmax::{Softmax, SoftmaxFlattened};
pub use unary::{Relu, Sigmoid, Tanh};

opal_plugin_api::export_plugin! {
    name: "core-math",
    version: env!("CARGO_PKG_VERSION"),
    operators: [
        Add, Sub, Mul, Div,
        Relu, Sigmoid, Tanh,
        MatMul, Gemm,
        SoftmaxFlattened, Softmax,
        Reshape, Transpose, Identity,
    ],
}
