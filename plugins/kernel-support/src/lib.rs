//! Building blocks shared by opal's operator plugins: argument checks and errors, numpy
//! broadcasting, i32/i64 integer inputs read as i64, half-float and low-bit (8-, 4- and 2-bit) conversion, float tensors read and
//! written through f64, the elementwise epilogue of fused calls, vectorisable f32 exp/sigmoid/tanh, splitting work over
//! the host's `parallel_for`, the instruction set a kernel call runs on, a blocked SGEMM whose
//! micro-kernel follows it and whose packing buffers come from the host's scratch, and helpers
//! for kernel tests.
//!
//! A plain library: it exports no plugin and installs no allocator, so any plugin can link it.

pub mod broadcast;
pub mod check;
pub mod epilogue;
pub mod fast_math;
pub mod float_values;
pub mod half;
pub mod int_values;
pub mod isa;
pub mod low_bit;
pub mod parallel;
pub mod sgemm;
pub mod simd;
pub mod testutil;
