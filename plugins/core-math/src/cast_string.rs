//! Cast between strings and numbers, as the ONNX reference (numpy's `astype`) does: numbers
//! are written as Python writes them (`1.5`, `1e-05`, `1e+16`, `nan`, `-inf`, `True`), and
//! strings are parsed as plain or scientific decimals (`3.14`, `1E8`, ` 7 `), or as integers.

use crate::check::{error, is_int};
use opal_kernel_support::int_values::integer_at;
use opal_plugin_api::prelude::*;

/// Whether a cast between `dtype` and strings is supported.
pub(crate) fn castable_with_strings(dtype: DType) -> bool {
    is_int(dtype) || matches!(dtype, DType::STRING | DType::F32 | DType::F64 | DType::BOOL)
}

/// `v` as Python's `repr` writes a float: the shortest digits that read back as `v`, in
/// positional notation from 1e-4 up to 1e16 and in scientific notation (`1e-05`, `1.5e+16`)
/// outside it.
fn float_text(v: f64, shortest: impl Fn() -> String) -> String {
    if v.is_nan() {
        return "nan".to_owned();
    }
    if v.is_infinite() {
        return if v > 0.0 { "inf" } else { "-inf" }.to_owned();
    }
    // `{:e}` gives the shortest digits: `-1.2345e-5`.
    let scientific = shortest();
    let (mantissa, exponent) = scientific.split_once('e').unwrap_or((&scientific, "0"));
    let exponent: i32 = exponent.parse().unwrap_or(0);
    let (sign, mantissa) = match mantissa.strip_prefix('-') {
        Some(m) => ("-", m),
        None => ("", mantissa),
    };
    let digits: String = mantissa.chars().filter(|c| c.is_ascii_digit()).collect();
    if !(-4..16).contains(&exponent) {
        let sign_e = if exponent < 0 { '-' } else { '+' };
        return format!("{sign}{mantissa}e{sign_e}{:02}", exponent.abs());
    }
    let point = exponent + 1;
    let text = if point <= 0 {
        format!("0.{}{digits}", "0".repeat(point.unsigned_abs() as usize))
    } else if point as usize >= digits.len() {
        format!("{digits}{}.0", "0".repeat(point as usize - digits.len()))
    } else {
        let (whole, fraction) = digits.split_at(point as usize);
        format!("{whole}.{fraction}")
    };
    format!("{sign}{text}")
}

/// Element `i` of number tensor `x` as text.
fn number_text(op: &str, x: TensorRef<'_>, i: usize) -> KernelResult<String> {
    if let Some(v) = integer_at(x, i)? {
        return Ok(v.to_string());
    }
    Ok(match x.dtype() {
        DType::F32 => {
            let v = x.f32()?[i];
            float_text(f64::from(v), || format!("{v:e}"))
        }
        DType::F64 => {
            let v = x.as_slice::<f64>()?[i];
            float_text(v, || format!("{v:e}"))
        }
        DType::BOOL => if x.as_slice::<bool>()?[i] {
            "True"
        } else {
            "False"
        }
        .to_owned(),
        other => return Err(error(op, format_args!("cannot cast {other} to string"))),
    })
}

/// Parses element `i`'s text as a `T`, naming the element when it is not one.
fn parse<T: std::str::FromStr>(op: &str, text: &str, i: usize, to: DType) -> KernelResult<T> {
    text.trim().parse().map_err(|_| {
        error(
            op,
            format_args!("element {i} ({text:?}) is not a number of type {to}"),
        )
    })
}

/// Casts `x` to `y` where one of them holds strings.
pub(crate) fn cast_strings(op: &str, x: TensorRef<'_>, y: TensorMut<'_>) -> KernelResult<()> {
    let (from, to) = (x.dtype(), y.dtype());
    if from == DType::STRING && to == DType::STRING {
        let texts = x.strings()?;
        let mut out = y.strings_mut()?;
        for (i, text) in texts.iter().enumerate() {
            out.set(i, text?)?;
        }
        return Ok(());
    }
    if to == DType::STRING {
        let mut out = y.strings_mut()?;
        for i in 0..out.len() {
            out.set(i, &number_text(op, x, i)?)?;
        }
        return Ok(());
    }
    let texts = x.strings()?;
    macro_rules! parsed {
        ($ty:ty) => {{
            let out = y.as_slice_mut::<$ty>()?;
            for (i, (y, text)) in out.iter_mut().zip(texts.iter()).enumerate() {
                *y = parse::<$ty>(op, text?, i, to)?;
            }
        }};
    }
    match to {
        DType::F32 => parsed!(f32),
        DType::F64 => parsed!(f64),
        DType::I8 => parsed!(i8),
        DType::I16 => parsed!(i16),
        DType::I32 => parsed!(i32),
        DType::I64 => parsed!(i64),
        DType::U8 => parsed!(u8),
        DType::U16 => parsed!(u16),
        DType::U32 => parsed!(u32),
        DType::U64 => parsed!(u64),
        other => {
            return Err(error(
                op,
                format_args!("cannot cast strings to {other}; only to numbers"),
            ))
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(v: f64) -> String {
        float_text(v, || format!("{v:e}"))
    }

    #[test]
    fn floats_are_written_as_python_writes_them() {
        let cases = [
            (1.5, "1.5"),
            (1.0, "1.0"),
            (-0.25, "-0.25"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (123456.0, "123456.0"),
            (1e16, "1e+16"),
            (1.5e17, "1.5e+17"),
            (9999999999999998.0, "9999999999999998.0"),
            (f64::NAN, "nan"),
            (f64::NEG_INFINITY, "-inf"),
        ];
        for (v, expected) in cases {
            assert_eq!(text(v), expected, "{v}");
        }
        let third = 1.0f32 / 3.0;
        assert_eq!(
            float_text(f64::from(third), || format!("{third:e}")),
            "0.33333334"
        );
    }
}
