//! `opal serve`: the KServe v2 / Triton HTTP protocol over a deployment, with plugin reloads
//! (on request, for admin clients, or when a watched file changes), models loaded, replaced
//! and unloaded through Triton's model-control API, changes of the deployment file applied
//! live, and graceful shutdown on SIGINT or SIGTERM.

mod admin;
mod config_reload;
mod load_request;
mod metrics;
mod model_control;
mod model_store;
mod overdue;
mod repository;
mod routes;
mod state;
mod triton_config;
mod watch;

pub(crate) use admin::environment_token as admin_token_from_environment;
use anyhow::Context;
use opal_runtime::{
    input_check::tensors_only, plugin::ContentDigest, session_pool::SessionPool, Deployment, Engine,
};
use repository::ModelRepository;
use state::{AppState, ServedModel};
use std::{collections::BTreeMap, io::Write as _, net::SocketAddr, sync::Arc};

/// Serves `deployment` until a shutdown signal; requests in flight are finished first. With
/// `watch_config` (or `server.watch_config`), changes of the deployment file are applied.
pub(crate) fn serve(
    deployment: Deployment,
    listen: Option<String>,
    watch_config: bool,
) -> anyhow::Result<()> {
    let engine = Engine::new(&deployment)?;
    let pools = SessionPool::for_deployment(&engine, &deployment)?;
    for (name, pool) in &pools {
        if let Err(reason) = tensors_only(pool.model()) {
            anyhow::bail!(
                "model '{name}' ({}) of deployment {}: {reason}, but the KServe v2 protocol carries tensors only; serve models whose inputs and outputs are tensors (`opal run` runs this one)",
                pool.spec().path.display(),
                deployment.source.display(),
            );
        }
    }
    let models = pools
        .into_iter()
        .map(|(name, pool)| (name, Arc::new(ServedModel::new(&engine, pool, None))));
    let listen = listen.unwrap_or_else(|| deployment.server.listen.clone());
    // A temporary store is removed when `serve` returns.
    let (temporary_store, store_root) = match &deployment.server.model_store {
        Some(root) => (None, root.clone()),
        None => {
            let dir = tempfile::Builder::new()
                .prefix("opal-model-store-")
                .tempdir()
                .context("cannot make a temporary directory for models sent inline")?;
            let root = dir.path().to_owned();
            (Some(dir), root)
        }
    };
    let store = model_store::ModelStore::new(&store_root)
        .with_context(|| format!("cannot use {} as the model store", store_root.display()))?;
    let watch_config = watch_config || deployment.server.watch_config;
    let state = Arc::new(AppState {
        engine: engine.clone(),
        models: ModelRepository::new(models),
        metrics: Default::default(),
        settings: deployment.server.clone(),
        admin_token: admin::server_token(deployment.server.admin_token.as_ref()),
        deployment_seen: parking_lot::Mutex::new(ContentDigest::of_file(&deployment.source).ok()),
        deployment: parking_lot::Mutex::new(deployment.clone()),
        store,
    });
    let watched: BTreeMap<String, std::path::PathBuf> = engine
        .registry()
        .plugins()
        .iter()
        .filter(|p| {
            deployment
                .plugins
                .iter()
                .any(|s| s.watch && s.resolved == p.source())
        })
        .map(|p| (p.name().to_owned(), p.source().to_owned()))
        .collect();
    let _watcher =
        watch::watch_plugins(state.clone(), watched).context("cannot watch plugin files")?;
    let _deployment_watcher = if watch_config {
        watch::watch_deployment(state.clone(), deployment.source.clone()).with_context(|| {
            format!(
                "cannot watch deployment file {}",
                deployment.source.display()
            )
        })?
    } else {
        None
    };

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("opal-server")
        .build()
        .context("cannot start the server's runtime")?;
    let served = runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(&listen)
            .await
            .with_context(|| format!("cannot listen on {listen}"))?;
        let address = listener.local_addr()?;
        let serving = state.models.serving().len();
        tracing::info!(%address, models = serving, "opal serving");
        // A closed stdout must not stop the server: the line is for whoever started it.
        let _ = writeln!(
            std::io::stdout(),
            "opal serving {serving} model(s) on http://{address}"
        );
        let app = routes::router(state).into_make_service_with_connect_info::<SocketAddr>();
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown_signal())
            .await
            .context("the server failed")?;
        Ok(())
    });
    // A run stuck in a kernel would keep the process alive forever; it is left behind.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    drop(temporary_store);
    let _ = writeln!(std::io::stdout(), "opal stopped");
    served
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    let mut terminate =
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(signal) => signal,
            Err(_) => return interrupt.await.unwrap_or(()),
        };
    tokio::select! {
        _ = interrupt => {}
        _ = terminate.recv() => {}
    }
}
