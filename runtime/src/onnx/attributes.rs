//! A node's attributes as plugins see them: ONNX `AttributeProto`s lent across the ABI as
//! [`Attribute`] views, built on the stack for each call so a run allocates nothing.

use super::{constant::Constant, model::declared_type, proto::AttributeProto};
use crate::memory::Owner;
use abi_stable::std_types::{RSlice, RStr};
use opal_plugin_api::{attribute::AttrValue, Attribute};
use smallvec::SmallVec;

/// ONNX `AttributeType` numbers.
const FLOAT: i32 = 1;
const INT: i32 = 2;
const STRING: i32 = 3;
const TENSOR: i32 = 4;
const FLOATS: i32 = 6;
const INTS: i32 = 7;
const STRINGS: i32 = 8;
const TYPE_PROTO: i32 = 13;

/// A node's attributes with tensor attributes decoded once.
#[derive(Debug)]
pub struct NodeAttributes {
    protos: Vec<AttributeProto>,
    /// The decoded value of each `TENSOR` attribute, by position in `protos`.
    tensors: Vec<Option<Constant>>,
    /// Each `TYPE_PROTO` attribute as `[kind, dtype]` (a `ValueKind` and a `DType` number), by
    /// position in `protos`: how type-valued attributes reach plugins.
    types: Vec<Option<[i64; 2]>>,
}

impl NodeAttributes {
    /// Decodes tensor attributes; `owner` holds any bytes that must be copied.
    pub fn new(protos: &[AttributeProto], owner: &Owner) -> Result<Self, String> {
        let tensors = protos
            .iter()
            .map(|a| match (a.r#type, &a.t) {
                (TENSOR, Some(t)) => Constant::from_proto(t, owner)
                    .map(Some)
                    .map_err(|e| format!("attribute '{}': {e}", a.name)),
                _ => Ok(None),
            })
            .collect::<Result<_, _>>()?;
        let types = protos
            .iter()
            .map(
                |a| match (a.r#type, a.tp.as_ref().and_then(|t| t.value.as_ref())) {
                    (TYPE_PROTO, Some(declared)) => declared_type(declared)
                        .map(|(kind, dtype)| Some([i64::from(kind.0), i64::from(dtype.0)]))
                        .map_err(|e| {
                            format!(
                                "attribute '{}': a type of {e}, which opal does not run",
                                a.name
                            )
                        }),
                    _ => Ok(None),
                },
            )
            .collect::<Result<_, _>>()?;
        Ok(NodeAttributes {
            protos: protos.to_vec(),
            tensors,
            types,
        })
    }

    /// Calls `f` with the attributes as ABI views. Graph-valued attributes are not lent. The
    /// views live on the stack, so a call allocates nothing for up to 24 attributes (ONNX's
    /// largest operators, the tree ensembles, have 16 to 20) and 16 strings in string lists.
    pub fn with_abi<R>(&self, f: impl FnOnce(&[Attribute<'_>]) -> R) -> R {
        let strings: SmallVec<[RSlice<'_, u8>; 16]> = self
            .protos
            .iter()
            .filter(|a| a.r#type == STRINGS)
            .flat_map(|a| a.strings.iter().map(|s| RSlice::from_slice(&s[..])))
            .collect();
        let mut next_string = 0;
        let mut attributes: SmallVec<[Attribute<'_>; 24]> = SmallVec::new();
        for ((proto, tensor), ty) in self.protos.iter().zip(&self.tensors).zip(&self.types) {
            let value = match proto.r#type {
                FLOAT => AttrValue::Float(proto.f),
                INT => AttrValue::Int(proto.i),
                STRING => AttrValue::String(RSlice::from_slice(&proto.s)),
                FLOATS => AttrValue::Floats(RSlice::from_slice(&proto.floats)),
                INTS => AttrValue::Ints(RSlice::from_slice(&proto.ints)),
                STRINGS => {
                    let end = next_string + proto.strings.len();
                    let slice = RSlice::from_slice(&strings[next_string..end]);
                    next_string = end;
                    AttrValue::Strings(slice)
                }
                TENSOR => match tensor {
                    Some(t) => AttrValue::Tensor(t.as_ref().to_abi()),
                    None => continue,
                },
                TYPE_PROTO => match ty {
                    Some(ty) => AttrValue::Ints(RSlice::from_slice(ty)),
                    None => continue,
                },
                _ => continue,
            };
            attributes.push(Attribute {
                name: RStr::from_str(&proto.name),
                value,
            });
        }
        f(&attributes)
    }

    /// The raw protos, for subgraphs and messages.
    pub fn protos(&self) -> &[AttributeProto] {
        &self.protos
    }
}
