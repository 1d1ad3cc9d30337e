//! Decoding an inference request body (JSON, or JSON plus the binary-tensor extension) into the
//! model's input tensors, checked against what the model and its deployment declare.

use super::{bytes, datatype_name, dtype_of, json_to_bytes, InferRequest};
use crate::{
    config::ModelSpec,
    input_check::{shape_mismatch, unknown_input},
    memory::{AlignedBuffer, Owner},
    onnx::{Constant, ConstantData, Model},
    tensor::{byte_size, Shape},
};
use opal_plugin_api::DType;

/// Why a request body could not become input tensors.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The client sent something the model cannot take; the message says what.
    #[error("{0}")]
    Invalid(String),
    /// The tensors could not be copied into host memory.
    #[error("out of memory while copying the request's tensors")]
    OutOfMemory,
}

/// A decoded request: its JSON part and the model's inputs in the model's input order.
#[derive(Debug)]
pub struct DecodedRequest {
    pub request: InferRequest,
    pub inputs: Vec<Constant>,
}

/// Decodes `body` for the model `spec` serves. `header_length` is the
/// `Inference-Header-Content-Length` header, if the request has one; the input tensors are
/// accounted to `owner`.
pub fn decode_request(
    body: &[u8],
    header_length: Option<&[u8]>,
    spec: &ModelSpec,
    model: &Model,
    owner: &Owner,
) -> Result<DecodedRequest, DecodeError> {
    let invalid = |message: String| DecodeError::Invalid(message);
    let json_length = match header_length {
        None => body.len(),
        Some(value) => std::str::from_utf8(value)
            .ok()
            .and_then(|v| v.trim().parse::<usize>().ok())
            .filter(|&n| n <= body.len())
            .ok_or_else(|| {
                invalid(format!(
                    "Inference-Header-Content-Length must be a byte count within the body's {} bytes",
                    body.len()
                ))
            })?,
    };
    let request: InferRequest = serde_json::from_slice(&body[..json_length])
        .map_err(|e| invalid(format!("malformed inference request JSON: {e}")))?;
    let inputs = read_inputs(spec, model, &request, &body[json_length..], owner)?;
    Ok(DecodedRequest { request, inputs })
}

/// The request's tensors, checked against the model's inputs, in the model's input order.
fn read_inputs(
    spec: &ModelSpec,
    model: &Model,
    request: &InferRequest,
    mut binary: &[u8],
    owner: &Owner,
) -> Result<Vec<Constant>, DecodeError> {
    unknown_input(
        &spec.name,
        model,
        request.inputs.iter().map(|i| i.name.as_str()),
    )
    .map_err(DecodeError::Invalid)?;
    let mut tensors = Vec::with_capacity(model.inputs.len());
    for &id in &model.inputs {
        let value = &model.values[id];
        let input = request
            .inputs
            .iter()
            .find(|i| i.name == value.name)
            .ok_or_else(|| DecodeError::Invalid(format!("input '{}' is missing", value.name)))?;
        let bad =
            |message: String| DecodeError::Invalid(format!("input '{}': {message}", value.name));
        let dtype = dtype_of(&input.datatype)
            .ok_or_else(|| bad(format!("datatype '{}' is not supported", input.datatype)))?;
        if let Some(expected) = value.dtype.filter(|&d| d != dtype) {
            return Err(bad(format!(
                "the model takes {}, the request sends {}",
                datatype_name(expected).unwrap_or("another datatype"),
                input.datatype
            )));
        }
        let shape = input
            .shape
            .iter()
            .map(|&d| usize::try_from(d))
            .collect::<Result<Shape, _>>()
            .map_err(|_| bad(format!("shape {:?} has a negative dim", input.shape)))?;
        if let Some(declared) = shape_mismatch(spec, value, &shape) {
            return Err(bad(format!(
                "the model takes shape {declared}, the request sends {shape:?}"
            )));
        }
        if dtype == DType::STRING {
            let tensor = match input.parameters.get("binary_data_size") {
                Some(n) => {
                    let n = n
                        .as_u64()
                        .and_then(|n| usize::try_from(n).ok())
                        .filter(|&n| n <= binary.len())
                        .ok_or_else(|| {
                            bad(format!(
                                "binary_data_size must be a byte count within the {} bytes of binary data left",
                                binary.len()
                            ))
                        })?;
                    let (mine, rest) = binary.split_at(n);
                    binary = rest;
                    bytes::from_binary(&shape, mine, owner)
                }
                None => {
                    let data = input
                        .data
                        .as_ref()
                        .ok_or_else(|| bad("has neither data nor binary_data_size".into()))?;
                    bytes::from_json(&shape, data, owner)
                }
            };
            tensors.push(tensor.map_err(bad)?);
            continue;
        }
        let size =
            byte_size(dtype, &shape).ok_or_else(|| bad(format!("shape {shape:?} is too large")))?;
        let buffer = match input.parameters.get("binary_data_size") {
            Some(n) => {
                let n = n
                    .as_u64()
                    .and_then(|n| usize::try_from(n).ok())
                    .ok_or_else(|| bad("binary_data_size must be a byte count".into()))?;
                if n != size {
                    return Err(bad(format!(
                        "{n} bytes of binary data, but {} {shape:?} needs {size}",
                        input.datatype
                    )));
                }
                if binary.len() < n {
                    return Err(bad(format!(
                        "the body holds {} bytes of binary data, {n} were announced",
                        binary.len()
                    )));
                }
                let (mine, rest) = binary.split_at(n);
                binary = rest;
                AlignedBuffer::copy_of(mine, owner)
            }
            None => {
                let data = input
                    .data
                    .as_ref()
                    .ok_or_else(|| bad("has neither data nor binary_data_size".into()))?;
                let count = size / dtype.size().unwrap_or(1).max(1);
                AlignedBuffer::copy_of(&json_to_bytes(data, dtype, count).map_err(bad)?, owner)
            }
        };
        tensors.push(Constant {
            dtype,
            shape,
            data: ConstantData::Owned(buffer.ok_or(DecodeError::OutOfMemory)?),
            strings: None,
        });
    }
    Ok(tensors)
}
