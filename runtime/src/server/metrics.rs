//! `/metrics`: request counts by outcome and a latency histogram per model, runs going on,
//! queued, cancelled and stuck, models loaded and unloaded and the bytes each maps, plugin and
//! deployment reloads, and the engine's memory figures, in the Prometheus text format.

use opal_runtime::Engine;
use parking_lot::Mutex;
use std::{collections::BTreeMap, fmt::Write as _};

/// Upper bounds of the latency histogram's buckets, in seconds.
const BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// How a request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    Success,
    /// Past `server.request_timeout_ms` (504).
    Timeout,
    /// The model's queue was full (503).
    Rejected,
    /// Any other error.
    Failure,
}

impl Outcome {
    const ALL: [Outcome; 4] = [
        Outcome::Success,
        Outcome::Failure,
        Outcome::Timeout,
        Outcome::Rejected,
    ];

    fn label(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Failure => "failure",
            Outcome::Timeout => "timeout",
            Outcome::Rejected => "rejected",
        }
    }
}

/// What `/metrics` shows of a model's load right now.
pub(crate) struct ModelLoad<'a> {
    pub(crate) model: &'a str,
    pub(crate) running: usize,
    pub(crate) queued: usize,
    /// Bytes of the model file mapped.
    pub(crate) mapped: usize,
}

#[derive(Default)]
struct ModelFigures {
    /// Requests by outcome, in [`Outcome::ALL`]'s order.
    outcomes: [u64; 4],
    /// Runs stopped at a kernel boundary after their request timed out.
    cancelled: u64,
    /// Runs stuck in a kernel past `server.stuck_after_ms` now.
    stuck: u64,
    /// Requests per bucket (not cumulative; summed when rendered).
    buckets: [u64; BUCKETS.len()],
    seconds: f64,
    count: u64,
}

/// The server's counters.
#[derive(Default)]
pub(crate) struct Metrics {
    models: Mutex<BTreeMap<String, ModelFigures>>,
    /// (plugin, outcome) → reloads.
    reloads: Mutex<BTreeMap<(String, &'static str), u64>>,
    /// (model, outcome) → loads through the repository API.
    model_loads: Mutex<BTreeMap<(String, &'static str), u64>>,
    /// model → unloads (on request or by a deployment reload).
    model_unloads: Mutex<BTreeMap<String, u64>>,
    /// Deployment reloads: [applied, refused].
    config_reloads: Mutex<[u64; 2]>,
}

impl Metrics {
    /// Counts a request for `model` that took `seconds`.
    pub(crate) fn record_request(&self, model: &str, outcome: Outcome, seconds: f64) {
        let mut models = self.models.lock();
        let figures = models.entry(model.to_owned()).or_default();
        figures.outcomes[Outcome::ALL
            .iter()
            .position(|&o| o == outcome)
            .expect("every outcome is listed")] += 1;
        if let Some(bucket) = BUCKETS.iter().position(|&le| seconds <= le) {
            figures.buckets[bucket] += 1;
        }
        figures.seconds += seconds;
        figures.count += 1;
    }

    /// Counts a run stopped at a kernel boundary after its request timed out.
    pub(crate) fn record_cancelled(&self, model: &str) {
        self.models
            .lock()
            .entry(model.to_owned())
            .or_default()
            .cancelled += 1;
    }

    /// A run of `model` got stuck (`true`) or came back after being stuck (`false`).
    pub(crate) fn record_stuck(&self, model: &str, stuck: bool) {
        let mut models = self.models.lock();
        let figures = models.entry(model.to_owned()).or_default();
        if stuck {
            figures.stuck += 1;
        } else {
            figures.stuck = figures.stuck.saturating_sub(1);
        }
    }

    /// Counts a plugin reload.
    pub(crate) fn record_reload(&self, plugin: &str, succeeded: bool) {
        let outcome = if succeeded { "success" } else { "failure" };
        *self
            .reloads
            .lock()
            .entry((plugin.to_owned(), outcome))
            .or_default() += 1;
    }

    /// Counts a model load through the repository API.
    pub(crate) fn record_model_load(&self, model: &str, succeeded: bool) {
        let outcome = if succeeded { "success" } else { "failure" };
        *self
            .model_loads
            .lock()
            .entry((model.to_owned(), outcome))
            .or_default() += 1;
    }

    /// Counts a model taken out of service.
    pub(crate) fn record_model_unload(&self, model: &str) {
        *self
            .model_unloads
            .lock()
            .entry(model.to_owned())
            .or_default() += 1;
    }

    /// Counts a deployment reload, applied or refused.
    pub(crate) fn record_config_reload(&self, applied: bool) {
        self.config_reloads.lock()[usize::from(!applied)] += 1;
    }

    /// Everything, as Prometheus text.
    pub(crate) fn render(&self, engine: &Engine, loads: &[ModelLoad<'_>]) -> String {
        let mut out = String::new();
        let models = self.models.lock();
        header(
            &mut out,
            "opal_requests_total",
            "counter",
            "Inference requests by model and outcome.",
        );
        for (model, f) in models.iter() {
            for (outcome, n) in Outcome::ALL.iter().zip(f.outcomes) {
                let _ = writeln!(
                    out,
                    "opal_requests_total{{model=\"{}\",outcome=\"{}\"}} {n}",
                    escape(model),
                    outcome.label()
                );
            }
        }
        header(
            &mut out,
            "opal_runs_cancelled_total",
            "counter",
            "Runs stopped at a kernel boundary after their request timed out.",
        );
        for (model, f) in models.iter() {
            let _ = writeln!(
                out,
                "opal_runs_cancelled_total{{model=\"{}\"}} {}",
                escape(model),
                f.cancelled
            );
        }
        header(
            &mut out,
            "opal_runs_stuck",
            "gauge",
            "Runs still inside one kernel server.stuck_after_ms after their request timed out.",
        );
        for (model, f) in models.iter() {
            let _ = writeln!(
                out,
                "opal_runs_stuck{{model=\"{}\"}} {}",
                escape(model),
                f.stuck
            );
        }
        for (name, help, value) in [
            (
                "opal_runs_in_progress",
                "Runs going on, of at most max_concurrent per model.",
                (|l: &ModelLoad<'_>| l.running) as fn(&ModelLoad<'_>) -> usize,
            ),
            (
                "opal_queued_requests",
                "Requests waiting to run, of at most max_queue per model.",
                |l: &ModelLoad<'_>| l.queued,
            ),
        ] {
            header(&mut out, name, "gauge", help);
            for load in loads {
                let _ = writeln!(
                    out,
                    "{name}{{model=\"{}\"}} {}",
                    escape(load.model),
                    value(load)
                );
            }
        }
        header(
            &mut out,
            "opal_request_duration_seconds",
            "histogram",
            "Inference request latency.",
        );
        for (model, f) in models.iter() {
            let model = escape(model);
            let mut cumulative = 0;
            for (le, n) in BUCKETS.iter().zip(f.buckets) {
                cumulative += n;
                let _ = writeln!(out, "opal_request_duration_seconds_bucket{{model=\"{model}\",le=\"{le}\"}} {cumulative}");
            }
            let _ = writeln!(
                out,
                "opal_request_duration_seconds_bucket{{model=\"{model}\",le=\"+Inf\"}} {}",
                f.count
            );
            let _ = writeln!(
                out,
                "opal_request_duration_seconds_sum{{model=\"{model}\"}} {}",
                f.seconds
            );
            let _ = writeln!(
                out,
                "opal_request_duration_seconds_count{{model=\"{model}\"}} {}",
                f.count
            );
        }
        drop(models);
        outcome_counter(
            &mut out,
            ("opal_plugin_reloads_total", "plugin"),
            "Plugin reloads by plugin and outcome.",
            &self.reloads.lock(),
        );
        outcome_counter(
            &mut out,
            ("opal_model_loads_total", "model"),
            "Model loads through the repository API, by model and outcome.",
            &self.model_loads.lock(),
        );
        header(
            &mut out,
            "opal_model_unloads_total",
            "counter",
            "Models taken out of service, on request or by a deployment reload.",
        );
        for (model, n) in self.model_unloads.lock().iter() {
            let _ = writeln!(
                out,
                "opal_model_unloads_total{{model=\"{}\"}} {n}",
                escape(model)
            );
        }
        header(
            &mut out,
            "opal_config_reloads_total",
            "counter",
            "Deployment file reloads, applied or refused (an invalid file changes nothing).",
        );
        let [applied, refused] = *self.config_reloads.lock();
        let _ = writeln!(
            out,
            "opal_config_reloads_total{{outcome=\"applied\"}} {applied}"
        );
        let _ = writeln!(
            out,
            "opal_config_reloads_total{{outcome=\"refused\"}} {refused}"
        );
        header(
            &mut out,
            "opal_models_serving",
            "gauge",
            "Models serving now.",
        );
        let _ = writeln!(out, "opal_models_serving {}", loads.len());
        header(
            &mut out,
            "opal_model_mapped_bytes",
            "gauge",
            "Bytes of each serving model's file mapped (an unloaded model's mapping is released when its last request ends).",
        );
        for load in loads {
            let _ = writeln!(
                out,
                "opal_model_mapped_bytes{{model=\"{}\"}} {}",
                escape(load.model),
                load.mapped
            );
        }
        let report = engine.report();
        let gauges = [
            (
                "opal_memory_current_bytes",
                "Bytes the host holds now.",
                report.current_bytes as f64,
            ),
            (
                "opal_memory_peak_bytes",
                "Most bytes the host held at once.",
                report.peak_bytes as f64,
            ),
            (
                "opal_pool_tensors",
                "Idle tensors in the pool.",
                report.pool.pooled_tensors as f64,
            ),
            (
                "opal_pool_bytes",
                "Bytes of idle tensors in the pool.",
                report.pool.pooled_bytes as f64,
            ),
            (
                "opal_pool_hit_ratio",
                "Pool requests served by a pooled tensor.",
                report.pool.hit_rate(),
            ),
            (
                "opal_active_operators",
                "Kernels registered by the loaded plugins.",
                report.active_operators as f64,
            ),
        ];
        for (name, help, value) in gauges {
            header(&mut out, name, "gauge", help);
            let _ = writeln!(out, "{name} {value}");
        }
        header(
            &mut out,
            "opal_plugin_bytes",
            "gauge",
            "Bytes each plugin holds through the host allocator.",
        );
        for p in &report.plugins {
            let _ = writeln!(
                out,
                "opal_plugin_bytes{{plugin=\"{}\"}} {}",
                escape(&p.usage.name),
                p.usage.current_bytes
            );
        }
        header(
            &mut out,
            "opal_plugin_info",
            "gauge",
            "Loaded plugins, their versions and files.",
        );
        for plugin in engine.registry().plugins() {
            let (major, minor) = plugin.abi_version();
            let _ = writeln!(
                out,
                "opal_plugin_info{{plugin=\"{}\",version=\"{}\",abi=\"{major}.{minor}\",file=\"{}\"}} 1",
                escape(plugin.name()),
                escape(plugin.version()),
                escape(&plugin.source().display().to_string())
            );
        }
        header(
            &mut out,
            "opal_plugin_libraries_left_mapped",
            "gauge",
            "Unloaded plugin libraries still mapped: a thread or thread-local destructor of theirs pins them.",
        );
        let _ = writeln!(
            out,
            "opal_plugin_libraries_left_mapped {}",
            opal_runtime::plugin::libraries_left_mapped().len()
        );
        let isa = engine.isa();
        header(
            &mut out,
            "opal_isa_info",
            "gauge",
            "The instruction set kernels use, and the best this CPU offers.",
        );
        let _ = writeln!(
            out,
            "opal_isa_info{{isa=\"{}\",best=\"{}\",cpu=\"{}\"}} 1",
            isa.isa,
            isa.best,
            escape(&opal_runtime::instruction_set::cpu_model())
        );
        out
    }
}

/// A counter by (`label`, outcome), as `name{label="…",outcome="…"} n`.
fn outcome_counter(
    out: &mut String,
    (name, label): (&str, &str),
    help: &str,
    counts: &BTreeMap<(String, &'static str), u64>,
) {
    header(out, name, "counter", help);
    for ((value, outcome), n) in counts {
        let _ = writeln!(
            out,
            "{name}{{{label}=\"{}\",outcome=\"{outcome}\"}} {n}",
            escape(value)
        );
    }
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// A label value with `\`, `"` and newlines escaped.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
