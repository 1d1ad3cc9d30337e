//! opal's transformer plugin: attention, rotary embeddings, and the int8/uint8 quantization
//! operators (quantize, dequantize, integer matrix products and convolutions), as ONNX
//! operators behind the plugin ABI.
//!
//! No kernel allocates on the heap: temporaries come from the host's scratch arena and index
//! arithmetic uses fixed arrays.

mod attention;
mod attention_scores;
mod half;
mod integer_conv;
mod integer_matmul;
mod quant;
mod quantize;
mod rotary;

pub use attention::Attention;
pub use integer_conv::{ConvInteger, QLinearConv};
pub use integer_matmul::{MatMulInteger, QLinearMatMul};
pub use quantize::{DequantizeLinear, DynamicQuantizeLinear, QuantizeLinear};
pub use rotary::RotaryEmbedding;

opal_plugin_api::export_plugin! {
    name: "transformer",
    version: env!("CARGO_PKG_VERSION"),
    operators: [
        Attention,
        RotaryEmbedding,
        QuantizeLinear, DequantizeLinear, DynamicQuantizeLinear,
        MatMulInteger, QLinearMatMul, ConvInteger, QLinearConv,
    ],
}
