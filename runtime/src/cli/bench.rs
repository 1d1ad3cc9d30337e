//! `opal bench`: times a model over many runs after warm-up and reports latency percentiles,
//! heap allocations per run, and memory: peak bytes, the intermediates' slab and its liveness
//! lower bound, and the data kernels prepared from constant inputs (packed weights).

use super::setup::{ModelArgs, Prepared};
use serde_json::json;
use std::io::Write as _;

#[derive(clap::Args)]
pub(crate) struct Args {
    #[command(flatten)]
    model: ModelArgs,
    /// Runs before the measured ones.
    #[arg(long, default_value_t = 3)]
    warmup: usize,
    /// Runs measured.
    #[arg(long, default_value_t = 20)]
    iterations: usize,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

pub(crate) fn main(args: Args) -> anyhow::Result<()> {
    let threads = args.model.threads;
    let mut prepared = Prepared::new(args.model)?;
    let iterations = args.iterations.max(1);
    // The first run compiles the plan: its time is reported apart.
    let first_run_ms = prepared.measure(1)?.times_ms[0];
    if args.warmup > 1 {
        prepared.measure(args.warmup - 1)?;
    }
    let measured = prepared.measure(iterations)?;
    let allocations_per_run =
        (measured.host_allocations + measured.plugin_allocations) as f64 / iterations as f64;
    let times = &measured.times_ms;
    let percentile = |p: f64| measured.percentile(p);
    let plan = prepared
        .session
        .plan()
        .expect("a run compiles a plan")
        .clone();
    let report = prepared.engine.report();
    let threads = threads.unwrap_or(prepared.deployment.engine.threads);
    let out = &mut std::io::stdout().lock();
    if args.json {
        let value = json!({
            "model": prepared.spec.name,
            "threads": threads,
            "iterations": iterations,
            "median_ms": percentile(0.5),
            "p90_ms": percentile(0.9),
            "min_ms": times[0],
            "mean_ms": times.iter().sum::<f64>() / times.len() as f64,
            "first_run_ms": first_run_ms,
            "first_output_ms": prepared.first_output_ms,
            "allocations_per_run": allocations_per_run,
            "peak_bytes": report.peak_bytes,
            "slab_bytes": plan.slab_bytes(),
            "liveness_lower_bound_bytes": plan.liveness_lower_bound(),
            "prepared_bytes": plan.prepared_bytes(),
            "kernel_calls": plan.steps().len(),
            "fused_nodes": plan.fused_nodes(),
            "kernel_calls_inferred_at_run_time": plan.steps().iter().filter(|s| s.infer_at_run_time).count(),
        });
        writeln!(out, "{value}")?;
    } else {
        writeln!(
            out,
            "{}: {iterations} runs on {threads} thread(s): median {:.3} ms, p90 {:.3} ms, min {:.3} ms",
            prepared.spec.name,
            percentile(0.5),
            percentile(0.9),
            times[0]
        )?;
        writeln!(
            out,
            "Kernel calls per run: {} ({} nodes fused into them); heap allocations per run after warm-up: {allocations_per_run}",
            plan.steps().len(),
            plan.fused_nodes()
        )?;
        writeln!(
            out,
            "Peak {} bytes; intermediates' slab {} bytes, liveness lower bound {} bytes; \
             prepared from constants {} bytes",
            report.peak_bytes,
            plan.slab_bytes(),
            plan.liveness_lower_bound(),
            plan.prepared_bytes()
        )?;
    }
    Ok(())
}
