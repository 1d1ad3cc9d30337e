//! Values beyond tensors as they cross the ABI (since 1.8): the kinds ONNX gives a value
//! (tensor, sequence of tensors, optional tensor or sequence), and how a kernel names a value
//! it passes on without reading it (an input of its node, or an output of a subgraph's last run).

use crate::{infer::OutputType, tensor::TensorView};
use abi_stable::{std_types::RStr, StableAbi};
use std::fmt;

/// The kind of a value, as inference knows it. A transparent integer so later versions can add
/// kinds. A sequence's dtype and shape (in [`InferInput`](crate::InferInput) and
/// [`OutputType`]) are those of its elements, with -1 for dims its elements do not share.
#[repr(transparent)]
#[derive(StableAbi, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ValueKind(pub u32);

impl ValueKind {
    pub const TENSOR: ValueKind = ValueKind(0);
    pub const SEQUENCE: ValueKind = ValueKind(1);
    /// A tensor, or none.
    pub const OPTIONAL_TENSOR: ValueKind = ValueKind(2);
    /// A sequence, or none.
    pub const OPTIONAL_SEQUENCE: ValueKind = ValueKind(3);

    /// Whether the value may be none.
    pub fn is_optional(self) -> bool {
        self == Self::OPTIONAL_TENSOR || self == Self::OPTIONAL_SEQUENCE
    }

    /// Whether the value is (or, if optional, holds) a sequence.
    pub fn holds_sequence(self) -> bool {
        self == Self::SEQUENCE || self == Self::OPTIONAL_SEQUENCE
    }

    /// The optional kind holding this one (an optional kind stays as it is).
    pub fn optional(self) -> ValueKind {
        if self.holds_sequence() {
            Self::OPTIONAL_SEQUENCE
        } else {
            Self::OPTIONAL_TENSOR
        }
    }

    /// The kind an optional holds (any other kind stays as it is).
    pub fn element(self) -> ValueKind {
        if self.holds_sequence() {
            Self::SEQUENCE
        } else {
            Self::TENSOR
        }
    }

    /// The kind with its article, for messages: "a tensor", "an optional(sequence)".
    pub fn described(self) -> String {
        if self.is_optional() {
            format!("an {self}")
        } else {
            format!("a {self}")
        }
    }

    /// Whether this is a kind this version knows.
    pub fn is_known(self) -> bool {
        self.0 <= 3
    }
}

impl fmt::Display for ValueKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::TENSOR => f.write_str("tensor"),
            Self::SEQUENCE => f.write_str("sequence"),
            Self::OPTIONAL_TENSOR => f.write_str("optional(tensor)"),
            Self::OPTIONAL_SEQUENCE => f.write_str("optional(sequence)"),
            ValueKind(other) => write!(f, "value kind {other}"),
        }
    }
}

impl fmt::Debug for ValueKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// The type of a subgraph's output: its kind, and its (or its elements') dtype and shape.
#[repr(C)]
#[derive(StableAbi, Clone, Debug, PartialEq)]
pub struct ValueType {
    pub kind: ValueKind,
    pub ty: OutputType,
}

/// What a call's value holds at run time: a tensor (also an absent input), a sequence, or
/// none (an optional without a value).
#[repr(transparent)]
#[derive(StableAbi, Clone, Copy, PartialEq, Eq, Debug)]
pub struct Held(pub u32);

impl Held {
    pub const TENSOR: Held = Held(0);
    pub const SEQUENCE: Held = Held(1);
    pub const NONE: Held = Held(2);
}

/// A value a kernel passes on without reading it: to a subgraph's input, or to one of its own
/// node's outputs, where the host moves or copies it whatever its kind.
#[repr(C)]
#[derive(StableAbi, Clone, Copy)]
pub struct ValueSource<'a> {
    /// One of [`ValueSource::TENSOR`], [`ValueSource::INPUT`], [`ValueSource::SUBGRAPH_OUTPUT`].
    pub from: u32,
    /// The node input, or the subgraph output, it names.
    pub index: usize,
    /// For `SUBGRAPH_OUTPUT`, the graph attribute holding the subgraph; otherwise empty.
    pub subgraph: RStr<'a>,
    /// For `TENSOR`, the tensor; otherwise absent.
    pub tensor: TensorView<'a>,
}

impl<'a> ValueSource<'a> {
    /// `tensor` itself.
    pub const TENSOR: u32 = 0;
    /// Input `index` of the node.
    pub const INPUT: u32 = 1;
    /// Output `index` of the last run of subgraph `subgraph` in this call.
    pub const SUBGRAPH_OUTPUT: u32 = 2;

    /// The tensor `view`.
    pub fn tensor(view: TensorView<'a>) -> Self {
        ValueSource {
            from: Self::TENSOR,
            index: 0,
            subgraph: RStr::from_str(""),
            tensor: view,
        }
    }

    /// Input `index` of the node, whatever it holds.
    pub fn input(index: usize) -> Self {
        ValueSource {
            from: Self::INPUT,
            index,
            subgraph: RStr::from_str(""),
            tensor: TensorView::ABSENT,
        }
    }

    /// Output `index` of the last run of the subgraph in graph attribute `subgraph`.
    pub fn subgraph_output(subgraph: &'a str, index: usize) -> Self {
        ValueSource {
            from: Self::SUBGRAPH_OUTPUT,
            index,
            subgraph: RStr::from_str(subgraph),
            tensor: TensorView::ABSENT,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_wrap_into_optionals_and_back() {
        assert_eq!(ValueKind::TENSOR.optional(), ValueKind::OPTIONAL_TENSOR);
        assert_eq!(ValueKind::SEQUENCE.optional(), ValueKind::OPTIONAL_SEQUENCE);
        assert_eq!(
            ValueKind::OPTIONAL_SEQUENCE.optional(),
            ValueKind::OPTIONAL_SEQUENCE
        );
        assert_eq!(ValueKind::OPTIONAL_SEQUENCE.element(), ValueKind::SEQUENCE);
        assert_eq!(ValueKind::OPTIONAL_TENSOR.element(), ValueKind::TENSOR);
        assert!(ValueKind::OPTIONAL_TENSOR.is_optional() && !ValueKind::SEQUENCE.is_optional());
        assert!(!ValueKind(7).is_known());
        assert_eq!(
            ValueKind::OPTIONAL_SEQUENCE.to_string(),
            "optional(sequence)"
        );
    }
}
