//! Rust element types that have a fixed [`DType`], for typed views of tensor bytes.

use crate::DType;

mod sealed {
    pub trait Sealed {}
}

/// A plain-old-data element type with a fixed ONNX [`DType`].
///
/// Every bit pattern of the right size is a valid value, except for `bool` which the host only
/// ever fills with 0 or 1; sealed so that this holds.
pub trait Element: sealed::Sealed + Copy + Send + Sync + 'static {
    /// The dtype of tensors holding this element type.
    const DTYPE: DType;
}

macro_rules! element {
    ($($ty:ty => $dtype:ident),* $(,)?) => {$(
        impl sealed::Sealed for $ty {}
        impl Element for $ty {
            const DTYPE: DType = DType::$dtype;
        }
    )*};
}

element! {
    f32 => F32, f64 => F64,
    i8 => I8, i16 => I16, i32 => I32, i64 => I64,
    u8 => U8, u16 => U16, u32 => U32, u64 => U64,
    bool => BOOL,
}
