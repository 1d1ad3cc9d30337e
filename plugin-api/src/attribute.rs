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

    /// String-list attribute `name`, or `None` when absent.
    pub fn strings(&self, name: &str) -> Result<Option<StringList<'a>>, KernelError> {
        match self.get(name) {
            None => Ok(None),
            Some(AttrValue::Strings(v)) => Ok(Some(StringList {
                name: self
                    .items
                    .iter()
                    .find(|a| a.name.as_str() == name)
                    .map_or("", |a| a.name.as_str()),
                items: v.as_slice(),
            })),
            Some(_) => Err(wrong_kind(name, "a list of strings")),
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

/// A string-list attribute's values, each read as UTF-8.
#[derive(Clone, Copy)]
pub struct StringList<'a> {
    name: &'a str,
    items: &'a [RSlice<'a, u8>],
}

impl<'a> StringList<'a> {
    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Value `index`; an error if it is past the end or not UTF-8.
    pub fn get(&self, index: usize) -> Result<&'a str, KernelError> {
        let bytes = self.items.get(index).ok_or_else(|| {
            KernelError::new(format!("attribute '{}' has no value {index}", self.name))
        })?;
        std::str::from_utf8(bytes.as_slice()).map_err(|_| {
            KernelError::new(format!(
                "value {index} of attribute '{}' is not UTF-8",
                self.name
            ))
        })
    }

    /// The values in order.
    pub fn iter(self) -> impl Iterator<Item = Result<&'a str, KernelError>> + 'a {
        (0..self.items.len()).map(move |i| self.get(i))
    }
}

fn wrong_kind(name: &str, expected: &str) -> KernelError {
    KernelError::new(format!("attribute '{name}' must be {expected}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        testing::{float_attr, floats_attr, int_attr, ints_attr, string_attr, OwnedTensor},
        TensorRef,
    };

    #[test]
    fn typed_accessors_read_every_kind_of_value_through_the_abi_slices() {
        let pads = [1i64, 0, -2];
        let scales = [0.5f32, 2.0];
        let value = OwnedTensor::f32(&[2], &[1.5, -1.5]);
        let names = [RSlice::from_slice(b"a"), RSlice::from_slice(b"bc")];
        let items = [
            int_attr("axis", -1),
            float_attr("alpha", 0.25),
            string_attr("mode", "edge"),
            ints_attr("pads", &pads),
            floats_attr("scales", &scales),
            Attribute {
                name: RStr::from_str("value"),
                value: AttrValue::Tensor(value.view()),
            },
            Attribute {
                name: RStr::from_str("names"),
                value: AttrValue::Strings(RSlice::from_slice(&names)),
            },
            Attribute {
                name: RStr::from_str("latin1"),
                value: AttrValue::String(RSlice::from_slice(&[b'z', 0xFC, b'r'])),
            },
        ];
        let attributes = Attributes::new(&items);

        assert_eq!(attributes.int("axis", 0), Ok(-1));
        assert_eq!(attributes.float("alpha", 1.0), Ok(0.25));
        assert_eq!(attributes.string("mode", "constant"), Ok("edge"));
        assert_eq!(attributes.ints("pads"), Ok(Some(&pads[..])));
        assert_eq!(attributes.floats("scales"), Ok(Some(&scales[..])));
        let tensor = attributes.tensor("value").unwrap().expect("a tensor");
        assert_eq!(TensorRef::new(tensor).f32(), Ok(&[1.5, -1.5][..]));
        let Some(AttrValue::Strings(strings)) = attributes.get("names") else {
            panic!("names is a list of strings");
        };
        let strings: Vec<&[u8]> = strings.iter().map(|s| s.as_slice()).collect();
        assert_eq!(strings, [&b"a"[..], &b"bc"[..]]);
        let list = attributes.strings("names").unwrap().expect("a list");
        assert_eq!(
            list.iter().collect::<Result<Vec<_>, _>>(),
            Ok(vec!["a", "bc"])
        );
        assert_eq!(
            list.get(2).map_err(|e| e.message().to_owned()),
            Err("attribute 'names' has no value 2".to_owned())
        );
        assert!(attributes.strings("absent").unwrap().is_none());
        assert!(attributes.strings("axis").is_err());

        let order: Vec<&str> = attributes.iter().map(|(name, _)| name).collect();
        assert_eq!(
            order,
            ["axis", "alpha", "mode", "pads", "scales", "value", "names", "latin1"]
        );

        assert_eq!(attributes.int("absent", 7), Ok(7));
        assert_eq!(attributes.float("absent", 1.0), Ok(1.0));
        assert_eq!(attributes.string("absent", "x"), Ok("x"));
        assert_eq!(attributes.ints("absent"), Ok(None));
        assert_eq!(attributes.floats("absent"), Ok(None));
        assert!(attributes.tensor("absent").unwrap().is_none());

        let message = |error: KernelError| error.message().to_owned();
        assert_eq!(
            attributes.int("alpha", 0).map_err(message),
            Err("attribute 'alpha' must be an int".to_owned())
        );
        assert_eq!(
            attributes.ints("axis").map_err(message),
            Err("attribute 'axis' must be a list of ints".to_owned())
        );
        assert!(attributes.tensor("names").is_err());
        assert_eq!(
            attributes.string("latin1", "").map_err(message),
            Err("attribute 'latin1' is not UTF-8".to_owned())
        );
    }
}
