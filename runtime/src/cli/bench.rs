//! `opal bench`: times a model over many runs after warm-up and reports latency percentiles,
//! heap allocations per run, and memory: peak bytes, the intermediates' slab and its liveness
//! lower bound, and the data kernels prepared from constant inputs (packed weights); with
//! `--profile`, the time per operator.

use super::setup::{ModelArgs, Prepared};
use opal_runtime::{instruction_set::cpu_model, plan::Plan};
use serde_json::json;
use std::{collections::BTreeMap, io::Write as _, time::Duration};

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
    /// Also report where the time goes: per operator (a fused call counts under its node's
    /// operator joined with the absorbed ones, as `Conv+BatchNormalization+Relu`), per run.
    #[arg(long)]
    profile: bool,
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
    prepared.session.set_profiling(args.profile);
    let measured = prepared.measure(iterations)?;
    let (profile, steps) = match prepared.session.profile() {
        Some((plan, times)) => (
            Some(profile_by_operator(plan, times, iterations)),
            Some(slowest_steps(plan, times, iterations)),
        ),
        None => (None, None),
    };
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
            "isa": prepared.engine.isa().isa.name(),
            "cpu": cpu_model(),
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
        let mut value = value;
        if let Some(profile) = &profile {
            value["profile"] = profile
                .iter()
                .map(|row| json!({"operator": row.operator, "calls": row.calls, "ms": row.ms}))
                .collect();
        }
        if let Some(steps) = &steps {
            value["steps"] = steps
                .iter()
                .map(|(node, ms)| json!({"node": node, "ms": ms}))
                .collect();
        }
        writeln!(out, "{value}")?;
    } else {
        writeln!(
            out,
            "{}: {iterations} runs on {threads} thread(s), {} kernels on {}: median {:.3} ms, p90 {:.3} ms, min {:.3} ms",
            prepared.spec.name,
            prepared.engine.isa(),
            cpu_model(),
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
        if let Some(profile) = &profile {
            let total: f64 = profile.iter().map(|row| row.ms).sum();
            writeln!(out, "Time per run by operator (calls per run):")?;
            for row in profile {
                writeln!(
                    out,
                    "  {:>8.3} ms {:>5.1}%  {} ({})",
                    row.ms,
                    100.0 * row.ms / total.max(f64::MIN_POSITIVE),
                    row.operator,
                    row.calls
                )?;
            }
        }
        if let Some(steps) = &steps {
            writeln!(out, "Slowest kernel calls (time per run):")?;
            for (node, ms) in steps.iter().take(SLOWEST_SHOWN) {
                writeln!(out, "  {ms:>8.3} ms  {node}")?;
            }
        }
    }
    Ok(())
}

/// Kernel calls listed by `--profile`'s text report.
const SLOWEST_SHOWN: usize = 10;

/// Every step (its node and the nodes fused into it) with its time per run, slowest first.
fn slowest_steps(plan: &Plan, times: &[Duration], runs: usize) -> Vec<(String, f64)> {
    let mut steps: Vec<(String, f64)> = plan
        .steps()
        .iter()
        .zip(times)
        .map(|(step, time)| {
            let ms = time.as_secs_f64() * 1e3 / runs.max(1) as f64;
            (plan.describe_step(step), ms)
        })
        .collect();
    steps.sort_by(|a, b| b.1.total_cmp(&a.1));
    steps
}

/// Time per run spent in one operator's kernel calls.
struct ProfileRow {
    operator: String,
    calls: usize,
    ms: f64,
}

/// The steps' times per run, added up by operator (fused calls by the chain they run),
/// slowest first.
fn profile_by_operator(plan: &Plan, times: &[Duration], runs: usize) -> Vec<ProfileRow> {
    let model = plan.model();
    let mut rows: BTreeMap<String, (usize, Duration)> = BTreeMap::new();
    for (step, time) in plan.steps().iter().zip(times) {
        let mut operator = step.kernel.describe();
        for &node in step.fusion.iter().flat_map(|f| &f.nodes) {
            operator.push('+');
            operator.push_str(&model.nodes[node].op_type);
        }
        let row = rows.entry(operator).or_default();
        row.0 += 1;
        row.1 += *time;
    }
    let mut rows: Vec<ProfileRow> = rows
        .into_iter()
        .map(|(operator, (calls, time))| ProfileRow {
            operator,
            calls,
            ms: time.as_secs_f64() * 1e3 / runs.max(1) as f64,
        })
        .collect();
    rows.sort_by(|a, b| b.ms.total_cmp(&a.ms));
    rows
}
