//! The element types the generic kernels compute on ([`Num`], [`Float`], [`Int`]), the dtype
//! classes operators accept, and the `with_*!` macros that turn a run-time dtype into a type.
//! f32 takes `exp`, `tanh` and the sigmoid from `fast_math`, whose loops vectorise.

use opal_kernel_support::fast_math;
use opal_plugin_api::{DType, Element};
use std::ops::{Add, Div, Mul, Neg, Rem, Sub};

/// A numeric element type: the ten ONNX integer and float types that have a Rust type.
/// Integer arithmetic wraps (as numpy's does) and never panics.
pub(crate) trait Num: Element + PartialOrd + Default {
    const ZERO: Self;
    const ONE: Self;
    /// The lowest value (-∞ for floats), where a maximum starts.
    const LOWEST: Self;
    /// The highest value (+∞ for floats), where a minimum starts.
    const HIGHEST: Self;
    const IS_FLOAT: bool;
    /// The type reductions accumulate in: f64 for floats, i64 or u64 for integers.
    type Acc: Accumulator;

    fn to_f64(self) -> f64;
    /// `v` converted as Rust's `as` does (integers saturate, NaN becomes 0).
    fn from_f64(v: f64) -> Self;
    /// The value as an integer (floats truncate toward zero and saturate).
    fn to_i128(self) -> i128;
    /// `v` converted as Rust's `as` does (integers keep the low bits, floats round).
    fn from_i128(v: i128) -> Self;
    fn to_acc(self) -> Self::Acc;
    /// `acc` converted back, wrapping integers as numpy's `astype` does.
    fn from_acc(acc: Self::Acc) -> Self;
    fn add(self, other: Self) -> Self;
    fn sub(self, other: Self) -> Self;
    fn mul(self, other: Self) -> Self;
    /// Division; integers truncate toward zero and give 0 when dividing by 0.
    fn div(self, other: Self) -> Self;
    /// The remainder with the divisor's sign (Python's `%`, ONNX Mod with `fmod = 0`).
    fn rem_floor(self, other: Self) -> Self;
    /// The remainder with the dividend's sign (C's `fmod`, ONNX Mod with `fmod = 1`).
    fn rem_trunc(self, other: Self) -> Self;
    fn neg(self) -> Self;
    fn abs(self) -> Self;
    fn is_nan(self) -> bool;

    /// `-1`, `0` or `1` by sign; NaN stays NaN.
    fn signum(self) -> Self {
        if self > Self::ZERO {
            Self::ONE
        } else if self < Self::ZERO {
            Self::ONE.neg()
        } else {
            self
        }
    }

    /// The larger value; NaN if either is NaN (numpy's `maximum`).
    fn max_nan(self, other: Self) -> Self {
        if self >= other || self.is_nan() {
            self
        } else {
            other
        }
    }

    /// The smaller value; NaN if either is NaN (numpy's `minimum`).
    fn min_nan(self, other: Self) -> Self {
        if self <= other || self.is_nan() {
            self
        } else {
            other
        }
    }
}

/// What reductions accumulate in: f64, i64 or u64.
pub(crate) trait Accumulator: Element + PartialOrd {
    fn plus(self, other: Self) -> Self;
    fn times(self, other: Self) -> Self;
    fn to_float(self) -> f64;
}

impl Accumulator for f64 {
    fn plus(self, other: Self) -> Self {
        self + other
    }
    fn times(self, other: Self) -> Self {
        self * other
    }
    fn to_float(self) -> f64 {
        self
    }
}

macro_rules! int_accumulator {
    ($($t:ty),*) => {$(
        impl Accumulator for $t {
            fn plus(self, other: Self) -> Self {
                self.wrapping_add(other)
            }
            fn times(self, other: Self) -> Self {
                self.wrapping_mul(other)
            }
            fn to_float(self) -> f64 {
                self as f64
            }
        }
    )*};
}

int_accumulator!(i64, u64);

macro_rules! int_num {
    ($($t:ty => $acc:ty),*) => {$(
        impl Num for $t {
            const ZERO: Self = 0;
            const ONE: Self = 1;
            const LOWEST: Self = <$t>::MIN;
            const HIGHEST: Self = <$t>::MAX;
            const IS_FLOAT: bool = false;
            type Acc = $acc;

            fn to_f64(self) -> f64 {
                self as f64
            }
            fn from_f64(v: f64) -> Self {
                v as $t
            }
            fn to_i128(self) -> i128 {
                self as i128
            }
            fn from_i128(v: i128) -> Self {
                v as $t
            }
            fn to_acc(self) -> $acc {
                self as $acc
            }
            fn from_acc(acc: $acc) -> Self {
                acc as $t
            }
            fn add(self, other: Self) -> Self {
                self.wrapping_add(other)
            }
            fn sub(self, other: Self) -> Self {
                self.wrapping_sub(other)
            }
            fn mul(self, other: Self) -> Self {
                self.wrapping_mul(other)
            }
            fn div(self, other: Self) -> Self {
                if other == 0 { 0 } else { self.wrapping_div(other) }
            }
            fn rem_floor(self, other: Self) -> Self {
                if other == 0 {
                    return 0;
                }
                let r = self.wrapping_rem(other);
                #[allow(unused_comparisons)]
                let signs_differ = (r < 0) != (other < 0);
                if r != 0 && signs_differ { r.wrapping_add(other) } else { r }
            }
            fn rem_trunc(self, other: Self) -> Self {
                if other == 0 { 0 } else { self.wrapping_rem(other) }
            }
            fn neg(self) -> Self {
                (0 as $t).wrapping_sub(self)
            }
            #[allow(unused_comparisons)]
            fn abs(self) -> Self {
                if self < 0 { Num::neg(self) } else { self }
            }
            fn is_nan(self) -> bool {
                false
            }
        }
    )*};
}

int_num!(
    i8 => i64, i16 => i64, i32 => i64, i64 => i64,
    u8 => u64, u16 => u64, u32 => u64, u64 => u64
);

/// A float element type (f32 or f64) with the math the activations need.
pub(crate) trait Float:
    Num
    + Add<Output = Self>
    + Sub<Output = Self>
    + Mul<Output = Self>
    + Div<Output = Self>
    + Rem<Output = Self>
    + Neg<Output = Self>
{
    /// A constant in this type.
    fn lit(v: f64) -> Self;
    fn exp(self) -> Self;
    fn ln(self) -> Self;
    fn ln_1p(self) -> Self;
    fn sqrt(self) -> Self;
    fn sin(self) -> Self;
    fn cos(self) -> Self;
    fn tan(self) -> Self;
    fn asin(self) -> Self;
    fn acos(self) -> Self;
    fn atan(self) -> Self;
    fn sinh(self) -> Self;
    fn cosh(self) -> Self;
    fn tanh(self) -> Self;
    /// The logistic function `1 / (1 + e^-self)`.
    fn sigmoid(self) -> Self;
    fn asinh(self) -> Self;
    fn acosh(self) -> Self;
    fn atanh(self) -> Self;
    fn floor(self) -> Self;
    fn ceil(self) -> Self;
    fn round_ties_even(self) -> Self;
    fn erf(self) -> Self;
}

macro_rules! float_num {
    ($($t:ident, erf $erf:path, exp $exp:path, tanh $tanh:path, sigmoid $sigmoid:path);*) => {$(
        impl Num for $t {
            const ZERO: Self = 0.0;
            const ONE: Self = 1.0;
            const LOWEST: Self = <$t>::NEG_INFINITY;
            const HIGHEST: Self = <$t>::INFINITY;
            const IS_FLOAT: bool = true;
            type Acc = f64;

            fn to_f64(self) -> f64 {
                self as f64
            }
            fn from_f64(v: f64) -> Self {
                v as $t
            }
            fn to_i128(self) -> i128 {
                self as i128
            }
            fn from_i128(v: i128) -> Self {
                v as $t
            }
            fn to_acc(self) -> f64 {
                self as f64
            }
            fn from_acc(acc: f64) -> Self {
                acc as $t
            }
            fn add(self, other: Self) -> Self {
                self + other
            }
            fn sub(self, other: Self) -> Self {
                self - other
            }
            fn mul(self, other: Self) -> Self {
                self * other
            }
            fn div(self, other: Self) -> Self {
                self / other
            }
            fn rem_floor(self, other: Self) -> Self {
                if other == 0.0 || self.is_infinite() {
                    return <$t>::NAN;
                }
                let r = self % other;
                if r == 0.0 {
                    (0.0 as $t).copysign(other)
                } else if (r < 0.0) != (other < 0.0) {
                    r + other
                } else {
                    r
                }
            }
            fn rem_trunc(self, other: Self) -> Self {
                self % other
            }
            fn neg(self) -> Self {
                -self
            }
            fn abs(self) -> Self {
                <$t>::abs(self)
            }
            fn is_nan(self) -> bool {
                <$t>::is_nan(self)
            }
        }

        impl Float for $t {
            fn lit(v: f64) -> Self {
                v as $t
            }
            fn exp(self) -> Self {
                $exp(self)
            }
            fn ln(self) -> Self {
                <$t>::ln(self)
            }
            fn ln_1p(self) -> Self {
                <$t>::ln_1p(self)
            }
            fn sqrt(self) -> Self {
                <$t>::sqrt(self)
            }
            fn sin(self) -> Self {
                <$t>::sin(self)
            }
            fn cos(self) -> Self {
                <$t>::cos(self)
            }
            fn tan(self) -> Self {
                <$t>::tan(self)
            }
            fn asin(self) -> Self {
                <$t>::asin(self)
            }
            fn acos(self) -> Self {
                <$t>::acos(self)
            }
            fn atan(self) -> Self {
                <$t>::atan(self)
            }
            fn sinh(self) -> Self {
                <$t>::sinh(self)
            }
            fn cosh(self) -> Self {
                <$t>::cosh(self)
            }
            fn tanh(self) -> Self {
                $tanh(self)
            }
            fn sigmoid(self) -> Self {
                $sigmoid(self)
            }
            fn asinh(self) -> Self {
                <$t>::asinh(self)
            }
            fn acosh(self) -> Self {
                <$t>::acosh(self)
            }
            fn atanh(self) -> Self {
                <$t>::atanh(self)
            }
            fn floor(self) -> Self {
                <$t>::floor(self)
            }
            fn ceil(self) -> Self {
                <$t>::ceil(self)
            }
            fn round_ties_even(self) -> Self {
                <$t>::round_ties_even(self)
            }
            fn erf(self) -> Self {
                $erf(self)
            }
        }
    )*};
}

float_num!(
    f32, erf libm::erff, exp fast_math::exp, tanh fast_math::tanh, sigmoid fast_math::sigmoid;
    f64, erf libm::erf, exp f64::exp, tanh f64::tanh, sigmoid sigmoid_f64
);

/// The logistic function in f64, without overflow for large |x|.
fn sigmoid_f64(x: f64) -> f64 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

/// An integer element type, for the bitwise operators.
pub(crate) trait Int:
    Num
    + std::ops::BitAnd<Output = Self>
    + std::ops::BitOr<Output = Self>
    + std::ops::BitXor<Output = Self>
    + std::ops::Not<Output = Self>
{
    /// `self << amount`; 0 when `amount` is negative or not below the bit width.
    fn shift_left(self, amount: Self) -> Self;
    /// `self >> amount`, arithmetic for signed types; when `amount` is negative or not below
    /// the bit width, what the sign extension alone gives (-1 or 0).
    fn shift_right(self, amount: Self) -> Self;
}

macro_rules! int_int {
    ($($t:ty),*) => {$(
        impl Int for $t {
            #[allow(unused_comparisons)]
            fn shift_left(self, amount: Self) -> Self {
                if amount < 0 || amount as u64 >= <$t>::BITS as u64 {
                    0
                } else {
                    self << amount
                }
            }
            #[allow(unused_comparisons)]
            fn shift_right(self, amount: Self) -> Self {
                if amount < 0 || amount as u64 >= <$t>::BITS as u64 {
                    if self < 0 { (0 as $t).wrapping_sub(1) } else { 0 }
                } else {
                    self >> amount
                }
            }
        }
    )*};
}

int_int!(i8, i16, i32, i64, u8, u16, u32, u64);

/// f32 or f64.
pub(crate) fn is_float(dtype: DType) -> bool {
    matches!(dtype, DType::F32 | DType::F64)
}

/// f16 or bf16, which kernels compute in f32.
pub(crate) fn is_half(dtype: DType) -> bool {
    matches!(dtype, DType::F16 | DType::BF16)
}

pub(crate) use opal_kernel_support::check::{is_int, is_numeric};

/// Any float type, half floats included.
pub(crate) fn is_any_float(dtype: DType) -> bool {
    is_float(dtype) || is_half(dtype)
}

/// Runs `$body` with `$T` bound to the Rust type of `$dtype` among `[$types]`, or `$fallback`.
macro_rules! dispatch {
    ($dtype:expr, [$($t:ty),*], $T:ident => $body:expr, _ => $fallback:expr) => {{
        let dtype = $dtype;
        $(
            if dtype == <$t as opal_plugin_api::Element>::DTYPE {
                #[allow(dead_code)]
                type $T = $t;
                $body
            } else
        )* {
            $fallback
        }
    }};
}

/// [`dispatch!`] over the ten numeric types.
macro_rules! with_numeric {
    ($dtype:expr, $T:ident => $body:expr, _ => $fallback:expr) => {
        $crate::numeric::dispatch!(
            $dtype, [f32, f64, i8, i16, i32, i64, u8, u16, u32, u64], $T => $body, _ => $fallback
        )
    };
}

/// [`dispatch!`] over f32 and f64.
macro_rules! with_float {
    ($dtype:expr, $T:ident => $body:expr, _ => $fallback:expr) => {
        $crate::numeric::dispatch!($dtype, [f32, f64], $T => $body, _ => $fallback)
    };
}

/// [`dispatch!`] over the eight integer types.
macro_rules! with_int {
    ($dtype:expr, $T:ident => $body:expr, _ => $fallback:expr) => {
        $crate::numeric::dispatch!(
            $dtype, [i8, i16, i32, i64, u8, u16, u32, u64], $T => $body, _ => $fallback
        )
    };
}

pub(crate) use {dispatch, with_float, with_int, with_numeric};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integer_division_truncates_and_remainders_follow_their_sign() {
        assert_eq!(Num::div(-3i32, 2), -1);
        assert_eq!(Num::div(3i32, -2), -1);
        assert_eq!(Num::div(7i8, 0), 0);
        assert_eq!(Num::div(i32::MIN, -1), i32::MIN);
        assert_eq!((-4i8).rem_floor(3), 2);
        assert_eq!(7i8.rem_floor(-3), -2);
        assert_eq!((-4i8).rem_trunc(3), -1);
        assert_eq!(5u8.rem_floor(0), 0);
    }

    #[test]
    fn float_floor_remainder_handles_the_edge_cases() {
        assert_eq!((-3.0f32).rem_floor(f32::INFINITY), f32::INFINITY);
        assert_eq!(3.0f32.rem_floor(f32::INFINITY), 3.0);
        assert_eq!(1.0f64.rem_floor(f64::NEG_INFINITY), f64::NEG_INFINITY);
        assert!(0.0f32.rem_floor(-2.0).is_sign_negative());
        assert!(f32::INFINITY.rem_floor(2.0).is_nan());
        assert!(1.0f32.rem_floor(0.0).is_nan());
        assert_eq!((-7.5f64).rem_floor(2.0), 0.5);
    }

    #[test]
    fn shifts_out_of_range_give_the_sign_extension() {
        assert_eq!(1i8.shift_left(7), i8::MIN);
        assert_eq!(1i8.shift_left(8), 0);
        assert_eq!((-8i32).shift_right(40), -1);
        assert_eq!((-8i32).shift_right(-1), -1);
        assert_eq!(16u8.shift_right(2), 4);
        assert_eq!(3u64.shift_left(64), 0);
    }

    #[test]
    fn nan_propagates_through_max_and_min() {
        assert!(1.0f32.max_nan(f32::NAN).is_nan());
        assert!(f32::NAN.min_nan(1.0).is_nan());
        assert_eq!(3i16.max_nan(-2), 3);
        assert!(f64::NAN.signum().is_nan());
        assert_eq!((-2i64).signum(), -1);
    }

    #[test]
    fn dispatch_binds_the_type() {
        let size = with_numeric!(DType::I16, T => std::mem::size_of::<T>(), _ => 0);
        assert_eq!(size, 2);
        let none = with_float!(DType::I16, T => std::mem::size_of::<T>(), _ => 0);
        assert_eq!(none, 0);
        assert_eq!(
            with_int!(DType::U64, T => T::HIGHEST.to_f64(), _ => 0.0),
            u64::MAX as f64
        );
    }
}
