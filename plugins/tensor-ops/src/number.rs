//! Typed element values for the few operators that look at values rather than move bytes
//! (TopK, Unique, Range, NonZero, EyeLike, OneHot indices, scatter reductions): a `Number`
//! trait over every fixed-size dtype, f16 and bf16 included (converted through f32), read and
//! written as `[u8; N]` elements so no typed slice of the tensor is needed.

use opal_kernel_support::half;
use opal_plugin_api::DType;
use std::cmp::Ordering;

/// An element type whose values can be compared, combined and converted.
pub(crate) trait Number: Copy + Send + Sync + 'static {
    /// The element's bytes, `[u8; size]`.
    type Bytes: Copy + Send + Sync + AsRef<[u8]> + 'static;
    const ONE: Self;

    /// The elements of a tensor's bytes.
    fn view(bytes: &[u8]) -> &[Self::Bytes];
    fn view_mut(bytes: &mut [u8]) -> &mut [Self::Bytes];
    fn from_bytes(bytes: Self::Bytes) -> Self;
    fn to_bytes(self) -> Self::Bytes;

    fn to_f64(self) -> f64;
    /// Truncates floats toward zero (saturating).
    fn to_i64(self) -> i64;
    /// Wraps for narrower integers.
    fn from_i64(value: i64) -> Self;
    /// Rounds (floats) or truncates and saturates (integers).
    fn from_f64(value: f64) -> Self;
    /// A total order: NaN above every number, as numpy sorts.
    fn order(self, other: Self) -> Ordering;
    fn add(self, other: Self) -> Self;
    fn mul(self, other: Self) -> Self;
    fn is_zero(self) -> bool;

    fn larger(self, other: Self) -> Self {
        if other.order(self) == Ordering::Greater {
            other
        } else {
            self
        }
    }

    fn smaller(self, other: Self) -> Self {
        if other.order(self) == Ordering::Less {
            other
        } else {
            self
        }
    }
}

macro_rules! int_number {
    ($($ty:ty),*) => {$(
        impl Number for $ty {
            type Bytes = [u8; std::mem::size_of::<$ty>()];
            const ONE: Self = 1;

            fn view(bytes: &[u8]) -> &[Self::Bytes] {
                bytes.as_chunks().0
            }
            fn view_mut(bytes: &mut [u8]) -> &mut [Self::Bytes] {
                bytes.as_chunks_mut().0
            }
            fn from_bytes(bytes: Self::Bytes) -> Self {
                <$ty>::from_ne_bytes(bytes)
            }
            fn to_bytes(self) -> Self::Bytes {
                self.to_ne_bytes()
            }
            fn to_f64(self) -> f64 {
                self as f64
            }
            fn to_i64(self) -> i64 {
                self as i64
            }
            fn from_i64(value: i64) -> Self {
                value as $ty
            }
            fn from_f64(value: f64) -> Self {
                value as $ty
            }
            fn order(self, other: Self) -> Ordering {
                self.cmp(&other)
            }
            fn add(self, other: Self) -> Self {
                self.wrapping_add(other)
            }
            fn mul(self, other: Self) -> Self {
                self.wrapping_mul(other)
            }
            fn is_zero(self) -> bool {
                self == 0
            }
        }
    )*};
}

int_number!(i8, i16, i32, i64, u8, u16, u32, u64);

/// Float types: `$wide` is the type arithmetic happens in, `$to`/`$from` convert the stored
/// bits.
macro_rules! float_number {
    ($($ty:ty: $bits:ty, $to:expr, $from:expr, $one:expr);* $(;)?) => {$(
        impl Number for $ty {
            type Bytes = [u8; std::mem::size_of::<$bits>()];
            const ONE: Self = $one;

            fn view(bytes: &[u8]) -> &[Self::Bytes] {
                bytes.as_chunks().0
            }
            fn view_mut(bytes: &mut [u8]) -> &mut [Self::Bytes] {
                bytes.as_chunks_mut().0
            }
            fn from_bytes(bytes: Self::Bytes) -> Self {
                ($from)(<$bits>::from_ne_bytes(bytes))
            }
            fn to_bytes(self) -> Self::Bytes {
                ($to)(self).to_ne_bytes()
            }
            fn to_f64(self) -> f64 {
                self.wide() as f64
            }
            fn to_i64(self) -> i64 {
                self.wide() as i64
            }
            fn from_i64(value: i64) -> Self {
                Self::narrow(value as f64)
            }
            fn from_f64(value: f64) -> Self {
                Self::narrow(value)
            }
            fn order(self, other: Self) -> Ordering {
                let (a, b) = (self.wide(), other.wide());
                match (a.is_nan(), b.is_nan()) {
                    (true, true) => Ordering::Equal,
                    (true, false) => Ordering::Greater,
                    (false, true) => Ordering::Less,
                    (false, false) => a.partial_cmp(&b).unwrap_or(Ordering::Equal),
                }
            }
            fn add(self, other: Self) -> Self {
                Self::narrow((self.wide() + other.wide()) as f64)
            }
            fn mul(self, other: Self) -> Self {
                Self::narrow((self.wide() * other.wide()) as f64)
            }
            fn is_zero(self) -> bool {
                self.wide() == 0.0
            }
        }
    )*};
}

/// Conversions of float types to the type they compute in and back.
trait Widen: Sized {
    type Wide;
    fn wide(self) -> Self::Wide;
    fn narrow(value: f64) -> Self;
}

impl Widen for f32 {
    type Wide = f32;
    fn wide(self) -> f32 {
        self
    }
    fn narrow(value: f64) -> f32 {
        value as f32
    }
}

impl Widen for f64 {
    type Wide = f64;
    fn wide(self) -> f64 {
        self
    }
    fn narrow(value: f64) -> f64 {
        value
    }
}

/// An IEEE half-precision float, as its bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct F16(pub(crate) u16);

/// A bfloat16 (the upper half of an f32), as its bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Bf16(pub(crate) u16);

impl Widen for F16 {
    type Wide = f32;
    fn wide(self) -> f32 {
        half::bits_to_f32(DType::F16, self.0)
    }
    fn narrow(value: f64) -> F16 {
        F16(half::f32_to_bits(DType::F16, value as f32))
    }
}

impl Widen for Bf16 {
    type Wide = f32;
    fn wide(self) -> f32 {
        half::bits_to_f32(DType::BF16, self.0)
    }
    fn narrow(value: f64) -> Bf16 {
        Bf16(half::f32_to_bits(DType::BF16, value as f32))
    }
}

float_number! {
    f32: f32, |v: f32| v, |v: f32| v, 1.0;
    f64: f64, |v: f64| v, |v: f64| v, 1.0;
    F16: u16, |v: F16| v.0, F16, F16(0x3C00);
    Bf16: u16, |v: Bf16| v.0, Bf16, Bf16(0x3F80);
}

impl Number for bool {
    type Bytes = [u8; 1];
    const ONE: Self = true;

    fn view(bytes: &[u8]) -> &[[u8; 1]] {
        bytes.as_chunks().0
    }
    fn view_mut(bytes: &mut [u8]) -> &mut [[u8; 1]] {
        bytes.as_chunks_mut().0
    }
    fn from_bytes(bytes: [u8; 1]) -> bool {
        bytes[0] != 0
    }
    fn to_bytes(self) -> [u8; 1] {
        [u8::from(self)]
    }
    fn to_f64(self) -> f64 {
        f64::from(u8::from(self))
    }
    fn to_i64(self) -> i64 {
        i64::from(self)
    }
    fn from_i64(value: i64) -> bool {
        value != 0
    }
    fn from_f64(value: f64) -> bool {
        value != 0.0
    }
    fn order(self, other: bool) -> Ordering {
        self.cmp(&other)
    }
    fn add(self, other: bool) -> bool {
        self || other
    }
    fn mul(self, other: bool) -> bool {
        self && other
    }
    fn is_zero(self) -> bool {
        !self
    }
}

/// Runs `$body` with the type `$t` bound to the `Number` type of `$dtype`; other dtypes are an
/// error of operator `$op`.
macro_rules! with_number_type {
    ($op:expr, $dtype:expr, $t:ident => $body:expr) => {{
        use opal_plugin_api::DType;
        match $dtype {
            DType::F32 => {
                type $t = f32;
                $body
            }
            DType::F64 => {
                type $t = f64;
                $body
            }
            DType::F16 => {
                type $t = $crate::number::F16;
                $body
            }
            DType::BF16 => {
                type $t = $crate::number::Bf16;
                $body
            }
            DType::I8 => {
                type $t = i8;
                $body
            }
            DType::I16 => {
                type $t = i16;
                $body
            }
            DType::I32 => {
                type $t = i32;
                $body
            }
            DType::I64 => {
                type $t = i64;
                $body
            }
            DType::U8 => {
                type $t = u8;
                $body
            }
            DType::U16 => {
                type $t = u16;
                $body
            }
            DType::U32 => {
                type $t = u32;
                $body
            }
            DType::U64 => {
                type $t = u64;
                $body
            }
            DType::BOOL => {
                type $t = bool;
                $body
            }
            other => {
                return Err($crate::check::error(
                    $op,
                    format_args!("dtype {other} is not supported"),
                ))
            }
        }
    }};
}
pub(crate) use with_number_type;

/// Whether `dtype` is a floating-point type.
pub(crate) fn is_float(dtype: DType) -> bool {
    matches!(dtype, DType::F32 | DType::F64 | DType::F16 | DType::BF16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn halves_round_trip() {
        for v in [
            0.0f32,
            1.0,
            -2.5,
            65504.0,
            6.1035156e-5,
            5.9604645e-8,
            0.1,
            1e-3,
        ] {
            let h = F16::from_f64(f64::from(v));
            let back = h.to_f64() as f32;
            assert!(
                (back - v).abs() <= v.abs() * 1e-3 + 6e-8,
                "{v} -> {h:?} -> {back}"
            );
        }
        assert_eq!(F16::from_f64(1.0), F16(0x3C00));
        assert_eq!(F16::from_f64(1e6), F16(0x7C00));
        assert!(F16::from_f64(f64::NAN).to_f64().is_nan());
        assert_eq!(Bf16::from_f64(1.0), Bf16(0x3F80));
        assert_eq!(Bf16::from_f64(3.0).to_f64(), 3.0);
    }

    #[test]
    fn orders_put_nan_last() {
        assert_eq!(f32::NAN.order(1.0), Ordering::Greater);
        assert_eq!(1.0f32.larger(f32::NAN).to_bits(), f32::NAN.to_bits());
        assert_eq!(3i64.smaller(-1), -1);
        assert_eq!(
            F16::from_f64(2.0).order(F16::from_f64(1.0)),
            Ordering::Greater
        );
    }
}
