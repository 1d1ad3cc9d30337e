//! ONNX `BitCast` (opset 26): the input's bits reinterpreted as the dtype of attribute `to`,
//! which must be exactly as wide. The 8-, 16-, 32- and 64-bit types copy their little-endian
//! bytes unchanged. The 4-bit types (uint4, int4, float4e2m1) and the 2-bit types (uint2,
//! int2) reinterpret their low bits among themselves, each element rewritten in the target's
//! one-byte form (sign-extended for int4 and int2). A bool holds only 0 or 1, so a byte with
//! any other value is refused rather than turned into a bool it is not.

use crate::check::error;
use opal_plugin_api::prelude::*;

/// How many bits one element of `dtype` carries, or `None` for types BitCast does not take.
fn bit_width(dtype: DType) -> Option<u32> {
    Some(match dtype {
        DType::U2 | DType::I2 => 2,
        DType::U4 | DType::I4 | DType::F4E2M1 => 4,
        DType::U8 | DType::I8 | DType::BOOL => 8,
        DType::F8E4M3FN | DType::F8E4M3FNUZ | DType::F8E5M2 | DType::F8E5M2FNUZ => 8,
        DType::F8E8M0 => 8,
        DType::U16 | DType::I16 | DType::F16 | DType::BF16 => 16,
        DType::U32 | DType::I32 | DType::F32 => 32,
        DType::U64 | DType::I64 | DType::F64 => 64,
        _ => return None,
    })
}

/// The dtype attribute `to` names; an error when it is absent or not a dtype BitCast takes.
fn target(op: &str, attributes: Attributes<'_>) -> KernelResult<DType> {
    if attributes.get("to").is_none() {
        return Err(error(op, "the required attribute 'to' is missing"));
    }
    let code = attributes.int("to", 0).map_err(|e| error(op, e))?;
    let dtype = i32::try_from(code).map(DType).unwrap_or(DType::UNDEFINED);
    if bit_width(dtype).is_none() {
        return Err(error(
            op,
            format_args!(
                "attribute 'to' ({code}, {dtype}) is not a dtype BitCast supports: any fixed-size numeric, bool or low-bit type"
            ),
        ));
    }
    Ok(dtype)
}

/// Fails unless `from` and `to` are equally wide.
fn check_widths(op: &str, from: DType, to: DType) -> KernelResult<()> {
    let Some(from_bits) = bit_width(from) else {
        return Err(error(
            op,
            format_args!("input dtype {from} cannot be bit-cast"),
        ));
    };
    let to_bits = bit_width(to).unwrap_or(0);
    if from_bits != to_bits {
        return Err(error(
            op,
            format_args!(
                "cannot bit-cast {from} ({from_bits} bits) to {to} ({to_bits} bits): the output dtype must be as wide as the input's; use Cast to convert values"
            ),
        ));
    }
    Ok(())
}

/// The in-memory byte of low-bit `to` holding the low `bits` bits of `byte`.
fn reinterpret_low_bits(byte: u8, bits: u32, to: DType) -> u8 {
    let low = byte & ((1u8 << bits) - 1);
    if matches!(to, DType::I4 | DType::I2) {
        ((low << (8 - bits)) as i8 >> (8 - bits)) as u8
    } else {
        low
    }
}

/// The input's bits as the dtype of attribute `to`.
pub struct BitCast;

impl Operator for BitCast {
    const OP_TYPE: &'static str = "BitCast";
    const SINCE_VERSION: i64 = 26;

    fn infer(cx: &InferContext<'_>) -> KernelResult<Vec<OutputType>> {
        let x = cx.input(0)?;
        let to = target(Self::OP_TYPE, cx.attributes())?;
        check_widths(Self::OP_TYPE, x.dtype, to)?;
        Ok(vec![OutputType::new(to, x.shape.to_vec())])
    }

    fn compute(cx: &mut KernelContext<'_>) -> KernelResult<()> {
        let op = Self::OP_TYPE;
        let x = cx.input(0)?;
        let y = cx.output(0)?;
        let (from, to) = (x.dtype(), y.dtype());
        check_widths(op, from, to)?;
        let (input, out) = (x.bytes(), y.bytes_mut());
        if to == DType::BOOL {
            if let Some(i) = input.iter().position(|&b| b > 1) {
                return Err(error(
                    op,
                    format_args!(
                        "element {i} of the {from} input is the byte {:#04x}, which is not a bool (0 or 1)",
                        input[i]
                    ),
                ));
            }
        }
        match bit_width(to) {
            Some(bits @ (2 | 4)) => {
                for (y, &x) in out.iter_mut().zip(input) {
                    *y = reinterpret_low_bits(x, bits, to);
                }
            }
            _ => out.copy_from_slice(input),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opal_plugin_api::testing::{
        infer_input, infer_operator, int_attr, run_operator, OwnedTensor,
    };

    fn bit_cast(x: OwnedTensor, to: DType) -> Result<OwnedTensor, String> {
        run_operator::<BitCast>(&[x], &[int_attr("to", i64::from(to.0))], 1)
            .map(|mut y| y.remove(0))
    }

    #[test]
    fn floats_and_integers_keep_their_bits() {
        let x = OwnedTensor::f32(&[2, 2], &[1.0, -0.0, f32::INFINITY, 0.1]);
        let y = bit_cast(x, DType::I32).unwrap();
        assert_eq!((y.dtype(), y.shape()), (DType::I32, &[2, 2][..]));
        let bits: Vec<i32> = [1.0f32, -0.0, f32::INFINITY, 0.1]
            .iter()
            .map(|v| v.to_bits() as i32)
            .collect();
        assert_eq!(y.to_vec::<i32>(), bits);
        let back = bit_cast(y, DType::F32).unwrap();
        assert_eq!(back.to_vec::<f32>()[3], 0.1);

        let y = bit_cast(OwnedTensor::new::<u16>(&[2], &[65535, 1]), DType::I16).unwrap();
        assert_eq!(y.to_vec::<i16>(), [-1, 1]);
        let y = bit_cast(OwnedTensor::new::<f64>(&[], &[-2.5]), DType::U64).unwrap();
        assert_eq!(y.to_vec::<u64>(), [(-2.5f64).to_bits()]);
        let y = bit_cast(OwnedTensor::new::<u16>(&[1], &[0x3c00]), DType::F16).unwrap();
        assert_eq!(y.bytes(), [0x00, 0x3c]);
    }

    #[test]
    fn bytes_move_between_the_eight_bit_types() {
        let y = bit_cast(OwnedTensor::new::<i8>(&[3], &[-1, 0, 127]), DType::U8).unwrap();
        assert_eq!(y.to_vec::<u8>(), [255, 0, 127]);
        let y = bit_cast(OwnedTensor::new::<bool>(&[2], &[true, false]), DType::U8).unwrap();
        assert_eq!(y.to_vec::<u8>(), [1, 0]);
        let y = bit_cast(OwnedTensor::new::<u8>(&[2], &[0x7e, 0x38]), DType::F8E4M3FN).unwrap();
        assert_eq!((y.dtype(), y.bytes()), (DType::F8E4M3FN, &[0x7e, 0x38][..]));
        let y = bit_cast(OwnedTensor::new::<u8>(&[2], &[1, 0]), DType::BOOL).unwrap();
        assert_eq!(y.to_vec::<bool>(), [true, false]);
    }

    #[test]
    fn a_byte_that_is_not_a_bool_is_refused() {
        let err = bit_cast(OwnedTensor::new::<u8>(&[3], &[0, 1, 2]), DType::BOOL).unwrap_err();
        assert!(err.contains("element 2") && err.contains("0x02"), "{err}");
    }

    #[test]
    fn low_bit_types_reinterpret_their_low_bits() {
        // int4 -8 (bits 1000, held sign-extended as 0xf8) is uint4 8 and float4 code 8 (-0).
        let i4 = OwnedTensor::from_bytes(DType::I4, &[3], &[0xf8, 0x07, 0xff]);
        let u4 = bit_cast(i4.clone(), DType::U4).unwrap();
        assert_eq!(u4.bytes(), [8, 7, 15]);
        let f4 = bit_cast(i4, DType::F4E2M1).unwrap();
        assert_eq!(f4.bytes(), [8, 7, 15]);
        let back = bit_cast(f4, DType::I4).unwrap();
        assert_eq!(back.bytes(), [0xf8, 0x07, 0xff]);
        let u2 = OwnedTensor::from_bytes(DType::U2, &[4], &[0, 1, 2, 3]);
        let i2 = bit_cast(u2, DType::I2).unwrap();
        assert_eq!(i2.bytes(), [0, 1, 0xfe, 0xff]);
        assert_eq!(bit_cast(i2, DType::U2).unwrap().bytes(), [0, 1, 2, 3]);
    }

    #[test]
    fn widths_must_match() {
        let err = bit_cast(OwnedTensor::f32(&[1], &[1.0]), DType::I64).unwrap_err();
        assert!(err.contains("f32 (32 bits) to i64 (64 bits)"), "{err}");
        let u4 = OwnedTensor::from_bytes(DType::U4, &[1], &[1]);
        assert!(bit_cast(u4, DType::U8).is_err());
        let u8s = OwnedTensor::new::<u8>(&[1], &[1]);
        assert!(bit_cast(u8s, DType::I2).is_err());
    }

    #[test]
    fn bad_attributes_and_dtypes_are_named() {
        let x = [infer_input(DType::F32, &[2])];
        let err = infer_operator::<BitCast>(&x, &[], 1).unwrap_err();
        assert!(err.contains("'to' is missing"), "{err}");
        let err = infer_operator::<BitCast>(&x, &[int_attr("to", 8)], 1).unwrap_err();
        assert!(err.contains("attribute 'to' (8, string)"), "{err}");
        let strings = [infer_input(DType::STRING, &[2])];
        let err = infer_operator::<BitCast>(&strings, &[int_attr("to", 1)], 1).unwrap_err();
        assert!(err.contains("input dtype string"), "{err}");
    }
}
