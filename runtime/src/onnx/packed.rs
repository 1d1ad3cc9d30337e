//! Sub-byte elements as ONNX files store them: two 4-bit or four 2-bit values per byte, the
//! first in the lowest bits. In memory each takes a byte of its own (see `DType`'s
//! documentation), so reading a tensor unpacks it and writing one packs it.

use opal_plugin_api::DType;

/// The bytes a file needs for elements of `dtype` that take `bytes` bytes in memory.
pub(super) fn packed_len(dtype: DType, bytes: usize) -> usize {
    bytes.div_ceil(dtype.per_packed_byte())
}

/// Spreads the packed elements of `dtype` in `packed` over `out`, one per byte: int4 and int2
/// values sign-extended, every other type's bits as they are.
pub(super) fn unpack(dtype: DType, packed: &[u8], out: &mut [u8]) {
    let per_byte = dtype.per_packed_byte();
    let bits = 8 / per_byte;
    let mask = (1u8 << bits) - 1;
    let signed = matches!(dtype, DType::I4 | DType::I2);
    for (i, y) in out.iter_mut().enumerate() {
        let Some(&byte) = packed.get(i / per_byte) else {
            return;
        };
        let value = (byte >> (bits * (i % per_byte))) & mask;
        *y = if signed {
            // Move the value's sign bit to the byte's top, then shift it back arithmetically.
            ((value << (8 - bits)) as i8 >> (8 - bits)) as u8
        } else {
            value
        };
    }
}

/// Packs `values`, elements of `dtype` one per byte, as a file stores them: the inverse of
/// [`unpack`] (only each value's low bits are kept).
pub(crate) fn pack(dtype: DType, values: &[u8]) -> Vec<u8> {
    let per_byte = dtype.per_packed_byte();
    let bits = 8 / per_byte;
    let mask = ((1u16 << bits) - 1) as u8;
    values
        .chunks(per_byte)
        .map(|chunk| {
            chunk
                .iter()
                .enumerate()
                .fold(0u8, |byte, (k, &v)| byte | (v & mask) << (bits * k))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packing_is_the_inverse_of_unpacking() {
        for (dtype, values) in [
            (DType::I4, vec![0xffu8, 0xf8, 7]),
            (DType::U4, vec![15, 8, 7, 0]),
            (DType::I2, vec![0xff, 0xfe, 1, 0, 0xfe]),
            (DType::U2, vec![3, 2, 1, 0, 2]),
        ] {
            let packed = pack(dtype, &values);
            assert_eq!(packed.len(), packed_len(dtype, values.len()), "{dtype}");
            let mut back = vec![0u8; values.len()];
            unpack(dtype, &packed, &mut back);
            assert_eq!(back, values, "{dtype}");
        }
        assert_eq!(pack(DType::F8E5M2, &[0x7c, 0x01]), [0x7c, 0x01]);
    }

    #[test]
    fn four_bit_values_take_the_low_nibble_first_and_int4_is_sign_extended() {
        let mut out = [0u8; 3];
        unpack(DType::I4, &[0x8F, 0x07], &mut out);
        assert_eq!(out.map(|b| b as i8), [-1, -8, 7]);
        unpack(DType::U4, &[0x8F, 0x07], &mut out);
        assert_eq!(out, [15, 8, 7]);
        assert_eq!(packed_len(DType::U4, 3), 2);
    }

    #[test]
    fn two_bit_values_take_the_lowest_bits_first() {
        let mut out = [0u8; 5];
        // Elements 0..4 are 0b11, 0b10, 0b01, 0b00; element 4 is 0b10.
        unpack(DType::I2, &[0b0001_1011, 0b10], &mut out);
        assert_eq!(out.map(|b| b as i8), [-1, -2, 1, 0, -2]);
        unpack(DType::U2, &[0b0001_1011, 0b10], &mut out);
        assert_eq!(out, [3, 2, 1, 0, 2]);
        assert_eq!(packed_len(DType::I2, 5), 2);
        assert_eq!(packed_len(DType::F8E4M3FN, 5), 5);
        assert_eq!(packed_len(DType::F32, 8), 8);
    }
}
