//! Constant tensors of a model: initializers and tensor attributes. `raw_data` that is aligned
//! for its dtype stays a view into the memory-mapped file; typed fields (`float_data`, …) and
//! misaligned raw bytes are decoded once into host memory accounted to the weights owner, and
//! so are sub-byte elements, which files pack and memory holds one per byte. String tensors
//! (`string_data`) are decoded into views of bytes the constant owns, and must be UTF-8.

use super::{
    packed::{packed_len, unpack},
    proto::TensorProto,
};
use crate::{
    memory::{AlignedBuffer, Owner, StringBytes},
    tensor::{byte_size, Shape, Tensor, TensorRef},
};
use bytes::Bytes;
use opal_plugin_api::DType;

/// A constant tensor's bytes.
#[derive(Debug)]
pub enum ConstantData {
    /// A view into the memory-mapped model file.
    Mapped(Bytes),
    /// Decoded or realigned into host memory.
    Owned(AlignedBuffer),
}

/// A constant tensor.
#[derive(Debug)]
pub struct Constant {
    pub dtype: DType,
    pub shape: Shape,
    pub data: ConstantData,
    /// The bytes a string constant's elements view.
    pub strings: Option<StringBytes>,
}

impl From<Tensor> for Constant {
    /// A constant taking over a host tensor's memory.
    fn from(tensor: Tensor) -> Self {
        let (dtype, shape, data, strings) = tensor.into_parts();
        Constant {
            dtype,
            shape,
            data: ConstantData::Owned(data),
            strings,
        }
    }
}

impl Constant {
    pub fn bytes(&self) -> &[u8] {
        match &self.data {
            ConstantData::Mapped(bytes) => bytes,
            ConstantData::Owned(buffer) => buffer.as_slice(),
        }
    }

    pub fn as_ref(&self) -> TensorRef<'_> {
        TensorRef {
            strings: self.strings.as_ref(),
            ..TensorRef::new(self.dtype, &self.shape, self.bytes())
        }
    }

    /// The host memory the constant holds: its elements' bytes unless they are mapped and, for
    /// a string constant, the bytes allocated for its text.
    pub fn allocated_bytes(&self) -> usize {
        let elements = match &self.data {
            ConstantData::Mapped(_) => 0,
            ConstantData::Owned(buffer) => buffer.len(),
        };
        elements + self.strings.as_ref().map_or(0, StringBytes::allocated)
    }

    /// Whether the bytes are used in place from the mapped file.
    pub fn is_mapped(&self) -> bool {
        matches!(self.data, ConstantData::Mapped(_))
    }

    /// A constant holding a copy of `tensor`.
    pub fn copy_of(tensor: TensorRef<'_>, owner: &Owner) -> Result<Self, String> {
        if tensor.dtype == DType::STRING {
            return Tensor::copy_of(tensor, owner)
                .map(Constant::from)
                .ok_or_else(|| "out of memory copying strings".to_owned());
        }
        Ok(Constant {
            strings: None,
            dtype: tensor.dtype,
            shape: Shape::from_slice(tensor.shape),
            data: ConstantData::Owned(
                AlignedBuffer::copy_of(tensor.data, owner)
                    .ok_or_else(|| format!("out of memory copying {} bytes", tensor.data.len()))?,
            ),
        })
    }

    /// Decodes a `TensorProto` that holds its data. `weights` owns whatever has to be copied.
    pub fn from_proto(proto: &TensorProto, weights: &Owner) -> Result<Self, String> {
        Constant::decode(proto, None, weights)
    }

    /// Decodes a `TensorProto` whose data is stored outside it: `external` is its bytes, a view
    /// into the mapped external-data file.
    pub fn from_external(
        proto: &TensorProto,
        external: Bytes,
        weights: &Owner,
    ) -> Result<Self, String> {
        Constant::decode(proto, Some(external), weights)
    }

    fn decode(
        proto: &TensorProto,
        external: Option<Bytes>,
        weights: &Owner,
    ) -> Result<Self, String> {
        let dtype = DType(proto.data_type);
        if dtype == DType::STRING {
            return Constant::strings(proto, weights);
        }
        let elem = dtype.size().ok_or_else(|| {
            format!(
                "dtype {dtype} (ONNX data_type {}) is not supported",
                proto.data_type
            )
        })?;
        let stored_outside = proto.data_location == 1 || !proto.external_data.is_empty();
        if stored_outside && external.is_none() {
            return Err(
                "its data is in an external file, which only a model's initializers may use"
                    .to_owned(),
            );
        }
        let raw = external.as_ref().unwrap_or(&proto.raw_data);
        let shape = proto
            .dims
            .iter()
            .map(|&d| usize::try_from(d).map_err(|_| format!("negative dim {d}")))
            .collect::<Result<Shape, _>>()?;
        let bytes = byte_size(dtype, &shape)
            .ok_or_else(|| format!("shape {shape:?} of {dtype} overflows"))?;
        let owned = |data: &[u8]| {
            AlignedBuffer::copy_of(data, weights)
                .map(ConstantData::Owned)
                .ok_or_else(|| format!("out of memory decoding {bytes} bytes"))
        };
        let data = if !raw.is_empty() || bytes == 0 || stored_outside {
            let stored = packed_len(dtype, bytes);
            if raw.len() != stored {
                return Err(format!(
                    "its raw data holds {} bytes, but {dtype} {shape:?} needs {stored}",
                    raw.len()
                ));
            }
            if stored != bytes {
                unpacked(dtype, raw, bytes, weights)?
            } else if (raw.as_ptr() as usize).is_multiple_of(elem) {
                ConstantData::Mapped(raw.clone())
            } else {
                owned(raw)?
            }
        } else {
            let decoded = typed_field_bytes(proto, dtype)?;
            let stored = packed_len(dtype, bytes);
            if decoded.len() != stored {
                return Err(format!(
                    "holds {} elements, but shape {shape:?} needs {}",
                    decoded.len() / elem * dtype.per_packed_byte(),
                    bytes / elem
                ));
            }
            if stored != bytes {
                unpacked(dtype, &decoded, bytes, weights)?
            } else {
                owned(&decoded)?
            }
        };
        Ok(Constant {
            dtype,
            shape,
            data,
            strings: None,
        })
    }

    /// Decodes a string `TensorProto` (`string_data`, one entry per element, UTF-8).
    fn strings(proto: &TensorProto, owner: &Owner) -> Result<Self, String> {
        let shape = proto
            .dims
            .iter()
            .map(|&d| usize::try_from(d).map_err(|_| format!("negative dim {d}")))
            .collect::<Result<Shape, _>>()?;
        let count = crate::tensor::element_count(&shape)
            .ok_or_else(|| format!("shape {shape:?} overflows"))?;
        if proto.string_data.len() != count {
            return Err(format!(
                "holds {} strings, but shape {shape:?} needs {count}",
                proto.string_data.len()
            ));
        }
        if let Some(i) = proto
            .string_data
            .iter()
            .position(|s| std::str::from_utf8(s).is_err())
        {
            return Err(format!(
                "string {i} is not UTF-8 (opal's string tensors hold UTF-8 text)"
            ));
        }
        let values = proto.string_data.iter().map(|s| &s[..]);
        Tensor::from_strings(&shape, values, owner)
            .map(Constant::from)
            .ok_or_else(|| format!("out of memory decoding {count} strings"))
    }
}

/// `bytes` bytes of host memory holding the sub-byte elements of `dtype` packed in `packed`,
/// one per byte.
fn unpacked(
    dtype: DType,
    packed: &[u8],
    bytes: usize,
    weights: &Owner,
) -> Result<ConstantData, String> {
    let mut buffer = AlignedBuffer::zeroed(bytes, weights)
        .ok_or_else(|| format!("out of memory unpacking {bytes} bytes"))?;
    unpack(dtype, packed, buffer.as_mut_slice());
    Ok(ConstantData::Owned(buffer))
}

/// The little-endian bytes of a tensor stored in its typed repeated field (sub-byte types as
/// the file packs them).
fn typed_field_bytes(proto: &TensorProto, dtype: DType) -> Result<Vec<u8>, String> {
    fn le<T: Copy, const N: usize>(values: &[T], to: impl Fn(T) -> [u8; N]) -> Vec<u8> {
        values.iter().flat_map(|&v| to(v)).collect()
    }
    Ok(match dtype {
        DType::F32 => le(&proto.float_data, f32::to_le_bytes),
        DType::F64 => le(&proto.double_data, f64::to_le_bytes),
        DType::I64 => le(&proto.int64_data, i64::to_le_bytes),
        DType::U64 => le(&proto.uint64_data, u64::to_le_bytes),
        DType::U32 => le(&proto.uint64_data, |v| (v as u32).to_le_bytes()),
        DType::I32 => le(&proto.int32_data, i32::to_le_bytes),
        // ONNX stores these in int32_data, one element per entry.
        DType::I16 => le(&proto.int32_data, |v| (v as i16).to_le_bytes()),
        DType::U16 | DType::F16 | DType::BF16 => {
            le(&proto.int32_data, |v| (v as u16).to_le_bytes())
        }
        DType::I8 => le(&proto.int32_data, |v| (v as i8).to_le_bytes()),
        // One byte per entry: an 8-bit float's bits, or two 4-bit or four 2-bit values packed.
        DType::U8 => le(&proto.int32_data, |v| (v as u8).to_le_bytes()),
        low_bit if low_bit.is_low_bit() => le(&proto.int32_data, |v| [v as u8]),
        DType::BOOL => le(&proto.int32_data, |v| [u8::from(v != 0)]),
        other => return Err(format!("dtype {other} is not supported")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::MemoryTracker;

    #[test]
    fn typed_fields_are_decoded_into_host_memory() {
        let tracker = MemoryTracker::new();
        let proto = TensorProto {
            dims: vec![2],
            data_type: 7,
            int64_data: vec![3, -1],
            ..Default::default()
        };
        let c = Constant::from_proto(&proto, &tracker.owner("weights")).unwrap();
        assert_eq!(c.as_ref().as_slice::<i64>().unwrap(), &[3, -1]);
        assert!(!c.is_mapped());
    }

    #[test]
    fn aligned_raw_data_is_used_in_place() {
        let tracker = MemoryTracker::new();
        let storage = Bytes::from(vec![0u8; 64]);
        let offset = (4 - storage.as_ptr() as usize % 4) % 4;
        let proto = TensorProto {
            dims: vec![4],
            data_type: 1,
            raw_data: storage.slice(offset..offset + 16),
            ..Default::default()
        };
        let c = Constant::from_proto(&proto, &tracker.owner("weights")).unwrap();
        assert!(c.is_mapped());
        assert_eq!(tracker.current_bytes(), 0);
    }

    #[test]
    fn packed_sub_byte_elements_are_unpacked_a_byte_each() {
        let tracker = MemoryTracker::new();
        let raw = TensorProto {
            dims: vec![3],
            data_type: DType::I4.0,
            raw_data: Bytes::from_static(&[0x8f, 0x07]),
            ..Default::default()
        };
        let c = Constant::from_proto(&raw, &tracker.owner("weights")).unwrap();
        assert_eq!(c.bytes(), [0xff, 0xf8, 0x07]);
        let typed = TensorProto {
            dims: vec![5],
            data_type: DType::U2.0,
            int32_data: vec![0b0001_1011, 0b10],
            ..Default::default()
        };
        let c = Constant::from_proto(&typed, &tracker.owner("weights")).unwrap();
        assert_eq!(c.bytes(), [3, 2, 1, 0, 2]);
        let short = TensorProto {
            dims: vec![5],
            data_type: DType::U4.0,
            raw_data: Bytes::from_static(&[0x21]),
            ..Default::default()
        };
        let err = Constant::from_proto(&short, &tracker.owner("weights")).unwrap_err();
        assert!(err.contains("holds 1 bytes, but u4 [5] needs 3"), "{err}");
    }

    #[test]
    fn a_size_mismatch_is_an_error() {
        let tracker = MemoryTracker::new();
        let proto = TensorProto {
            dims: vec![3],
            data_type: 1,
            float_data: vec![1.0],
            ..Default::default()
        };
        let err = Constant::from_proto(&proto, &tracker.owner("weights")).unwrap_err();
        assert!(err.contains("needs 3"), "{err}");
    }
}
