//! `opal serve` on the default deployment, driven by the official Triton / KServe Python client
//! (tests/python/kserve_client.py, run with the test venv): repository index, metadata, and
//! inference with JSON and binary tensors equal to `opal run` on the same input; `/metrics`
//! parsed by prometheus_client.

use opal_tests::{opal_binary, workspace_root, Server};
use std::process::Command;

#[test]
fn the_python_client_gets_what_opal_run_computes() {
    let dir = tempfile::tempdir().unwrap();
    let python = workspace_root().join(".cache/venv/bin/python");
    assert!(
        python.is_file(),
        "{} is missing: run tests/run.sh, which makes the venv with tritonclient",
        python.display()
    );
    let input = dir.path().join("x.npy");
    let values: Vec<f32> = (0..16).map(|i| (i as f32 - 8.0) / 5.0).collect();
    opal_runtime::tensor_file::write_npy(
        &input,
        opal_runtime::TensorRef::from_slice(&[1, 16], &values),
    )
    .unwrap();
    let run = Command::new(opal_binary())
        .args(["run", "mlp", "--iterations", "1", "--input"])
        .arg(format!("x={}", input.display()))
        .arg("--output-dir")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );

    let defaults = opal_runtime::config::normalize(std::path::Path::new(
        opal_runtime::config::DEFAULT_DEPLOYMENT_PATH,
    ));
    let server = Server::start(&defaults);
    let client = Command::new(python)
        .arg(workspace_root().join("tests/python/kserve_client.py"))
        .arg(&server.address)
        .arg("mlp")
        .arg(&input)
        .arg(dir.path().join("output_0.npy"))
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&client.stdout);
    assert!(
        client.status.success(),
        "{out}\n{}",
        String::from_utf8_lossy(&client.stderr)
    );
    assert!(
        out.contains("infer with binary tensors: equal to opal run"),
        "{out}"
    );
    assert!(out.contains("/metrics parses"), "{out}");
}
