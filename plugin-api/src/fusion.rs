//! Fusion (since ABI 1.4): a kernel may absorb the nodes that consume its output — an
//! activation, a normalisation, a residual add — into its own call, so their work is done
//! while the output is still in cache and their intermediates are never written.
//!
//! The host knows no operator. After compiling a model, it offers each consumer of a node's
//! output to that node's operator as a [`FuseQuery`]. The operator accepts by returning its own
//! description of the fused work (bytes only it reads); the host keeps that with the compiled
//! step and lends it back on every call through
//! [`KernelContext::fusion`](crate::KernelContext::fusion). The inputs the absorbed nodes
//! bring are appended to the call's inputs.

use crate::{
    attribute::{Attribute, Attributes},
    infer::{InferInput, InferTensor, OutputType},
    DType,
};
use abi_stable::{
    std_types::{RSlice, RStr},
    StableAbi,
};

/// Where an operand of an absorbed node comes from.
#[repr(C, u8)]
#[derive(StableAbi, Clone, Copy, Debug, PartialEq, Eq)]
pub enum FusedOperand {
    /// An omitted optional input.
    Absent,
    /// A value computed inside the fused call: 0 is the leading node's output, `k` the output
    /// of the `k`-th absorbed node.
    Value(usize),
    /// Input `i` of the fused call: the leading node's own inputs come first, then those the
    /// absorbed nodes bring, in the order they were absorbed.
    Input(usize),
}

/// The node offered for absorption.
#[repr(C)]
#[derive(StableAbi)]
pub struct FuseCandidate<'a> {
    /// ONNX domain; `""` is the default `ai.onnx` domain.
    pub domain: RStr<'a>,
    pub op_type: RStr<'a>,
    /// The model's opset for the candidate's domain.
    pub opset: i64,
    pub attributes: RSlice<'a, Attribute<'a>>,
    pub operands: RSlice<'a, FusedOperand>,
    /// The candidate's (single) output.
    pub output: OutputType,
}

/// The arguments of an operator's fusion function.
#[repr(C)]
#[derive(StableAbi)]
pub struct FuseCall<'a> {
    /// The fused call's inputs if the candidate is accepted, as inference sees them (values of
    /// constants included).
    pub inputs: RSlice<'a, InferInput<'a>>,
    /// The leading node's attributes.
    pub attributes: RSlice<'a, Attribute<'a>>,
    /// How many of `inputs` are the leading node's own (optional ones it omits included).
    pub node_inputs: usize,
    /// The type of each value computed inside the call so far (see [`FusedOperand::Value`]).
    pub values: RSlice<'a, OutputType>,
    /// What the operator answered when it accepted the previous candidate; empty for the first.
    pub state: RSlice<'a, u8>,
    pub candidate: FuseCandidate<'a>,
}

/// A candidate for absorption, as the leading node's operator sees it.
pub struct FuseQuery<'a> {
    call: &'a FuseCall<'a>,
}

impl<'a> FuseQuery<'a> {
    pub fn new(call: &'a FuseCall<'a>) -> Self {
        FuseQuery { call }
    }

    /// The leading node's attributes.
    pub fn attributes(&self) -> Attributes<'a> {
        Attributes::new(self.call.attributes.as_slice())
    }

    /// The description this operator returned for the previous candidate; empty at first.
    pub fn state(&self) -> &'a [u8] {
        self.call.state.as_slice()
    }

    /// How many inputs the fused call would have.
    pub fn input_count(&self) -> usize {
        self.call.inputs.len()
    }

    /// How many inputs the leading node has itself: the absorbed nodes' inputs start there.
    pub fn node_input_count(&self) -> usize {
        self.call.node_inputs
    }

    /// Input `index` of the fused call, or `None` if absent.
    pub fn input(&self, index: usize) -> Option<InferTensor<'a>> {
        let input = self.call.inputs.as_slice().get(index)?;
        (input.dtype != DType::UNDEFINED).then(|| InferTensor::from_abi(input))
    }

    /// The type of value `k` computed in the call (0: the leading node's output).
    pub fn value(&self, k: usize) -> Option<&'a OutputType> {
        self.call.values.as_slice().get(k)
    }

    /// How many values the call computes so far.
    pub fn value_count(&self) -> usize {
        self.call.values.len()
    }

    /// The candidate's domain (`""` for `ai.onnx`) and op_type.
    pub fn candidate_op(&self) -> (&'a str, &'a str) {
        let c = &self.call.candidate;
        (c.domain.as_str(), c.op_type.as_str())
    }

    /// The model's opset for the candidate's domain.
    pub fn candidate_opset(&self) -> i64 {
        self.call.candidate.opset
    }

    pub fn candidate_attributes(&self) -> Attributes<'a> {
        Attributes::new(self.call.candidate.attributes.as_slice())
    }

    /// Where each of the candidate's inputs comes from.
    pub fn operands(&self) -> &'a [FusedOperand] {
        self.call.candidate.operands.as_slice()
    }

    /// The type of the candidate's output.
    pub fn candidate_output(&self) -> &'a OutputType {
        &self.call.candidate.output
    }
}
