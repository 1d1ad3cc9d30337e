//! Element types of tensors, numbered as ONNX's `TensorProto.DataType`.

use abi_stable::StableAbi;
use std::fmt;

/// The element type of a tensor. A transparent integer so that new types can be added without
/// breaking the ABI; the values are ONNX's `TensorProto.DataType` numbers.
#[repr(transparent)]
#[derive(StableAbi, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DType(pub i32);

impl DType {
    pub const UNDEFINED: DType = DType(0);
    pub const F32: DType = DType(1);
    pub const U8: DType = DType(2);
    pub const I8: DType = DType(3);
    pub const U16: DType = DType(4);
    pub const I16: DType = DType(5);
    pub const I32: DType = DType(6);
    pub const I64: DType = DType(7);
    pub const STRING: DType = DType(8);
    pub const BOOL: DType = DType(9);
    pub const F16: DType = DType(10);
    pub const F64: DType = DType(11);
    pub const U32: DType = DType(12);
    pub const U64: DType = DType(13);
    pub const BF16: DType = DType(16);

    /// Bytes per element, or `None` for types without a fixed size (strings, undefined, unknown).
    pub const fn size(self) -> Option<usize> {
        Some(match self {
            DType::F32 | DType::I32 | DType::U32 => 4,
            DType::U8 | DType::I8 | DType::BOOL => 1,
            DType::U16 | DType::I16 | DType::F16 | DType::BF16 => 2,
            DType::I64 | DType::F64 | DType::U64 => 8,
            _ => return None,
        })
    }

    /// The lower-case name used in messages and in the KServe protocol's spirit (`f32`, `i64`, …).
    pub const fn name(self) -> &'static str {
        match self {
            DType::UNDEFINED => "undefined",
            DType::F32 => "f32",
            DType::U8 => "u8",
            DType::I8 => "i8",
            DType::U16 => "u16",
            DType::I16 => "i16",
            DType::I32 => "i32",
            DType::I64 => "i64",
            DType::STRING => "string",
            DType::BOOL => "bool",
            DType::F16 => "f16",
            DType::F64 => "f64",
            DType::U32 => "u32",
            DType::U64 => "u64",
            DType::BF16 => "bf16",
            _ => "unknown",
        }
    }
}

impl fmt::Debug for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            "unknown" => write!(f, "dtype#{}", self.0),
            name => f.write_str(name),
        }
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}
