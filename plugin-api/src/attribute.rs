//! Node attributes as they cross the ABI, and a typed accessor for kernels.

use crate::{kernel::KernelError, tensor::TensorView};
use abi_stable::{
    std_types::{RSlice, RStr},
    StableAbi,
};

/// One attribute of a node, as ONNX's `AttributeProto`.
#[repr(C)]
#[derive(StableAbi, Clone, Copy)]
pub struct Attribute<'a> {
    pub name: RStr<'a>,
    pub value: AttrValue<'a>,
}

/// The value of an attribute. Strings are bytes, as in ONNX.
#[repr(C, u8)]
#[derive(StableAbi, Clone, Copy)]
pub enum AttrValue<'a> {
    Int(i64),
    Float(f32),
    String(RSlice<'a, u8>),
    Ints(RSlice<'a, i64>),
    Floats(RSlice<'a, f32>),
    Strings(RSlice<'a, RSlice<'a, u8>>),
    Tensor(TensorView<'a>),
}

/// Typed, by-name access to a node's attributes for kernels and inference functions.
#[derive(Clone, Copy)]
pub struct Attributes<'a> {
    items: &'a [Attribute<'a>],
}

impl<'a> Attributes<'a> {
    pub fn new(items: &'a [Attribute<'a>]) -> Self {
        Attributes { items }
    }

    /// The raw value of attribute `name`, if the node has it.
    pub fn get(&self, name: &str) -> Option<AttrValue<'a>> {
        self.items
            .iter()
            .find(|a| a.name.as_str() == name)
            .map(|a| a.value)
    }

    /// All attributes, in node order.
    pub fn iter(&self) -> impl Iterator<Item = (&'a str, AttrValue<'a>)> + 'a {
        self.items.iter().map(|a| (a.name.as_str(), a.value))
    }

    /// Integer attribute `name`, or `default` when absent.
    pub fn int(&self, name: &str, default: i64) -> Result<i64, KernelError> {
        match self.get(name) {
            None => Ok(default),
            Some(AttrValue::Int(v)) => Ok(v),
            Some(_) => Err(wrong_kind(name, "an int")),
        }
    }

    /// Float attribute `name`, or `default` when absent.
    pub fn float(&self, name: &str, default: f32) -> Result<f32, KernelError> {
        match self.get(name) {
            None => Ok(default),
            Some(AttrValue::Float(v)) => Ok(v),
            Some(_) => Err(wrong_kind(name, "a float")),
        }
    }

    /// String attribute `name` (UTF-8), or `default` when absent.
    pub fn string(&self, name: &str, default: &'a str) -> Result<&'a str, KernelError> {
        match self.get(name) {
            None => Ok(default),
            Some(AttrValue::String(v)) => std::str::from_utf8(v.as_slice())
                .map_err(|_| KernelError::new(format!("attribute '{name}' is not UTF-8"))),
            Some(_) => Err(wrong_kind(name, "a string")),
        }
    }

    /// Integer-list attribute `name`, or `None` when absent.
    pub fn ints(&self, name: &str) -> Result<Option<&'a [i64]>, KernelError> {
        match self.get(name) {
            None => Ok(None),
            Some(AttrValue::Ints(v)) => Ok(Some(v.as_slice())),
            Some(_) => Err(wrong_kind(name, "a list of ints")),
        }
    }

    /// Float-list attribute `name`, or `None` when absent.
    pub fn floats(&self, name: &str) -> Result<Option<&'a [f32]>, KernelError> {
        match self.get(name) {
            None => Ok(None),
            Some(AttrValue::Floats(v)) => Ok(Some(v.as_slice())),
            Some(_) => Err(wrong_kind(name, "a list of floats")),
        }
    }

    /// Tensor attribute `name`, or `None` when absent.
    pub fn tensor(&self, name: &str) -> Result<Option<TensorView<'a>>, KernelError> {
        match self.get(name) {
            None => Ok(None),
            Some(AttrValue::Tensor(v)) => Ok(Some(v)),
            Some(_) => Err(wrong_kind(name, "a tensor")),
        }
    }
}

fn wrong_kind(name: &str, expected: &str) -> KernelError {
    KernelError::new(format!("attribute '{name}' must be {expected}"))
}
