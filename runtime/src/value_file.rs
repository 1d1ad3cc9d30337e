//! Files of values beyond tensors: ONNX `SequenceProto` and `OptionalProto` `.pb` files (as the
//! ONNX test data holds them) read as [`Value`]s, and sequence outputs written as a folder of
//! tensor files, one per element (`name/0.npy`, `name/1.npy`, …).

use crate::{
    memory::Owner,
    onnx::{
        proto::{
            OptionalProto, SequenceProto, TensorProto, ELEM_OPTIONAL, ELEM_SEQUENCE, ELEM_TENSOR,
            ELEM_UNDEFINED,
        },
        Constant,
    },
    tensor::Tensor,
    tensor_file::{read_tensor, write_tensor},
    value::{Value, ValueView},
};
use opal_plugin_api::ValueKind;
use prost::Message;
use std::path::{Path, PathBuf};

/// Reads the value of declared kind `kind` from `path`: a tensor file for a tensor, a
/// `SequenceProto` for a sequence, an `OptionalProto` (or the value it holds) for an optional.
/// Errors name the file.
pub fn read_value(path: &Path, kind: ValueKind, owner: &Owner) -> Result<Value, String> {
    if kind == ValueKind::TENSOR {
        let constant = read_tensor(path, owner)?;
        return to_tensor(&constant, owner)
            .map(Value::Tensor)
            .map_err(|e| format!("tensor file {}: {e}", path.display()));
    }
    let bytes = std::fs::read(path)
        .map_err(|e| format!("cannot read value file {}: {e}", path.display()))?;
    let fail = |reason: String| format!("value file {}: {reason}", path.display());
    if kind.is_optional() {
        return read_optional(&bytes, kind, owner).map_err(fail);
    }
    let proto = SequenceProto::decode(bytes.as_slice())
        .map_err(|e| fail(format!("not an ONNX SequenceProto ({e})")))?;
    sequence_value(&proto, owner).map_err(fail)
}

/// An optional from an `OptionalProto`, or from the value itself (a `TensorProto` or a
/// `SequenceProto`), as the ONNX test data writes optionals that hold one.
fn read_optional(bytes: &[u8], kind: ValueKind, owner: &Owner) -> Result<Value, String> {
    if let Ok(proto) = OptionalProto::decode(bytes) {
        match proto.elem_type {
            ELEM_UNDEFINED => return Ok(Value::None),
            ELEM_TENSOR if kind == ValueKind::OPTIONAL_TENSOR => {
                if let Some(tensor) = &proto.tensor_value {
                    return tensor_value(tensor, owner).map(Value::Tensor);
                }
            }
            ELEM_SEQUENCE if kind == ValueKind::OPTIONAL_SEQUENCE => {
                if let Some(sequence) = &proto.sequence_value {
                    return sequence_value(sequence, owner);
                }
            }
            ELEM_OPTIONAL => {
                return Err("an optional of an optional; opal does not run those".into())
            }
            _ => {}
        }
    }
    if kind == ValueKind::OPTIONAL_TENSOR {
        let proto = TensorProto::decode(bytes)
            .map_err(|e| format!("neither an ONNX OptionalProto nor a TensorProto ({e})"))?;
        return tensor_value(&proto, owner).map(Value::Tensor);
    }
    let proto = SequenceProto::decode(bytes)
        .map_err(|e| format!("neither an ONNX OptionalProto nor a SequenceProto ({e})"))?;
    sequence_value(&proto, owner)
}

fn sequence_value(proto: &SequenceProto, owner: &Owner) -> Result<Value, String> {
    match proto.elem_type {
        ELEM_TENSOR | ELEM_UNDEFINED => {}
        ELEM_SEQUENCE | ELEM_OPTIONAL => {
            return Err(
                "a sequence of sequences or optionals; opal runs sequences of tensors".into(),
            )
        }
        other => return Err(format!("a sequence of element type {other}")),
    }
    proto
        .tensor_values
        .iter()
        .enumerate()
        .map(|(i, t)| tensor_value(t, owner).map_err(|e| format!("element {i}: {e}")))
        .collect::<Result<_, _>>()
        .map(Value::Sequence)
}

fn tensor_value(proto: &TensorProto, owner: &Owner) -> Result<Tensor, String> {
    let constant = Constant::from_proto(proto, owner)?;
    to_tensor(&constant, owner)
}

/// A tensor holding a copy of `constant`'s bytes, accounted to `owner`.
fn to_tensor(constant: &Constant, owner: &Owner) -> Result<Tensor, String> {
    Tensor::copy_of(constant.as_ref(), owner)
        .ok_or_else(|| format!("out of memory reading {} bytes", constant.bytes().len()))
}

/// Writes `value` in `dir` under `stem`: a tensor as [`write_tensor`] does; a sequence as the
/// folder `dir/stem` with one tensor file per element (`0.npy`, `1.npy`, …; empty for an empty
/// sequence); none as nothing. Returns the path written, if any.
pub fn write_value(
    dir: &Path,
    stem: &str,
    value: ValueView<'_>,
) -> Result<Option<PathBuf>, String> {
    match value {
        ValueView::Tensor(t) => write_tensor(dir, stem, t).map(Some),
        ValueView::Sequence(elements) => {
            let folder = dir.join(stem);
            if folder.exists() {
                std::fs::remove_dir_all(&folder)
                    .map_err(|e| format!("cannot replace {}: {e}", folder.display()))?;
            }
            std::fs::create_dir_all(&folder)
                .map_err(|e| format!("cannot create {}: {e}", folder.display()))?;
            for (i, element) in elements.iter().enumerate() {
                write_tensor(&folder, &i.to_string(), element.as_ref())?;
            }
            Ok(Some(folder))
        }
        ValueView::None => Ok(None),
    }
}
