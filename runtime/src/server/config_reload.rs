//! Applying a changed deployment file while serving (`opal reload-config`, `POST
//! /v2/repository/reload-config`, or `--watch-config`). The file is parsed and checked whole
//! first; then the difference from the deployment last applied is made plugin by plugin and
//! model by model: plugins added are loaded, models added or replaced (a new entry, or a new
//! file at the same path) are compiled and warmed aside, and every model that will serve is
//! checked against the plugins it will have. Only then is anything published: models that did
//! not change keep serving undisturbed, a model whose `max_concurrent` or `max_queue` changed
//! keeps its sessions, and plugins removed go last. A file that fails any step changes nothing.

use super::{
    admin,
    model_control::prepare,
    routes::ApiError,
    state::{AppState, ServedModel},
};
use axum::{
    extract::{ConnectInfo, State},
    http::HeaderMap,
    Json,
};
use opal_runtime::{
    config::ModelSpec, plugin::ContentDigest, plugin_changes::check_resolves, Deployment,
};
use serde::Serialize;
use serde_json::Value;
use std::{net::SocketAddr, path::PathBuf, sync::Arc};

/// What a reload changed.
#[derive(Debug, Default, Serialize)]
pub(crate) struct ConfigChanges {
    pub(crate) models_added: Vec<String>,
    pub(crate) models_removed: Vec<String>,
    pub(crate) models_replaced: Vec<String>,
    pub(crate) models_with_new_settings: Vec<String>,
    pub(crate) plugins_added: Vec<String>,
    pub(crate) plugins_removed: Vec<String>,
    /// Sections whose changes take effect only when the server restarts.
    pub(crate) restart_needed: Vec<&'static str>,
}

/// `POST /v2/repository/reload-config`.
pub(crate) async fn reload_config_handler(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let what = "the deployment reload".to_owned();
    let result = admin::change(&state, peer, &headers, what, reload_config).await?;
    match result {
        Ok(changes) => Ok(Json(serde_json::to_value(changes).unwrap_or_default())),
        Err(reason) => Err(ApiError::bad_request(reason)),
    }
}

/// Reads the deployment file again and applies its changes; logs and counts the outcome.
pub(crate) fn reload_config(state: &AppState) -> Result<ConfigChanges, String> {
    let mut current = state.deployment.lock();
    *state.deployment_seen.lock() = ContentDigest::of_file(&current.source).ok();
    let result = apply(state, &current);
    state.metrics.record_config_reload(result.is_ok());
    match result {
        Ok((deployment, changes)) => {
            tracing::info!(file = %deployment.source.display(), ?changes, "deployment reloaded");
            if !changes.restart_needed.is_empty() {
                tracing::warn!(sections = ?changes.restart_needed,
                    "these sections of the deployment changed; they take effect when the server restarts");
            }
            *current = deployment;
            Ok(changes)
        }
        Err(reason) => {
            let reason = format!("the deployment was not reloaded, nothing changed: {reason}");
            tracing::warn!("{reason}");
            Err(reason)
        }
    }
}

/// A model of the new file that must be compiled before it serves.
struct Pending {
    spec: ModelSpec,
    replaces: bool,
}

/// The new deployment and what changed, or why nothing did.
fn apply(state: &AppState, old: &Deployment) -> Result<(Deployment, ConfigChanges), String> {
    let new = Deployment::from_file(&old.source).map_err(|e| e.to_string())?;
    let mut changes = ConfigChanges {
        restart_needed: sections_needing_restart(old, &new),
        ..Default::default()
    };

    // Plugins: by the file they are deployed from.
    let current = state.engine.registry();
    let added: Vec<PathBuf> = new
        .plugins
        .iter()
        .filter(|p| !old.plugins.iter().any(|o| o.resolved == p.resolved))
        .map(|p| p.resolved.clone())
        .collect();
    let removed: Vec<String> = old
        .plugins
        .iter()
        .filter(|o| !new.plugins.iter().any(|p| p.resolved == o.resolved))
        .filter_map(|o| {
            current
                .plugins()
                .iter()
                .find(|p| p.source() == o.resolved)
                .map(|p| p.name().to_owned())
        })
        .collect();
    let fail = |e: &dyn std::fmt::Display| format!("{}: {e}", new.source.display());
    let with_added = if added.is_empty() {
        current.clone()
    } else {
        state
            .engine
            .registry_adding(&current, &added)
            .map_err(|e| fail(&e))?
    };
    let last = state
        .engine
        .registry_removing(&with_added, &removed)
        .map_err(|e| fail(&e))?;
    changes.plugins_added = with_added
        .plugins()
        .iter()
        .filter(|p| added.contains(&p.source().to_owned()))
        .map(|p| p.name().to_owned())
        .collect();
    changes.plugins_removed = removed.clone();

    // Models: by name.
    let mut pending = Vec::new();
    let mut resized = Vec::new();
    for spec in &new.models {
        let serving = state.models.get(&spec.name).ok();
        match old.model(&spec.name) {
            None => pending.push(Pending {
                spec: spec.clone(),
                replaces: false,
            }),
            Some(before) if compiles_differently(before, spec) => pending.push(Pending {
                spec: spec.clone(),
                replaces: true,
            }),
            Some(_) if serving.as_ref().is_some_and(|m| file_changed(m, spec)) => {
                pending.push(Pending {
                    spec: spec.clone(),
                    replaces: true,
                })
            }
            Some(before)
                if (before.max_concurrent, before.max_queue)
                    != (spec.max_concurrent, spec.max_queue) =>
            {
                resized.push(spec.clone())
            }
            Some(_) => {}
        }
    }
    changes.models_removed = old
        .models
        .iter()
        .filter(|m| new.model(&m.name).is_none())
        .map(|m| m.name.clone())
        .collect();

    // Every model that serves after the change must find its kernels among the plugins left.
    for (name, model) in state.models.serving() {
        let leaving =
            changes.models_removed.contains(&name) || pending.iter().any(|p| p.spec.name == name);
        if !leaving {
            check_resolves(&name, model.pool.model(), &last).map_err(|e| fail(&e))?;
        }
    }
    for p in &pending {
        let model = state
            .engine
            .load_model(&p.spec.path)
            .map_err(|e| fail(&format_args!("model '{}': {e}", p.spec.name)))?;
        check_resolves(&p.spec.name, &model, &last).map_err(|e| fail(&e))?;
    }

    // Plugins added serve beside the current ones: no running plan changes.
    if !added.is_empty() {
        state.engine.publish_addition(with_added.clone());
    }
    let mut prepared = Vec::new();
    for p in pending {
        match prepare(state, p.spec.clone(), None, None) {
            Ok(model) => prepared.push((p, model)),
            Err(reason) => {
                if !added.is_empty() {
                    state.engine.publish_addition(current);
                }
                return Err(fail(&format_args!("model '{}': {reason}", p.spec.name)));
            }
        }
    }

    // Publish: nothing below can fail.
    for (p, model) in prepared {
        let list = if p.replaces {
            &mut changes.models_replaced
        } else {
            &mut changes.models_added
        };
        list.push(p.spec.name.clone());
        drop(state.models.publish(&p.spec.name, Arc::new(model)));
    }
    for spec in resized {
        if let Ok(serving) = state.models.get(&spec.name) {
            drop(
                state
                    .models
                    .publish(&spec.name, Arc::new(serving.with_settings(&spec))),
            );
        }
        changes.models_with_new_settings.push(spec.name.clone());
    }
    for name in &changes.models_removed {
        drop(state.models.remove(name));
        state.metrics.record_model_unload(name);
    }
    if !removed.is_empty() {
        state.engine.publish(last);
        for (_, model) in state.models.serving() {
            model.pool.drop_idle();
        }
    }
    Ok((new, changes))
}

/// Whether a model must be loaded and compiled again: another file, or other shapes.
fn compiles_differently(before: &ModelSpec, after: &ModelSpec) -> bool {
    (&before.path, &before.dims, &before.shapes) != (&after.path, &after.dims, &after.shapes)
}

/// Whether the model serving from `spec`'s path now finds other contents there.
fn file_changed(serving: &ServedModel, spec: &ModelSpec) -> bool {
    serving.spec().path == spec.path && ContentDigest::of_file(&spec.path).ok() != serving.digest
}

/// The sections other than plugins and models that differ: applied at the next start.
fn sections_needing_restart(old: &Deployment, new: &Deployment) -> Vec<&'static str> {
    let mut sections = Vec::new();
    if old.engine != new.engine {
        sections.push("engine");
    }
    if old.pool != new.pool {
        sections.push("pool");
    }
    if old.operators != new.operators {
        sections.push("operators");
    }
    if old.server != new.server {
        sections.push("server");
    }
    let watch_changed = new.plugins.iter().any(|p| {
        old.plugins
            .iter()
            .any(|o| o.resolved == p.resolved && o.watch != p.watch)
    });
    if watch_changed {
        sections.push("plugins.watch");
    }
    sections
}

/// Reloads when the deployment file's contents differ from the last contents a reload read
/// (applied or refused), so a refused file is reported once, not at every event.
pub(crate) fn reload_if_changed(state: &AppState) {
    let source = state.deployment.lock().source.clone();
    let Ok(now) = ContentDigest::of_file(&source) else {
        tracing::info!(file = %source.display(), "the deployment file is gone; the deployment stays as it is until it is back");
        return;
    };
    if *state.deployment_seen.lock() == Some(now) {
        return;
    }
    tracing::info!(file = %source.display(), "deployment file changed");
    // The outcome is logged and counted by `reload_config`.
    let _ = reload_config(state);
}
