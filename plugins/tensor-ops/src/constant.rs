//! Operators whose outputs come from attributes: Constant (every `value*` form but
//! `sparse_value`; strings from `value_string`, `value_strings` or a string `value` tensor)
//! and ConstantOfShape (a shape input filled with one value).

use crate::{
    check::{check_rank, error, Shape},
    layout::element_size,
    params::{known_ints, known_length, Ints},
};
use opal_plugin_api::{prelude::*, tensor::TensorView, AttrValue, StringList};

/// What a Constant node's attributes hold.
enum ConstantValue<'a> {
    Tensor(TensorView<'a>),
    Float(f32),
    Floats(&'a [f32]),
    Int(i64),
    Ints(&'a [i64]),
    String(&'a str),
    Strings(StringList<'a>),
}

/// The one `value*` attribute of a Constant node.
fn constant_value<'a>(op: &str, attributes: &Attributes<'a>) -> KernelResult<ConstantValue<'a>> {
    let mut found = None;
    for (name, value) in attributes.iter() {
        let parsed = match (name, value) {
            ("value", AttrValue::Tensor(t)) => ConstantValue::Tensor(t),
            ("value_float", AttrValue::Float(v)) => ConstantValue::Float(v),
            ("value_floats", AttrValue::Floats(v)) => ConstantValue::Floats(v.as_slice()),
            ("value_int", AttrValue::Int(v)) => ConstantValue::Int(v),
            ("value_ints", AttrValue::Ints(v)) => ConstantValue::Ints(v.as_slice()),
            ("value_string", AttrValue::String(_)) => {
                ConstantValue::String(attributes.string(name, "")?)
            }
            ("value_strings", AttrValue::Strings(_)) => match attributes.strings(name)? {
                Some(list) => ConstantValue::Strings(list),
                None => continue,
            },
            ("sparse_value", _) => {
                return Err(error(
                    op,
                    "attribute 'sparse_value' is not supported (opal has no sparse tensors)",
                ))
            }
            (name, _) if name.starts_with("value") => {
                return Err(error(
                    op,
                    format_args!("attribute '{name}' has the wrong kind"),
                ))
            }
            _ => continue,
        };
        if found.is_some() {
            return Err(error(
                op,
                "exactly one value attribute must be given, found several",
            ));
        }
        found = Some(parsed);
    }
    found.ok_or_else(|| error(op, "no value attribute is given"))
}

/// Writes element `i` of string output `out` as `get(i)`.
fn write_strings<'a>(
    out: TensorMut<'_>,
    get: impl Fn(usize) -> KernelResult<&'a str>,
) -> KernelResult<()> {
    let mut out = out.strings_mut()?;
    (0..out.len()).try_for_each(|i| out.set(i, get(i)?))
}

/// A tensor given by its attribute.
pub struct Constant;

impl Operator for Constant {
    const OP_TYPE: &'static str = "Constant";
    const TAKES_STRINGS: bool = true;

    fn infer(cx: &InferContext<'_>) -> KernelResult<Vec<OutputType>> {
        let op = Self::OP_TYPE;
        let ty = match constant_value(op, &cx.attributes())? {
            ConstantValue::Tensor(t) if t.dtype == DType::STRING => {
                OutputType::fixed(t.dtype, t.shape.as_slice())
            }
            ConstantValue::Tensor(t) => {
                element_size(op, t.dtype)?;
                OutputType::fixed(t.dtype, t.shape.as_slice())
            }
            ConstantValue::String(_) => OutputType::fixed(DType::STRING, &[]),
            ConstantValue::Strings(v) => OutputType::fixed(DType::STRING, &[v.len()]),
            ConstantValue::Float(_) => OutputType::fixed(DType::F32, &[]),
            ConstantValue::Floats(v) => OutputType::fixed(DType::F32, &[v.len()]),
            ConstantValue::Int(_) => OutputType::fixed(DType::I64, &[]),
            ConstantValue::Ints(v) => OutputType::fixed(DType::I64, &[v.len()]),
        };
        Ok(vec![ty])
    }

    fn compute(cx: &mut KernelContext<'_>) -> KernelResult<()> {
        let op = Self::OP_TYPE;
        let value = constant_value(op, &cx.attributes())?;
        let out = cx.output(0)?;
        match value {
            ConstantValue::Tensor(t) if t.dtype == DType::STRING => {
                let t = TensorRef::new(t).strings()?;
                return write_strings(out, |i| t.get(i));
            }
            ConstantValue::String(s) => return write_strings(out, |_| Ok(s)),
            ConstantValue::Strings(list) => return write_strings(out, |i| list.get(i)),
            _ => {}
        }
        let out = out.bytes_mut();
        let mut write = |bytes: &[u8]| {
            if bytes.len() != out.len() {
                return Err(error(
                    op,
                    format_args!(
                        "the value has {} bytes, the output {}",
                        bytes.len(),
                        out.len()
                    ),
                ));
            }
            out.copy_from_slice(bytes);
            Ok(())
        };
        match value {
            ConstantValue::Tensor(t) => write(t.data.as_slice()),
            ConstantValue::Float(v) => write(&v.to_ne_bytes()),
            ConstantValue::Int(v) => write(&v.to_ne_bytes()),
            ConstantValue::Floats(values) => {
                let (chunks, _) = out.as_chunks_mut::<4>();
                for (chunk, v) in chunks.iter_mut().zip(values) {
                    *chunk = v.to_ne_bytes();
                }
                Ok(())
            }
            ConstantValue::Ints(values) => {
                let (chunks, _) = out.as_chunks_mut::<8>();
                for (chunk, v) in chunks.iter_mut().zip(values) {
                    *chunk = v.to_ne_bytes();
                }
                Ok(())
            }
            ConstantValue::String(_) | ConstantValue::Strings(_) => {
                Err(error(op, "strings are written above"))
            }
        }
    }
}

/// A tensor of the shape given by input 0 (i64), every element the `value` attribute's (a
/// one-element tensor; f32 zero by default).
pub struct ConstantOfShape;

/// The `value` attribute: its dtype and bytes (f32 zero when absent).
fn fill_value<'a>(op: &str, attributes: &Attributes<'a>) -> KernelResult<(DType, &'a [u8])> {
    const ZERO: [u8; 4] = [0; 4];
    match attributes.tensor("value")? {
        None => Ok((DType::F32, &ZERO)),
        Some(t) => {
            let size = element_size(op, t.dtype)?;
            let count: usize = t.shape.as_slice().iter().product();
            if count != 1 || t.data.len() != size {
                return Err(error(
                    op,
                    format_args!(
                        "the value attribute must hold one element, it has shape {}",
                        Shape(t.shape.as_slice())
                    ),
                ));
            }
            Ok((t.dtype, t.data.as_slice()))
        }
    }
}

impl Operator for ConstantOfShape {
    const OP_TYPE: &'static str = "ConstantOfShape";
    const SINCE_VERSION: i64 = 9;
    const VALUE_INPUTS: &'static [usize] = &[0];

    fn infer(cx: &InferContext<'_>) -> KernelResult<Vec<OutputType>> {
        let op = Self::OP_TYPE;
        let (dtype, _) = fill_value(op, &cx.attributes())?;
        let input = cx.input(0)?;
        let shape = match known_ints(op, "the shape input", &input)? {
            Some(dims) => {
                if let Some(d) = dims.iter().find(|&&d| d < 0) {
                    return Err(error(
                        op,
                        format_args!("dims must not be negative, got {d}"),
                    ));
                }
                dims
            }
            None => match known_length(&input) {
                Some(rank) => vec![-1; rank],
                None => return Err(error(op, "the length of the shape input is not known")),
            },
        };
        check_rank(op, shape.len())?;
        Ok(vec![OutputType::new(dtype, shape)])
    }

    fn compute(cx: &mut KernelContext<'_>) -> KernelResult<()> {
        let op = Self::OP_TYPE;
        let (_, value) = fill_value(op, &cx.attributes())?;
        let requested = Ints::from_tensor(op, "the shape input", cx.input(0)?)?;
        let out = cx.output(0)?;
        let matches = requested.len() == out.shape().len()
            && requested
                .iter()
                .zip(out.shape())
                .all(|(r, &d)| r == d as i64);
        if !matches {
            return Err(error(
                op,
                format_args!(
                    "the output has shape {}, which the shape input does not give",
                    Shape(out.shape())
                ),
            ));
        }
        fill_bytes(out.bytes_mut(), value);
        Ok(())
    }
}

/// Fills `out` with copies of the element `value`.
pub(crate) fn fill_bytes(out: &mut [u8], value: &[u8]) {
    if value.iter().all(|&b| b == 0) {
        out.fill(0);
        return;
    }
    for chunk in out.chunks_exact_mut(value.len()) {
        chunk.copy_from_slice(value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opal_plugin_api::testing::{
        floats_attr, int_attr, ints_attr, run_operator, string_attr, string_slices, strings_attr,
        tensor_attr, OwnedTensor,
    };

    #[test]
    fn constants_come_from_every_attribute_form() {
        let y =
            run_operator::<Constant>(&[], &[floats_attr("value_floats", &[1.0, 2.5])], 1).unwrap();
        assert_eq!(
            (y[0].shape(), y[0].to_vec::<f32>()),
            (&[2][..], vec![1.0, 2.5])
        );
        let y = run_operator::<Constant>(&[], &[int_attr("value_int", 7)], 1).unwrap();
        assert_eq!((y[0].shape(), y[0].to_vec::<i64>()), (&[][..], vec![7]));
        let y = run_operator::<Constant>(&[], &[ints_attr("value_ints", &[3, 4, 5])], 1).unwrap();
        assert_eq!(y[0].to_vec::<i64>(), [3, 4, 5]);
        let error = run_operator::<Constant>(&[], &[], 1).unwrap_err();
        assert_eq!(error, "Constant: no value attribute is given");
    }

    #[test]
    fn string_constants_come_from_lists_single_strings_and_tensors() {
        let words = string_slices(&["a", "", "日本"]);
        let y = run_operator::<Constant>(&[], &[strings_attr("value_strings", &words)], 1).unwrap();
        assert_eq!(
            (y[0].shape(), y[0].to_strings()),
            (&[3][..], vec!["a".into(), String::new(), "日本".into()])
        );
        let y = run_operator::<Constant>(&[], &[string_attr("value_string", "one")], 1).unwrap();
        assert_eq!(
            (y[0].shape(), y[0].to_strings()),
            (&[][..], vec!["one".to_owned()])
        );
        let tensor = OwnedTensor::strings(&[1, 2], &["x", "y"]);
        let value = tensor_attr("value", &tensor);
        let y = run_operator::<Constant>(&[], &[value], 1).unwrap();
        assert_eq!(
            (y[0].shape(), y[0].to_strings()),
            (&[1, 2][..], vec!["x".to_owned(), "y".to_owned()])
        );
    }

    #[test]
    fn constant_of_shape_fills_zeros_by_default() {
        let y =
            run_operator::<ConstantOfShape>(&[OwnedTensor::i64(&[2], &[2, 3])], &[], 1).unwrap();
        assert_eq!(y[0].shape(), [2, 3]);
        assert_eq!(y[0].to_vec::<f32>(), [0.0; 6]);
    }
}
