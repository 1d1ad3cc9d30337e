//! `opal plugins`: the instruction set kernels use, the loaded plugins (name, version, ABI, the
//! file the deployment names) and their operators.

use opal_runtime::Engine;
use std::{io::Write as _, path::PathBuf};

#[derive(clap::Args)]
pub(crate) struct Args {
    /// Deployment file; the embedded default when absent.
    #[arg(long)]
    config: Option<PathBuf>,
}

pub(crate) fn main(args: Args) -> anyhow::Result<()> {
    let out = &mut std::io::stdout().lock();
    let deployment = super::deployment(args.config.as_ref())?;
    let engine = Engine::new(&deployment)?;
    let registry = engine.registry();
    writeln!(out, "Deployment: {}", deployment.source.display())?;
    writeln!(
        out,
        "Instruction set: {} on {}",
        engine.isa(),
        opal_runtime::instruction_set::cpu_model()
    )?;
    for plugin in registry.plugins() {
        let (major, minor) = plugin.abi_version();
        writeln!(
            out,
            "\nplugin {} {} (ABI {major}.{minor}) from {}",
            plugin.name(),
            plugin.version(),
            plugin.source().display()
        )?;
        for (key, entry) in registry.all() {
            if entry.plugin_name() != plugin.name() {
                continue;
            }
            let until = if entry.until_version() == i64::MAX {
                "+".to_owned()
            } else {
                format!("-{}", entry.until_version())
            };
            let domain = if key.domain.is_empty() {
                "ai.onnx"
            } else {
                &key.domain
            };
            writeln!(
                out,
                "  {:<24} {domain:<12} opset {}{until}",
                key.op_type,
                entry.since_version()
            )?;
        }
    }
    Ok(())
}
