//! The KServe v2 inference protocol as Triton speaks it over HTTP: request and response bodies,
//! datatype names, JSON tensor data, and the binary-tensor extension (a JSON header of
//! `Inference-Header-Content-Length` bytes followed by raw tensor bytes), and BYTES tensors
//! (strings; `bytes`).

pub mod bytes;
mod request;

pub use request::{decode_request, DecodeError, DecodedRequest};

use opal_plugin_api::DType;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The header that says how long the JSON part of a binary request or response is.
pub const HEADER_LENGTH: &str = "inference-header-content-length";

/// The protocol's name for a dtype.
pub fn datatype_name(dtype: DType) -> Option<&'static str> {
    Some(match dtype {
        DType::BOOL => "BOOL",
        DType::U8 => "UINT8",
        DType::U16 => "UINT16",
        DType::U32 => "UINT32",
        DType::U64 => "UINT64",
        DType::I8 => "INT8",
        DType::I16 => "INT16",
        DType::I32 => "INT32",
        DType::I64 => "INT64",
        DType::F16 => "FP16",
        DType::F32 => "FP32",
        DType::F64 => "FP64",
        DType::BF16 => "BF16",
        DType::STRING => "BYTES",
        _ => return None,
    })
}

/// The dtype a protocol datatype name stands for.
pub fn dtype_of(name: &str) -> Option<DType> {
    (0..=16)
        .map(DType)
        .find(|&d| datatype_name(d) == Some(name))
}

/// An inference request's JSON part.
#[derive(Debug, Deserialize)]
pub struct InferRequest {
    #[serde(default)]
    pub id: Option<String>,
    pub inputs: Vec<RequestInput>,
    #[serde(default)]
    pub outputs: Option<Vec<RequestedOutput>>,
    #[serde(default)]
    pub parameters: Map<String, Value>,
}

/// One input tensor of a request.
#[derive(Debug, Deserialize)]
pub struct RequestInput {
    pub name: String,
    pub shape: Vec<i64>,
    pub datatype: String,
    #[serde(default)]
    pub parameters: Map<String, Value>,
    /// Row-major elements, flat or nested; absent when the bytes come in the binary part.
    #[serde(default)]
    pub data: Option<Value>,
}

/// An output the client asks for.
#[derive(Debug, Deserialize)]
pub struct RequestedOutput {
    pub name: String,
    #[serde(default)]
    pub parameters: Map<String, Value>,
}

/// One output tensor of a response.
#[derive(Debug, Serialize)]
pub struct ResponseOutput {
    pub name: String,
    pub datatype: &'static str,
    pub shape: Vec<usize>,
    #[serde(skip_serializing_if = "Map::is_empty")]
    pub parameters: Map<String, Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<Vec<Value>>,
}

/// An inference response's JSON part.
#[derive(Debug, Serialize)]
pub struct InferResponse {
    pub model_name: String,
    pub model_version: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub outputs: Vec<ResponseOutput>,
}

/// Whether a parameter map sets `key` to true.
pub fn flag(parameters: &Map<String, Value>, key: &str) -> bool {
    parameters
        .get(key)
        .and_then(Value::as_bool)
        .unwrap_or(false)
}

/// Little-endian bytes of JSON `data` (flat or nested) for `count` elements of `dtype`.
pub fn json_to_bytes(data: &Value, dtype: DType, count: usize) -> Result<Vec<u8>, String> {
    // Sized by the data, not by `count`: the shape is the client's word, and may be huge.
    let mut flat = Vec::new();
    flatten(data, &mut flat);
    if flat.len() != count {
        return Err(format!(
            "has {} elements of data, its shape needs {count}",
            flat.len()
        ));
    }
    let size = dtype.size().unwrap_or(1);
    let mut out = Vec::with_capacity(flat.len() * size);
    for (i, v) in flat.iter().enumerate() {
        let bad = || {
            format!(
                "element {i} ({v}) is not a valid {}",
                datatype_name(dtype).unwrap_or("value")
            )
        };
        match dtype {
            DType::BOOL => out.push(u8::from(v.as_bool().ok_or_else(bad)?)),
            DType::F32 => out.extend((v.as_f64().ok_or_else(bad)? as f32).to_le_bytes()),
            DType::F64 => out.extend(v.as_f64().ok_or_else(bad)?.to_le_bytes()),
            DType::I8 | DType::I16 | DType::I32 | DType::I64 => {
                let x = v.as_i64().ok_or_else(bad)?;
                out.extend(&x.to_le_bytes()[..size]);
            }
            DType::U8 | DType::U16 | DType::U32 | DType::U64 => {
                let x = v.as_u64().ok_or_else(bad)?;
                out.extend(&x.to_le_bytes()[..size]);
            }
            other => {
                return Err(format!(
                    "datatype {other} cannot be sent as JSON; use binary data"
                ))
            }
        }
    }
    Ok(out)
}

fn flatten<'a>(value: &'a Value, out: &mut Vec<&'a Value>) {
    match value {
        Value::Array(items) => items.iter().for_each(|v| flatten(v, out)),
        other => out.push(other),
    }
}

/// JSON values of little-endian `bytes` of `dtype` (of a BYTES tensor, its binary layout).
pub fn bytes_to_json(bytes: &[u8], dtype: DType) -> Result<Vec<Value>, String> {
    fn each<const N: usize>(bytes: &[u8], f: impl Fn([u8; N]) -> Value) -> Vec<Value> {
        bytes
            .chunks_exact(N)
            .map(|c| f(c.try_into().expect("chunks are N bytes")))
            .collect()
    }
    Ok(match dtype {
        DType::STRING => bytes::to_json(bytes)?,
        DType::BOOL => bytes.iter().map(|&b| Value::Bool(b != 0)).collect(),
        DType::F32 => each::<4>(bytes, |b| Value::from(f64::from(f32::from_le_bytes(b)))),
        DType::F64 => each::<8>(bytes, |b| Value::from(f64::from_le_bytes(b))),
        DType::I8 => bytes.iter().map(|&b| Value::from(b as i8)).collect(),
        DType::I16 => each::<2>(bytes, |b| Value::from(i16::from_le_bytes(b))),
        DType::I32 => each::<4>(bytes, |b| Value::from(i32::from_le_bytes(b))),
        DType::I64 => each::<8>(bytes, |b| Value::from(i64::from_le_bytes(b))),
        DType::U8 => bytes.iter().map(|&b| Value::from(b)).collect(),
        DType::U16 => each::<2>(bytes, |b| Value::from(u16::from_le_bytes(b))),
        DType::U32 => each::<4>(bytes, |b| Value::from(u32::from_le_bytes(b))),
        DType::U64 => each::<8>(bytes, |b| Value::from(u64::from_le_bytes(b))),
        other => {
            return Err(format!(
                "datatype {other} cannot be sent as JSON; ask for binary data"
            ))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datatypes_round_trip() {
        for dtype in [DType::F32, DType::I64, DType::BOOL, DType::U8, DType::F16] {
            assert_eq!(dtype_of(datatype_name(dtype).unwrap()), Some(dtype));
        }
        assert_eq!(dtype_of("BYTES"), Some(DType::STRING));
        assert_eq!(dtype_of("STRING"), None);
    }

    #[test]
    fn nested_json_data_flattens_row_major() {
        let data: Value = serde_json::from_str("[[1, 2], [3, 4]]").unwrap();
        let bytes = json_to_bytes(&data, DType::I32, 4).unwrap();
        assert_eq!(
            bytes_to_json(&bytes, DType::I32).unwrap(),
            vec![
                Value::from(1),
                Value::from(2),
                Value::from(3),
                Value::from(4)
            ]
        );
        let err = json_to_bytes(&data, DType::I32, 6).unwrap_err();
        assert!(
            err.contains("4 elements") && err.contains("needs 6"),
            "{err}"
        );
    }

    #[test]
    fn a_huge_shape_with_little_data_is_refused_without_allocating_for_the_shape() {
        // A UINT8 input of shape [1000000000000] with one element of JSON data: room for 10^12
        // elements was reserved before they were counted, and the allocation failure aborted
        // the process. The whole request is tests/fuzz/regressions/kserve_request/.
        let data: Value = serde_json::from_str("[1]").unwrap();
        let err = json_to_bytes(&data, DType::U8, 1_000_000_000_000).unwrap_err();
        assert!(
            err.contains("has 1 elements of data, its shape needs 1000000000000"),
            "{err}"
        );
    }
}
