//! Tensor files: reading inputs from ONNX `TensorProto` `.pb` files or NumPy `.npy` files, and
//! writing outputs as `.npy`.

use crate::{
    memory::{AlignedBuffer, Owner},
    onnx::{proto::TensorProto, Constant, ConstantData},
    tensor::{byte_size, Shape, TensorRef},
};
use opal_plugin_api::{DType, Element};
use prost::Message;
use std::{io::Cursor, path::Path};

/// Reads a tensor from `path`: `.npy` by its extension, otherwise a `TensorProto`. Errors name
/// the file.
pub fn read_tensor(path: &Path, owner: &Owner) -> Result<Constant, String> {
    let bytes = std::fs::read(path)
        .map_err(|e| format!("cannot read tensor file {}: {e}", path.display()))?;
    let fail = |reason: String| format!("tensor file {}: {reason}", path.display());
    if path.extension().is_some_and(|e| e == "npy") {
        read_npy(&bytes, owner).map_err(fail)
    } else {
        let proto = TensorProto::decode(&bytes[..])
            .map_err(|e| fail(format!("not an ONNX TensorProto ({e})")))?;
        Constant::from_proto(&proto, owner).map_err(fail)
    }
}

fn read_npy(bytes: &[u8], owner: &Owner) -> Result<Constant, String> {
    let mut cursor = Cursor::new(bytes);
    let header =
        npyz::NpyHeader::from_reader(&mut cursor).map_err(|e| format!("not a .npy file ({e})"))?;
    if header.order() != npyz::Order::C {
        return Err("Fortran-ordered arrays are not supported; save it in C order".into());
    }
    let descr = header.dtype().descr();
    let dtype = match descr.trim_matches('\'').trim_start_matches(['<', '|', '=']) {
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
                "dtype '{descr}' is not supported (little-endian numbers and bools only)"
            ))
        }
    };
    let shape = header
        .shape()
        .iter()
        .map(|&d| usize::try_from(d).map_err(|_| format!("dim {d} is too large")))
        .collect::<Result<Shape, _>>()?;
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
    })
}

/// Writes `tensor` to `path` as `.npy`.
pub fn write_npy(path: &Path, tensor: TensorRef<'_>) -> Result<(), String> {
    fn typed<T: Element + npyz::AutoSerialize>(
        path: &Path,
        tensor: TensorRef<'_>,
    ) -> std::io::Result<()> {
        let values = tensor.as_slice::<T>().unwrap_or_default();
        let shape: Vec<u64> = tensor.shape.iter().map(|&d| d as u64).collect();
        let file = std::io::BufWriter::new(std::fs::File::create(path)?);
        use npyz::WriterBuilder as _;
        let mut writer = npyz::WriteOptions::new()
            .default_dtype()
            .shape(&shape)
            .writer(file)
            .begin_nd()?;
        writer.extend(values.iter().copied())?;
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
        other => return Err(format!("cannot write {other} tensors as .npy")),
    };
    result.map_err(|e| format!("cannot write {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::MemoryTracker;

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
