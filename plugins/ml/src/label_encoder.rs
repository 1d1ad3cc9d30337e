//! `ai.onnx.ml` `LabelEncoder` (opsets 2 and 4): each element looked up among the keys and
//! replaced by the value at the same position, or by the default. Keys and values are lists
//! (`keys_floats`, `keys_int64s`, `keys_strings`, and the same for values) or, since opset 4,
//! tensors of any number type or strings (`keys_tensor`, `values_tensor`, `default_tensor`).
//!
//! Keys are sorted once into the node's prepared data (an index per key), so a lookup is a
//! binary search; without prepared data (while folding constants) the keys are scanned.

use crate::{attributes::missing, ML_DOMAIN};
use opal_kernel_support::{check::error, int_values::integer_at};
use opal_plugin_api::{prelude::*, StringList};
use std::cmp::Ordering;

const OP: &str = "LabelEncoder";

/// Strings from a list attribute or a string tensor attribute.
#[derive(Clone, Copy)]
enum Texts<'a> {
    List(StringList<'a>),
    Tensor(Strings<'a>),
}

impl<'a> Texts<'a> {
    fn len(&self) -> usize {
        match self {
            Texts::List(l) => l.len(),
            Texts::Tensor(t) => t.len(),
        }
    }

    fn get(&self, index: usize) -> KernelResult<&'a str> {
        match self {
            Texts::List(l) => l.get(index),
            Texts::Tensor(t) => t.get(index),
        }
    }
}

/// The keys or the values of the node.
#[derive(Clone, Copy)]
enum Entries<'a> {
    Floats(&'a [f32]),
    Ints(&'a [i64]),
    Texts(Texts<'a>),
    /// A tensor of a number type.
    Numbers(TensorRef<'a>),
}

impl<'a> Entries<'a> {
    /// The node's `keys_*` or `values_*` attribute: `names` are its list-of-floats, ints and
    /// strings and its tensor attribute names.
    fn read(attributes: &Attributes<'a>, names: [&str; 4]) -> KernelResult<Self> {
        let [floats, ints, strings, tensor] = names;
        let mut found = None;
        let mut given = 0;
        let mut take = |entries: Entries<'a>| {
            given += 1;
            found = Some(entries);
        };
        if let Some(v) = attributes.floats(floats)? {
            take(Entries::Floats(v));
        }
        if let Some(v) = attributes.ints(ints)? {
            take(Entries::Ints(v));
        }
        if let Some(v) = attributes.strings(strings)? {
            take(Entries::Texts(Texts::List(v)));
        }
        if let Some(v) = attributes.tensor(tensor)? {
            let v = TensorRef::new(v);
            take(match v.dtype() {
                DType::STRING => Entries::Texts(Texts::Tensor(v.strings()?)),
                dtype => {
                    check_number(tensor, dtype)?;
                    Entries::Numbers(v)
                }
            });
        }
        match (found, given) {
            (Some(entries), 1) => Ok(entries),
            (None, _) => Err(missing(OP, &names.join(", "))),
            _ => Err(error(
                OP,
                format_args!(
                    "only one of the attributes {} may be given",
                    names.join(", ")
                ),
            )),
        }
    }

    fn dtype(&self) -> DType {
        match self {
            Entries::Floats(_) => DType::F32,
            Entries::Ints(_) => DType::I64,
            Entries::Texts(_) => DType::STRING,
            Entries::Numbers(t) => t.dtype(),
        }
    }

    fn len(&self) -> usize {
        match self {
            Entries::Floats(v) => v.len(),
            Entries::Ints(v) => v.len(),
            Entries::Texts(t) => t.len(),
            Entries::Numbers(t) => t.len(),
        }
    }

    fn key(&self, index: usize) -> KernelResult<Key<'a>> {
        match self {
            Entries::Floats(v) => Ok(Key::float(f64::from(v[index]))),
            Entries::Ints(v) => Ok(Key::Int(i128::from(v[index]))),
            Entries::Texts(t) => Ok(Key::Text(t.get(index)?)),
            Entries::Numbers(t) => key_of(*t, index),
        }
    }
}

fn check_number(name: &str, dtype: DType) -> KernelResult<()> {
    match dtype {
        DType::F32 | DType::F64 | DType::I8 | DType::I16 | DType::I32 | DType::I64 => Ok(()),
        DType::U8 | DType::U16 | DType::U32 | DType::U64 => Ok(()),
        other => Err(error(
            OP,
            format_args!("attribute '{name}' has dtype {other}, which it does not take"),
        )),
    }
}

/// A key, or an element looked up among them.
#[derive(Clone, Copy, PartialEq)]
enum Key<'a> {
    Int(i128),
    /// Never NaN, and 0 for -0 (as Python's `dict` sees them).
    Float(f64),
    Text(&'a str),
    /// A NaN, which matches no key.
    Nan,
}

impl Key<'_> {
    fn float(v: f64) -> Self {
        if v.is_nan() {
            Key::Nan
        } else {
            Key::Float(v + 0.0)
        }
    }

    fn cmp(&self, other: &Self) -> Ordering {
        match (self, other) {
            (Key::Int(a), Key::Int(b)) => a.cmp(b),
            (Key::Float(a), Key::Float(b)) => a.total_cmp(b),
            (Key::Text(a), Key::Text(b)) => a.cmp(b),
            (a, b) => rank(a).cmp(&rank(b)),
        }
    }
}

fn rank(key: &Key<'_>) -> u8 {
    match key {
        Key::Int(_) => 0,
        Key::Float(_) => 1,
        Key::Text(_) => 2,
        Key::Nan => 3,
    }
}

/// Element `index` of a number or string tensor as a key.
fn key_of(t: TensorRef<'_>, index: usize) -> KernelResult<Key<'_>> {
    if let Some(v) = integer_at(t, index)? {
        return Ok(Key::Int(v));
    }
    Ok(match t.dtype() {
        DType::STRING => Key::Text(t.strings()?.get(index)?),
        DType::F32 => Key::float(f64::from(t.f32()?[index])),
        DType::F64 => Key::float(t.as_slice::<f64>()?[index]),
        other => return Err(error(OP, format_args!("dtype {other} is not supported"))),
    })
}

/// The default of the values' type: `default_tensor` (one element), `default_float`,
/// `default_int64` or `default_string`, or the operator's own default.
#[derive(Clone, Copy)]
enum Default<'a> {
    Float(f32),
    Int(i64),
    Text(&'a str),
    /// Little-endian bytes of one element of the values' number type.
    Bytes([u8; 8]),
}

fn default_of<'a>(attributes: &Attributes<'a>, values: &Entries<'a>) -> KernelResult<Default<'a>> {
    if let Some(t) = attributes.tensor("default_tensor")? {
        let t = TensorRef::new(t);
        if t.dtype() != values.dtype() || t.len() != 1 {
            return Err(error(
                OP,
                format_args!(
                    "attribute 'default_tensor' is {} of {} elements; it must be one element of the values' dtype {}",
                    t.dtype(),
                    t.len(),
                    values.dtype()
                ),
            ));
        }
        if t.dtype() == DType::STRING {
            return Ok(Default::Text(t.strings()?.get(0)?));
        }
        let mut bytes = [0; 8];
        bytes[..t.bytes().len()].copy_from_slice(t.bytes());
        return Ok(Default::Bytes(bytes));
    }
    Ok(match values {
        Entries::Floats(_) => Default::Float(attributes.float("default_float", -0.0)?),
        Entries::Ints(_) => Default::Int(attributes.int("default_int64", -1)?),
        Entries::Texts(_) => Default::Text(attributes.string("default_string", "_Unused")?),
        // The spec's defaults for a values tensor: -1 for integers, -0.0 for floats.
        Entries::Numbers(t) => Default::Bytes(match t.dtype() {
            DType::F32 => {
                let mut b = [0; 8];
                b[..4].copy_from_slice(&(-0.0f32).to_le_bytes());
                b
            }
            DType::F64 => (-0.0f64).to_le_bytes(),
            _ => [0xFF; 8],
        }),
    })
}

/// The node's mapping.
struct Mapping<'a> {
    keys: Entries<'a>,
    values: Entries<'a>,
    default: Default<'a>,
}

impl<'a> Mapping<'a> {
    fn new(attributes: &Attributes<'a>) -> KernelResult<Self> {
        let keys = Entries::read(
            attributes,
            ["keys_floats", "keys_int64s", "keys_strings", "keys_tensor"],
        )?;
        let values = Entries::read(
            attributes,
            [
                "values_floats",
                "values_int64s",
                "values_strings",
                "values_tensor",
            ],
        )?;
        if keys.len() != values.len() {
            return Err(error(
                OP,
                format_args!(
                    "it has {} keys but {} values; each key needs a value",
                    keys.len(),
                    values.len()
                ),
            ));
        }
        let default = default_of(attributes, &values)?;
        Ok(Mapping {
            keys,
            values,
            default,
        })
    }

    /// The position of `key` among the keys: by binary search over `sorted` (the keys' indices
    /// in key order), or by a scan without it.
    fn find(&self, key: Key<'_>, sorted: Option<&[u32]>) -> KernelResult<Option<usize>> {
        if key == Key::Nan {
            return Ok(None);
        }
        let Some(sorted) = sorted else {
            for i in 0..self.keys.len() {
                if self.keys.key(i)?.cmp(&key) == Ordering::Equal {
                    return Ok(Some(i));
                }
            }
            return Ok(None);
        };
        let (mut low, mut high) = (0, sorted.len());
        while low < high {
            let mid = (low + high) / 2;
            let at = sorted[mid] as usize;
            match self.keys.key(at)?.cmp(&key) {
                Ordering::Less => low = mid + 1,
                Ordering::Greater => high = mid,
                Ordering::Equal => return Ok(Some(at)),
            }
        }
        Ok(None)
    }
}

/// Maps each element through the node's keys and values.
pub struct LabelEncoder;

impl Operator for LabelEncoder {
    const DOMAIN: &'static str = ML_DOMAIN;
    const OP_TYPE: &'static str = "LabelEncoder";
    const SINCE_VERSION: i64 = 2;
    const TAKES_STRINGS: bool = true;

    fn infer(cx: &InferContext<'_>) -> KernelResult<Vec<OutputType>> {
        let mapping = Mapping::new(&cx.attributes())?;
        let x = cx.input(0)?;
        if x.dtype != mapping.keys.dtype() {
            return Err(error(
                OP,
                format_args!(
                    "X has dtype {}, but the keys are {}",
                    x.dtype,
                    mapping.keys.dtype()
                ),
            ));
        }
        Ok(vec![OutputType::new(
            mapping.values.dtype(),
            x.shape.to_vec(),
        )])
    }

    fn compute(cx: &mut KernelContext<'_>) -> KernelResult<()> {
        let mapping = Mapping::new(&cx.attributes())?;
        let x = cx.input(0)?;
        let count = mapping.keys.len();
        if u32::try_from(count).is_err() {
            return Err(error(OP, format_args!("{count} keys are too many")));
        }
        let sorted = cx.prepared::<u32, _>(count, |order| {
            for (i, o) in order.iter_mut().enumerate() {
                *o = i as u32;
            }
            let mut failed = None;
            order.sort_unstable_by(|&a, &b| {
                match (mapping.keys.key(a as usize), mapping.keys.key(b as usize)) {
                    (Ok(a), Ok(b)) => a.cmp(&b),
                    (Err(e), _) | (_, Err(e)) => {
                        failed.get_or_insert(e);
                        Ordering::Equal
                    }
                }
            });
            failed.map_or(Ok(()), Err)
        })?;
        let found =
            |i: usize| -> KernelResult<Option<usize>> { mapping.find(key_of(x, i)?, sorted) };
        let out = cx.output(0)?;
        match (mapping.values, mapping.default) {
            (Entries::Floats(v), Default::Float(d)) => {
                for (i, y) in out.f32_mut()?.iter_mut().enumerate() {
                    *y = found(i)?.map_or(d, |k| v[k]);
                }
            }
            (Entries::Ints(v), Default::Int(d)) => {
                for (i, y) in out.as_slice_mut::<i64>()?.iter_mut().enumerate() {
                    *y = found(i)?.map_or(d, |k| v[k]);
                }
            }
            (Entries::Texts(v), Default::Text(d)) => {
                let mut y = out.strings_mut()?;
                for i in 0..y.len() {
                    let text = match found(i)? {
                        Some(k) => v.get(k)?,
                        None => d,
                    };
                    y.set(i, text)?;
                }
            }
            (Entries::Numbers(v), Default::Bytes(d)) => {
                let size = v.dtype().size().unwrap_or(1);
                let (values, default) = (v.bytes(), &d[..size]);
                for (i, y) in out.bytes_mut().chunks_exact_mut(size).enumerate() {
                    y.copy_from_slice(match found(i)? {
                        Some(k) => &values[k * size..(k + 1) * size],
                        None => default,
                    });
                }
            }
            _ => return Err(error(OP, "the default does not match the values")),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opal_plugin_api::testing::{
        floats_attr, int_attr, ints_attr, run_operator, string_attr, string_slices, strings_attr,
        tensor_attr, OwnedTensor, TestHost,
    };

    #[test]
    fn strings_map_to_integers_with_a_default() {
        let keys = string_slices(&["c", "a", "b"]);
        let attributes = [
            strings_attr("keys_strings", &keys),
            ints_attr("values_int64s", &[2, 0, 1]),
            int_attr("default_int64", 42),
        ];
        let x = OwnedTensor::strings(&[5], &["a", "b", "d", "c", "g"]);
        let constant = TestHost::new().heap_probe(|| 0);
        for host in [TestHost::new(), constant] {
            let y = host
                .run::<LabelEncoder>(std::slice::from_ref(&x), &attributes, 1)
                .unwrap();
            assert_eq!(y[0].to_vec::<i64>(), [0, 1, 42, 2, 42]);
        }
        let y = run_operator::<LabelEncoder>(&[x], &attributes[..2], 1).unwrap();
        assert_eq!(y[0].to_vec::<i64>(), [0, 1, -1, 2, -1]);
    }

    #[test]
    fn numbers_map_to_strings_and_tensors_to_tensors() {
        let values = string_slices(&["one", "two"]);
        let attributes = [
            floats_attr("keys_floats", &[1.0, 2.0]),
            strings_attr("values_strings", &values),
            string_attr("default_string", "none"),
        ];
        let x = OwnedTensor::f32(&[2, 2], &[2.0, 1.0, f32::NAN, -0.0]);
        let y = run_operator::<LabelEncoder>(&[x], &attributes, 1).unwrap();
        assert_eq!(y[0].to_strings(), ["two", "one", "none", "none"]);

        let keys = OwnedTensor::strings(&[3], &["a", "b", "c"]);
        let values = OwnedTensor::new::<i16>(&[3], &[0, 1, 2]);
        let default = OwnedTensor::new::<i16>(&[1], &[42]);
        let attributes = [
            tensor_attr("keys_tensor", &keys),
            tensor_attr("values_tensor", &values),
            tensor_attr("default_tensor", &default),
        ];
        let x = OwnedTensor::strings(&[3], &["c", "z", "a"]);
        let y = run_operator::<LabelEncoder>(&[x], &attributes, 1).unwrap();
        assert_eq!(y[0].to_vec::<i16>(), [2, 42, 0]);
    }

    #[test]
    fn mismatched_keys_values_and_inputs_are_refused() {
        let x = OwnedTensor::i64(&[1], &[1]);
        let keys = string_slices(&["a"]);
        let attributes = [
            strings_attr("keys_strings", &keys),
            ints_attr("values_int64s", &[1]),
        ];
        let error =
            run_operator::<LabelEncoder>(std::slice::from_ref(&x), &attributes, 1).unwrap_err();
        assert_eq!(
            error,
            "LabelEncoder: X has dtype i64, but the keys are string"
        );
        let attributes = [
            ints_attr("keys_int64s", &[1, 2]),
            ints_attr("values_int64s", &[1]),
        ];
        let error = run_operator::<LabelEncoder>(&[x], &attributes, 1).unwrap_err();
        assert_eq!(
            error,
            "LabelEncoder: it has 2 keys but 1 values; each key needs a value"
        );
    }
}
