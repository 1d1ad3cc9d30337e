//! Branch-free f32 `exp`, `sigmoid` and `tanh` that LLVM vectorises when they are mapped over
//! slices: no calls into libm, no data-dependent branches, only arithmetic, comparisons that
//! become blends, and bit casts.
//!
//! `exp` reduces `x` to `2^n · e^r` with `|r| ≤ ln 2 / 2`, evaluates `e^r` by a degree-6
//! minimax polynomial and builds `2^n` from its bits in two halves, so that results in the
//! subnormal range are rounded once and `exp(89)` overflows to infinity. Measured against f64
//! over a dense sweep (see the tests), the largest errors are 1.0 ulp for `exp` wherever its
//! result is normal (the tests allow 1.5), 2.3 ulp for `sigmoid` for `x ≥ -87` and 9e-8 of
//! absolute error everywhere (allowed: 3 ulp, 1e-7), and 1.3 ulp for `tanh` (allowed: 2).
//! Infinities give the limits and NaN stays NaN.

/// `a * b + c`, fused when `FMA` (which callers set only where the code is compiled for an
/// instruction set with FMA: without it `mul_add` is a slow library call).
#[inline(always)]
pub fn mul_add<const FMA: bool>(a: f32, b: f32, c: f32) -> f32 {
    if FMA {
        a.mul_add(b, c)
    } else {
        a * b + c
    }
}

/// Inputs below this have `e^x` below half the smallest subnormal: 0.
const EXP_LOWEST_INPUT: f32 = -104.0;
/// Inputs above this have `e^x` above `f32::MAX`: infinity.
const EXP_HIGHEST_INPUT: f32 = 89.0;
/// 1.5 · 2^23: adding it rounds a float of magnitude below 2^22 to an integer, which then sits
/// in the low mantissa bits.
const ROUNDING_BIAS: f32 = 12_582_912.0;
/// `ln 2` split so that `n · LN2_HIGH` is exact for the `n` that occur.
const LN2_HIGH: f32 = 0.693_359_4;
const LN2_LOW: f32 = -2.121_944_4e-4;
/// Coefficients of `(e^r - 1 - r) / r²` on `|r| ≤ ln 2 / 2`, highest degree first.
const EXP_POLYNOMIAL: [f32; 6] = [
    1.987_569_1e-4,
    1.398_199_9e-3,
    8.333_452e-3,
    4.166_579_6e-2,
    1.666_666_5e-1,
    0.5,
];

/// `2^n` as an f32, for `-126 ≤ n ≤ 127`.
#[inline(always)]
fn power_of_two(n: i32) -> f32 {
    f32::from_bits((n.wrapping_add(127) as u32) << 23)
}

/// `e^x`, within 1.5 ulp where the result is normal; 0 below -104, infinity above 89, NaN for
/// NaN.
#[inline]
pub fn exp(x: f32) -> f32 {
    exp_on::<{ crate::isa::TARGET_HAS_FMA }>(x)
}

/// [`exp`], with fused multiply-adds when `FMA`: for code compiled for an instruction set that
/// has them ([`crate::isa::has_fma`]).
#[inline(always)]
pub fn exp_on<const FMA: bool>(x: f32) -> f32 {
    // NaN passes through the clamp.
    let x = x.clamp(EXP_LOWEST_INPUT, EXP_HIGHEST_INPUT);
    let biased = mul_add::<FMA>(x, std::f32::consts::LOG2_E, ROUNDING_BIAS);
    let n = biased - ROUNDING_BIAS;
    let r = mul_add::<FMA>(n, -LN2_HIGH, x);
    let r = mul_add::<FMA>(n, -LN2_LOW, r);
    let mut p = EXP_POLYNOMIAL[0];
    for &c in &EXP_POLYNOMIAL[1..] {
        p = mul_add::<FMA>(p, r, c);
    }
    let e_r = mul_add::<FMA>(p, r * r, r) + 1.0;
    // n lies in [-150, 128]: scale by 2^(n/2) twice so every factor is a normal float.
    let n = (biased.to_bits() as i32).wrapping_sub(ROUNDING_BIAS.to_bits() as i32);
    let half = n >> 1;
    e_r * power_of_two(half) * power_of_two(n - half)
}

/// The logistic function `1 / (1 + e^-x)`: 0 and 1 at the infinities, NaN for NaN.
#[inline]
pub fn sigmoid(x: f32) -> f32 {
    sigmoid_on::<{ crate::isa::TARGET_HAS_FMA }>(x)
}

/// [`sigmoid`], with fused multiply-adds when `FMA` (see [`exp_on`]).
#[inline(always)]
pub fn sigmoid_on<const FMA: bool>(x: f32) -> f32 {
    1.0 / (1.0 + exp_on::<FMA>(-x))
}

/// Below this `|x|`, `tanh` takes its odd polynomial; above, `1 - 2 / (e^2|x| + 1)`, where the
/// subtraction loses little.
const TANH_POLYNOMIAL_LIMIT: f32 = 0.625;
/// Coefficients of `(tanh(x) - x) / x³` as a polynomial in `x²` on `|x| ≤ 0.625`, highest
/// degree first (a relative-error fit).
const TANH_POLYNOMIAL: [f32; 5] = [
    -5.704_988_7e-3,
    2.063_909e-2,
    -5.373_971_6e-2,
    1.333_144_2e-1,
    -3.333_328e-1,
];

/// The hyperbolic tangent, within 2 ulp; ±1 at the infinities, NaN for NaN.
#[inline]
pub fn tanh(x: f32) -> f32 {
    tanh_on::<{ crate::isa::TARGET_HAS_FMA }>(x)
}

/// [`tanh`], with fused multiply-adds when `FMA` (see [`exp_on`]).
#[inline(always)]
pub fn tanh_on<const FMA: bool>(x: f32) -> f32 {
    let magnitude = x.abs();
    let square = magnitude * magnitude;
    let mut p = TANH_POLYNOMIAL[0];
    for &c in &TANH_POLYNOMIAL[1..] {
        p = mul_add::<FMA>(p, square, c);
    }
    let small = mul_add::<FMA>(p * square, magnitude, magnitude);
    let large = 1.0 - 2.0 / (exp_on::<FMA>(2.0 * magnitude) + 1.0);
    // NaN fails the comparison and takes `large`, which is NaN too.
    let result = if magnitude < TANH_POLYNOMIAL_LIMIT {
        small
    } else {
        large
    };
    result.copysign(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every `stride`-th f32 from `low` to `high` (both finite), by bit pattern, with both ends.
    fn sweep(low: f32, high: f32, stride: u32) -> impl Iterator<Item = f32> {
        /// The f32s in increasing order mapped to increasing integers.
        fn key(x: f32) -> i64 {
            let bits = x.to_bits();
            if bits >> 31 == 1 {
                -i64::from(bits & 0x7fff_ffff)
            } else {
                i64::from(bits)
            }
        }
        fn from_key(k: i64) -> f32 {
            if k < 0 {
                f32::from_bits((-k) as u32 | 0x8000_0000)
            } else {
                f32::from_bits(k as u32)
            }
        }
        let (a, b) = (key(low), key(high));
        (a..=b)
            .step_by(stride as usize)
            .chain(std::iter::once(b))
            .map(from_key)
    }

    /// `|actual - expected|` in units of the last place of `expected` rounded to f32 (the
    /// smallest normal's ulp for subnormal values).
    fn ulps(actual: f32, expected: f64) -> f64 {
        let rounded = (expected as f32).abs().max(f32::MIN_POSITIVE);
        let ulp = f64::from(f32::from_bits(rounded.to_bits() + 1) - rounded);
        (f64::from(actual) - expected).abs() / ulp
    }

    /// Runs each accuracy check without and with fused multiply-adds (each instruction set
    /// takes one or the other).
    macro_rules! without_and_with_fma {
        ($($test:ident => $check:ident),* $(,)?) => {$(
            #[test]
            fn $test() {
                $check::<false>();
                $check::<true>();
            }
        )*};
    }

    without_and_with_fma!(
        exp_is_accurate_where_normal => exp_is_within_one_and_a_half_ulp_where_normal,
        exp_gives_the_limits => exp_handles_the_extremes,
        sigmoid_is_accurate => sigmoid_is_accurate_everywhere,
        tanh_is_accurate => tanh_is_within_two_ulp,
    );

    fn exp_is_within_one_and_a_half_ulp_where_normal<const FMA: bool>() {
        let mut worst = (0.0, 0.0f32);
        for x in sweep(-87.3, 88.7, 97) {
            let e = ulps(exp_on::<FMA>(x), f64::from(x).exp());
            if e > worst.0 {
                worst = (e, x);
            }
        }
        assert!(worst.0 <= 1.5, "{} ulp at {}", worst.0, worst.1);
    }

    fn exp_handles_the_extremes<const FMA: bool>() {
        assert_eq!(exp_on::<FMA>(0.0), 1.0);
        assert_eq!(exp_on::<FMA>(f32::INFINITY), f32::INFINITY);
        assert_eq!(exp_on::<FMA>(89.0), f32::INFINITY);
        assert_eq!(exp_on::<FMA>(88.8), f32::INFINITY);
        assert_eq!(exp_on::<FMA>(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp_on::<FMA>(-104.0), 0.0);
        assert_eq!(exp_on::<FMA>(-1e30), 0.0);
        assert!(exp_on::<FMA>(f32::NAN).is_nan());
        assert!(exp_on::<FMA>(-f32::NAN).is_nan());
        assert_eq!(exp_on::<FMA>(f32::MAX), f32::INFINITY);
        assert_eq!(exp_on::<FMA>(1e-45), 1.0);
        assert_eq!(exp_on::<FMA>(-1e-45), 1.0);
        // Subnormal results: within one subnormal step of the truth.
        for x in sweep(-104.0, -87.3, 13) {
            let expected = f64::from(x).exp();
            let step = f64::from(f32::from_bits(1));
            let error = (f64::from(exp_on::<FMA>(x)) - expected).abs();
            assert!(
                error <= step,
                "exp_on::<FMA>({x}) = {} vs {expected}",
                exp_on::<FMA>(x)
            );
        }
        // Results between the largest normal and overflow.
        for x in sweep(88.7, 88.72, 1) {
            let expected = f64::from(x).exp();
            let actual = exp_on::<FMA>(x);
            if expected < f64::from(f32::MAX) * 0.999 {
                assert!(
                    ulps(actual, expected) <= 1.5,
                    "exp_on::<FMA>({x}) = {actual}"
                );
            } else if expected > f64::from(f32::MAX) * 1.001 {
                assert_eq!(actual, f32::INFINITY);
            }
        }
    }

    fn sigmoid_is_accurate_everywhere<const FMA: bool>() {
        let mut worst_abs = 0.0f64;
        let mut worst_ulps = 0.0f64;
        for x in sweep(-120.0, 120.0, 89) {
            let expected = 1.0 / (1.0 + (-f64::from(x)).exp());
            let actual = sigmoid_on::<FMA>(x);
            worst_abs = worst_abs.max((f64::from(actual) - expected).abs());
            if x >= -87.0 {
                worst_ulps = worst_ulps.max(ulps(actual, expected));
            }
        }
        assert!(worst_abs <= 1e-7, "absolute error {worst_abs}");
        assert!(worst_ulps <= 3.0, "{worst_ulps} ulp");
        assert_eq!(sigmoid_on::<FMA>(0.0), 0.5);
        assert_eq!(sigmoid_on::<FMA>(f32::INFINITY), 1.0);
        assert_eq!(sigmoid_on::<FMA>(f32::NEG_INFINITY), 0.0);
        assert_eq!(sigmoid_on::<FMA>(200.0), 1.0);
        assert_eq!(sigmoid_on::<FMA>(-200.0), 0.0);
        assert!(sigmoid_on::<FMA>(f32::NAN).is_nan());
    }

    fn tanh_is_within_two_ulp<const FMA: bool>() {
        let mut worst = (0.0, 0.0f32);
        for x in sweep(-20.0, 20.0, 89) {
            let e = ulps(tanh_on::<FMA>(x), f64::from(x).tanh());
            if e > worst.0 {
                worst = (e, x);
            }
        }
        assert!(worst.0 <= 2.0, "{} ulp at {}", worst.0, worst.1);
        assert_eq!(tanh_on::<FMA>(0.0).to_bits(), 0.0f32.to_bits());
        assert_eq!(tanh_on::<FMA>(-0.0).to_bits(), (-0.0f32).to_bits());
        assert_eq!(tanh_on::<FMA>(1e-40), 1e-40);
        assert_eq!(tanh_on::<FMA>(f32::INFINITY), 1.0);
        assert_eq!(tanh_on::<FMA>(f32::NEG_INFINITY), -1.0);
        assert_eq!(tanh_on::<FMA>(f32::MAX), 1.0);
        assert_eq!(tanh_on::<FMA>(-50.0), -1.0);
        assert!(tanh_on::<FMA>(f32::NAN).is_nan());
    }
}
