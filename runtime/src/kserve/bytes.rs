//! BYTES tensors, the protocol's strings: in the binary extension each element is a 4-byte
//! little-endian length followed by its bytes; in JSON, `data` is a flat (or nested) array of
//! strings. opal's string tensors hold UTF-8, so bytes that are not UTF-8 are refused.

use crate::{
    memory::Owner,
    onnx::Constant,
    tensor::{element_count, Tensor, TensorRef},
};
use serde_json::Value;

/// The elements of a BYTES tensor in the binary extension's layout.
pub fn encode(tensor: TensorRef<'_>) -> Result<Vec<u8>, String> {
    let texts = tensor.strings()?;
    let mut out = Vec::with_capacity(texts.iter().map(|t| 4 + t.len()).sum());
    for text in texts {
        let len = u32::try_from(text.len())
            .map_err(|_| format!("a string of {} bytes is too long to send", text.len()))?;
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(text.as_bytes());
    }
    Ok(out)
}

/// The elements of `bytes`, in the binary extension's layout.
fn split(mut bytes: &[u8]) -> Result<Vec<&[u8]>, String> {
    let mut elements = Vec::new();
    while !bytes.is_empty() {
        let Some((len, rest)) = bytes.split_first_chunk::<4>() else {
            return Err(format!(
                "element {} has {} bytes of its 4-byte length",
                elements.len(),
                bytes.len()
            ));
        };
        let len = u32::from_le_bytes(*len) as usize;
        if rest.len() < len {
            return Err(format!(
                "element {} says it has {len} bytes, {} are left",
                elements.len(),
                rest.len()
            ));
        }
        let (element, rest) = rest.split_at(len);
        elements.push(element);
        bytes = rest;
    }
    Ok(elements)
}

/// The JSON strings of `bytes`, in the binary extension's layout.
pub fn to_json(bytes: &[u8]) -> Result<Vec<Value>, String> {
    split(bytes)?
        .into_iter()
        .map(|e| {
            std::str::from_utf8(e)
                .map(|s| Value::String(s.to_owned()))
                .map_err(|_| "an output string is not UTF-8".to_owned())
        })
        .collect()
}

/// A string tensor of `shape` from its elements, each checked to be UTF-8.
fn tensor_of(shape: &[usize], elements: &[&[u8]], owner: &Owner) -> Result<Constant, String> {
    let count = element_count(shape).ok_or_else(|| format!("shape {shape:?} is too large"))?;
    if elements.len() != count {
        return Err(format!(
            "has {} strings, its shape {shape:?} needs {count}",
            elements.len()
        ));
    }
    if let Some(i) = elements
        .iter()
        .position(|e| std::str::from_utf8(e).is_err())
    {
        return Err(format!(
            "element {i} is not UTF-8 text; opal's string tensors hold UTF-8"
        ));
    }
    Tensor::from_strings(shape, elements.iter().copied(), owner)
        .map(Constant::from)
        .ok_or_else(|| "out of memory copying its strings".to_owned())
}

/// A BYTES input sent in the binary extension.
pub fn from_binary(shape: &[usize], bytes: &[u8], owner: &Owner) -> Result<Constant, String> {
    tensor_of(shape, &split(bytes)?, owner)
}

/// A BYTES input sent as JSON `data`: an array of strings, flat or nested.
pub fn from_json(shape: &[usize], data: &Value, owner: &Owner) -> Result<Constant, String> {
    fn flatten<'a>(value: &'a Value, out: &mut Vec<&'a [u8]>) -> Result<(), String> {
        match value {
            Value::Array(items) => items.iter().try_for_each(|v| flatten(v, out)),
            Value::String(s) => {
                out.push(s.as_bytes());
                Ok(())
            }
            other => Err(format!("element {} ({other}) is not a string", out.len())),
        }
    }
    let mut elements = Vec::new();
    flatten(data, &mut elements)?;
    tensor_of(shape, &elements, owner)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::MemoryTracker;

    #[test]
    fn strings_round_trip_through_the_binary_layout_and_json() {
        let tracker = MemoryTracker::new();
        let owner = tracker.owner("test");
        let tensor = from_binary(&[2], b"\x02\0\0\0hi\0\0\0\0", &owner).unwrap();
        assert_eq!(tensor.as_ref().strings().unwrap(), ["hi", ""]);
        let bytes = encode(tensor.as_ref()).unwrap();
        assert_eq!(bytes, b"\x02\0\0\0hi\0\0\0\0");
        assert_eq!(
            to_json(&bytes).unwrap(),
            [Value::from("hi"), Value::from("")]
        );
        let data: Value = serde_json::from_str(r#"[["a", "b"], ["c", "d"]]"#).unwrap();
        let tensor = from_json(&[2, 2], &data, &owner).unwrap();
        assert_eq!(tensor.as_ref().strings().unwrap(), ["a", "b", "c", "d"]);
    }

    #[test]
    fn bad_bytes_are_refused_saying_what_is_wrong() {
        let tracker = MemoryTracker::new();
        let owner = tracker.owner("test");
        let error = |r: Result<Constant, String>| r.expect_err("an error");
        assert_eq!(
            error(from_binary(&[1], b"\x02\0\0\0\xff\xfe", &owner)),
            "element 0 is not UTF-8 text; opal's string tensors hold UTF-8"
        );
        assert_eq!(
            error(from_binary(&[1], b"\x09\0\0\0abc", &owner)),
            "element 0 says it has 9 bytes, 3 are left"
        );
        assert_eq!(
            error(from_binary(&[2], b"\x01\0\0\0a", &owner)),
            "has 1 strings, its shape [2] needs 2"
        );
        let data: Value = serde_json::from_str("[1]").unwrap();
        assert_eq!(
            error(from_json(&[1], &data, &owner)),
            "element 0 (1) is not a string"
        );
    }
}
