//! `opal serve`, `opal reload`, `opal reload-config` and `opal config check`: serving a
//! deployment over HTTP, asking a running server to reload a plugin or its deployment file, and
//! validating a deployment file without serving it.

use anyhow::{bail, Context};
use opal_runtime::{Deployment, Engine};
use std::{
    io::{Read as _, Write as _},
    net::TcpStream,
    path::PathBuf,
    time::Duration,
};

#[derive(clap::Args)]
pub(crate) struct ServeArgs {
    /// Deployment file; the embedded default when absent.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Address to listen on (default: the deployment's server.listen).
    #[arg(long)]
    listen: Option<String>,
    /// Apply changes of the deployment file while serving (as `server.watch_config = true`).
    #[arg(long)]
    watch_config: bool,
}

pub(crate) fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let deployment = super::deployment(args.config.as_ref())?;
    crate::server::serve(deployment, args.listen, args.watch_config)
}

#[derive(clap::Args)]
pub(crate) struct ReloadArgs {
    /// The plugin's name.
    name: String,
    /// The server's address, e.g. 127.0.0.1:8000.
    #[arg(long)]
    server: String,
}

/// Asks the server to reload the plugin and prints its answer, sending the admin token from
/// `OPAL_ADMIN_TOKEN` when it is set.
pub(crate) fn reload(args: ReloadArgs) -> anyhow::Result<()> {
    let path = format!("/v2/plugins/{}/reload", args.name);
    admin_post(&args.server, &path, "reload")
}

#[derive(clap::Args)]
pub(crate) struct ReloadConfigArgs {
    /// The server's address, e.g. 127.0.0.1:8000.
    #[arg(long)]
    server: String,
}

/// Asks the server to apply its deployment file again and prints what changed.
pub(crate) fn reload_config(args: ReloadConfigArgs) -> anyhow::Result<()> {
    admin_post(
        &args.server,
        "/v2/repository/reload-config",
        "deployment reload",
    )
}

/// POSTs to an admin endpoint of the server at `server`, with the admin token from
/// `OPAL_ADMIN_TOKEN` when it is set, and prints the answer; an error unless it is 200.
fn admin_post(server: &str, path: &str, what: &str) -> anyhow::Result<()> {
    let address = server.trim_start_matches("http://").trim_end_matches('/');
    let mut stream = TcpStream::connect(address)
        .with_context(|| format!("cannot reach the server at {address}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(600)))?;
    // The admin token, when the server requires one.
    let authorization = crate::server::admin_token_from_environment()
        .map(|token| format!("Authorization: Bearer {}\r\n", token.secret()))
        .unwrap_or_default();
    write!(
        stream,
        "POST {path} HTTP/1.1\r\nHost: {address}\r\n{authorization}Content-Length: 0\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let status = response.split_whitespace().nth(1).unwrap_or("?").to_owned();
    let body = response
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .trim();
    println!("{body}");
    if status != "200" {
        bail!("the server refused the {what} (HTTP {status})");
    }
    Ok(())
}

#[derive(clap::Args)]
pub(crate) struct ConfigCheckArgs {
    /// The deployment file.
    file: PathBuf,
}

/// Parses the deployment, loads its plugins and models, and reports what it would serve.
pub(crate) fn config_check(args: ConfigCheckArgs) -> anyhow::Result<()> {
    let deployment = Deployment::from_file(&args.file)?;
    let engine = Engine::new(&deployment)?;
    for spec in &deployment.models {
        engine.load_model(&spec.path).with_context(|| {
            format!(
                "model '{}' of deployment {}",
                spec.name,
                args.file.display()
            )
        })?;
    }
    let registry = engine.registry();
    println!(
        "{}: OK: {} plugin(s) with {} kernels, {} model(s), serving on {}",
        args.file.display(),
        registry.plugins().len(),
        registry.operator_count(),
        deployment.models.len(),
        deployment.server.listen
    );
    Ok(())
}
