//! `opal run`: run a model (the deployment's default without arguments) several times on given
//! or synthetic inputs, then print its outputs, timings (the time to the first output among
//! them), heap allocations per run after warm-up, and the seed's statistics block — or all of
//! it as one JSON object.

use super::setup::{ModelArgs, Prepared};
use anyhow::Context;
use opal_runtime::{value::ValueView, value_file::write_value, TensorRef};
use serde_json::json;
use std::{io::Write as _, path::PathBuf};

#[derive(clap::Args)]
pub(crate) struct Args {
    #[command(flatten)]
    model: ModelArgs,
    /// Write the k-th graph output to DIR/output_<k>.npy (DIR/output_<k>.pb, an ONNX
    /// TensorProto, for element types NumPy lacks, such as bf16); a sequence to the folder
    /// DIR/output_<k>/ with one such file per element (0.npy, 1.npy, …); none to no file.
    #[arg(long)]
    output_dir: Option<PathBuf>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
    /// Runs measured (default: the deployment's run.iterations).
    #[arg(long)]
    iterations: Option<usize>,
    /// Runs before the measured ones (default: the deployment's run.warmup).
    #[arg(long)]
    warmup: Option<usize>,
}

pub(crate) fn main(args: Args) -> anyhow::Result<()> {
    let mut prepared = Prepared::new(args.model)?;
    let warmup = args.warmup.unwrap_or(prepared.deployment.run.warmup);
    let iterations = args
        .iterations
        .unwrap_or(prepared.deployment.run.iterations)
        .max(1);
    if warmup > 0 {
        prepared.measure(warmup)?;
    }
    let measured = prepared.measure(iterations)?;
    let (host, plugins) = (measured.host_allocations, measured.plugin_allocations);
    let times = &measured.times_ms;
    let state = prepared.session.run(&prepared.inputs)?;
    let model = &prepared.model;
    let outputs: Vec<(String, ValueView<'_>)> = (0..model.outputs.len())
        .filter_map(|k| {
            let value = state.output_value(k)?;
            Some((model.value_name(model.outputs[k]).to_owned(), value))
        })
        .collect();
    if let Some(dir) = &args.output_dir {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        for (k, (_, value)) in outputs.iter().enumerate() {
            write_value(dir, &format!("output_{k}"), *value).map_err(anyhow::Error::msg)?;
        }
    }
    let plan = state.plan().clone();
    let report = prepared.engine.report();
    let out = &mut std::io::stdout().lock();
    let per_run = (host + plugins) / iterations as u64;
    if args.json {
        let value = json!({
            "model": prepared.spec.name,
            "path": prepared.spec.path,
            "iterations": iterations,
            "warmup": warmup,
            "median_ms": times[times.len() / 2],
            "min_ms": times[0],
            "first_output_ms": prepared.first_output_ms,
            "allocations_per_run": per_run,
            "outputs": outputs.iter().map(|(name, v)| value_json(name, v)).collect::<Vec<_>>(),
            "memory": {
                "current_bytes": report.current_bytes,
                "peak_bytes": report.peak_bytes,
                "pooled_tensors": report.pool.pooled_tensors,
                "pool_hit_rate": report.pool.hit_rate(),
                "active_operators": report.active_operators,
            },
        });
        writeln!(out, "{value}")?;
        return Ok(());
    }
    let weights = |mapped: bool| -> usize {
        model
            .constants
            .values()
            .filter(|c| c.is_mapped() == mapped)
            .map(|c| c.bytes().len())
            .sum()
    };
    writeln!(out, "Deployment: {}", prepared.deployment.source.display())?;
    writeln!(
        out,
        "Instruction set: {} on {}",
        prepared.engine.isa(),
        opal_runtime::instruction_set::cpu_model()
    )?;
    writeln!(
        out,
        "Model: {} ({}): {} nodes, {} kernel calls per run, {} folded into constants",
        prepared.spec.name,
        prepared.spec.path.display(),
        model.nodes.len(),
        plan.steps().len(),
        plan.folded_nodes()
    )?;
    writeln!(
        out,
        "Weights: {} bytes used in place from the mapped file, {} bytes decoded into host memory, {} bytes of constants folded at compile time",
        weights(true),
        weights(false),
        plan.folded_bytes()
    )?;
    writeln!(
        out,
        "Intermediates: a slab of {} bytes (liveness lower bound {} bytes)",
        plan.slab_bytes(),
        plan.liveness_lower_bound()
    )?;
    writeln!(
        out,
        "Ran {iterations} iterations after {warmup} warm-up: median {:.3} ms, min {:.3} ms, max {:.3} ms",
        times[times.len() / 2],
        times[0],
        times[times.len() - 1]
    )?;
    if let Some(first) = prepared.first_output_ms {
        writeln!(
            out,
            "First output {first:.1} ms after the command started (loading plugins and the model, compiling, the first run)"
        )?;
    }
    writeln!(
        out,
        "Heap allocations per run after warm-up: {per_run} (host {host}, plugins {plugins}, over {iterations} runs)"
    )?;
    for (name, value) in &outputs {
        match value {
            ValueView::Tensor(t) => writeln!(out, "Output '{name}': {}", summarize(t))?,
            ValueView::Sequence(elements) => {
                writeln!(
                    out,
                    "Output '{name}': a sequence of {} tensors",
                    elements.len()
                )?;
                for (i, e) in elements.iter().enumerate() {
                    writeln!(out, "  [{i}] {}", summarize(&e.as_ref()))?;
                }
            }
            ValueView::None => writeln!(out, "Output '{name}': none")?,
        }
    }
    writeln!(out)?;
    write!(out, "{report}")?;
    Ok(())
}

/// Sum, min and max of a tensor's elements as f64, if it is a float tensor.
fn float_stats(t: &TensorRef<'_>) -> Option<(f64, f64, f64)> {
    let values: Vec<f64> = match t.dtype {
        opal_plugin_api::DType::F32 => t.as_slice::<f32>()?.iter().map(|&v| f64::from(v)).collect(),
        opal_plugin_api::DType::F64 => t.as_slice::<f64>()?.to_vec(),
        _ => return None,
    };
    let sum = values.iter().sum();
    let min = values.iter().copied().fold(f64::INFINITY, f64::min);
    let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    Some((sum, min, max))
}

/// `f32 [1, 10]: sum …, min …, max …, first [...]`.
fn summarize(t: &TensorRef<'_>) -> String {
    let head = format!("{} {:?}", t.dtype, t.shape);
    let (Some((sum, min, max)), Some(values)) = (float_stats(t), t.as_slice::<f32>()) else {
        return format!("{head}, {} bytes", t.data.len());
    };
    let first: Vec<String> = values.iter().take(6).map(|v| format!("{v:.5}")).collect();
    format!(
        "{head}: sum {sum:.5}, min {min:.5}, max {max:.5}, first [{}{}]",
        first.join(", "),
        if values.len() > 6 { ", …" } else { "" }
    )
}

/// An output as JSON: a tensor's summary; a sequence's elements' summaries; none as `null`.
fn value_json(name: &str, value: &ValueView<'_>) -> serde_json::Value {
    match value {
        ValueView::Tensor(t) => summary_json(name, t),
        ValueView::Sequence(elements) => json!({
            "name": name,
            "sequence": elements
                .iter()
                .map(|e| summary_json(name, &e.as_ref()))
                .collect::<Vec<_>>(),
        }),
        ValueView::None => json!({ "name": name, "none": true }),
    }
}

fn summary_json(name: &str, t: &TensorRef<'_>) -> serde_json::Value {
    let stats = float_stats(t);
    json!({
        "name": name,
        "dtype": t.dtype.name(),
        "shape": t.shape,
        "sum": stats.map(|s| s.0),
        "min": stats.map(|s| s.1),
        "max": stats.map(|s| s.2),
    })
}
