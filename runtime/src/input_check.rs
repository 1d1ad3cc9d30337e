//! Checking the tensors a caller names against the inputs a model declares, completed by its
//! deployment's `dims` and `shapes`: names the model does not have, and shapes it does not
//! take. `opal serve` checks requests this way, `opal run` its `--input` files, and the Python
//! package its feeds, before anything runs.

use crate::{
    config::ModelSpec,
    onnx::{Dim, Model, Value},
};
use opal_plugin_api::ValueKind;

/// An error naming the first input or output of `model` of a type opal does not run (a map,
/// a sparse tensor, a sequence of sequences, …).
pub fn runnable_values(model: &Model) -> Result<(), String> {
    match declared_values(model).find(|value| value.unsupported.is_some()) {
        None => Ok(()),
        Some(value) => Err(format!(
            "'{}' has type {}; opal runs tensors, sequences of tensors and optionals of either",
            value.name,
            value.unsupported.unwrap_or("unknown")
        )),
    }
}

/// An error naming the first input or output of `model` that is not a tensor, for callers
/// that pass tensors only.
pub fn tensors_only(model: &Model) -> Result<(), String> {
    runnable_values(model)?;
    match declared_values(model).find(|value| value.kind != ValueKind::TENSOR) {
        None => Ok(()),
        Some(value) => Err(format!("'{}' is {}", value.name, value.kind.described())),
    }
}

/// The inputs a caller gives (initializers excepted) and the outputs of `model`.
fn declared_values(model: &Model) -> impl Iterator<Item = &Value> {
    model.inputs[..model.declared_inputs]
        .iter()
        .chain(&model.outputs)
        .map(|&id| &model.values[id])
}

/// An error for the first of `given` that is not an input of `model` (called `model_name` in
/// the message), listing the inputs it has.
pub fn unknown_input<'a>(
    model_name: &str,
    model: &Model,
    given: impl IntoIterator<Item = &'a str>,
) -> Result<(), String> {
    let names: Vec<&str> = model
        .inputs
        .iter()
        .map(|&id| model.value_name(id))
        .collect();
    match given.into_iter().find(|g| !names.contains(g)) {
        None => Ok(()),
        Some(name) => Err(format!(
            "model '{model_name}' has no input '{name}'; its inputs are {names:?}"
        )),
    }
}

/// The shape `value` takes, as text (`[1, 16]`, `[batch, 3]` with a symbol the deployment
/// leaves open, `?` for an unknown dim), if `shape` does not fit it.
pub fn shape_mismatch(spec: &ModelSpec, value: &Value, shape: &[usize]) -> Option<String> {
    if let Some(fixed) = spec.shapes.get(&value.name) {
        return (fixed.as_slice() != shape).then(|| format!("{fixed:?}"));
    }
    let dims = value.shape.as_ref()?;
    let fits = dims.len() == shape.len()
        && dims.iter().zip(shape).all(|(d, &n)| match d {
            Dim::Fixed(f) => *f == n,
            Dim::Symbol(s) => spec.dims.get(s).is_none_or(|&f| f == n),
            Dim::Unknown => true,
        });
    if fits {
        return None;
    }
    let declared: Vec<String> = dims
        .iter()
        .map(|d| match d {
            Dim::Fixed(n) => n.to_string(),
            Dim::Symbol(s) => spec
                .dims
                .get(s)
                .map_or_else(|| s.clone(), |n| n.to_string()),
            Dim::Unknown => "?".into(),
        })
        .collect();
    Some(format!("[{}]", declared.join(", ")))
}
