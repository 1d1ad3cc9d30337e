//! Element types of tensors, numbered as ONNX's `TensorProto.DataType`.
//!
//! The low-bit types (float8 E4M3FN, E4M3FNUZ, E5M2, E5M2FNUZ and E8M0, float4 E2M1, uint4,
//! int4, uint2, int2) take **one byte per element in memory**, so that kernels index them like
//! `u8`: an 8-bit float is its bit pattern, and a sub-byte type holds its value in the low bits
//! of its byte (the 4-bit code of a float4; the value of a uint4 or uint2; the value of an int4
//! or int2 sign-extended to the whole byte, so that its byte read as `i8` is the number).
//! Files keep ONNX's packed layout instead (`TensorProto` `raw_data` and `int32_data`): two
//! 4-bit or four 2-bit values per byte, the first in the lowest bits. Readers unpack them and
//! writers pack them; nothing else sees the packed form.
//!
//! A string element in memory is a [`StringView`](crate::tensor::StringView) of UTF-8 bytes the
//! host owns (since ABI 1.9): its size is that of the view, and the bytes live elsewhere.

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
    /// 8-bit float, 4 exponent and 3 mantissa bits, no infinity, NaN `S.1111.111` (max 448).
    pub const F8E4M3FN: DType = DType(17);
    /// 8-bit float, 4 exponent and 3 mantissa bits, bias 8, no infinity nor negative zero: NaN
    /// is `0x80` (max 240).
    pub const F8E4M3FNUZ: DType = DType(18);
    /// 8-bit float, 5 exponent and 2 mantissa bits, IEEE-like with infinities (max 57344).
    pub const F8E5M2: DType = DType(19);
    /// 8-bit float, 5 exponent and 2 mantissa bits, bias 16, no infinity nor negative zero:
    /// NaN is `0x80` (max 57344).
    pub const F8E5M2FNUZ: DType = DType(20);
    /// 4-bit unsigned integer, one per byte in memory.
    pub const U4: DType = DType(21);
    /// 4-bit signed integer, one per byte in memory, sign-extended.
    pub const I4: DType = DType(22);
    /// 4-bit float, 2 exponent and 1 mantissa bits, no infinity nor NaN (max 6), one per byte.
    pub const F4E2M1: DType = DType(23);
    /// 8-bit power of two `2^(bits - 127)`, no sign nor zero: NaN is `0xFF`.
    pub const F8E8M0: DType = DType(24);
    /// 2-bit unsigned integer, one per byte in memory.
    pub const U2: DType = DType(25);
    /// 2-bit signed integer, one per byte in memory, sign-extended.
    pub const I2: DType = DType(26);

    /// Bytes per element in memory, or `None` for types without a fixed size (undefined,
    /// unknown). Every low-bit type takes one byte, and a string the size of its
    /// [`StringView`](crate::tensor::StringView) (see the module's documentation).
    pub const fn size(self) -> Option<usize> {
        Some(match self {
            DType::STRING => std::mem::size_of::<crate::tensor::StringView>(),
            DType::F32 | DType::I32 | DType::U32 => 4,
            DType::U8 | DType::I8 | DType::BOOL => 1,
            _ if self.is_low_bit() => 1,
            DType::U16 | DType::I16 | DType::F16 | DType::BF16 => 2,
            DType::I64 | DType::F64 | DType::U64 => 8,
            _ => return None,
        })
    }

    /// Whether this is one of the low-bit types, which take one byte per element in memory
    /// and are packed in files when narrower than a byte.
    pub const fn is_low_bit(self) -> bool {
        matches!(self.0, 17..=26)
    }

    /// How many elements of this type a byte of a file holds: 2 for the 4-bit types, 4 for
    /// the 2-bit types, 1 for every other type.
    pub const fn per_packed_byte(self) -> usize {
        match self {
            DType::U4 | DType::I4 | DType::F4E2M1 => 2,
            DType::U2 | DType::I2 => 4,
            _ => 1,
        }
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
            DType::F8E4M3FN => "f8e4m3fn",
            DType::F8E4M3FNUZ => "f8e4m3fnuz",
            DType::F8E5M2 => "f8e5m2",
            DType::F8E5M2FNUZ => "f8e5m2fnuz",
            DType::U4 => "u4",
            DType::I4 => "i4",
            DType::F4E2M1 => "f4e2m1",
            DType::F8E8M0 => "f8e8m0",
            DType::U2 => "u2",
            DType::I2 => "i2",
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
