//! Triton's JSON model configuration, as `tritonclient`'s `load_model(config=...)` sends it,
//! read for the fields that apply to opal: `name`, `platform`/`backend` (ONNX only),
//! `default_model_filename`, `input` and `output` (`data_type` checked, `dims` giving input
//! shapes and symbolic dims' sizes) and `instance_group[].count` (summed into
//! `max_concurrent`). `max_batch_size` and the scheduling and optimisation fields are accepted
//! and ignored, each with a note; any other field is refused by name.

use opal_runtime::{
    config::ModelSpec,
    kserve::datatype_name,
    onnx::{Dim, Model},
};
use serde::Deserialize;
use serde_json::Value;

/// Fields Triton defines that opal accepts and does not use.
const IGNORED: [&str; 9] = [
    "version_policy",
    "dynamic_batching",
    "sequence_batching",
    "optimization",
    "parameters",
    "model_warmup",
    "response_cache",
    "model_transaction_policy",
    "model_repository_agents",
];

/// What a Triton model configuration asks for.
#[derive(Debug, Default)]
pub(crate) struct TritonConfig {
    /// The model file inside a version directory (`model.onnx` unless the config names one).
    pub(crate) model_filename: String,
    /// Runs at once: the instance groups' counts, summed.
    pub(crate) max_concurrent: Option<usize>,
    tensors: Vec<TensorConfig>,
    /// What was accepted without effect, for the answer and the log.
    pub(crate) notes: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct TensorConfig {
    name: String,
    data_type: Option<String>,
    #[serde(default)]
    dims: Vec<i64>,
    #[serde(skip)]
    is_input: bool,
}

#[derive(Deserialize)]
struct InstanceGroup {
    #[serde(default = "one")]
    count: usize,
    kind: Option<String>,
}

fn one() -> usize {
    1
}

impl TritonConfig {
    /// Reads `text` for model `name`; errors name the field.
    pub(crate) fn parse(text: &str, name: &str) -> Result<Self, String> {
        let fields: serde_json::Map<String, Value> = serde_json::from_str(text)
            .map_err(|e| format!("the config is not a JSON object: {e}"))?;
        let mut config = TritonConfig {
            model_filename: "model.onnx".to_owned(),
            ..Default::default()
        };
        for (field, value) in fields {
            let fail = |reason: &str| format!("config field '{field}': {reason}");
            match field.as_str() {
                "name" => {
                    if value.as_str() != Some(name) {
                        return Err(fail(&format!(
                            "is {value}, but the request loads model '{name}'"
                        )));
                    }
                }
                "platform" | "backend" => {
                    let kind = value.as_str().unwrap_or_default();
                    if !["onnxruntime_onnx", "onnxruntime", "onnx", "opal"].contains(&kind) {
                        return Err(fail(&format!(
                            "is {value}; opal serves ONNX models (use \"onnxruntime_onnx\" or leave it out)"
                        )));
                    }
                }
                "default_model_filename" => {
                    config.model_filename = value
                        .as_str()
                        .filter(|f| !f.is_empty())
                        .ok_or_else(|| fail("must be a file name"))?
                        .to_owned();
                }
                "max_batch_size" => {
                    if value.as_u64() != Some(0) {
                        config.notes.push(format!(
                            "max_batch_size {value} is ignored: opal runs each request as it comes, with the shapes the model declares"
                        ));
                    }
                }
                "input" | "output" => {
                    let tensors: Vec<TensorConfig> =
                        serde_json::from_value(value).map_err(|e| fail(&e.to_string()))?;
                    config
                        .tensors
                        .extend(tensors.into_iter().map(|mut t| {
                            t.is_input = field == "input";
                            t
                        }));
                }
                "instance_group" => {
                    let groups: Vec<InstanceGroup> =
                        serde_json::from_value(value).map_err(|e| fail(&e.to_string()))?;
                    if groups
                        .iter()
                        .any(|g| g.kind.as_deref().is_some_and(|k| k == "KIND_GPU"))
                    {
                        config
                            .notes
                            .push("instance_group kind KIND_GPU runs on the CPU".to_owned());
                    }
                    let count: usize = groups.iter().map(|g| g.count).sum();
                    if count == 0 {
                        return Err(fail("the counts add up to 0; give at least one instance"));
                    }
                    config.max_concurrent = Some(count);
                }
                other if IGNORED.contains(&other) => {
                    config.notes.push(format!("{other} is ignored"));
                }
                _ => {
                    return Err(format!(
                        "config field '{field}' is not a Triton model configuration field opal knows; it reads name, platform, backend, default_model_filename, max_batch_size, input, output and instance_group"
                    ))
                }
            }
        }
        Ok(config)
    }

    /// `spec` with the configuration applied, checked against the loaded `model`: the
    /// inputs' and outputs' dtypes, fixed input dims as shapes, and sizes of symbolic dims.
    pub(crate) fn apply(&self, spec: &mut ModelSpec, model: &Model) -> Result<(), String> {
        if let Some(n) = self.max_concurrent {
            spec.max_concurrent = n;
        }
        for tensor in &self.tensors {
            let kind = if tensor.is_input { "input" } else { "output" };
            let ids = if tensor.is_input {
                &model.inputs
            } else {
                &model.outputs
            };
            let value = ids
                .iter()
                .map(|&id| &model.values[id])
                .find(|v| v.name == tensor.name)
                .ok_or_else(|| {
                    let names: Vec<&str> = ids.iter().map(|&id| model.value_name(id)).collect();
                    format!(
                        "config {kind} '{}': the model has no such {kind}; its {kind}s are {names:?}",
                        tensor.name
                    )
                })?;
            if let (Some(wanted), Some(dtype)) = (&tensor.data_type, value.dtype) {
                let has = datatype_name(dtype).unwrap_or("UNKNOWN");
                if wanted.strip_prefix("TYPE_") != Some(has) {
                    return Err(format!(
                        "config {kind} '{}': data_type is {wanted}, but the model's is TYPE_{has}",
                        tensor.name
                    ));
                }
            }
            self.apply_dims(spec, kind, tensor, value.shape.as_deref())?;
        }
        Ok(())
    }

    fn apply_dims(
        &self,
        spec: &mut ModelSpec,
        kind: &str,
        tensor: &TensorConfig,
        declared: Option<&[Dim]>,
    ) -> Result<(), String> {
        if tensor.dims.is_empty() {
            return Ok(());
        }
        let mismatch = |detail: String| {
            format!(
                "config {kind} '{}': dims {:?} {detail}",
                tensor.name, tensor.dims
            )
        };
        if let Some(declared) = declared {
            if declared.len() != tensor.dims.len() {
                return Err(mismatch(format!(
                    "have rank {}, but the model's has rank {}",
                    tensor.dims.len(),
                    declared.len()
                )));
            }
            for (given, dim) in tensor.dims.iter().zip(declared) {
                let Ok(given) = usize::try_from(*given) else {
                    continue;
                };
                match dim {
                    Dim::Fixed(n) if *n != given => {
                        return Err(mismatch(format!("differ from the model's {declared:?}")))
                    }
                    Dim::Symbol(s) => {
                        if let Some(&set) = spec.dims.get(s).filter(|&&set| set != given) {
                            return Err(mismatch(format!(
                                "give dim '{s}' the size {given}, but another tensor gives it {set}"
                            )));
                        }
                        spec.dims.insert(s.clone(), given);
                    }
                    _ => {}
                }
            }
        }
        if tensor.is_input && tensor.dims.iter().all(|&d| d >= 0) {
            spec.shapes.insert(
                tensor.name.clone(),
                tensor.dims.iter().map(|&d| d as usize).collect(),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fields_that_apply_are_read_and_others_noted_or_refused() {
        let config = TritonConfig::parse(
            r#"{"name": "b", "platform": "onnxruntime_onnx", "max_batch_size": 8,
                "instance_group": [{"count": 2, "kind": "KIND_CPU"}, {"count": 1}],
                "dynamic_batching": {}, "input": [{"name": "x", "data_type": "TYPE_FP32", "dims": [1, 8]}]}"#,
            "b",
        )
        .unwrap();
        assert_eq!(config.max_concurrent, Some(3));
        assert_eq!(config.model_filename, "model.onnx");
        assert_eq!(config.notes.len(), 2, "{:?}", config.notes);
        let err = TritonConfig::parse(r#"{"name": "b", "batching": 1}"#, "b").unwrap_err();
        assert!(err.contains("'batching'"), "{err}");
        let err = TritonConfig::parse(r#"{"name": "a"}"#, "b").unwrap_err();
        assert!(err.contains("'name'") && err.contains("'b'"), "{err}");
        let err = TritonConfig::parse(r#"{"platform": "tensorrt_plan"}"#, "b").unwrap_err();
        assert!(err.contains("'platform'"), "{err}");
        let err = TritonConfig::parse(r#"{"input": [{"dims": [1]}]}"#, "b").unwrap_err();
        assert!(err.contains("'input'") && err.contains("name"), "{err}");
    }
}
