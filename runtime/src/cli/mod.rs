//! The command line: argument parsing and one module per subcommand.

mod bench;
mod check;
mod inspect;
mod plugins;
mod run;
mod serve;
mod setup;

use clap::{Parser, Subcommand};
use opal_runtime::Deployment;
use std::{path::PathBuf, process::ExitCode};

/// opal: a CPU inference runtime for ONNX models whose operators are plugins.
#[derive(Parser)]
#[command(name = "opal", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// List the deployment's plugins and the operators each provides.
    Plugins(plugins::Args),
    /// Run a model several times and print its outputs and the memory statistics.
    Run(run::Args),
    /// Run ONNX backend-test cases and compare their outputs with the references.
    Check(check::Args),
    /// Time a model: latency percentiles, heap allocations per run, peak memory.
    Bench(bench::Args),
    /// Show a model's inputs, outputs, opsets and operators, and which plugin serves each.
    Inspect(inspect::Args),
    /// Serve the deployment's models over the KServe v2 / Triton HTTP protocol.
    Serve(serve::ServeArgs),
    /// Ask a running server to reload a plugin from its file (with the admin token from
    /// OPAL_ADMIN_TOKEN, when the server requires one).
    Reload(serve::ReloadArgs),
    /// Ask a running server to apply its deployment file again: models and plugins added,
    /// removed or changed (with the admin token from OPAL_ADMIN_TOKEN, when it requires one).
    ReloadConfig(serve::ReloadConfigArgs),
    /// Deployment files.
    #[command(subcommand)]
    Config(ConfigCommand),
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Validate a deployment file: parse it, load its plugins and models, serve nothing.
    Check(serve::ConfigCheckArgs),
}

pub(crate) fn main() -> ExitCode {
    setup::COMMAND_START.get_or_init(std::time::Instant::now);
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("OPAL_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let result = match cli.command {
        Command::Plugins(args) => plugins::main(args).map(|()| ExitCode::SUCCESS),
        Command::Run(args) => run::main(args).map(|()| ExitCode::SUCCESS),
        Command::Check(args) => check::main(args),
        Command::Bench(args) => bench::main(args).map(|()| ExitCode::SUCCESS),
        Command::Inspect(args) => inspect::main(args).map(|()| ExitCode::SUCCESS),
        Command::Serve(args) => serve::serve(args).map(|()| ExitCode::SUCCESS),
        Command::Reload(args) => serve::reload(args).map(|()| ExitCode::SUCCESS),
        Command::ReloadConfig(args) => serve::reload_config(args).map(|()| ExitCode::SUCCESS),
        Command::Config(ConfigCommand::Check(args)) => {
            serve::config_check(args).map(|()| ExitCode::SUCCESS)
        }
    };
    match result {
        Ok(code) => code,
        // The reader went away (`opal run | head`): nothing left to say to it.
        Err(error) if is_broken_pipe(&error) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error
        .downcast_ref::<std::io::Error>()
        .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
}

/// The deployment at `path`, or the embedded default.
fn deployment(path: Option<&PathBuf>) -> anyhow::Result<Deployment> {
    Ok(match path {
        Some(path) => Deployment::from_file(path)?,
        None => Deployment::embedded_default()?,
    })
}
