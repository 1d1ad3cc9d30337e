//! Comparing a computed tensor with a reference, as the ONNX backend tests do: same dtype and
//! shape, floats within `atol + rtol * |expected|` (NaN equals NaN), everything else exactly —
//! except that integers may differ by up to an `atol` of 1 or more (never by `rtol`), which only
//! a case that declares it has: two correct JPEG decoders' pixels differ by a level or two.
//! The 8- and 4-bit floats compare by value, exactly: their rounding is part of the result.

use crate::{tensor::TensorRef, value::ValueView};
use opal_plugin_api::DType;

/// Tolerances for floating-point elements.
#[derive(Debug, Clone, Copy)]
pub struct Tolerance {
    pub rtol: f64,
    pub atol: f64,
}

impl Default for Tolerance {
    /// The backend tests' defaults.
    fn default() -> Self {
        Tolerance {
            rtol: 1e-3,
            atol: 1e-7,
        }
    }
}

/// `Ok` if `actual` matches `expected`: tensors as [`compare`] does, sequences element by
/// element with the same tolerance, none only with none.
pub fn compare_values(
    actual: ValueView<'_>,
    expected: ValueView<'_>,
    tol: Tolerance,
) -> Result<(), String> {
    match (actual, expected) {
        (ValueView::Tensor(a), ValueView::Tensor(e)) => compare(a, e, tol),
        (ValueView::Sequence(a), ValueView::Sequence(e)) => {
            if a.len() != e.len() {
                return Err(format!(
                    "a sequence of {} elements where {} were expected",
                    a.len(),
                    e.len()
                ));
            }
            a.iter().zip(e).enumerate().try_for_each(|(i, (a, e))| {
                compare(a.as_ref(), e.as_ref(), tol).map_err(|m| format!("element {i}: {m}"))
            })
        }
        (ValueView::None, ValueView::None) => Ok(()),
        (a, e) => Err(format!(
            "a {} where a {} was expected",
            a.describe(),
            e.describe()
        )),
    }
}

/// `Ok` if `actual` matches `expected`, otherwise why not (the first differing element).
pub fn compare(
    actual: TensorRef<'_>,
    expected: TensorRef<'_>,
    tol: Tolerance,
) -> Result<(), String> {
    if actual.dtype != expected.dtype {
        return Err(format!(
            "dtype {} where {} was expected",
            actual.dtype, expected.dtype
        ));
    }
    if actual.shape != expected.shape {
        return Err(format!(
            "shape {:?} where {:?} was expected",
            actual.shape, expected.shape
        ));
    }
    let floats_within = |a: Vec<f64>, e: Vec<f64>, tol: Tolerance| -> Result<(), String> {
        let bad = a.iter().zip(&e).position(|(&a, &e)| {
            let same = (a.is_nan() && e.is_nan()) || a == e;
            let close = (a - e).abs() <= tol.atol + tol.rtol * e.abs();
            !same && !close
        });
        match bad {
            None => Ok(()),
            Some(i) => Err(format!(
                "element {i} is {} where {} was expected (rtol {}, atol {})",
                a[i], e[i], tol.rtol, tol.atol
            )),
        }
    };
    let floats = |a, e| floats_within(a, e, tol);
    let exact = Tolerance {
        rtol: 0.0,
        atol: 0.0,
    };
    match actual.dtype {
        DType::STRING => strings_equal(actual, expected),
        dtype @ (DType::F8E4M3FN
        | DType::F8E4M3FNUZ
        | DType::F8E5M2
        | DType::F8E5M2FNUZ
        | DType::F4E2M1
        | DType::F8E8M0) => {
            let values = |data: &[u8]| data.iter().map(|&b| small_float_to_f64(dtype, b)).collect();
            floats_within(values(actual.data), values(expected.data), exact)
        }
        DType::F32 => floats(
            to_f64::<4>(actual.data, |b| f32::from_le_bytes(b) as f64),
            to_f64::<4>(expected.data, |b| f32::from_le_bytes(b) as f64),
        ),
        DType::F64 => floats(
            to_f64::<8>(actual.data, f64::from_le_bytes),
            to_f64::<8>(expected.data, f64::from_le_bytes),
        ),
        DType::F16 => floats(
            to_f64::<2>(actual.data, f16_to_f64),
            to_f64::<2>(expected.data, f16_to_f64),
        ),
        DType::BF16 => floats(
            to_f64::<2>(actual.data, bf16_to_f64),
            to_f64::<2>(expected.data, bf16_to_f64),
        ),
        dtype if tol.atol >= 1.0 => {
            match integer_values(dtype, actual.data).zip(integer_values(dtype, expected.data)) {
                Some((a, e)) => integers_within(&a, &e, tol.atol),
                None => exactly(actual, expected),
            }
        }
        _ => exactly(actual, expected),
    }
}

/// The elements of an integer tensor of `dtype`, or `None` for other dtypes.
fn integer_values(dtype: DType, data: &[u8]) -> Option<Vec<i128>> {
    fn read<const N: usize>(data: &[u8], value: impl Fn([u8; N]) -> i128) -> Vec<i128> {
        data.chunks_exact(N)
            .map(|c| value(c.try_into().expect("chunks are N bytes")))
            .collect()
    }
    Some(match dtype {
        DType::U8 => read(data, |b: [u8; 1]| b[0].into()),
        DType::I8 => read(data, |b| i8::from_le_bytes(b).into()),
        DType::U16 => read(data, |b| u16::from_le_bytes(b).into()),
        DType::I16 => read(data, |b| i16::from_le_bytes(b).into()),
        DType::U32 => read(data, |b| u32::from_le_bytes(b).into()),
        DType::I32 => read(data, |b| i32::from_le_bytes(b).into()),
        DType::U64 => read(data, |b| u64::from_le_bytes(b).into()),
        DType::I64 => read(data, |b| i64::from_le_bytes(b).into()),
        _ => return None,
    })
}

/// Integers no more than `atol` apart.
fn integers_within(actual: &[i128], expected: &[i128], atol: f64) -> Result<(), String> {
    match actual
        .iter()
        .zip(expected)
        .position(|(&a, &e)| a.abs_diff(e) as f64 > atol)
    {
        None => Ok(()),
        Some(i) => Err(format!(
            "element {i} is {} where {} was expected (atol {atol})",
            actual[i], expected[i]
        )),
    }
}

/// Every string equal, byte for byte.
fn strings_equal(actual: TensorRef<'_>, expected: TensorRef<'_>) -> Result<(), String> {
    let (a, e) = (actual.strings()?, expected.strings()?);
    match a.iter().zip(&e).position(|(a, e)| a != e) {
        None => Ok(()),
        Some(i) => Err(format!(
            "element {i} is {:?} where {:?} was expected",
            a[i], e[i]
        )),
    }
}

/// Every byte equal; the first differing element is reported as bytes.
fn exactly(actual: TensorRef<'_>, expected: TensorRef<'_>) -> Result<(), String> {
    let size = actual.dtype.size().unwrap_or(1).max(1);
    match actual
        .data
        .chunks(size)
        .zip(expected.data.chunks(size))
        .position(|(a, e)| a != e)
    {
        None => Ok(()),
        Some(i) => Err(format!(
            "element {i} is {:?} where {:?} was expected (bytes, {})",
            &actual.data[i * size..(i + 1) * size],
            &expected.data[i * size..(i + 1) * size],
            actual.dtype
        )),
    }
}

fn to_f64<const N: usize>(bytes: &[u8], convert: impl Fn([u8; N]) -> f64) -> Vec<f64> {
    bytes
        .chunks_exact(N)
        .map(|c| convert(c.try_into().expect("chunks are N bytes")))
        .collect()
}

fn f16_to_f64(bytes: [u8; 2]) -> f64 {
    let bits = u16::from_le_bytes(bytes);
    let sign = if bits >> 15 == 1 { -1.0 } else { 1.0 };
    let exponent = i32::from((bits >> 10) & 0x1f);
    let fraction = f64::from(bits & 0x3ff);
    sign * match exponent {
        0 => fraction * 2f64.powi(-24),
        0x1f if fraction == 0.0 => f64::INFINITY,
        0x1f => f64::NAN,
        e => (1.0 + fraction / 1024.0) * 2f64.powi(e - 15),
    }
}

/// The value of an 8- or 4-bit float of `dtype` stored in `bits` (the low 4 bits for float4).
fn small_float_to_f64(dtype: DType, bits: u8) -> f64 {
    // (exponent bits, mantissa bits, exponent bias)
    let (exponent_bits, mantissa_bits, bias) = match dtype {
        DType::F8E4M3FN => (4, 3, 7),
        DType::F8E4M3FNUZ => (4, 3, 8),
        DType::F8E5M2 => (5, 2, 15),
        DType::F8E5M2FNUZ => (5, 2, 16),
        DType::F4E2M1 => (2, 1, 1),
        _ => {
            // E8M0: a bare exponent, all ones being NaN.
            return if bits == 0xff {
                f64::NAN
            } else {
                2f64.powi(i32::from(bits) - 127)
            };
        }
    };
    let sign_bit = 1u8 << (exponent_bits + mantissa_bits);
    let magnitude = bits & (sign_bit - 1);
    let negative = bits & sign_bit != 0;
    let top_exponent = (1u8 << exponent_bits) - 1;
    let exponent = magnitude >> mantissa_bits;
    let mantissa = magnitude & ((1 << mantissa_bits) - 1);
    let is_nan = match dtype {
        DType::F8E4M3FN => magnitude == 0x7f,
        DType::F8E4M3FNUZ | DType::F8E5M2FNUZ => bits == 0x80,
        DType::F8E5M2 => exponent == top_exponent && mantissa != 0,
        _ => false,
    };
    if is_nan {
        return f64::NAN;
    }
    let value = if dtype == DType::F8E5M2 && exponent == top_exponent {
        f64::INFINITY
    } else if exponent == 0 {
        f64::from(mantissa) * 2f64.powi(1 - bias - mantissa_bits)
    } else {
        (1.0 + f64::from(mantissa) / f64::from(1u8 << mantissa_bits))
            * 2f64.powi(i32::from(exponent) - bias)
    };
    if negative {
        -value
    } else {
        value
    }
}

fn bf16_to_f64(bytes: [u8; 2]) -> f64 {
    f64::from(f32::from_bits(u32::from(u16::from_le_bytes(bytes)) << 16))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_compare_within_tolerance_and_nan_equals_nan() {
        let tol = Tolerance::default();
        let e = [1.0f32, f32::NAN, -3.0];
        assert!(compare(
            TensorRef::from_slice(&[3], &[1.0005f32, f32::NAN, -3.0]),
            TensorRef::from_slice(&[3], &e),
            tol
        )
        .is_ok());
        let err = compare(
            TensorRef::from_slice(&[3], &[1.01f32, f32::NAN, -3.0]),
            TensorRef::from_slice(&[3], &e),
            tol,
        )
        .unwrap_err();
        assert!(err.contains("element 0"), "{err}");
    }

    #[test]
    fn integers_must_be_equal_and_shapes_match() {
        let tol = Tolerance::default();
        assert!(compare(
            TensorRef::from_slice(&[2], &[1i64, 2]),
            TensorRef::from_slice(&[2], &[1i64, 3]),
            tol
        )
        .is_err());
        assert!(compare(
            TensorRef::from_slice(&[2], &[1i64, 2]),
            TensorRef::from_slice(&[1, 2], &[1i64, 2]),
            tol
        )
        .is_err());
    }

    #[test]
    fn an_atol_of_one_or_more_lets_integers_differ_that_much() {
        let tol = |atol| Tolerance { rtol: 0.5, atol };
        let actual = TensorRef::from_slice(&[3], &[10u8, 200, 0]);
        let expected = TensorRef::from_slice(&[3], &[12u8, 199, 0]);
        assert!(compare(actual, expected, tol(2.0)).is_ok());
        let err = compare(actual, expected, tol(1.0)).unwrap_err();
        assert_eq!(err, "element 0 is 10 where 12 was expected (atol 1)");
        // Below 1 (every default), integers compare exactly, whatever rtol says.
        let err = compare(actual, expected, tol(0.9)).unwrap_err();
        assert!(err.contains("(bytes, u8)"), "{err}");
        let wide = [i64::MIN, i64::MIN + 3, i64::MAX];
        let one = |i: usize| TensorRef::from_slice(&[1], &wide[i..=i]);
        assert!(compare(one(0), one(1), tol(3.0)).is_ok());
        assert!(compare(one(2), one(0), tol(3.0)).is_err());
    }

    #[test]
    fn small_floats_compare_by_exact_value_and_nan_equals_nan() {
        let tensor = |dtype, data: &'static [u8]| TensorRef::new(dtype, &[2], data);
        let tol = Tolerance::default();
        // E4M3FN has two NaN codes, 0x7f and 0xff.
        assert!(compare(
            tensor(DType::F8E4M3FN, &[0x7f, 0x7e]),
            tensor(DType::F8E4M3FN, &[0xff, 0x7e]),
            tol
        )
        .is_ok());
        // 416 is the code below 448: small floats take no tolerance.
        let err = compare(
            tensor(DType::F8E4M3FN, &[0x7f, 0x7d]),
            tensor(DType::F8E4M3FN, &[0x7f, 0x7e]),
            tol,
        )
        .unwrap_err();
        assert!(
            err.contains("element 1 is 416 where 448 was expected"),
            "{err}"
        );
    }

    #[test]
    fn small_floats_decode() {
        assert_eq!(small_float_to_f64(DType::F8E4M3FN, 0x7e), 448.0);
        assert_eq!(small_float_to_f64(DType::F8E4M3FN, 0x01), 2f64.powi(-9));
        assert_eq!(small_float_to_f64(DType::F8E4M3FNUZ, 0x7f), 240.0);
        assert!(small_float_to_f64(DType::F8E4M3FNUZ, 0x80).is_nan());
        assert_eq!(small_float_to_f64(DType::F8E5M2, 0x7b), 57344.0);
        assert_eq!(small_float_to_f64(DType::F8E5M2, 0xfc), f64::NEG_INFINITY);
        assert!(small_float_to_f64(DType::F8E5M2, 0x7d).is_nan());
        assert_eq!(small_float_to_f64(DType::F8E5M2FNUZ, 0x7f), 57344.0);
        assert_eq!(small_float_to_f64(DType::F4E2M1, 0x7), 6.0);
        assert_eq!(small_float_to_f64(DType::F4E2M1, 0x9), -0.5);
        assert_eq!(small_float_to_f64(DType::F8E8M0, 127), 1.0);
        assert!(small_float_to_f64(DType::F8E8M0, 0xff).is_nan());
    }

    #[test]
    fn half_floats_decode() {
        assert_eq!(f16_to_f64(0x3c00u16.to_le_bytes()), 1.0);
        assert_eq!(f16_to_f64(0xc000u16.to_le_bytes()), -2.0);
        assert_eq!(bf16_to_f64(0x3f80u16.to_le_bytes()), 1.0);
    }
}
