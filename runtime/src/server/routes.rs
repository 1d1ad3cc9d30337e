//! The HTTP routes: KServe v2 health, metadata, repository index and inference (JSON and
//! binary tensors), model control (load, unload, deployment reload), plugin listing and
//! reloads, and Prometheus metrics. Every error is a 4xx or 5xx with a body
//! `{"error": "..."}` naming the problem.

use super::{
    admin, config_reload,
    metrics::{ModelLoad, Outcome},
    model_control, overdue,
    state::{AppState, OutputTensor, Refusal, ServedModel},
};
use axum::{
    body::Body,
    extract::{ConnectInfo, Path, State},
    http::{header, HeaderMap, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
    routing::{get, post},
    Json, Router,
};
use opal_runtime::{
    kserve::{
        bytes_to_json, datatype_name, decode_request, flag, DecodeError, DecodedRequest,
        InferRequest, InferResponse, ResponseOutput, HEADER_LENGTH,
    },
    onnx::{Constant, Dim},
    RunControl, RunError, SessionError,
};
use serde_json::{json, Map, Value};
use std::{net::SocketAddr, sync::Arc, time::Instant};

/// An error answer: a status and a message, sent as `{"error": message}`.
pub(crate) struct ApiError(StatusCode, String);

impl ApiError {
    pub(crate) fn new(status: StatusCode, message: String) -> Self {
        ApiError(status, message)
    }

    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        ApiError(StatusCode::BAD_REQUEST, message.into())
    }

    pub(crate) fn message(&self) -> &str {
        &self.1
    }

    /// 503 with `Retry-After`: the model's queue is full.
    fn overloaded(message: String) -> Self {
        ApiError(StatusCode::SERVICE_UNAVAILABLE, message)
    }

    #[cfg(test)]
    pub(crate) fn status(&self) -> StatusCode {
        self.0
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.0, Json(json!({ "error": self.1 }))).into_response();
        // The only credentials opal asks for are the admin token.
        if self.0 == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        // Every 503 is passing: a full queue or a shutdown.
        if self.0 == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

type Shared = State<Arc<AppState>>;

pub(crate) fn router(state: Arc<AppState>) -> Router {
    Router::new()
        // The KServe v2 protocol answers with a JSON body; Triton's clients read the status.
        .route(
            "/v2/health/live",
            get(|| async { Json(json!({ "live": true })) }),
        )
        .route(
            "/v2/health/ready",
            get(|| async { Json(json!({ "ready": true })) }),
        )
        .route("/v2", get(server_metadata))
        .route("/v2/models/{name}", get(model_metadata))
        .route("/v2/models/{name}/versions/{version}", get(model_metadata_version))
        .route("/v2/models/{name}/ready", get(model_ready))
        .route("/v2/models/{name}/versions/{version}/ready", get(model_ready_version))
        .route("/v2/models/{name}/infer", post(infer))
        .route("/v2/models/{name}/versions/{version}/infer", post(infer_version))
        .route("/v2/repository/index", post(repository_index))
        .route(
            "/v2/repository/models/{name}/load",
            post(model_control::load_handler),
        )
        .route(
            "/v2/repository/models/{name}/unload",
            post(model_control::unload_handler),
        )
        .route(
            "/v2/repository/reload-config",
            post(config_reload::reload_config_handler),
        )
        .route("/v2/plugins", get(plugins))
        .route("/v2/plugins/{name}/reload", post(reload))
        .route("/metrics", get(metrics))
        .fallback(|| async {
            ApiError(
                StatusCode::NOT_FOUND,
                "no such route; opal serves the KServe v2 protocol under /v2 and metrics at /metrics".into(),
            )
        })
        .with_state(state)
}

/// The model serving under `name`, held for one request.
fn served(state: &AppState, name: &str) -> Result<Arc<ServedModel>, ApiError> {
    state
        .models
        .get(name)
        .map_err(|why| model_control::not_serving(name, why))
}

async fn server_metadata() -> Json<Value> {
    Json(json!({
        "name": "opal",
        "version": env!("CARGO_PKG_VERSION"),
        "extensions": ["binary_tensor_data", "model_repository", "metrics"],
    }))
}

/// A model's inputs or outputs as the protocol describes them (-1 for a dim of any size).
fn tensor_metadata(m: &ServedModel, ids: &[usize]) -> Vec<Value> {
    ids.iter()
        .map(|&id| {
            let value = &m.model().values[id];
            let shape: Vec<i64> = match m.spec().shapes.get(&value.name) {
                Some(shape) => shape.iter().map(|&d| d as i64).collect(),
                None => value.shape.as_ref().map_or_else(Vec::new, |dims| {
                    dims.iter()
                        .map(|d| match d {
                            Dim::Fixed(n) => *n as i64,
                            Dim::Symbol(s) => m.spec().dims.get(s).map_or(-1, |&n| n as i64),
                            Dim::Unknown => -1,
                        })
                        .collect()
                }),
            };
            json!({
                "name": value.name,
                "datatype": value.dtype.and_then(datatype_name).unwrap_or("UNKNOWN"),
                "shape": shape,
            })
        })
        .collect()
}

async fn model_metadata(
    State(state): Shared,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let m = served(&state, &name)?;
    Ok(Json(json!({
        "name": name,
        "versions": ["1"],
        "platform": "onnx",
        "inputs": tensor_metadata(&m, &m.model().inputs),
        "outputs": tensor_metadata(&m, &m.model().outputs),
    })))
}

async fn model_metadata_version(
    state: Shared,
    Path((name, _version)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    model_metadata(state, Path(name)).await
}

async fn model_ready(
    State(state): Shared,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    served(&state, &name).map(|_| Json(json!({ "name": name, "ready": true })))
}

async fn model_ready_version(
    state: Shared,
    Path((name, _version)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    model_ready(state, Path(name)).await
}

/// Every model with its state and the reason it is not READY; with `{"ready": true}`, the
/// READY ones only.
async fn repository_index(State(state): Shared, body: axum::body::Bytes) -> Json<Value> {
    let ready_only = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| v.get("ready").and_then(Value::as_bool))
        .unwrap_or(false);
    Json(Value::Array(
        state
            .models
            .index()
            .into_iter()
            .filter(|row| !ready_only || row.state == super::repository::ModelState::Ready)
            .map(|row| {
                json!({ "name": row.name, "version": "1", "state": row.state.name(), "reason": row.reason })
            })
            .collect(),
    ))
}

async fn plugins(State(state): Shared) -> Json<Value> {
    let registry = state.engine.registry();
    let list = registry
        .plugins()
        .iter()
        .map(|p| {
            let (major, minor) = p.abi_version();
            let operators: Vec<Value> = registry
                .all()
                .into_iter()
                .filter(|(_, e)| e.plugin_name() == p.name())
                .map(|(key, e)| {
                    json!({
                        "domain": if key.domain.is_empty() { "ai.onnx" } else { &key.domain },
                        "op_type": key.op_type,
                        "since_version": e.since_version(),
                        "until_version": (e.until_version() != i64::MAX).then_some(e.until_version()),
                    })
                })
                .collect();
            json!({
                "name": p.name(),
                "version": p.version(),
                "abi": format!("{major}.{minor}"),
                "file": p.source(),
                "operators": operators,
            })
        })
        .collect();
    Json(Value::Array(list))
}

async fn reload(
    State(state): Shared,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let plugin = name.clone();
    let what = format!("the reload of '{name}'");
    let result = admin::change(&state, peer, &headers, what, move |state| {
        state.reload(&plugin)
    })
    .await?;
    match result {
        Ok(r) => Ok(Json(json!({
            "plugin": r.plugin,
            "old_version": r.old_version,
            "new_version": r.new_version,
            "file": r.file,
            "models_checked": r.models_checked,
        }))),
        Err(opal_runtime::hot_swap::ReloadError::UnknownPlugin(p)) => Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("no loaded plugin is named '{p}'"),
        )),
        Err(e) => Err(ApiError(
            StatusCode::CONFLICT,
            format!("plugin '{name}' was not replaced, the current one keeps serving: {e}"),
        )),
    }
}

async fn metrics(State(state): Shared) -> impl IntoResponse {
    let serving = state.models.serving();
    let loads: Vec<ModelLoad<'_>> = serving
        .iter()
        .map(|(name, m)| ModelLoad {
            model: name,
            running: m.running(),
            queued: m.queued(),
            mapped: m.model().mapping().len(),
        })
        .collect();
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(&state.engine, &loads),
    )
}

async fn infer_version(
    state: Shared,
    Path((name, _version)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    infer(state, Path(name), headers, body).await
}

async fn infer(
    State(state): Shared,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    let known = state.models.knows(&name);
    let result = infer_request(&state, &name, &headers, body).await;
    if known {
        let outcome = match &result {
            Ok(_) => Outcome::Success,
            Err(ApiError(StatusCode::GATEWAY_TIMEOUT, _)) => Outcome::Timeout,
            Err(ApiError(StatusCode::SERVICE_UNAVAILABLE, _)) => Outcome::Rejected,
            Err(_) => Outcome::Failure,
        };
        state
            .metrics
            .record_request(&name, outcome, started.elapsed().as_secs_f64());
    }
    if let Err(ApiError(status, message)) = &result {
        tracing::debug!(model = %name, %status, %message, "request refused");
    }
    result
}

async fn infer_request(
    state: &Arc<AppState>,
    name: &str,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let served_model = served(state, name)?;
    let limit = state.settings.max_request_bytes;
    let body = axum::body::to_bytes(body, limit).await.map_err(|_| {
        ApiError(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the request body is larger than the server's limit of {limit} bytes (server.max_request_bytes)"),
        )
    })?;
    let DecodedRequest { request, inputs } = decode_request(
        &body,
        headers.get(HEADER_LENGTH).map(HeaderValue::as_bytes),
        served_model.spec(),
        served_model.model(),
        served_model.request_owner(),
    )
    .map_err(|e| match e {
        DecodeError::Invalid(message) => ApiError::bad_request(message),
        DecodeError::OutOfMemory => ApiError(StatusCode::INSUFFICIENT_STORAGE, e.to_string()),
    })?;

    let timeout = std::time::Duration::from_millis(state.settings.request_timeout_ms);
    let deadline = tokio::time::Instant::now() + timeout;
    let permit = served_model.admit(deadline).await.map_err(|refusal| match refusal {
        Refusal::QueueFull => ApiError::overloaded(format!(
            "model '{name}' is busy: {} runs are going on and {} requests wait (max_concurrent, max_queue); retry later",
            served_model.spec().max_concurrent, served_model.spec().max_queue
        )),
        Refusal::TimedOut => ApiError(
            StatusCode::GATEWAY_TIMEOUT,
            format!(
                "the request waited {} ms (server.request_timeout_ms) in model '{name}''s queue without getting to run",
                timeout.as_millis()
            ),
        ),
        Refusal::Closed => ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            "the server is shutting down".into(),
        ),
    })?;
    let control = RunControl::new();
    let run_control = control.clone();
    // The run holds this version of the model to its end, also if it is replaced meanwhile.
    let model = served_model.clone();
    let mut run = tokio::task::spawn_blocking(move || {
        // Held until the run returns, so a run that outlives its request still counts.
        let _permit = permit;
        let views: Vec<_> = inputs.iter().map(Constant::as_ref).collect();
        model.run(&views, &run_control)
    });
    let outputs = match tokio::time::timeout_at(deadline, &mut run).await {
        Ok(joined) => joined.map_err(|e| {
            ApiError(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("the inference task failed: {e}"),
            )
        })?,
        Err(_) => {
            control.cancel();
            overdue::follow(state.clone(), name.to_owned(), run, control);
            return Err(ApiError(
                StatusCode::GATEWAY_TIMEOUT,
                format!(
                    "the inference did not finish within {} ms (server.request_timeout_ms); its run stops at the next kernel boundary",
                    timeout.as_millis()
                ),
            ));
        }
    };
    let outputs = outputs.map_err(|e| match e {
        SessionError::Plan(e) => ApiError::bad_request(e.to_string()),
        SessionError::Run(e @ RunError::Memory { .. }) => {
            ApiError(StatusCode::UNPROCESSABLE_ENTITY, e.to_string())
        }
        e @ (SessionError::Run(_) | SessionError::Output { .. }) => {
            ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
        }
    })?;
    respond(name, &request, outputs)
}

/// The response: outputs asked for (all by default), each as JSON data or binary.
fn respond(
    name: &str,
    request: &InferRequest,
    outputs: Vec<OutputTensor>,
) -> Result<Response, ApiError> {
    let all_binary = flag(&request.parameters, "binary_data_output");
    let wanted: Vec<(&OutputTensor, bool)> = match &request.outputs {
        None => outputs.iter().map(|o| (o, all_binary)).collect(),
        Some(asked) => asked
            .iter()
            .map(|a| {
                let output = outputs.iter().find(|o| o.name == a.name).ok_or_else(|| {
                    let names: Vec<&str> = outputs.iter().map(|o| o.name.as_str()).collect();
                    ApiError::bad_request(format!(
                        "model '{name}' has no output '{}'; its outputs are {names:?}",
                        a.name
                    ))
                })?;
                Ok((output, flag(&a.parameters, "binary_data") || all_binary))
            })
            .collect::<Result<_, ApiError>>()?,
    };
    let mut binary = Vec::new();
    let mut described = Vec::with_capacity(wanted.len());
    for (output, as_binary) in wanted {
        let datatype = datatype_name(output.dtype).unwrap_or("UNKNOWN");
        let mut parameters = Map::new();
        let data = if as_binary {
            parameters.insert("binary_data_size".into(), json!(output.bytes.len()));
            binary.extend_from_slice(&output.bytes);
            None
        } else {
            Some(bytes_to_json(&output.bytes, output.dtype).map_err(ApiError::bad_request)?)
        };
        described.push(ResponseOutput {
            name: output.name.clone(),
            datatype,
            shape: output.shape.to_vec(),
            parameters,
            data,
        });
    }
    let response = InferResponse {
        model_name: name.to_owned(),
        model_version: "1",
        id: request.id.clone(),
        outputs: described,
    };
    let header_json = serde_json::to_vec(&response)
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    if binary.is_empty() {
        return Ok(([(header::CONTENT_TYPE, "application/json")], header_json).into_response());
    }
    let json_length = HeaderValue::from(header_json.len());
    let mut body = header_json;
    body.extend_from_slice(&binary);
    Ok((
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            ),
            (header::HeaderName::from_static(HEADER_LENGTH), json_length),
        ],
        body,
    )
        .into_response())
}
