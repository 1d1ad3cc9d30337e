//! `opal serve` over HTTP: the KServe v2 routes, the bad requests it must answer with a 4xx and
//! a JSON error (and keep serving), and deployment files it must refuse.

use opal_tests::{opal_binary, plugin, workspace_root, Server};
use std::path::{Path, PathBuf};

/// A deployment serving the MLP with core-math, with a small request limit.
fn deployment(dir: &Path) -> PathBuf {
    let path = dir.join("serve.toml");
    std::fs::write(
        &path,
        format!(
            "[[plugins]]\npath = \"{}\"\n\n[[models]]\nname = \"mlp\"\npath = \"{}\"\nmax_concurrent = 2\n\n[server]\nmax_request_bytes = 65536\n",
            plugin("opal_core_math").display(),
            workspace_root().join("models/mlp.onnx").display()
        ),
    )
    .unwrap();
    path
}

fn infer_body(name: &str, datatype: &str, shape: &[i64], count: usize) -> String {
    let data: Vec<String> = (0..count).map(|i| format!("{}", i as f32 / 16.0)).collect();
    format!(
        r#"{{"inputs":[{{"name":"{name}","shape":{shape:?},"datatype":"{datatype}","data":[{}]}}]}}"#,
        data.join(",")
    )
}

#[test]
fn the_kserve_routes_answer() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&deployment(dir.path()));
    let live = server.get("/v2/health/live");
    assert_eq!(
        (live.status, live.json()),
        (200, serde_json::json!({ "live": true }))
    );
    let ready = server.get("/v2/health/ready");
    assert_eq!(
        (ready.status, ready.json()),
        (200, serde_json::json!({ "ready": true }))
    );
    assert_eq!(server.get("/v2/models/mlp/ready").status, 200);
    assert_eq!(server.get("/v2").json()["name"], "opal");
    let meta = server.get("/v2/models/mlp").json();
    assert_eq!(meta["inputs"][0]["name"], "x");
    assert_eq!(meta["inputs"][0]["datatype"], "FP32");
    assert_eq!(meta["outputs"][0]["shape"], serde_json::json!([1, 10]));
    let index = server.post("/v2/repository/index", &[], b"").json();
    assert_eq!(index[0]["name"], "mlp");
    assert_eq!(index[0]["state"], "READY");
    let reply = server.post(
        "/v2/models/mlp/infer",
        &[],
        infer_body("x", "FP32", &[1, 16], 16).as_bytes(),
    );
    assert_eq!(reply.status, 200, "{}", reply.text());
    let probs = reply.json()["outputs"][0]["data"]
        .as_array()
        .unwrap()
        .clone();
    let sum: f64 = probs.iter().map(|v| v.as_f64().unwrap()).sum();
    assert_eq!(probs.len(), 10);
    assert!((sum - 1.0).abs() < 1e-5, "{probs:?}");
    let plugins = server.get("/v2/plugins").json();
    assert_eq!(plugins[0]["name"], "core-math");
    assert!(plugins[0]["operators"]
        .as_array()
        .unwrap()
        .iter()
        .any(|o| o["op_type"] == "MatMul"));
}

/// Sends a bad request and checks the answer: the status, a JSON error mentioning `expected`,
/// and a server that still serves.
fn refused(
    server: &Server,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    status: u16,
    expected: &str,
) {
    let reply = server.post(path, headers, body);
    assert_eq!(reply.status, status, "{}", reply.text());
    let error = reply.json()["error"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(error.contains(expected), "'{expected}' not in: {error}");
    assert!(server.is_live());
    let ok = server.post(
        "/v2/models/mlp/infer",
        &[],
        infer_body("x", "FP32", &[1, 16], 16).as_bytes(),
    );
    assert_eq!(
        ok.status,
        200,
        "the server stopped serving after a bad request: {}",
        ok.text()
    );
}

#[test]
fn malformed_json_is_a_400() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&deployment(dir.path()));
    refused(
        &server,
        "/v2/models/mlp/infer",
        &[],
        b"{\"inputs\": [",
        400,
        "malformed inference request JSON",
    );
}

#[test]
fn an_unknown_model_is_a_404() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&deployment(dir.path()));
    let body = infer_body("x", "FP32", &[1, 16], 16);
    refused(
        &server,
        "/v2/models/nope/infer",
        &[],
        body.as_bytes(),
        404,
        "unknown model 'nope'",
    );
}

#[test]
fn a_wrong_input_name_is_a_400() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&deployment(dir.path()));
    let body = infer_body("y", "FP32", &[1, 16], 16);
    refused(
        &server,
        "/v2/models/mlp/infer",
        &[],
        body.as_bytes(),
        400,
        "model 'mlp' has no input 'y'",
    );
}

#[test]
fn a_wrong_dtype_is_a_400() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&deployment(dir.path()));
    let data: Vec<String> = (0..16).map(|i| i.to_string()).collect();
    let body = format!(
        r#"{{"inputs":[{{"name":"x","shape":[1,16],"datatype":"INT64","data":[{}]}}]}}"#,
        data.join(",")
    );
    refused(
        &server,
        "/v2/models/mlp/infer",
        &[],
        body.as_bytes(),
        400,
        "the model takes FP32, the request sends INT64",
    );
}

#[test]
fn a_wrong_shape_is_a_400() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&deployment(dir.path()));
    let body = infer_body("x", "FP32", &[2, 8], 16);
    refused(
        &server,
        "/v2/models/mlp/infer",
        &[],
        body.as_bytes(),
        400,
        "the model takes shape [1, 16], the request sends [2, 8]",
    );
}

#[test]
fn data_not_matching_the_shape_is_a_400() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&deployment(dir.path()));
    let body = infer_body("x", "FP32", &[1, 16], 12);
    refused(
        &server,
        "/v2/models/mlp/infer",
        &[],
        body.as_bytes(),
        400,
        "has 12 elements of data, its shape needs 16",
    );
    // The binary extension: announced bytes that do not match the shape.
    let header = r#"{"inputs":[{"name":"x","shape":[1,16],"datatype":"FP32","parameters":{"binary_data_size":60}}]}"#;
    let mut body = header.as_bytes().to_vec();
    body.extend(vec![0u8; 60]);
    let length = header.len().to_string();
    refused(
        &server,
        "/v2/models/mlp/infer",
        &[("Inference-Header-Content-Length", &length)],
        &body,
        400,
        "60 bytes of binary data, but FP32 [1, 16] needs 64",
    );
}

#[test]
fn a_body_over_the_size_limit_is_a_413() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&deployment(dir.path()));
    let body = vec![b' '; 100_000];
    refused(
        &server,
        "/v2/models/mlp/infer",
        &[],
        &body,
        413,
        "larger than the server's limit of 65536 bytes",
    );
}

#[test]
fn an_unknown_route_is_a_404() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&deployment(dir.path()));
    let reply = server.get("/v3/what");
    assert_eq!(reply.status, 404);
    assert!(reply.json()["error"]
        .as_str()
        .unwrap()
        .contains("no such route"));
    refused(
        &server,
        "/v2/models/mlp/explode",
        &[],
        b"{}",
        404,
        "no such route",
    );
}

#[test]
fn the_server_stops_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&deployment(dir.path()));
    assert!(server.is_live());
    assert!(server.stop().success());
}

/// Writes `contents` as a deployment and checks that `opal serve` and `opal config check` both
/// refuse it with an error naming the file and every one of `expected`.
fn assert_deployment_refused(contents: &str, expected: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, contents).unwrap();
    for args in [vec!["serve", "--config"], vec!["config", "check"]] {
        let output = std::process::Command::new(opal_binary())
            .args(&args)
            .arg(&path)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{args:?} accepted a bad file");
        assert!(err.contains(&path.display().to_string()), "{err}");
        for part in expected {
            assert!(err.contains(part), "'{part}' not in: {err}");
        }
    }
}

#[test]
fn a_malformed_deployment_fails_serve_and_config_check_with_file_line_and_key() {
    assert_deployment_refused(
        "[server]\nlisten = \"127.0.0.1:0\"\nmax_request_byte = 10\n",
        &["line 3", "max_request_byte"],
    );
}

#[test]
fn config_check_accepts_a_good_deployment() {
    let dir = tempfile::tempdir().unwrap();
    let output = std::process::Command::new(opal_binary())
        .args(["config", "check"])
        .arg(deployment(dir.path()))
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        out.contains("OK: 1 plugin(s)") && out.contains("1 model(s)"),
        "{out}"
    );
}

#[test]
fn the_shipped_deployments_are_valid() {
    for file in ["config/default.toml", "config/serve-example.toml"] {
        let output = std::process::Command::new(opal_binary())
            .args(["config", "check"])
            .arg(workspace_root().join(file))
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{file}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

/// [`deployment`] with `server.admin_token` set to `token`.
fn deployment_with_admin_token(dir: &Path, token: &str) -> PathBuf {
    let path = deployment(dir);
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.push_str(&format!("admin_token = \"{token}\"\n"));
    std::fs::write(&path, text).unwrap();
    path
}

const RELOAD: &str = "/v2/plugins/core-math/reload";

#[test]
fn with_an_admin_token_a_reload_without_it_is_a_401_and_with_another_a_403() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&deployment_with_admin_token(dir.path(), "s3cret-token"));

    let missing = server.post(RELOAD, &[], b"");
    assert_eq!(missing.status, 401, "{}", missing.text());
    assert_eq!(missing.header("www-authenticate"), Some("Bearer"));
    let error = missing.json()["error"].as_str().unwrap().to_owned();
    assert!(error.contains("Authorization: Bearer"), "{error}");

    let wrong = server.post(RELOAD, &[("Authorization", "Bearer s3cret")], b"");
    assert_eq!(wrong.status, 403, "{}", wrong.text());
    assert!(!wrong.text().contains("s3cret-token"), "{}", wrong.text());

    let right = server.post(RELOAD, &[("Authorization", "Bearer s3cret-token")], b"");
    assert_eq!(right.status, 200, "{}", right.text());
    assert_eq!(right.json()["plugin"], "core-math");
    // Reading endpoints need no token.
    assert_eq!(server.get("/v2/plugins").status, 200);
    assert_eq!(server.post("/v2/repository/index", &[], b"").status, 200);
}

#[test]
fn opal_reload_sends_the_admin_token_from_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&deployment_with_admin_token(dir.path(), "s3cret-token"));
    let reload = |token: Option<&str>| {
        let mut command = std::process::Command::new(opal_binary());
        command.args(["reload", "core-math", "--server", &server.address]);
        command.env_remove("OPAL_ADMIN_TOKEN");
        if let Some(token) = token {
            command.env("OPAL_ADMIN_TOKEN", token);
        }
        command.output().unwrap()
    };
    let refused = reload(None);
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("HTTP 401"), "{stderr}");
    let accepted = reload(Some("s3cret-token"));
    let stdout = String::from_utf8_lossy(&accepted.stdout);
    assert!(accepted.status.success(), "{stdout}");
    assert!(stdout.contains("\"plugin\":\"core-math\""), "{stdout}");
}

#[test]
fn the_server_takes_its_admin_token_from_the_environment_too() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_listening(
        &deployment(dir.path()),
        "127.0.0.1:0",
        &[("OPAL_ADMIN_TOKEN", "from-env")],
    );
    assert_eq!(server.post(RELOAD, &[], b"").status, 401);
    let right = server.post(RELOAD, &[("Authorization", "Bearer from-env")], b"");
    assert_eq!(right.status, 200, "{}", right.text());
}

/// This machine's first non-loopback IPv4 address, as `hostname -I` lists them.
fn non_loopback_address() -> String {
    let output = std::process::Command::new("hostname")
        .arg("-I")
        .output()
        .expect("hostname -I runs");
    String::from_utf8_lossy(&output.stdout)
        .split_whitespace()
        .find(|a| {
            a.parse::<std::net::Ipv4Addr>()
                .is_ok_and(|ip| !ip.is_loopback())
        })
        .expect("this test needs a non-loopback IPv4 address on the machine")
        .to_owned()
}

#[test]
fn without_an_admin_token_only_loopback_clients_may_reload() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_listening(&deployment(dir.path()), "0.0.0.0:0", &[]);
    let port = server.address.rsplit(':').next().unwrap().to_owned();
    let remote = format!("{}:{port}", non_loopback_address());

    let changes = [
        RELOAD,
        "/v2/repository/models/mlp/load",
        "/v2/repository/models/mlp/unload",
        "/v2/repository/reload-config",
    ];
    for change in changes {
        let refused = opal_tests::request(&remote, "POST", change, &[], b"");
        assert_eq!(refused.status, 403, "{change}: {}", refused.text());
        let error = refused.json()["error"].as_str().unwrap().to_owned();
        assert!(error.contains("server.admin_token"), "{change}: {error}");
    }
    // Inference answers every client; reloads answer loopback ones.
    let infer = opal_tests::request(
        &remote,
        "POST",
        "/v2/models/mlp/infer",
        &[],
        infer_body("x", "FP32", &[1, 16], 16).as_bytes(),
    );
    assert_eq!(infer.status, 200, "{}", infer.text());
    let local = opal_tests::request(&format!("127.0.0.1:{port}"), "POST", RELOAD, &[], b"");
    assert_eq!(local.status, 200, "{}", local.text());
}

#[test]
fn an_empty_admin_token_is_refused_with_file_line_and_key() {
    assert_deployment_refused(
        "[server]\nlisten = \"127.0.0.1:0\"\nadmin_token = \" \"\n",
        &["line 3", "admin_token", "is empty"],
    );
}
