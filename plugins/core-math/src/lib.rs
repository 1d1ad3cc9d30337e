//! opal's core math plugin: elementwise arithmetic, comparisons and logic, activations, casts,
//! reductions, softmax and its relatives, matrix products, and the dtype-agnostic shape
//! operators, and the random generators (drawing numpy's numbers for a given seed), as ONNX
//! operators behind the plugin ABI. Kernels are generic over the numeric
//! element types; f16 and bf16 compute in f32.
//!
//! No kernel allocates on the heap: temporaries come from the host's scratch arena, index
//! arithmetic uses fixed arrays (rank ≤ `MAX_RANK`), and parallel work
//! goes through the host's `parallel_for`.

mod activation;
mod arg_reduce;
mod bernoulli;
mod binary;
mod bit_cast;
mod cast;
mod cast_string;
mod clip;
mod compare;
mod cumulative;
mod det;
mod einsum;
mod elementwise;
mod gemm;
mod half;
mod legacy_random;
mod logical;
mod matmul;
mod numeric;
mod random;
mod reduce;
mod shape;
mod softmax;
mod unary;
mod variadic;

use opal_kernel_support::{broadcast, check, parallel, sgemm};

pub use activation::{
    Celu, Elu, Gelu, HardSigmoid, HardSwish, LeakyRelu, Mish, Relu, Selu, Shrink, Sigmoid,
    Softplus, Softsign, Swish, Tanh, ThresholdedRelu,
};
pub use arg_reduce::{ArgMax, ArgMin};
pub use bernoulli::Bernoulli;
pub use binary::{Add, Div, Mod, Mul, PRelu, Pow, Sub};
pub use bit_cast::BitCast;
pub use cast::{Cast, CastLike};
pub use clip::{Clip, ClipAttributes};
pub use compare::{Equal, Greater, GreaterOrEqual, Less, LessOrEqual};
pub use cumulative::{CumProd, CumSum};
pub use det::Det;
pub use einsum::Einsum;
pub use gemm::Gemm;
pub use logical::{And, BitShift, BitwiseAnd, BitwiseNot, BitwiseOr, BitwiseXor, Not, Or, Xor};
pub use matmul::MatMul;
pub use random::{RandomNormal, RandomNormalLike, RandomUniform, RandomUniformLike};
pub use reduce::{
    ReduceL1, ReduceL2, ReduceLogSum, ReduceLogSumExp, ReduceMax, ReduceMean, ReduceMin,
    ReduceProd, ReduceSum, ReduceSumSquare,
};
pub use shape::{Identity, Reshape, Transpose};
pub use softmax::{
    Hardmax, HardmaxFlattened, LogSoftmax, LogSoftmaxFlattened, Softmax, SoftmaxFlattened,
};
pub use unary::{
    Abs, Acos, Acosh, Asin, Asinh, Atan, Atanh, Ceil, Cos, Cosh, Erf, Exp, Floor, IsInf, IsNaN,
    Log, Neg, Reciprocal, Round, Sign, Sin, Sinh, Sqrt, Tan,
};
pub use variadic::{Max, Mean, Min, Sum};

opal_plugin_api::export_plugin! {
    name: "core-math",
    version: env!("CARGO_PKG_VERSION"),
    operators: [
        Add, Sub, Mul, Div,
        Relu, Sigmoid, Tanh,
        MatMul, Gemm,
        SoftmaxFlattened, Softmax,
        Reshape, Transpose, Identity,
        Mod, Pow, PRelu,
        Max, Min, Sum, Mean,
        Equal, Less, Greater, LessOrEqual, GreaterOrEqual,
        And, Or, Xor, Not,
        BitShift, BitwiseAnd, BitwiseOr, BitwiseXor, BitwiseNot,
        Abs, Neg, Sign, Exp, Log, Sqrt, Reciprocal, Floor, Ceil, Round,
        Sin, Cos, Tan, Asin, Acos, Atan, Sinh, Cosh, Asinh, Acosh, Atanh, Erf,
        IsNaN, IsInf,
        ClipAttributes, Clip,
        LeakyRelu, Elu, Selu, Celu, HardSigmoid, HardSwish, Softplus, Softsign,
        Gelu, Mish, ThresholdedRelu, Shrink, Swish,
        Cast, CastLike, BitCast,
        ReduceSum, ReduceMean, ReduceMax, ReduceMin, ReduceProd,
        ReduceL1, ReduceL2, ReduceLogSum, ReduceLogSumExp, ReduceSumSquare,
        ArgMax, ArgMin, CumSum, CumProd,
        LogSoftmaxFlattened, LogSoftmax, HardmaxFlattened, Hardmax,
        Einsum, Det,
        RandomUniform, RandomUniformLike, RandomNormal, RandomNormalLike, Bernoulli,
    ],
}
