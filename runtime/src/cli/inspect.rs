//! `opal inspect MODEL.onnx`: the model's inputs, outputs and opsets, how often each operator
//! occurs, which loaded plugin serves it, and which operators no loaded plugin provides.

use opal_runtime::{onnx::Dim, Engine};
use std::{collections::BTreeMap, io::Write as _, path::PathBuf};

#[derive(clap::Args)]
pub(crate) struct Args {
    /// The model file.
    model: PathBuf,
    /// Deployment whose plugins are asked; the embedded default when absent.
    #[arg(long)]
    config: Option<PathBuf>,
}

pub(crate) fn main(args: Args) -> anyhow::Result<()> {
    let deployment = super::deployment(args.config.as_ref())?;
    let engine = Engine::new(&deployment)?;
    let model = engine.load_model(&args.model)?;
    let registry = engine.registry();
    let out = &mut std::io::stdout().lock();
    writeln!(out, "Model: {}", args.model.display())?;
    let describe = |id: usize| {
        let value = &model.values[id];
        let dtype = value.dtype.map_or("?".to_owned(), |d| d.to_string());
        let shape = value.shape.as_ref().map_or("?".to_owned(), |dims| {
            let dims: Vec<String> = dims
                .iter()
                .map(|d| match d {
                    Dim::Fixed(n) => n.to_string(),
                    Dim::Symbol(s) => s.clone(),
                    Dim::Unknown => "?".to_owned(),
                })
                .collect();
            format!("[{}]", dims.join(", "))
        });
        format!("{} {dtype} {shape}", value.name)
    };
    writeln!(out, "Inputs:")?;
    for &id in &model.inputs {
        writeln!(out, "  {}", describe(id))?;
    }
    writeln!(out, "Outputs:")?;
    for &id in &model.outputs {
        writeln!(out, "  {}", describe(id))?;
    }
    let mut opsets: Vec<_> = model.opsets.iter().collect();
    opsets.sort();
    writeln!(out, "Opsets:")?;
    for (domain, version) in opsets {
        let domain = if domain.is_empty() { "ai.onnx" } else { domain };
        writeln!(out, "  {domain} {version}")?;
    }
    writeln!(
        out,
        "Initializers: {} ({} bytes)",
        model.constants.len(),
        model
            .constants
            .values()
            .map(|c| c.bytes().len())
            .sum::<usize>()
    )?;
    let mut counts: BTreeMap<(String, String), usize> = BTreeMap::new();
    let nodes = model.all_nodes();
    for (_, node) in &nodes {
        *counts
            .entry((node.domain.clone(), node.op_type.clone()))
            .or_default() += 1;
    }
    let in_subgraphs = nodes.len() - model.nodes.len();
    if in_subgraphs == 0 {
        writeln!(out, "Operators ({} nodes):", nodes.len())?;
    } else {
        writeln!(
            out,
            "Operators ({} nodes, {in_subgraphs} of them in subgraphs):",
            nodes.len()
        )?;
    }
    let mut missing = Vec::new();
    for ((domain, op_type), count) in &counts {
        let opset = model.opset(domain).unwrap_or(0);
        let served = registry.lookup(domain, op_type, opset);
        let name = if domain.is_empty() || domain == "ai.onnx" {
            op_type.clone()
        } else {
            format!("{domain}:{op_type}")
        };
        let by = match served {
            Some(entry) => format!("plugin '{}'", entry.plugin_name()),
            None => {
                missing.push(format!("{name} (opset {opset})"));
                "NOT PROVIDED".to_owned()
            }
        };
        writeln!(out, "  {name:<28} {count:>5}  {by}")?;
    }
    if missing.is_empty() {
        writeln!(out, "Every operator is provided by a loaded plugin.")?;
    } else {
        writeln!(
            out,
            "Not provided by any loaded plugin: {}",
            missing.join(", ")
        )?;
    }
    Ok(())
}
