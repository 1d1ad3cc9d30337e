//! `opal run`: run a model (the deployment's default without arguments) several times on
//! synthetic inputs, then print its outputs, timings, heap allocations per run after warm-up,
//! and the seed's statistics block.

use anyhow::Context;
use opal_runtime::{
    config::ModelSpec, memory::heap_allocations, synthetic::synthetic_tensor, Engine, Session,
    Tensor, TensorRef,
};
use std::{collections::BTreeMap, io::Write as _, path::PathBuf, time::Instant};

#[derive(clap::Args)]
pub(crate) struct Args {
    /// An .onnx file, or the name of a model in the deployment; the deployment's default model
    /// when absent.
    model: Option<String>,
    /// Deployment file; the embedded default when absent.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Size of a symbolic input dim, as SYMBOL=N (repeatable).
    #[arg(long = "dim", value_parser = parse_dim)]
    dims: Vec<(String, usize)>,
    /// Runs measured (default: the deployment's run.iterations).
    #[arg(long)]
    iterations: Option<usize>,
    /// Runs before the measured ones (default: the deployment's run.warmup).
    #[arg(long)]
    warmup: Option<usize>,
}

fn parse_dim(s: &str) -> Result<(String, usize), String> {
    let (name, value) = s
        .split_once('=')
        .ok_or_else(|| format!("'{s}' is not SYMBOL=N"))?;
    let value = value
        .parse()
        .map_err(|_| format!("'{value}' in '{s}' is not a non-negative integer"))?;
    Ok((name.to_owned(), value))
}

pub(crate) fn main(args: Args) -> anyhow::Result<()> {
    let out = &mut std::io::stdout().lock();
    let deployment = super::deployment(args.config.as_ref())?;
    let spec = pick_model(&deployment, args.model.as_deref())?;
    let engine = Engine::new(&deployment)?;
    let model = engine.load_model(&spec.path)?;
    let mut dims = spec.dims.clone();
    dims.extend(args.dims);
    let mut session = Session::new(engine.clone(), model.clone(), dims);

    let inputs: Vec<Tensor> = session
        .declared_input_types()?
        .iter()
        .enumerate()
        .map(|(k, (dtype, shape))| {
            synthetic_tensor(
                *dtype,
                shape,
                k as u64 + 1,
                &engine.tracker().owner("inputs"),
            )
            .with_context(|| format!("cannot make a {dtype} {shape:?} input"))
        })
        .collect::<anyhow::Result<_>>()?;
    let views: Vec<TensorRef<'_>> = inputs.iter().map(Tensor::as_ref).collect();

    let warmup = args.warmup.unwrap_or(deployment.run.warmup);
    let iterations = args.iterations.unwrap_or(deployment.run.iterations).max(1);
    for _ in 0..warmup {
        session.run(&views)?;
    }
    let mut times = Vec::with_capacity(iterations);
    let host_before = heap_allocations();
    let plugins_before = plugin_heap_allocations(&engine);
    for _ in 0..iterations {
        let start = Instant::now();
        session.run(&views)?;
        times.push(start.elapsed().as_secs_f64() * 1e3);
    }
    let host_allocations = heap_allocations() - host_before;
    let plugin_allocations = plugin_heap_allocations(&engine) - plugins_before;

    let plan = session.plan().context("a run compiles a plan")?.clone();
    let mapped: usize = model
        .constants
        .values()
        .filter(|c| c.is_mapped())
        .map(|c| c.bytes().len())
        .sum();
    let copied: usize = model
        .constants
        .values()
        .filter(|c| !c.is_mapped())
        .map(|c| c.bytes().len())
        .sum();
    writeln!(out, "Deployment: {}", deployment.source.display())?;
    writeln!(
        out,
        "Model: {} ({}): {} nodes, {} kernel calls per run, {} folded into constants",
        spec.name,
        spec.path.display(),
        model.nodes.len(),
        plan.steps().len(),
        plan.folded_nodes()
    )?;
    writeln!(
        out,
        "Weights: {mapped} bytes used in place from the mapped file, {copied} bytes decoded into host memory"
    )?;
    times.sort_by(f64::total_cmp);
    writeln!(
        out,
        "Ran {iterations} iterations after {warmup} warm-up: median {:.3} ms, min {:.3} ms, max {:.3} ms",
        times[times.len() / 2],
        times[0],
        times[times.len() - 1]
    )?;
    writeln!(
        out,
        "Heap allocations per run after warm-up: {} (host {host_allocations}, plugins {plugin_allocations}, over {iterations} runs)",
        (host_allocations + plugin_allocations) / iterations as u64
    )?;
    let state = session.run(&views)?;
    for (k, output) in state.outputs().enumerate() {
        let name = model.value_name(model.outputs[k]);
        writeln!(out, "Output '{name}': {}", summarize(&output))?;
    }
    writeln!(out)?;
    write!(out, "{}", engine.report())?;
    Ok(())
}

/// The deployment's model named `wanted`, or an ad-hoc entry for an .onnx path.
fn pick_model(
    deployment: &opal_runtime::Deployment,
    wanted: Option<&str>,
) -> anyhow::Result<ModelSpec> {
    match wanted {
        None => deployment.default_model().cloned().with_context(|| {
            format!(
                "deployment {} declares no model; give one: opal run MODEL.onnx",
                deployment.source.display()
            )
        }),
        Some(name) => match deployment.model(name) {
            Some(spec) => Ok(spec.clone()),
            None if name.ends_with(".onnx") || std::path::Path::new(name).exists() => {
                Ok(ModelSpec {
                    name: name.to_owned(),
                    path: PathBuf::from(name),
                    dims: BTreeMap::new(),
                })
            }
            None => anyhow::bail!(
                "'{name}' is neither an .onnx file nor a model of deployment {}",
                deployment.source.display()
            ),
        },
    }
}

fn plugin_heap_allocations(engine: &Engine) -> u64 {
    engine
        .registry()
        .plugins()
        .iter()
        .filter_map(|p| p.own_heap_allocations())
        .sum()
}

/// `f32 [1, 10]: sum …, min …, max …, first [...]`.
fn summarize(t: &TensorRef<'_>) -> String {
    let head = format!("{} {:?}", t.dtype, t.shape);
    let Some(values) = t.as_slice::<f32>() else {
        return format!("{head}, {} bytes", t.data.len());
    };
    let sum: f64 = values.iter().map(|&v| f64::from(v)).sum();
    let min = values.iter().copied().fold(f32::INFINITY, f32::min);
    let max = values.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let first: Vec<String> = values.iter().take(6).map(|v| format!("{v:.5}")).collect();
    format!(
        "{head}: sum {sum:.5}, min {min:.5}, max {max:.5}, first [{}{}]",
        first.join(", "),
        if values.len() > 6 { ", …" } else { "" }
    )
}
