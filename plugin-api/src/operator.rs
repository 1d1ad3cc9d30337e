//! One operator as it crosses the ABI (a prefix-type table of two functions), and the
//! [`Operator`] trait a plugin author implements for it.

use crate::{
    attribute::Attribute,
    fusion::{FuseCall, FuseQuery},
    host::HostServices,
    infer::{InferContext, InferInput, OutputType},
    kernel::{KernelContext, KernelResult},
    subgraph::InferHost,
    tensor::{TensorView, TensorViewMut},
};
use abi_stable::{
    std_types::{ROption, RResult, RSlice, RStr, RString, RVec},
    StableAbi,
};

/// The arguments of a shape and type inference call.
#[repr(C)]
#[derive(StableAbi)]
pub struct InferCall<'a> {
    pub inputs: RSlice<'a, InferInput<'a>>,
    pub attributes: RSlice<'a, Attribute<'a>>,
    /// How many outputs the node declares.
    pub output_count: usize,
}

/// The arguments of a kernel call: inputs, host-allocated outputs, attributes, host services.
/// The output views are lent in a shared slice (so every lifetime here can shrink to the
/// call's); each view's bytes are the kernel's alone for the call.
#[repr(C)]
#[derive(StableAbi)]
pub struct KernelCall<'a> {
    pub inputs: RSlice<'a, TensorView<'a>>,
    pub outputs: RSlice<'a, TensorViewMut<'a>>,
    pub attributes: RSlice<'a, Attribute<'a>>,
    pub host: HostServices,
}

/// An operator's function table, keyed by (domain, op_type, opset range) as ONNX does.
#[repr(C)]
#[derive(StableAbi)]
#[sabi(kind(Prefix(prefix_ref = OperatorRef)))]
pub struct OperatorVTable {
    /// ONNX domain; `""` is the default `ai.onnx` domain.
    pub domain: RStr<'static>,
    pub op_type: RStr<'static>,
    /// First opset version this kernel implements.
    pub since_version: i64,
    /// Last opset version this kernel implements (inclusive).
    pub until_version: i64,
    /// Bit `i` set: inference needs the value (not only the shape) of input `i`.
    pub value_inputs: u64,
    pub infer: extern "C" fn(&InferCall<'_>) -> RResult<RVec<OutputType>, RString>,
    #[sabi(last_prefix_field)]
    pub compute: extern "C" fn(&mut KernelCall<'_>) -> RResult<(), RString>,
    /// Since ABI 1.2. Bit `i` set: compute reads only the shape of input `i` (as Shape and Size
    /// do), so the host may run the node before that input's data exists.
    pub shape_inputs: u64,
    /// Since ABI 1.4. Offered a consumer of the node's output, returns the operator's
    /// description of the call with that node absorbed, or nothing to refuse it (see
    /// [`fusion`](crate::fusion)).
    pub fuse: extern "C" fn(&FuseCall<'_>) -> ROption<RVec<u8>>,
    /// Since ABI 1.6. As `infer`, with the host's inference services, through which the node's
    /// subgraphs are typed. A host that has it calls it instead of `infer`.
    pub infer_scoped:
        extern "C" fn(&InferCall<'_>, InferHost) -> RResult<RVec<OutputType>, RString>,
    /// Since ABI 1.7. The outputs are random draws, not a function of the inputs and
    /// attributes: the host never computes the node ahead of a run (constant folding), and a
    /// reload does not compare the outputs that depend on it.
    pub draws_at_random: bool,
    /// Since ABI 1.8. The operator reads its inputs' kinds and takes sequences and optionals
    /// where it means to (see [`value`](crate::value)); the host gives other operators tensors
    /// only.
    pub reads_value_kinds: bool,
    /// Since ABI 1.9. The operator takes and makes string tensors (see
    /// [`strings`](crate::strings)); the host refuses a node that would give another
    /// operator a string input or ask it for a string output.
    pub takes_strings: bool,
}

/// An ONNX operator implemented by a plugin, written in plain safe Rust.
///
/// Implement it on a unit struct and list the struct in [`export_plugin!`](crate::export_plugin).
pub trait Operator: 'static {
    /// ONNX domain; `""` is the default `ai.onnx` domain.
    const DOMAIN: &'static str = "";
    /// The ONNX `op_type`, for example `"MatMul"`.
    const OP_TYPE: &'static str;
    /// First opset version this kernel implements.
    const SINCE_VERSION: i64 = 1;
    /// Last opset version this kernel implements (inclusive).
    const UNTIL_VERSION: i64 = i64::MAX;
    /// Indices of inputs whose values (not only shapes) inference needs, such as Reshape's shape.
    const VALUE_INPUTS: &'static [usize] = &[];
    /// Indices of inputs of which compute reads only the shape, never the data (Shape, Size).
    /// The host then folds the node into a constant when those shapes are known.
    const SHAPE_INPUTS: &'static [usize] = &[];
    /// Whether the outputs are random draws rather than a function of the inputs and attributes
    /// (RandomUniform, Bernoulli): the host then computes the node in every run, never once
    /// ahead of them.
    const DRAWS_AT_RANDOM: bool = false;
    /// Whether the operator takes sequences or optionals: its inference reads the inputs'
    /// kinds ([`InferContext::input_kind`]) and refuses those it does not take. Operators that
    /// leave it false are given tensors only.
    const READS_VALUE_KINDS: bool = false;
    /// Whether the operator takes or makes string tensors: it reads them with
    /// [`TensorRef::strings`](crate::TensorRef::strings) and writes them with
    /// [`TensorMut::strings_mut`](crate::TensorMut::strings_mut). The host never gives an
    /// operator that leaves it false a string input, nor asks it for a string output.
    const TAKES_STRINGS: bool = false;

    /// Output dtypes and shapes from the inputs' dtypes and shapes. The default gives every
    /// output the dtype and shape of input 0, which suits elementwise unary operators.
    fn infer(cx: &InferContext<'_>) -> KernelResult<Vec<OutputType>> {
        let x = cx.input(0)?;
        Ok(vec![
            OutputType::new(x.dtype, x.shape.to_vec());
            cx.output_count()
        ])
    }

    /// Computes the outputs, which the host allocated with the inferred shapes.
    fn compute(cx: &mut KernelContext<'_>) -> KernelResult<()>;

    /// Offered a node that consumes this node's output, returns the description of the call
    /// with it absorbed (which [`KernelContext::fusion`] gives back on every call), or `None`
    /// to refuse. The default refuses everything. See [`fusion`](crate::fusion).
    fn fuse(query: &FuseQuery<'_>) -> Option<Vec<u8>> {
        let _ = query;
        None
    }
}
