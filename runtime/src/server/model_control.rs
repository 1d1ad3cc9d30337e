//! Triton's model-control API: `POST /v2/repository/models/{name}/load` (from the deployment,
//! or from a `config` and files sent inline) and `/unload`. A model is loaded, checked,
//! compiled and warmed aside, then published in one swap; if any step fails, the version
//! serving keeps serving and the client gets the reason.

use super::{
    admin,
    load_request::{model_file, LoadRequest, ModelConfig},
    model_store::StoredFiles,
    repository::{ModelState, NotServing},
    routes::ApiError,
    state::{AppState, ServedModel},
    triton_config::TritonConfig,
};
use axum::{
    body::Bytes,
    extract::{ConnectInfo, Path, State},
    http::{HeaderMap, StatusCode},
    Json,
};
use opal_runtime::{
    config::ModelSpec, input_check::tensors_only, plugin_changes::check_resolves,
    session_pool::SessionPool,
};
use serde_json::{json, Value};
use std::{net::SocketAddr, sync::Arc};

/// `POST /v2/repository/models/{name}/load`.
pub(crate) async fn load_handler(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let model = name.clone();
    let what = format!("the load of '{name}'");
    let result = admin::change(&state, peer, &headers, what, move |state| {
        load(state, &model, &body)
    })
    .await?;
    state.metrics.record_model_load(&name, result.is_ok());
    match &result {
        Ok(notes) => tracing::info!(model = %name, ?notes, "model loaded"),
        Err(e) => tracing::warn!(model = %name, error = %e.message(), "model load refused"),
    }
    let notes = result?;
    Ok(Json(
        json!({ "name": name, "state": "READY", "notes": notes }),
    ))
}

/// `POST /v2/repository/models/{name}/unload`.
pub(crate) async fn unload_handler(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let model = name.clone();
    let what = format!("the unload of '{name}'");
    let unloaded = admin::change(&state, peer, &headers, what, move |state| {
        let _one_change_at_a_time = state.deployment.lock();
        let reason =
            format!("unloaded on request; POST /v2/repository/models/{model}/load serves it again");
        state.models.unload(&model, &reason)
    })
    .await?;
    match unloaded {
        Ok(served) => {
            if served.is_some() {
                state.metrics.record_model_unload(&name);
            }
            // Requests in flight hold the model; it is freed when the last of them ends.
            drop(served);
            tracing::info!(model = %name, memory_bytes = state.engine.tracker().current_bytes(), "model unloaded");
            Ok(Json(json!({ "name": name, "state": "UNAVAILABLE" })))
        }
        Err(why) => Err(not_serving(&name, why)),
    }
}

/// The answer for a model that is not serving: 404 for one unknown or unavailable, 503 (try
/// again) for one whose first load is still running.
pub(crate) fn not_serving(name: &str, why: NotServing) -> ApiError {
    match why {
        NotServing::Unknown(known) => ApiError::new(
            StatusCode::NOT_FOUND,
            format!("unknown model '{name}'; this server has {known:?}"),
        ),
        NotServing::Unavailable(ModelState::Loading, _) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("model '{name}' is loading; send again once the repository index says READY"),
        ),
        NotServing::Unavailable(_, reason) => ApiError::new(
            StatusCode::NOT_FOUND,
            format!("model '{name}' is unavailable: {reason}"),
        ),
    }
}

/// Loads model `name` as `body` asks and publishes it; returns notes on what was ignored.
fn load(state: &AppState, name: &str, body: &[u8]) -> Result<Vec<String>, ApiError> {
    let request = LoadRequest::parse(body).map_err(ApiError::bad_request)?;
    let deployment = state.deployment.lock();
    let files = if request.files.is_empty() {
        None
    } else {
        let stored = state
            .store
            .store(name, &request.files)
            .map_err(ApiError::bad_request)?;
        Some(Arc::new(stored))
    };
    let declared = deployment.model(name).cloned();
    let base_dir = deployment
        .source
        .parent()
        .unwrap_or(std::path::Path::new("."))
        .to_owned();
    let mut triton = None;
    let spec = match (&request.config, &files) {
        (Some(ModelConfig::Toml(text)), files) => {
            let dir = files.as_ref().map_or(base_dir.as_path(), |f| f.dir());
            ModelSpec::from_toml(text, name, dir, "parameter 'config'")
                .map_err(ApiError::bad_request)?
        }
        (Some(ModelConfig::TritonJson(text)), files) => {
            let config = TritonConfig::parse(text, name)
                .map_err(|e| ApiError::bad_request(format!("parameter 'config': {e}")))?;
            let spec = json_spec(name, &config, files.as_deref(), &request.files, declared)?;
            triton = Some(config);
            spec
        }
        (None, _) => match declared {
            Some(spec) => spec,
            None => {
                let current = state.models.get(name).ok();
                let Some(current) = current else {
                    return Err(ApiError::new(
                        StatusCode::NOT_FOUND,
                        format!(
                            "model '{name}' is not in deployment {} and not loaded; send its config (a TOML [[models]] table, or a Triton model config with its files)",
                            deployment.source.display()
                        ),
                    ));
                };
                // Loaded from the same spec and files again (a changed file is read anew).
                let reload = prepare(state, current.spec().clone(), current.files.clone(), None);
                return finish(state, name, reload, Vec::new());
            }
        },
    };
    let notes = triton.as_ref().map(|t| t.notes.clone()).unwrap_or_default();
    state.models.loading(name);
    let prepared = prepare(state, spec, files, triton.as_ref());
    finish(state, name, prepared, notes)
}

/// Publishes a prepared model, or records why it could not be.
fn finish(
    state: &AppState,
    name: &str,
    prepared: Result<ServedModel, String>,
    notes: Vec<String>,
) -> Result<Vec<String>, ApiError> {
    match prepared {
        Ok(model) => {
            // The replaced model is freed when its last request ends.
            drop(state.models.publish(name, Arc::new(model)));
            Ok(notes)
        }
        Err(reason) => {
            state.models.load_failed(name, &reason);
            let serving = state.models.get(name).is_ok();
            let outcome = if serving {
                "the version serving keeps serving"
            } else {
                "it is not serving"
            };
            Err(ApiError::bad_request(format!(
                "model '{name}' was not loaded, {outcome}: {reason}"
            )))
        }
    }
}

/// The spec of a model loaded with a Triton JSON config: its file among those sent, or the
/// deployment's when none were.
fn json_spec(
    name: &str,
    config: &TritonConfig,
    stored: Option<&StoredFiles>,
    sent: &[(String, Vec<u8>)],
    declared: Option<ModelSpec>,
) -> Result<ModelSpec, ApiError> {
    let path = match stored {
        Some(stored) => stored.dir().join(
            model_file(sent, &config.model_filename).map_err(ApiError::bad_request)?,
        ),
        None => match &declared {
            Some(spec) => spec.path.clone(),
            None => {
                return Err(ApiError::bad_request(format!(
                    "model '{name}' is not in the deployment, and a Triton model config names no file: send the model with it (files={{'file:1/model.onnx': ...}}) or send a TOML [[models]] table with a path"
                )))
            }
        },
    };
    Ok(match declared {
        Some(spec) => ModelSpec { path, ..spec },
        None => ModelSpec {
            name: name.to_owned(),
            path,
            dims: Default::default(),
            shapes: Default::default(),
            max_concurrent: 4,
            max_queue: 64,
        },
    })
}

/// Loads `spec`'s model and makes it ready to serve on the engine's current registry: mapped,
/// checked (tensors in and out, every node served by a plugin), compiled and run once on
/// inputs of its declared shapes. Nothing is published.
pub(crate) fn prepare(
    state: &AppState,
    mut spec: ModelSpec,
    files: Option<Arc<StoredFiles>>,
    triton: Option<&TritonConfig>,
) -> Result<ServedModel, String> {
    let name = spec.name.clone();
    let shown = spec.path.display().to_string();
    let model = state
        .engine
        .load_model(&spec.path)
        .map_err(|e| e.to_string())?;
    if let Some(config) = triton {
        config.apply(&mut spec, &model)?;
    }
    tensors_only(&model).map_err(|reason| {
        format!("{shown}: {reason}, but the KServe v2 protocol carries tensors only")
    })?;
    check_resolves(&name, &model, &state.engine.registry()).map_err(|e| format!("{shown}: {e}"))?;
    let pool = SessionPool::new(&state.engine, spec, model);
    pool.warm().map_err(|e| {
        format!("{shown} fails its warm-up run on inputs of its declared shapes: {e}")
    })?;
    Ok(ServedModel::new(&state.engine, pool, files))
}
