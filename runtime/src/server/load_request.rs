//! The body of `POST /v2/repository/models/{name}/load`, as Triton takes it: an optional JSON
//! object whose `parameters` hold `config` (a TOML `[[models]]` table, or Triton's JSON model
//! configuration) and model files as `file:<version>/<name>` keys with base64 contents.

use base64::Engine as _;
use serde_json::Value;

/// A parsed load request.
#[derive(Debug, Default)]
pub(crate) struct LoadRequest {
    pub(crate) config: Option<ModelConfig>,
    /// Files sent inline: paths relative to the model's directory, and contents.
    pub(crate) files: Vec<(String, Vec<u8>)>,
}

/// The `config` parameter, by its syntax.
#[derive(Debug)]
pub(crate) enum ModelConfig {
    Toml(String),
    TritonJson(String),
}

impl LoadRequest {
    /// Reads `body`; an empty body loads the model as the deployment declares it.
    pub(crate) fn parse(body: &[u8]) -> Result<Self, String> {
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(LoadRequest::default());
        }
        let request: Value = serde_json::from_slice(body)
            .map_err(|e| format!("the load request is not JSON: {e}"))?;
        let Value::Object(mut request) = request else {
            return Err("the load request must be a JSON object".to_owned());
        };
        let parameters = match request.remove("parameters") {
            None => serde_json::Map::new(),
            Some(Value::Object(parameters)) => parameters,
            Some(_) => return Err("'parameters' of the load request must be an object".into()),
        };
        if let Some(field) = request.keys().next() {
            return Err(format!(
                "the load request has an unknown field '{field}'; it takes 'parameters'"
            ));
        }
        let mut load = LoadRequest::default();
        for (key, value) in parameters {
            if key == "config" {
                let text = value.as_str().ok_or_else(|| {
                    "parameter 'config' must be a string: a TOML [[models]] table or a Triton model configuration in JSON".to_owned()
                })?;
                load.config = Some(if text.trim_start().starts_with('{') {
                    ModelConfig::TritonJson(text.to_owned())
                } else {
                    ModelConfig::Toml(text.to_owned())
                });
            } else if let Some(path) = key.strip_prefix("file:") {
                let encoded = value.as_str().ok_or_else(|| {
                    format!("parameter '{key}' must be the file's contents in base64")
                })?;
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(encoded)
                    .map_err(|e| format!("parameter '{key}' is not valid base64: {e}"))?;
                load.files.push((path.to_owned(), bytes));
            } else {
                return Err(format!(
                    "the load request has an unknown parameter '{key}'; it takes 'config' and files as 'file:<version>/<name>'"
                ));
            }
        }
        if load.config.is_none() && !load.files.is_empty() {
            return Err(
                "files were sent without a 'config'; send the model's config with them, as Triton requires".to_owned(),
            );
        }
        Ok(load)
    }
}

/// Of `files`, the one `<version>/<filename>` of the highest version, as Triton picks it.
pub(crate) fn model_file<'a>(
    files: &'a [(String, Vec<u8>)],
    filename: &str,
) -> Result<&'a str, String> {
    files
        .iter()
        .filter_map(|(path, _)| {
            let (version, name) = path.split_once('/')?;
            (name == filename).then_some((version.parse::<u64>().ok()?, path.as_str()))
        })
        .max()
        .map(|(_, path)| path)
        .ok_or_else(|| {
            let sent: Vec<&str> = files.iter().map(|(p, _)| p.as_str()).collect();
            format!(
                "no file 'file:<version>/{filename}' was sent (files sent: {sent:?}); the model file goes in a version directory, such as 'file:1/{filename}'"
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tritonclients_request_is_read() {
        let body = br#"{"parameters": {"config": "{\"name\": \"b\"}", "file:1/model.onnx": "b25ueA==", "file:2/model.onnx": "eHk="}}"#;
        let load = LoadRequest::parse(body).unwrap();
        assert!(matches!(load.config, Some(ModelConfig::TritonJson(_))));
        assert_eq!(load.files[0], ("1/model.onnx".to_owned(), b"onnx".to_vec()));
        assert_eq!(
            model_file(&load.files, "model.onnx").unwrap(),
            "2/model.onnx"
        );
        assert!(LoadRequest::parse(b"").unwrap().config.is_none());
        let toml =
            LoadRequest::parse(br#"{"parameters": {"config": "path = \"m.onnx\""}}"#).unwrap();
        assert!(matches!(toml.config, Some(ModelConfig::Toml(_))));
    }

    #[test]
    fn bad_requests_name_what_is_wrong() {
        for (body, expected) in [
            (&b"{nope"[..], "not JSON"),
            (
                br#"{"parameters": {"config": 3}}"#,
                "'config' must be a string",
            ),
            (
                br#"{"parameters": {"file:1/model.onnx": "***"}}"#,
                "not valid base64",
            ),
            (
                br#"{"parameters": {"colour": "red"}}"#,
                "unknown parameter 'colour'",
            ),
            (
                br#"{"parameters": {"file:1/model.onnx": "eHk="}}"#,
                "without a 'config'",
            ),
            (br#"{"params": {}}"#, "unknown field 'params'"),
        ] {
            let err = LoadRequest::parse(body).unwrap_err();
            assert!(err.contains(expected), "{err}");
        }
        let err = model_file(&[("model.onnx".into(), vec![])], "model.onnx").unwrap_err();
        assert!(err.contains("file:1/model.onnx"), "{err}");
    }
}
