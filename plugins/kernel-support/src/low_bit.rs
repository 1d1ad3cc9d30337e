//! Conversions of the low-bit element types (8- and 4-bit floats, the E8M0 scale, 4- and 2-bit
//! integers), each held in a byte of its own, bit-exact to ONNX's reference (`ml_dtypes`):
//! floats round to nearest even, the `saturate` flag clamps overflow to the largest finite
//! value, and otherwise overflow becomes what the type has (infinity, NaN, or the maximum for
//! float4, which has neither).

use opal_plugin_api::DType;

/// How an 8- or 4-bit float spends its codes.
#[derive(Clone, Copy)]
struct Format {
    mantissa_bits: u32,
    bias: i32,
    /// The largest finite code, without the sign.
    max_code: u8,
    /// The sign bit.
    sign: u8,
    /// What values too large to represent become without saturation, and NaN's code (the
    /// input's sign is added where the type has a signed NaN).
    overflow: Overflow,
}

#[derive(Clone, Copy, PartialEq)]
enum Overflow {
    /// E4M3FN: NaN is `S.1111.111`.
    SignedNan,
    /// E5M2: infinity is `S.11111.00`, NaN `S.11111.10`.
    Infinity,
    /// The FNUZ types: NaN is `0x80`, the code of negative zero; zero has no sign.
    UnsignedNan,
    /// E2M1: no infinity nor NaN.
    Saturate,
}

fn format(dtype: DType) -> Option<Format> {
    let (mantissa_bits, bias, max_code, sign, overflow) = match dtype {
        DType::F8E4M3FN => (3, 7, 0x7e, 0x80, Overflow::SignedNan),
        DType::F8E4M3FNUZ => (3, 8, 0x7f, 0x80, Overflow::UnsignedNan),
        DType::F8E5M2 => (2, 15, 0x7b, 0x80, Overflow::Infinity),
        DType::F8E5M2FNUZ => (2, 16, 0x7f, 0x80, Overflow::UnsignedNan),
        DType::F4E2M1 => (1, 1, 0x7, 0x8, Overflow::Saturate),
        _ => return None,
    };
    Some(Format {
        mantissa_bits,
        bias,
        max_code,
        sign,
        overflow,
    })
}

/// Whether `dtype` is one of the low-bit floats (8- and 4-bit floats and E8M0).
pub fn is_low_bit_float(dtype: DType) -> bool {
    format(dtype).is_some() || dtype == DType::F8E8M0
}

/// Whether `dtype` is one of the 4- and 2-bit integers.
pub fn is_low_bit_int(dtype: DType) -> bool {
    matches!(dtype, DType::U4 | DType::I4 | DType::U2 | DType::I2)
}

/// The value of the low-bit float of `dtype` whose code is `bits`; every one is an f32.
/// (The value of `bits` read as an integer for the low-bit integer types.)
pub fn to_f32(dtype: DType, bits: u8) -> f32 {
    let Some(f) = format(dtype) else {
        return match dtype {
            DType::F8E8M0 if bits == 0xff => f32::NAN,
            // 2^(bits - 127): from 2^-127, an f32 subnormal, to 2^127.
            DType::F8E8M0 if bits == 0 => f32::from_bits(1 << 22),
            DType::F8E8M0 => f32::from_bits(u32::from(bits) << 23),
            DType::I4 | DType::I2 => f32::from(bits as i8),
            _ => f32::from(bits),
        };
    };
    let magnitude = bits & (f.sign - 1);
    let negative = bits & f.sign != 0;
    match f.overflow {
        Overflow::SignedNan if magnitude == 0x7f => return f32::NAN,
        Overflow::UnsignedNan if bits == 0x80 => return f32::NAN,
        Overflow::Infinity if magnitude > 0x7c => return f32::NAN,
        Overflow::Infinity if magnitude == 0x7c => {
            return if negative {
                f32::NEG_INFINITY
            } else {
                f32::INFINITY
            }
        }
        _ => {}
    }
    let exponent = i32::from(magnitude >> f.mantissa_bits);
    let mantissa = f32::from(magnitude & ((1 << f.mantissa_bits) - 1));
    let unit = 2f32.powi(-(f.mantissa_bits as i32));
    let value = if exponent == 0 {
        mantissa * unit * 2f32.powi(1 - f.bias)
    } else {
        (1.0 + mantissa * unit) * 2f32.powi(exponent - f.bias)
    };
    if negative {
        -value
    } else {
        value
    }
}

/// The code of `value` in the 8- or 4-bit float `dtype`, rounded to nearest even. With
/// `saturate`, values beyond the largest finite one (infinities too) become it; without, they
/// become infinity or NaN as the type has them. NaN stays NaN (float4, which has none, gives
/// the code ONNX's reference gives: `0x8` for a positive NaN, `0x0` for a negative one).
/// Any other `dtype` gives 0.
pub fn from_f64(dtype: DType, value: f64, saturate: bool) -> u8 {
    let Some(f) = format(dtype) else {
        return 0;
    };
    let sign = if value.is_sign_negative() { f.sign } else { 0 };
    if value.is_nan() {
        return match f.overflow {
            Overflow::SignedNan => sign | 0x7f,
            Overflow::Infinity => sign | 0x7e,
            Overflow::UnsignedNan => 0x80,
            Overflow::Saturate => f.sign ^ sign,
        };
    }
    let magnitude = value.abs();
    let code = if magnitude.is_infinite() {
        None
    } else {
        Some(magnitude_code(f, magnitude)).filter(|&c| c <= i64::from(f.max_code))
    };
    let code = match code {
        Some(c) => c as u8,
        None if saturate || f.overflow == Overflow::Saturate => f.max_code,
        None => match f.overflow {
            Overflow::SignedNan => 0x7f,
            Overflow::Infinity => 0x7c,
            _ => return 0x80,
        },
    };
    if code == 0 && f.overflow == Overflow::UnsignedNan {
        0
    } else {
        sign | code
    }
}

/// The code of finite, non-negative `magnitude` rounded to nearest even, possibly past the
/// format's largest: codes grow with the values they stand for, and a mantissa that rounds up
/// to the next power of two carries into the exponent on its own.
fn magnitude_code(f: Format, magnitude: f64) -> i64 {
    let min_normal_exponent = 1 - f.bias;
    let exponent = if magnitude < 2f64.powi(min_normal_exponent) {
        min_normal_exponent
    } else {
        // The unbiased exponent of a normal f64 (every magnitude past the test above is one).
        ((magnitude.to_bits() >> 52) & 0x7ff) as i32 - 1023
    };
    let quantum = 2f64.powi(exponent - f.mantissa_bits as i32);
    // Dividing by a power of two is exact, so this is the one rounding.
    let steps = (magnitude / quantum).round_ties_even() as i64;
    if exponent == min_normal_exponent {
        steps
    } else {
        (i64::from(exponent - min_normal_exponent) << f.mantissa_bits) + steps
    }
}

/// How a value between two powers of two becomes an E8M0 exponent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RoundMode {
    /// Toward the larger power (ONNX's default).
    Up,
    /// Toward the smaller power.
    Down,
    /// To the nearer power, as ONNX's reference decides it.
    Nearest,
}

impl RoundMode {
    /// The mode ONNX's `round_mode` attribute names, if it is one.
    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "up" => RoundMode::Up,
            "down" => RoundMode::Down,
            "nearest" => RoundMode::Nearest,
            _ => return None,
        })
    }
}

/// The E8M0 code of `value`: its f32 exponent, rounded by `mode` (the sign is dropped). NaN and
/// infinities become NaN (`0xFF`); so does rounding up past `2^127` unless `saturate`.
pub fn e8m0_from_f32(value: f32, saturate: bool, mode: RoundMode) -> u8 {
    let bits = value.to_bits();
    let exponent = (bits >> 23) & 0xff;
    if exponent == 0xff {
        return 0xff;
    }
    let round_up = match mode {
        RoundMode::Down => false,
        RoundMode::Up => bits & 0x7f_ffff != 0,
        RoundMode::Nearest => {
            // The reference's guard, round and sticky bits, with the exponent standing for
            // the kept bit (an implicit 1 when normal).
            let guard = bits & 0x40_0000 != 0;
            let round = bits & 0x20_0000 != 0;
            let sticky = bits & 0x1f_ffff != 0;
            guard && (round || sticky || exponent > 0)
        }
    };
    if round_up && !(saturate && exponent == 0xfe) {
        (exponent + 1) as u8
    } else {
        exponent as u8
    }
}

/// The byte of the 4- or 2-bit integer `dtype` keeping the low bits of `value` (wrapping, as
/// numpy's `astype` does), sign-extended for int4 and int2. Any other `dtype` gives 0.
pub fn int_from_i128(dtype: DType, value: i128) -> u8 {
    let bits = match dtype {
        DType::U4 | DType::I4 => 4,
        DType::U2 | DType::I2 => 2,
        _ => return 0,
    };
    let low = value as u8 & ((1 << bits) - 1);
    if matches!(dtype, DType::I4 | DType::I2) {
        ((low << (8 - bits)) as i8 >> (8 - bits)) as u8
    } else {
        low
    }
}

/// The range of the 4- or 2-bit integer `dtype`, as quantization saturates to it.
pub fn int_range(dtype: DType) -> Option<(i64, i64)> {
    Some(match dtype {
        DType::U4 => (0, 15),
        DType::I4 => (-8, 7),
        DType::U2 => (0, 3),
        DType::I2 => (-2, 1),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const FLOAT8: [DType; 4] = [
        DType::F8E4M3FN,
        DType::F8E4M3FNUZ,
        DType::F8E5M2,
        DType::F8E5M2FNUZ,
    ];

    #[test]
    fn known_codes_decode() {
        let table: &[(DType, u8, f32)] = &[
            (DType::F8E4M3FN, 0x7e, 448.0),
            (DType::F8E4M3FN, 0xfe, -448.0),
            (DType::F8E4M3FN, 0x38, 1.0),
            (DType::F8E4M3FN, 0x08, 2f32.powi(-6)),
            (DType::F8E4M3FN, 0x01, 2f32.powi(-9)),
            (DType::F8E4M3FNUZ, 0x7f, 240.0),
            (DType::F8E4M3FNUZ, 0x40, 1.0),
            (DType::F8E4M3FNUZ, 0x01, 2f32.powi(-10)),
            (DType::F8E5M2, 0x7b, 57344.0),
            (DType::F8E5M2, 0x3c, 1.0),
            (DType::F8E5M2, 0x01, 2f32.powi(-16)),
            (DType::F8E5M2, 0x7c, f32::INFINITY),
            (DType::F8E5M2, 0xfc, f32::NEG_INFINITY),
            (DType::F8E5M2FNUZ, 0x7f, 57344.0),
            (DType::F8E5M2FNUZ, 0x40, 1.0),
            (DType::F4E2M1, 0x7, 6.0),
            (DType::F4E2M1, 0x1, 0.5),
            (DType::F4E2M1, 0xb, -1.5),
            (DType::F8E8M0, 127, 1.0),
            (DType::F8E8M0, 0, 2f32.powi(-127)),
            (DType::F8E8M0, 254, 2f32.powi(127)),
            (DType::I4, 0xf8, -8.0),
            (DType::U4, 0x0f, 15.0),
        ];
        for &(dtype, bits, value) in table {
            assert_eq!(to_f32(dtype, bits), value, "{dtype} {bits:#x}");
        }
        for (dtype, bits) in [
            (DType::F8E4M3FN, 0x7f),
            (DType::F8E4M3FN, 0xff),
            (DType::F8E4M3FNUZ, 0x80),
            (DType::F8E5M2, 0x7d),
            (DType::F8E5M2, 0xff),
            (DType::F8E5M2FNUZ, 0x80),
            (DType::F8E8M0, 0xff),
        ] {
            assert!(to_f32(dtype, bits).is_nan(), "{dtype} {bits:#x}");
        }
    }

    #[test]
    fn every_code_round_trips() {
        for dtype in FLOAT8.into_iter().chain([DType::F4E2M1]) {
            let codes = if dtype == DType::F4E2M1 { 16 } else { 256 };
            for bits in 0..codes {
                let bits = bits as u8;
                let value = to_f32(dtype, bits);
                if !value.is_nan() {
                    assert_eq!(
                        from_f64(dtype, value.into(), false),
                        bits,
                        "{dtype} {bits:#x}"
                    );
                }
            }
        }
    }

    #[test]
    fn known_values_encode() {
        let nan = f64::NAN;
        let inf = f64::INFINITY;
        // (dtype, value, saturated code, code without saturation)
        let table: &[(DType, f64, u8, u8)] = &[
            (DType::F8E4M3FN, 448.0, 0x7e, 0x7e),
            (DType::F8E4M3FN, 460.0, 0x7e, 0x7e),
            (DType::F8E4M3FN, 470.0, 0x7e, 0x7f),
            (DType::F8E4M3FN, -1e6, 0xfe, 0xff),
            (DType::F8E4M3FN, inf, 0x7e, 0x7f),
            (DType::F8E4M3FN, -inf, 0xfe, 0xff),
            (DType::F8E4M3FN, nan, 0x7f, 0x7f),
            (DType::F8E4M3FN, -nan, 0xff, 0xff),
            // 1.0625 is halfway between 1 (0x38, even) and 1.125: ties go to even.
            (DType::F8E4M3FN, 1.0625, 0x38, 0x38),
            (DType::F8E4M3FN, 1.1875, 0x3a, 0x3a),
            // Subnormals: 2^-9 is the smallest; half of it ties to zero, 3/4 of it rounds up.
            (DType::F8E4M3FN, 2f64.powi(-9), 0x01, 0x01),
            (DType::F8E4M3FN, 2f64.powi(-10), 0x00, 0x00),
            (DType::F8E4M3FN, 0.75 * 2f64.powi(-9), 0x01, 0x01),
            (DType::F8E4M3FN, 1.5 * 2f64.powi(-9), 0x02, 0x02),
            (DType::F8E4M3FN, -1e-9, 0x80, 0x80),
            // The largest subnormal rounds up into the smallest normal.
            (DType::F8E4M3FN, 7.9 * 2f64.powi(-9), 0x08, 0x08),
            (DType::F8E4M3FNUZ, 240.0, 0x7f, 0x7f),
            (DType::F8E4M3FNUZ, 1e6, 0x7f, 0x80),
            (DType::F8E4M3FNUZ, -inf, 0xff, 0x80),
            (DType::F8E4M3FNUZ, nan, 0x80, 0x80),
            (DType::F8E4M3FNUZ, -0.0, 0x00, 0x00),
            (DType::F8E4M3FNUZ, -1e-9, 0x00, 0x00),
            (DType::F8E5M2, 57344.0, 0x7b, 0x7b),
            (DType::F8E5M2, 1e6, 0x7b, 0x7c),
            (DType::F8E5M2, -inf, 0xfb, 0xfc),
            (DType::F8E5M2, nan, 0x7e, 0x7e),
            (DType::F8E5M2, 470.0, 0x5f, 0x5f),
            (DType::F8E5M2FNUZ, 1e6, 0x7f, 0x80),
            (DType::F8E5M2FNUZ, 470.0, 0x63, 0x63),
            (DType::F8E5M2FNUZ, -0.0, 0x00, 0x00),
            (DType::F4E2M1, 100.0, 0x7, 0x7),
            (DType::F4E2M1, -inf, 0xf, 0xf),
            (DType::F4E2M1, 0.25, 0x0, 0x0),
            (DType::F4E2M1, 0.75, 0x2, 0x2),
            (DType::F4E2M1, 2.5, 0x4, 0x4),
            (DType::F4E2M1, 5.0, 0x6, 0x6),
            (DType::F4E2M1, -0.0, 0x8, 0x8),
            (DType::F4E2M1, nan, 0x8, 0x8),
            (DType::F4E2M1, -nan, 0x0, 0x0),
        ];
        for &(dtype, value, saturated, unsaturated) in table {
            assert_eq!(from_f64(dtype, value, true), saturated, "{dtype} {value}");
            assert_eq!(
                from_f64(dtype, value, false),
                unsaturated,
                "{dtype} {value}"
            );
        }
    }

    #[test]
    fn e8m0_rounds_as_the_mode_says() {
        let up = |v| e8m0_from_f32(v, true, RoundMode::Up);
        assert_eq!(up(1.0), 127);
        assert_eq!(up(1.1), 128);
        assert_eq!(up(0.124), 124);
        assert_eq!(up(0.0), 0);
        assert_eq!(up(-4.0), 129);
        assert_eq!(up(f32::NAN), 0xff);
        assert_eq!(up(f32::INFINITY), 0xff);
        assert_eq!(up(f32::MAX), 254);
        assert_eq!(e8m0_from_f32(f32::MAX, false, RoundMode::Up), 0xff);
        assert_eq!(e8m0_from_f32(1.9, true, RoundMode::Down), 127);
        assert_eq!(e8m0_from_f32(1.4, true, RoundMode::Nearest), 127);
        assert_eq!(e8m0_from_f32(1.6, true, RoundMode::Nearest), 128);
        assert_eq!(RoundMode::from_name("sideways"), None);
    }

    #[test]
    fn small_integers_wrap_and_sign_extend() {
        assert_eq!(int_from_i128(DType::I4, 7) as i8, 7);
        assert_eq!(int_from_i128(DType::I4, 8) as i8, -8);
        assert_eq!(int_from_i128(DType::I4, -9) as i8, 7);
        assert_eq!(int_from_i128(DType::U4, -1), 15);
        assert_eq!(int_from_i128(DType::I2, 2) as i8, -2);
        assert_eq!(int_from_i128(DType::U2, 5), 1);
        assert_eq!(to_f32(DType::I2, int_from_i128(DType::I2, -1)), -1.0);
    }
}
