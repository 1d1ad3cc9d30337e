//! A deployment changing under load: four clients on model `a` for 30 s while model `b` is
//! loaded from a file sent inline, replaced, unloaded and loaded again, one step every 2 s,
//! and the deployment file is edited to change `a`'s `max_concurrent` and to add (then remove)
//! a plugin. No request of `a` fails or gets a wrong answer, the index reflects every step,
//! and resident memory, mapped files and open descriptors end where they started. The p99 of
//! `a` under churn is printed beside its calm p99, measured in the same run.

use base64::Engine as _;
use opal_tests::{
    live_models::{answering_version, metric, state_of, version_of, LiveDeployment, ONES},
    p99, settled_footprint, Check, Clients, Footprint, Server,
};
use serde_json::json;
use std::{
    sync::Arc,
    time::{Duration, Instant},
};

/// Files whose mappings must end as they started: models and plugin copies.
const MAPPED: [&str; 2] = [".onnx", "opal-plugins/"];

/// One step of the churn, and what the index and `b` must show after it.
fn churn_step(live: &LiveDeployment, server: &Server, step: usize) -> String {
    let post = |path: &str, body: &[u8]| {
        let reply = server.post(path, &[], body);
        assert_eq!(reply.status, 200, "step {step}, {path}: {}", reply.text());
    };
    let (action, state, version) = match step % 4 {
        0 => {
            let file = base64::engine::general_purpose::STANDARD
                .encode(std::fs::read(live.path("b2.onnx")).unwrap());
            let body =
                json!({"parameters": {"config": "{\"name\": \"b\"}", "file:1/model.onnx": file}});
            post("/v2/repository/models/b/load", body.to_string().as_bytes());
            ("load b from a file sent inline", "READY", Some(2.0))
        }
        1 => {
            let config = format!("path = \"{}\"", live.path("b3.onnx").display());
            let body = json!({"parameters": {"config": config}});
            post("/v2/repository/models/b/load", body.to_string().as_bytes());
            ("replace b", "READY", Some(3.0))
        }
        2 => {
            post("/v2/repository/models/b/unload", b"");
            ("unload b", "UNAVAILABLE", None)
        }
        _ => {
            post("/v2/repository/models/b/load", b"");
            ("load b again from the deployment", "READY", Some(1.0))
        }
    };
    assert_eq!(
        state_of(server, "b").as_deref(),
        Some(state),
        "after {action}"
    );
    match version {
        Some(v) => assert_eq!(
            answering_version(server, "b").ok(),
            Some(v),
            "after {action}"
        ),
        None => assert_eq!(answering_version(server, "b").unwrap_err().status, 404),
    }
    // Every other step also edits the deployment: a's max_concurrent and the nn plugin.
    if step % 2 == 1 {
        let changed = step % 4 == 1;
        let max_concurrent = if changed { 3 } else { 2 };
        live.write_deployment(&live.deployment_text(max_concurrent, changed, ""));
        post("/v2/repository/reload-config", b"");
        let has_nn = server.get("/v2/plugins").text().contains("\"nn\"");
        assert_eq!(has_nn, changed, "after the deployment edit of step {step}");
    }
    action.to_owned()
}

/// Four clients on `a` for `duration`, with a churn step every 2 s when `churn`; returns the
/// latencies of `a` and the number of steps.
fn phase(
    live: &LiveDeployment,
    server: &Server,
    duration: Duration,
    churn: bool,
) -> (Vec<f64>, usize) {
    let check: Check = Arc::new(|reply| version_of(reply) == Some(1.0));
    let clients = Clients::start(4, &server.address, "/v2/models/a/infer", ONES, check);
    let started = Instant::now();
    let mut steps = 0;
    while started.elapsed() < duration {
        if churn {
            churn_step(live, server, steps);
            steps += 1;
            std::thread::sleep(Duration::from_secs(2));
        } else {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    let (latencies, failures) = clients.stop();
    assert_eq!(failures, 0, "requests of a failed or were answered wrongly");
    // End where the deployment starts: b loaded from it, no extra plugin. The clients stop
    // first, so the last edit's drop of idle sessions leaves the same sessions every time:
    // how many `a` grows back under load depends on how its runs happened to overlap.
    while churn && steps % 4 != 0 {
        churn_step(live, server, steps);
        steps += 1;
    }
    (latencies, steps)
}

fn describe(f: &Footprint) -> String {
    format!(
        "resident {} KiB, {} descriptors, {} mapped model files and plugin copies",
        f.resident_kib,
        f.descriptors,
        f.mapped.len()
    )
}

#[test]
fn a_deployment_changing_under_load_fails_no_request_and_ends_where_it_started() {
    let live = LiveDeployment::new("");
    let server = live.serve();
    // Warm-up: one round of every step, so the allocator and threads reach their steady state.
    phase(&live, &server, Duration::from_secs(1), true);
    let start = settled_footprint(server.pid(), &MAPPED);
    let tracked_at_start = metric(&server, "opal_memory_current_bytes");
    let (mut calm, _) = phase(&live, &server, Duration::from_secs(8), false);
    let (mut busy, steps) = phase(&live, &server, Duration::from_secs(30), true);
    assert!(steps >= 12, "only {steps} steps in 30 s");
    let end = settled_footprint(server.pid(), &MAPPED);
    let tracked_at_end = metric(&server, "opal_memory_current_bytes");
    // Checked after the readings: the request makes `a` a session again.
    assert_eq!(answering_version(&server, "a").unwrap(), 1.0);
    let (calm_p99, busy_p99) = (p99(&mut calm), p99(&mut busy));
    println!(
        "live deployment under load: {} requests of a while calm (p99 {:.2} ms), {} during {steps} changes of b and {} deployment edits (p99 {:.2} ms): ratio {:.2}, 0 failed; start: {}, {tracked_at_start} bytes tracked by the host; end: {}, {tracked_at_end} bytes",
        calm.len(),
        calm_p99 * 1e3,
        busy.len(),
        steps / 2,
        busy_p99 * 1e3,
        busy_p99 / calm_p99,
        describe(&start),
        describe(&end),
    );
    assert_eq!(end.mapped, start.mapped, "mapped files changed");
    // Every byte the host tracks (plans, slabs, prepared weights, pooled tensors) is back: the
    // models unloaded and replaced left nothing behind.
    assert_eq!(
        tracked_at_end, tracked_at_start,
        "the host's tracked memory changed: {tracked_at_start} → {tracked_at_end} bytes"
    );
    assert_eq!(end.descriptors, start.descriptors, "{start:?} → {end:?}");
    assert!(
        end.resident_kib < start.resident_kib + 16 * 1024,
        "resident memory grew: {start:?} → {end:?}"
    );
}
