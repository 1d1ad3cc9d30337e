//! opal's transformer plugin: attention (softmax, flex with modifier subgraphs, and linear), rotary embeddings, the stateful
//! causal convolution, SwiGLU, the key/value cache update, and the int8/uint8 quantization
//! operators (quantize, dequantize, integer matrix products and convolutions), as ONNX
//! operators behind the plugin ABI.
//!
//! No kernel allocates on the heap: temporaries come from the host's scratch arena and index
//! arithmetic uses fixed arrays.

mod attention;
mod attention_scores;
mod causal_conv;
mod dims;
mod flex_attention;
mod half;
mod integer_conv;
mod integer_matmul;
mod linear_attention;
mod modifiers;
mod quant;
mod quantize;
mod rotary;
mod swiglu;
mod tensor_scatter;
mod work_float;

pub use attention::Attention;
pub use causal_conv::CausalConvWithState;
pub use flex_attention::FlexAttention;
pub use integer_conv::{ConvInteger, QLinearConv};
pub use integer_matmul::{MatMulInteger, QLinearMatMul};
pub use linear_attention::LinearAttention;
pub use quantize::{DequantizeLinear, DynamicQuantizeLinear, QuantizeLinear};
pub use rotary::RotaryEmbedding;
pub use swiglu::SwiGLU;
pub use tensor_scatter::TensorScatter;

opal_plugin_api::export_plugin! {
    name: "transformer",
    version: env!("CARGO_PKG_VERSION"),
    operators: [
        Attention, FlexAttention, LinearAttention,
        RotaryEmbedding,
        CausalConvWithState, SwiGLU, TensorScatter,
        QuantizeLinear, DequantizeLinear, DynamicQuantizeLinear,
        MatMulInteger, QLinearMatMul, ConvInteger, QLinearConv,
    ],
}
