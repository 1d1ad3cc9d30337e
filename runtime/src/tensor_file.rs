//! Tensor files: reading inputs from ONNX `TensorProto` `.pb` files or NumPy `.npy` files, and
//! writing outputs as `.npy` when NumPy has their element type, as `.pb` otherwise. Strings
//! are `string_data` in a `.pb` and fixed-width unicode (`<U{n}`) in a `.npy`.

use crate::{
    memory::{AlignedBuffer, Owner},
    onnx::{proto::TensorProto, Constant, ConstantData},
    tensor::{byte_size, Shape, TensorRef},
};
use opal_plugin_api::{DType, Element};
use prost::Message;
use std::{
    io::Cursor,
    path::{Path, PathBuf},
};

/// Reads a tensor from `path`: `.npy` by its extension, otherwise a `TensorProto`. Errors name
/// the file.
pub fn read_tensor(path: &Path, owner: &Owner) -> Result<Constant, String> {
    let bytes = std::fs::read(path)
        .map_err(|e| format!("cannot read tensor file {}: {e}", path.display()))?;
    let fail = |reason: String| format!("tensor file {}: {reason}", path.display());
    if path.extension().is_some_and(|e| e == "npy") {
        read_npy(&bytes, owner).map_err(fail)
    } else {
        read_tensor_proto(&bytes, owner).map_err(fail)
    }
}

/// Decodes the bytes of an ONNX `TensorProto` `.pb` file; its data is copied into memory
/// accounted to `owner`.
pub fn read_tensor_proto(bytes: &[u8], owner: &Owner) -> Result<Constant, String> {
    let proto = TensorProto::decode(bytes).map_err(|e| format!("not an ONNX TensorProto ({e})"))?;
    Constant::from_proto(&proto, owner)
}

/// Decodes the bytes of a NumPy `.npy` file (C order, little-endian numbers or bools); its data
/// is copied into memory accounted to `owner`.
pub fn read_npy(bytes: &[u8], owner: &Owner) -> Result<Constant, String> {
    check_npy_header(bytes)?;
    if crate::npy_unicode::holds_objects(bytes) {
        return Err(crate::npy_unicode::OBJECT_ARRAY.to_owned());
    }
    let mut cursor = Cursor::new(bytes);
    let header =
        npyz::NpyHeader::from_reader(&mut cursor).map_err(|e| format!("not a .npy file ({e})"))?;
    if header.order() != npyz::Order::C {
        return Err("Fortran-ordered arrays are not supported; save it in C order".into());
    }
    let descr = header.dtype().descr();
    let plain = descr.trim_matches('\'');
    if plain.trim_start_matches(['<', '|', '=', '>']) == "O" {
        return Err(crate::npy_unicode::OBJECT_ARRAY.to_owned());
    }
    let shape = header
        .shape()
        .iter()
        .map(|&d| usize::try_from(d).map_err(|_| format!("dim {d} is too large")))
        .collect::<Result<Shape, _>>()?;
    if let Some(width) = crate::npy_unicode::unicode_width(plain) {
        let data = &bytes[cursor.position() as usize..];
        return crate::npy_unicode::read(&shape, width, data, owner);
    }
    let dtype = match plain.trim_start_matches(['<', '|', '=']) {
        "f4" => DType::F32,
        "f8" => DType::F64,
        "f2" => DType::F16,
        "i1" => DType::I8,
        "i2" => DType::I16,
        "i4" => DType::I32,
        "i8" => DType::I64,
        "u1" => DType::U8,
        "u2" => DType::U16,
        "u4" => DType::U32,
        "u8" => DType::U64,
        "b1" => DType::BOOL,
        _ => {
            return Err(format!(
                "dtype '{descr}' is not supported (little-endian numbers, bools and unicode strings only)"
            ))
        }
    };
    let size = byte_size(dtype, &shape).ok_or_else(|| format!("shape {shape:?} overflows"))?;
    let data = &bytes[cursor.position() as usize..];
    if data.len() != size {
        return Err(format!(
            "holds {} data bytes, but {dtype} {shape:?} needs {size}",
            data.len()
        ));
    }
    let buffer = AlignedBuffer::copy_of(data, owner).ok_or("out of memory")?;
    Ok(Constant {
        dtype,
        shape,
        data: ConstantData::Owned(buffer),
        strings: None,
    })
}

/// The deepest nesting of brackets a `.npy` header may have: a plain array's header nests two
/// deep (the dict and the shape tuple); the parser recurses once per level.
const NPY_HEADER_MAX_NESTING: usize = 8;

/// Checks what the `.npy` parser would otherwise trust: the header's declared length (it is
/// allocated before it is read) must fit in the file, and its brackets must not nest deeper
/// than [`NPY_HEADER_MAX_NESTING`].
fn check_npy_header(bytes: &[u8]) -> Result<(), String> {
    // Magic string, major and minor version, then the header's length: a u16 in version 1, a
    // u32 from version 2 on.
    let Some(version) = bytes
        .strip_prefix(b"\x93NUMPY")
        .and_then(|rest| rest.first())
    else {
        return Ok(());
    };
    let (length, start) = match (*version, bytes.get(8..10), bytes.get(8..12)) {
        (1, Some(b), _) => (usize::from(u16::from_le_bytes([b[0], b[1]])), 10),
        (2 | 3, _, Some(b)) => (u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize, 12),
        // Unknown versions and files cut short are the parser's to report.
        _ => return Ok(()),
    };
    let available = bytes.len().saturating_sub(start);
    if length > available {
        return Err(format!(
            "not a .npy file (its header is {length} bytes, but only {available} follow its length field)"
        ));
    }
    let mut depth = 0usize;
    for &b in &bytes[start..start + length] {
        match b {
            b'(' | b'[' | b'{' => {
                depth += 1;
                if depth > NPY_HEADER_MAX_NESTING {
                    return Err(format!(
                        "not a .npy file (its header nests brackets deeper than {NPY_HEADER_MAX_NESTING})"
                    ));
                }
            }
            b')' | b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

/// Writes `tensor` to `dir/stem.npy` when NumPy has its element type (every number type, bool
/// and f16), else to `dir/stem.pb` as an ONNX `TensorProto` (bf16, the float8 and float4 types,
/// int4/uint4 and int2/uint2, which NumPy reads only through extensions); returns the path
/// written.
pub fn write_tensor(dir: &Path, stem: &str, tensor: TensorRef<'_>) -> Result<PathBuf, String> {
    if npy_writes(tensor.dtype) || tensor.dtype == DType::STRING {
        let path = dir.join(format!("{stem}.npy"));
        write_npy(&path, tensor)?;
        return Ok(path);
    }
    let path = dir.join(format!("{stem}.pb"));
    write_tensor_proto(&path, tensor)?;
    Ok(path)
}

/// Whether [`write_npy`] writes tensors of `dtype`.
fn npy_writes(dtype: DType) -> bool {
    matches!(
        dtype,
        DType::F32
            | DType::F64
            | DType::F16
            | DType::I8
            | DType::I16
            | DType::I32
            | DType::I64
            | DType::U8
            | DType::U16
            | DType::U32
            | DType::U64
            | DType::BOOL
    )
}

/// Writes `tensor` to `path` as an ONNX `TensorProto` with its bytes as `raw_data`, in the
/// layout ONNX gives every fixed-size type: little-endian, one element after another, 4-bit and
/// 2-bit elements packed two or four to a byte.
pub fn write_tensor_proto(path: &Path, tensor: TensorRef<'_>) -> Result<(), String> {
    if tensor.dtype.size().is_none() {
        return Err(format!("cannot write {} tensors to a file", tensor.dtype));
    }
    let proto = if tensor.dtype == DType::STRING {
        TensorProto {
            dims: tensor.shape.iter().map(|&d| d as i64).collect(),
            data_type: tensor.dtype.0,
            string_data: tensor
                .strings()?
                .into_iter()
                .map(|s| s.as_bytes().to_vec().into())
                .collect(),
            ..Default::default()
        }
    } else {
        TensorProto {
            dims: tensor.shape.iter().map(|&d| d as i64).collect(),
            data_type: tensor.dtype.0,
            raw_data: crate::onnx::packed::pack(tensor.dtype, tensor.data).into(),
            ..Default::default()
        }
    };
    std::fs::write(path, proto.encode_to_vec())
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// Writes `tensor` to `path` as `.npy`.
pub fn write_npy(path: &Path, tensor: TensorRef<'_>) -> Result<(), String> {
    fn typed<T: Element + npyz::AutoSerialize>(
        path: &Path,
        tensor: TensorRef<'_>,
    ) -> std::io::Result<()> {
        let values = tensor.as_slice::<T>().unwrap_or_default();
        write_values(path, tensor, values.iter().copied())
    }
    fn write_values<T: npyz::AutoSerialize>(
        path: &Path,
        tensor: TensorRef<'_>,
        values: impl Iterator<Item = T>,
    ) -> std::io::Result<()> {
        let shape: Vec<u64> = tensor.shape.iter().map(|&d| d as u64).collect();
        let file = std::io::BufWriter::new(std::fs::File::create(path)?);
        use npyz::WriterBuilder as _;
        let mut writer = npyz::WriteOptions::new()
            .default_dtype()
            .shape(&shape)
            .writer(file)
            .begin_nd()?;
        writer.extend(values)?;
        writer.finish()
    }
    let result = match tensor.dtype {
        DType::F32 => typed::<f32>(path, tensor),
        DType::F64 => typed::<f64>(path, tensor),
        DType::I8 => typed::<i8>(path, tensor),
        DType::I16 => typed::<i16>(path, tensor),
        DType::I32 => typed::<i32>(path, tensor),
        DType::I64 => typed::<i64>(path, tensor),
        DType::U8 => typed::<u8>(path, tensor),
        DType::U16 => typed::<u16>(path, tensor),
        DType::U32 => typed::<u32>(path, tensor),
        DType::U64 => typed::<u64>(path, tensor),
        DType::BOOL => typed::<bool>(path, tensor),
        DType::F16 => {
            let halves = tensor.data.chunks_exact(2);
            let values = halves.map(|b| half::f16::from_bits(u16::from_le_bytes([b[0], b[1]])));
            write_values(path, tensor, values)
        }
        DType::STRING => std::fs::File::create(path)
            .map_err(|e| e.to_string())
            .and_then(|mut file| crate::npy_unicode::write(&mut file, tensor))
            .map_err(std::io::Error::other),
        other => return Err(format!("cannot write {other} tensors as .npy")),
    };
    result.map_err(|e| format!("cannot write {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::MemoryTracker;

    #[test]
    fn every_fixed_size_type_is_written_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let tracker = MemoryTracker::new();
        // 1.5 and -2.0 as f16 and as bf16.
        for (dtype, elements, bytes, extension) in [
            (DType::F16, 2, [0x00, 0x3e, 0x00, 0xc0], "npy"),
            (DType::BF16, 2, [0xc0, 0x3f, 0x00, 0xc0], "pb"),
            // -1, 7, -8 and 0 as int4, one byte each in memory and packed in the file.
            (DType::I4, 4, [0xff, 0x07, 0xf8, 0x00], "pb"),
        ] {
            let shape = [elements];
            let tensor = TensorRef::new(dtype, &shape, &bytes);
            let path = write_tensor(dir.path(), &format!("{dtype}"), tensor).unwrap();
            assert_eq!(path.extension().unwrap(), extension);
            let back = read_tensor(&path, &tracker.owner("inputs")).unwrap();
            assert_eq!(
                (back.dtype, back.shape.as_slice()),
                (dtype, &[elements][..])
            );
            assert_eq!(back.as_ref().data, &bytes);
        }
    }

    #[test]
    fn npy_files_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.npy");
        let values = [1.5f32, -2.0, 3.25, 0.0, 7.0, 8.0];
        write_npy(&path, TensorRef::from_slice(&[2, 3], &values)).unwrap();
        let tracker = MemoryTracker::new();
        let back = read_tensor(&path, &tracker.owner("inputs")).unwrap();
        assert_eq!(back.shape.as_slice(), &[2, 3]);
        assert_eq!(back.as_ref().as_slice::<f32>().unwrap(), &values);
    }

    #[test]
    fn a_npy_header_longer_than_the_file_is_refused_before_it_is_allocated() {
        // A version 3 file whose header length field says 0xfeff0074 bytes: the parser
        // allocated them before reading (the file is in tests/fuzz/regressions/npy/).
        let mut file = b"\x93NUMPY\x03\x00\x74\x00\xff\xfe".to_vec();
        file.extend_from_slice(b"{'descr': '<f4', 'fortran_order': False, 'shape': (1,), }\n");
        file.extend_from_slice(&1f32.to_le_bytes());
        let tracker = MemoryTracker::new();
        let err = read_npy(&file, &tracker.owner("inputs")).unwrap_err();
        assert!(
            err.contains("its header is 4278124660 bytes, but only 62 follow"),
            "{err}"
        );
    }

    #[test]
    fn a_npy_header_nesting_brackets_deeply_is_refused() {
        let header = format!(
            "{{'descr': '<f4', 'shape': {}1{}, }}\n",
            "(".repeat(5000),
            ")".repeat(5000)
        );
        let mut file = b"\x93NUMPY\x01\x00".to_vec();
        file.extend_from_slice(&(header.len() as u16).to_le_bytes());
        file.extend_from_slice(header.as_bytes());
        let tracker = MemoryTracker::new();
        let err = read_npy(&file, &tracker.owner("inputs")).unwrap_err();
        assert!(err.contains("nests brackets deeper than 8"), "{err}");
    }

    #[test]
    fn a_file_that_is_not_a_tensor_names_itself() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("junk.npy");
        std::fs::write(&path, b"junk").unwrap();
        let tracker = MemoryTracker::new();
        let err = read_tensor(&path, &tracker.owner("inputs")).unwrap_err();
        assert!(
            err.contains("junk.npy") && err.contains("not a .npy file"),
            "{err}"
        );
    }
}
