//! `opal serve` under pressure: requests past their timeout stop their run at the next kernel
//! boundary, a kernel that never returns is reported stuck while other models keep serving, a
//! full queue answers 503 with `Retry-After`, 64 clients against one slot all get an answer,
//! and a run whose shapes would pass the memory limit fails cleanly.

use opal_tests::{plugin, ModelBuilder, Server};
use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

/// A chain of `length` `opal.test:Slow` nodes over an f32 input of 2 elements: each sleeps as
/// many milliseconds as element 0 says; element 1 comes out as the most `Slow` kernels seen
/// running at once.
fn slow_chain(dir: &Path, length: usize) -> PathBuf {
    let mut builder = ModelBuilder::new(17)
        .opset("opal.test", 1)
        .input("x", &[2])
        .output("y", &[2]);
    for k in 0..length {
        let input = if k == 0 {
            "x".to_owned()
        } else {
            format!("t{k}")
        };
        let output = if k + 1 == length {
            "y".to_owned()
        } else {
            format!("t{}", k + 1)
        };
        builder = builder.node(
            &format!("slow{k}"),
            "opal.test",
            "Slow",
            &[&input],
            &[&output],
            &[],
        );
    }
    builder.write(dir, "slow.onnx")
}

/// A deployment of core-math, tensor-ops and the faulty plugin, with `models` (TOML tables) and `server`
/// (the `[server]` table's lines).
fn deployment(dir: &Path, models: &str, server: &str) -> PathBuf {
    let path = dir.join("deploy.toml");
    std::fs::write(
        &path,
        format!(
            "[[plugins]]\npath = \"{}\"\n\n[[plugins]]\npath = \"{}\"\n\n[[plugins]]\npath = \"{}\"\n\n[operators]\nRelu = \"core-math\"\n\n{models}\n[server]\n{server}\n",
            plugin("opal_core_math").display(),
            plugin("opal_tensor_ops").display(),
            plugin("opal_faulty_plugin").display(),
        ),
    )
    .unwrap();
    path
}

fn slow_request(milliseconds: f32) -> Vec<u8> {
    format!(
        r#"{{"inputs":[{{"name":"x","shape":[2],"datatype":"FP32","data":[{milliseconds},0]}}]}}"#
    )
    .into_bytes()
}

/// The output `y` of a successful Slow-chain reply.
fn slow_output(reply: &opal_tests::Reply) -> Vec<f64> {
    assert_eq!(reply.status, 200, "{}", reply.text());
    reply.json()["outputs"][0]["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect()
}

/// The value of the `/metrics` sample `name{model="model"}`.
fn metric(server: &Server, name: &str, model: &str) -> Option<f64> {
    let prefix = format!("{name}{{model=\"{model}\"}} ");
    server
        .get("/metrics")
        .text()
        .lines()
        .find_map(|l| l.strip_prefix(&prefix)?.parse().ok())
}

/// Polls `/metrics` until `name{model}` equals `value`, for at most 10 s.
fn wait_for_metric(server: &Server, name: &str, model: &str, value: f64) {
    let start = Instant::now();
    while metric(server, name, model) != Some(value) {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{name}{{model=\"{model}\"}} stayed {:?}, expected {value}",
            metric(server, name, model)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_timed_out_request_stops_its_run_at_the_next_kernel_and_frees_its_slot() {
    let dir = tempfile::tempdir().unwrap();
    let model = slow_chain(dir.path(), 5);
    let config = deployment(
        dir.path(),
        &format!(
            "[[models]]\nname = \"slow\"\npath = \"{}\"\nmax_concurrent = 1\n",
            model.display()
        ),
        "request_timeout_ms = 1000",
    );
    let server = Server::start(&config);
    // Five kernels of 300 ms: the run is in its fourth when the request times out.
    let reply = server.post("/v2/models/slow/infer", &[], &slow_request(300.0));
    assert_eq!(reply.status, 504, "{}", reply.text());
    assert!(
        reply.text().contains("request_timeout_ms"),
        "{}",
        reply.text()
    );
    // The next request waits for the slot the stopped run gives back: it never runs beside it.
    let reply = server.post("/v2/models/slow/infer", &[], &slow_request(10.0));
    assert_eq!(
        slow_output(&reply),
        [10.0, 1.0],
        "two runs of max_concurrent = 1 ran at once"
    );
    wait_for_metric(&server, "opal_runs_cancelled_total", "slow", 1.0);
    let metrics = server.get("/metrics").text();
    for line in [
        "opal_requests_total{model=\"slow\",outcome=\"timeout\"} 1",
        "opal_requests_total{model=\"slow\",outcome=\"success\"} 1",
        "opal_runs_in_progress{model=\"slow\"} 0",
        "opal_runs_stuck{model=\"slow\"} 0",
    ] {
        assert!(metrics.contains(line), "'{line}' not in:\n{metrics}");
    }
}

#[test]
fn a_kernel_that_never_returns_is_reported_stuck_and_other_models_keep_serving() {
    let dir = tempfile::tempdir().unwrap();
    let hang = ModelBuilder::new(17)
        .opset("opal.test", 1)
        .input("x", &[2])
        .output("y", &[2])
        .node("forever", "opal.test", "Hang", &["x"], &["y"], &[])
        .write(dir.path(), "hang.onnx");
    let slow = slow_chain(dir.path(), 1);
    let config = deployment(
        dir.path(),
        &format!(
            "[[models]]\nname = \"hang\"\npath = \"{}\"\nmax_concurrent = 1\nmax_queue = 0\n\n[[models]]\nname = \"slow\"\npath = \"{}\"\n",
            hang.display(),
            slow.display()
        ),
        "request_timeout_ms = 300\nstuck_after_ms = 300",
    );
    let server = Server::start(&config);
    let reply = server.post("/v2/models/hang/infer", &[], &slow_request(0.0));
    assert_eq!(reply.status, 504, "{}", reply.text());
    wait_for_metric(&server, "opal_runs_stuck", "hang", 1.0);
    assert_eq!(metric(&server, "opal_runs_in_progress", "hang"), Some(1.0));
    let log = server.log();
    assert!(
        log.contains("a run is stuck")
            && log.contains("node 'forever' (opal.test:Hang) of plugin 'faulty'"),
        "the log does not name the stuck kernel:\n{log}"
    );
    // The stuck run keeps the one slot: the next request is refused at once, not queued.
    let reply = server.post("/v2/models/hang/infer", &[], &slow_request(0.0));
    assert_eq!(reply.status, 503, "{}", reply.text());
    assert_eq!(reply.header("retry-after"), Some("1"));
    // Other models serve as before.
    assert_eq!(
        slow_output(&server.post("/v2/models/slow/infer", &[], &slow_request(1.0))),
        [1.0, 1.0]
    );
    assert!(server.is_live());
    // Shutting down leaves the stuck thread behind instead of waiting for it forever.
    assert!(server.stop().success());
}

#[test]
fn sixty_four_clients_against_one_slot_are_answered_or_refused_with_503() {
    let dir = tempfile::tempdir().unwrap();
    let model = slow_chain(dir.path(), 2);
    let config = deployment(
        dir.path(),
        &format!(
            "[[models]]\nname = \"slow\"\npath = \"{}\"\nmax_concurrent = 1\nmax_queue = 8\n",
            model.display()
        ),
        "request_timeout_ms = 60000",
    );
    let server = Server::start(&config);
    let resident_before = resident_kib(server.pid());
    let address = server.address.clone();
    let clients: Vec<_> = (0..64)
        .map(|_| {
            let address = address.clone();
            std::thread::spawn(move || {
                (0..5)
                    .map(|_| {
                        opal_tests::request(
                            &address,
                            "POST",
                            "/v2/models/slow/infer",
                            &[],
                            &slow_request(5.0),
                        )
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let (mut answered, mut refused) = (0, 0);
    for client in clients {
        for reply in client.join().expect("every client gets its replies") {
            match reply.status {
                200 => {
                    assert_eq!(slow_output(&reply), [5.0, 1.0], "runs overlapped");
                    answered += 1;
                }
                503 => {
                    assert_eq!(reply.header("retry-after"), Some("1"));
                    assert!(reply.text().contains("max_queue"), "{}", reply.text());
                    refused += 1;
                }
                status => panic!("status {status}: {}", reply.text()),
            }
        }
    }
    assert_eq!(answered + refused, 320);
    assert!(
        answered > 0 && refused > 0,
        "{answered} answered, {refused} refused"
    );
    let metrics = server.get("/metrics").text();
    for line in [
        format!("opal_requests_total{{model=\"slow\",outcome=\"success\"}} {answered}"),
        format!("opal_requests_total{{model=\"slow\",outcome=\"rejected\"}} {refused}"),
        "opal_queued_requests{model=\"slow\"} 0".to_owned(),
    ] {
        assert!(metrics.contains(&line), "'{line}' not in:\n{metrics}");
    }
    let growth = resident_kib(server.pid()).saturating_sub(resident_before);
    assert!(
        growth < 64 * 1024,
        "resident memory grew by {growth} KiB over 320 requests"
    );
}

/// The resident set of process `pid`, in KiB.
fn resident_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/<pid>/status")
}

#[test]
fn shapes_from_request_values_past_the_memory_limit_fail_the_request_not_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let expand = ModelBuilder::new(17)
        .input("x", &[1, 1])
        .input_i64("shape", &[2])
        .output("y", &[-1, -2])
        .node("bomb", "", "Expand", &["x", "shape"], &["y"], &[])
        .write(dir.path(), "expand.onnx");
    let tile = ModelBuilder::new(17)
        .input("x", &[1, 1])
        .input_i64("repeats", &[2])
        .output("y", &[-1, -2])
        .node("bomb", "", "Tile", &["x", "repeats"], &["y"], &[])
        .write(dir.path(), "tile.onnx");
    let config = deployment(
        dir.path(),
        &format!(
            "[[models]]\nname = \"expand\"\npath = \"{}\"\n\n[[models]]\nname = \"tile\"\npath = \"{}\"\n",
            expand.display(),
            tile.display()
        ),
        "",
    );
    let server = Server::start(&config);
    let body = |second: &str, n: u64| {
        format!(
            r#"{{"inputs":[{{"name":"x","shape":[1,1],"datatype":"FP32","data":[1.5]}},{{"name":"{second}","shape":[2],"datatype":"INT64","data":[{n},{n}]}}]}}"#
        )
        .into_bytes()
    };
    for (model, second) in [("expand", "shape"), ("tile", "repeats")] {
        // 200,000² f32 is 160 GB, far past the default 2 GiB limit.
        let reply = server.post(
            &format!("/v2/models/{model}/infer"),
            &[],
            &body(second, 200_000),
        );
        assert!(
            (400..600).contains(&reply.status),
            "{model}: {}",
            reply.text()
        );
        let error = reply.json()["error"].as_str().unwrap().to_owned();
        assert!(
            error.contains("node 'bomb'") && error.contains("engine.memory_limit"),
            "{model}: {error}"
        );
        // The same model with a modest shape still runs.
        let reply = server.post(&format!("/v2/models/{model}/infer"), &[], &body(second, 3));
        assert_eq!(reply.status, 200, "{model}: {}", reply.text());
        assert_eq!(
            reply.json()["outputs"][0]["shape"],
            serde_json::json!([3, 3])
        );
    }
    assert!(server.is_live());
}
