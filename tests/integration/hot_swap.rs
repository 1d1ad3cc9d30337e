//! Replacing a plugin in a running server: equal builds swap in, broken ones are refused with the
//! old plugin still serving, and a swap under load fails no request and leaves no old library
//! mapped.

use opal_tests::{
    abi_fixture, build_variant, footprint, mapped_files, p99, plugin, settled_footprint,
    AbiVariant, Check, Clients, Footprint, ModelBuilder, Server,
};
use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

/// The swap fixture built as `feature` (see tests/fixtures/swap-plugin).
fn swap_build(feature: &str) -> PathBuf {
    build_variant("opal-swap-fixture", "opal_swap_fixture", feature)
}

/// Puts `build` where the deployment expects the plugin: a new file renamed into place, as a
/// build system or `install` would.
fn install(build: &Path, deployed: &Path) {
    let staged = deployed.with_extension("staged");
    std::fs::copy(build, &staged).unwrap();
    std::fs::rename(&staged, deployed).unwrap();
}

/// A served model using the plugin under test, whose output is [`expected`] times `factor`.
struct Setup {
    _dir: tempfile::TempDir,
    /// Where the deployment expects the plugin under test.
    plugin: PathBuf,
    /// Its name, by which the reload endpoint takes it.
    plugin_name: &'static str,
    model: &'static str,
    factor: f64,
    server: Server,
}

fn weights() -> Vec<f32> {
    (0..32).map(|i| (i % 7) as f32 / 7.0 - 0.4).collect()
}

/// The swap fixture serving y = Scale(Relu(x · W)), x of [1, 8].
fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let plugin_path = dir.path().join("libswappable.so");
    install(&swap_build("first"), &plugin_path);
    let w = weights();
    let model = ModelBuilder::new(17)
        .opset("opal.test", 1)
        .input("x", &[1, 8])
        .output("y", &[1, 4])
        .initializer("W", &[8, 4], &w)
        .node("fc", "", "MatMul", &["x", "W"], &["h"], &[])
        .node("act", "", "Relu", &["h"], &["a"], &[])
        .node("scale", "opal.test", "Scale", &["a"], &["y"], &[])
        .write(dir.path(), "scaled.onnx");
    let config = dir.path().join("swap.toml");
    std::fs::write(
        &config,
        format!(
            "[[plugins]]\npath = \"{}\"\n[[plugins]]\npath = \"{}\"\n[[models]]\nname = \"scaled\"\npath = \"{}\"\nmax_concurrent = 4\n",
            plugin("opal_core_math").display(),
            plugin_path.display(),
            model.display()
        ),
    )
    .unwrap();
    let server = Server::start(&config);
    Setup {
        _dir: dir,
        plugin: plugin_path,
        plugin_name: "swappable",
        model: "scaled",
        factor: 1.0,
        server,
    }
}

/// A Loop running y += Scale(Relu(x · W)) three times from y = 0, x of [1, 8], with the
/// control-flow plugin and the swap fixture, one of them (`under_test`) at a path of the
/// test's: Scale and the outer `x` and `W` are read only inside the loop's body.
fn loop_setup(under_test: &str) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let fixture = dir.path().join("libswappable.so");
    install(&swap_build("first"), &fixture);
    let control_flow = dir.path().join("libcontrolflow.so");
    install(&plugin("opal_control_flow"), &control_flow);
    let body = ModelBuilder::new(17)
        .opset("opal.test", 1)
        .input_typed("i", 7, &[])
        .input_typed("c", 9, &[])
        .input("y_in", &[1, 4])
        .output_typed("c_out", 9, &[])
        .output("y_out", &[1, 4])
        .node("keep_going", "", "Identity", &["c"], &["c_out"], &[])
        .node("fc", "", "MatMul", &["x", "W"], &["h"], &[])
        .node("act", "", "Relu", &["h"], &["a"], &[])
        .node("scale_in_body", "opal.test", "Scale", &["a"], &["s"], &[])
        .node("accumulate", "", "Add", &["y_in", "s"], &["y_out"], &[])
        .into_graph();
    let model = ModelBuilder::new(17)
        .opset("opal.test", 1)
        .input("x", &[1, 8])
        .output("y", &[1, 4])
        .initializer("W", &[8, 4], &weights())
        .initializer("zero", &[1, 4], &[0.0; 4])
        .initializer_i64("M", &[], &[3])
        .graph_node(
            "loop",
            "Loop",
            &["M", "", "zero"],
            &["y"],
            vec![("body", body)],
        )
        .write(dir.path(), "looped.onnx");
    let config = dir.path().join("swap.toml");
    std::fs::write(
        &config,
        format!(
            "[[plugins]]\npath = \"{}\"\n[[plugins]]\npath = \"{}\"\n[[plugins]]\npath = \"{}\"\n[[models]]\nname = \"looped\"\npath = \"{}\"\nmax_concurrent = 4\n",
            plugin("opal_core_math").display(),
            fixture.display(),
            control_flow.display(),
            model.display()
        ),
    )
    .unwrap();
    let server = Server::start(&config);
    let (plugin, plugin_name) = match under_test {
        "control-flow" => (control_flow, "control-flow"),
        _ => (fixture, "swappable"),
    };
    Setup {
        _dir: dir,
        plugin,
        plugin_name,
        model: "looped",
        factor: 3.0,
        server,
    }
}

const INPUT: [f32; 8] = [0.5, -1.0, 0.25, 2.0, -0.75, 1.5, 0.0, 1.0];

fn infer_body() -> String {
    let data: Vec<String> = INPUT.iter().map(|v| v.to_string()).collect();
    format!(
        r#"{{"inputs":[{{"name":"x","shape":[1,8],"datatype":"FP32","data":[{}]}}]}}"#,
        data.join(",")
    )
}

/// Scale(Relu(x · W)) for [`INPUT`] with Scale doubling, times `factor`.
fn expected(factor: f64) -> Vec<f64> {
    let w = weights();
    (0..4)
        .map(|j| {
            let h: f32 = (0..8).map(|p| INPUT[p] * w[p * 4 + j]).sum();
            factor * f64::from(2.0 * h.max(0.0))
        })
        .collect()
}

/// Infers once and checks the result.
fn assert_correct(s: &Setup) {
    let reply = s.server.post(
        &format!("/v2/models/{}/infer", s.model),
        &[],
        infer_body().as_bytes(),
    );
    assert_eq!(reply.status, 200, "{}", reply.text());
    let got: Vec<f64> = reply.json()["outputs"][0]["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    let expected = expected(s.factor);
    for (g, e) in got.iter().zip(&expected) {
        assert!((g - e).abs() < 1e-5, "got {got:?}, expected {expected:?}");
    }
}

fn plugin_version(server: &Server) -> String {
    server.plugin_version("swappable")
}

fn reload(s: &Setup) -> opal_tests::Reply {
    s.server
        .post(&format!("/v2/plugins/{}/reload", s.plugin_name), &[], b"")
}

/// Installs `build`, asks for a reload, and checks it is refused for `reason` while the old
/// plugin keeps serving.
fn refused(build: &Path, reason: &str) {
    refused_in(setup(), build, reason);
}

fn refused_in(s: Setup, build: &Path, reason: &str) {
    assert_correct(&s);
    install(build, &s.plugin);
    let reply = reload(&s);
    assert_eq!(reply.status, 409, "{}", reply.text());
    let error = reply.json()["error"].as_str().unwrap().to_owned();
    assert!(error.contains("the current one keeps serving"), "{error}");
    assert!(error.contains(reason), "'{reason}' not in: {error}");
    assert_eq!(plugin_version(&s.server), "1.0.0");
    assert_correct(&s);
    let metrics = s.server.get("/metrics").text();
    assert!(
        metrics.contains(r#"opal_plugin_reloads_total{plugin="swappable",outcome="failure"} 1"#),
        "{metrics}"
    );
}

#[test]
fn an_equal_build_replaces_the_plugin() {
    let s = setup();
    install(&swap_build("second"), &s.plugin);
    let reply = reload(&s);
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(
        reply.json()["models_checked"],
        serde_json::json!(["scaled"])
    );
    assert_eq!(plugin_version(&s.server), "1.0.0-second");
    assert_correct(&s);
}

#[test]
fn a_file_that_is_not_a_library_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.so");
    std::fs::write(&junk, b"not a shared library").unwrap();
    refused(&junk, "is not a loadable shared library");
}

#[test]
fn a_plugin_whose_operator_table_panics_is_refused_and_the_server_lives() {
    let build = opal_tests::build_variant(
        "opal-faulty-plugin",
        "opal_faulty_plugin",
        "panicking-table",
    );
    refused(&build, "operator table panics on purpose");
}

#[test]
fn a_wrong_abi_is_refused() {
    refused(
        &abi_fixture(AbiVariant::V2_0),
        "built against opal plugin ABI 2.0",
    );
}

#[test]
fn a_plugin_missing_an_operator_in_use_is_refused() {
    refused(
        &swap_build("missing-operator"),
        "does not provide node 'scale' (opal.test:Scale)",
    );
}

#[test]
fn a_plugin_missing_an_operator_a_loop_body_uses_is_refused() {
    refused_in(
        loop_setup("swappable"),
        &swap_build("missing-operator"),
        "does not provide node 'scale_in_body' (opal.test:Scale)",
    );
}

#[test]
fn a_kernel_whose_results_differ_is_refused() {
    refused(&swap_build("different-results"), "gives different results");
}

#[test]
fn a_kernel_that_panics_on_the_sample_run_is_refused() {
    refused(&swap_build("panics"), "this build of Scale panics");
}

/// Swapping the plugin back and forth between two equal builds, one swap per `interval`.
struct Swaps<'a> {
    first: &'a Path,
    second: &'a Path,
    interval: Duration,
}

/// Four clients send requests while nothing happens, or while the plugin is swapped; returns
/// the latencies of the phase and the number of swaps.
fn load_phase(s: &Setup, duration: Duration, swaps: Option<&Swaps<'_>>) -> (Vec<f64>, usize) {
    let expected = expected(s.factor);
    let check: Check = Arc::new(move |reply: &opal_tests::Reply| {
        reply.status == 200
            && reply.json()["outputs"][0]["data"]
                .as_array()
                .unwrap()
                .iter()
                .zip(&expected)
                .all(|(g, e)| (g.as_f64().unwrap() - e).abs() < 1e-5)
    });
    let path = format!("/v2/models/{}/infer", s.model);
    let clients = Clients::start(4, &s.server.address, &path, infer_body().as_bytes(), check);
    let mut swapped = 0;
    let started = Instant::now();
    while started.elapsed() < duration {
        match swaps {
            Some(swaps) => {
                let build = if swapped % 2 == 0 {
                    swaps.second
                } else {
                    swaps.first
                };
                install(build, &s.plugin);
                let reply = reload(s);
                assert_eq!(reply.status, 200, "swap {swapped} failed: {}", reply.text());
                swapped += 1;
                std::thread::sleep(swaps.interval);
            }
            None => std::thread::sleep(Duration::from_millis(100)),
        }
    }
    let (latencies, failures) = clients.stop();
    assert_eq!(failures, 0, "requests failed");
    (latencies, swapped)
}

/// Copies of the swap fixture the server maps.
fn mapped_swap_libraries(pid: u32) -> std::collections::BTreeSet<String> {
    mapped_copies(pid, "libswappable")
}

/// Copies of the plugin deployed as `<stem>.so` the server maps.
fn mapped_copies(pid: u32, stem: &str) -> std::collections::BTreeSet<String> {
    mapped_files(pid, &format!("opal-plugins/{stem}-"))
}

#[test]
fn swapping_under_load_fails_no_request_and_unmaps_old_libraries() {
    let s = setup();
    let (first, second) = (swap_build("first"), swap_build("second"));
    assert_correct(&s);
    let (mut calm, _) = load_phase(&s, Duration::from_secs(10), None);
    let swapping = Swaps {
        first: &first,
        second: &second,
        interval: Duration::from_millis(500),
    };
    let (mut busy, swaps) = load_phase(&s, Duration::from_secs(30), Some(&swapping));
    assert!(swaps >= 20, "only {swaps} swaps in 30 s");
    // Runs that finished on an old snapshot dropped it; one more request settles every session.
    assert_correct(&s);
    let mapped = mapped_swap_libraries(s.server.pid());
    assert_eq!(
        mapped.len(),
        1,
        "old plugin copies are still mapped: {mapped:?}"
    );
    let (calm_p99, busy_p99) = (p99(&mut calm), p99(&mut busy));
    println!(
        "load test: {} requests without swapping (p99 {:.2} ms), {} requests during {swaps} swaps (p99 {:.2} ms): ratio {:.2}, 0 failed",
        calm.len(),
        calm_p99 * 1e3,
        busy.len(),
        busy_p99 * 1e3,
        busy_p99 / calm_p99
    );
}

#[test]
fn the_control_flow_plugin_swaps_under_load_without_a_failed_request() {
    let s = loop_setup("control-flow");
    let build = plugin("opal_control_flow");
    assert_correct(&s);
    let swapping = Swaps {
        first: &build,
        second: &build,
        interval: Duration::from_millis(500),
    };
    let (latencies, swaps) = load_phase(&s, Duration::from_secs(10), Some(&swapping));
    assert!(swaps >= 8, "only {swaps} swaps in 10 s");
    assert_correct(&s);
    let mapped = mapped_copies(s.server.pid(), "libcontrolflow");
    assert_eq!(
        mapped.len(),
        1,
        "old plugin copies are still mapped: {mapped:?}"
    );
    println!(
        "control-flow swaps: {} requests of a 3-iteration loop during {swaps} swaps, 0 failed",
        latencies.len()
    );
}

/// The server's footprint, with the copies of the swap fixture it maps.
fn footprint_of(pid: u32) -> Footprint {
    footprint(pid, &[SWAP_COPIES])
}

/// Where copies of the swap fixture are mapped from.
const SWAP_COPIES: &str = "opal-plugins/libswappable-";

/// Serving with four clients and a reload every 2 s for `OPAL_SOAK_SECONDS` (60 by default;
/// the README gives a 10-minute run's figures): no request fails, and resident memory, open
/// descriptors and mapped plugin copies end where they started.
#[test]
fn a_soak_with_a_reload_every_two_seconds_stays_flat() {
    let seconds: u64 = std::env::var("OPAL_SOAK_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let s = setup();
    let (first, second) = (swap_build("first"), swap_build("second"));
    let swapping = Swaps {
        first: &first,
        second: &second,
        interval: Duration::from_secs(2),
    };
    // Warm-up: sessions, the pool and the server's threads reach their steady state.
    load_phase(&s, Duration::from_secs(6), Some(&swapping));
    assert_correct(&s);
    let start = settled_footprint(s.server.pid(), &[SWAP_COPIES]);
    let (mut latencies, mut swaps) = (Vec::new(), 0);
    for _ in 0..seconds / 10 {
        let (more, swapped) = load_phase(&s, Duration::from_secs(10), Some(&swapping));
        latencies.extend(more);
        swaps += swapped;
        println!("soak sample: {:?}", footprint_of(s.server.pid()));
    }
    assert_correct(&s);
    let end = settled_footprint(s.server.pid(), &[SWAP_COPIES]);
    println!(
        "soak: {seconds} s, {} requests, {swaps} reloads, 0 failed; resident {} → {} KiB, descriptors {} → {}, mapped plugin copies {} → {}",
        latencies.len(),
        start.resident_kib,
        end.resident_kib,
        start.descriptors,
        end.descriptors,
        start.mapped.len(),
        end.mapped.len()
    );
    assert!(swaps as u64 >= seconds / 2 - 1, "only {swaps} reloads");
    assert_eq!(end.descriptors, start.descriptors, "{start:?} → {end:?}");
    assert_eq!(
        (start.mapped.len(), end.mapped.len()),
        (1, 1),
        "{start:?} → {end:?}"
    );
    assert!(
        end.resident_kib < start.resident_kib + 16 * 1024,
        "resident memory grew: {start:?} → {end:?}"
    );
}
