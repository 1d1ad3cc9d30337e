//! Triton's model-control API on a running `opal serve`: loading a model from a TOML table,
//! from a Triton JSON config with its file sent inline, and again from the deployment;
//! unloading it (404 with the reason, its mapping and stored files gone); and each bad request
//! refused with a reason while the version serving keeps serving.

use base64::Engine as _;
use opal_tests::{
    live_models::{
        answering_version, index, mappings_of, metric, state_of, unservable_model, LiveDeployment,
    },
    Server,
};
use serde_json::json;

fn load(server: &Server, model: &str, body: &serde_json::Value) -> opal_tests::Reply {
    let body = serde_json::to_vec(body).unwrap();
    server.post(&format!("/v2/repository/models/{model}/load"), &[], &body)
}

fn unload(server: &Server, model: &str) -> opal_tests::Reply {
    server.post(&format!("/v2/repository/models/{model}/unload"), &[], b"")
}

fn base64_of(path: &std::path::Path) -> String {
    base64::engine::general_purpose::STANDARD.encode(std::fs::read(path).unwrap())
}

#[test]
fn models_load_replace_and_unload_through_the_repository_api() {
    let live = LiveDeployment::new("");
    let server = live.serve();
    let pid = server.pid();
    assert_eq!(answering_version(&server, "b").unwrap(), 1.0);
    assert_eq!(state_of(&server, "b").as_deref(), Some("READY"));

    // A TOML [[models]] table naming another file.
    let toml = format!(
        "path = \"{}\"\nmax_concurrent = 2\n",
        live.path("b2.onnx").display()
    );
    let reply = load(&server, "b", &json!({"parameters": {"config": toml}}));
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(answering_version(&server, "b").unwrap(), 2.0);
    // The replaced file is no longer mapped.
    assert_eq!(mappings_of(pid, &live.path("b1.onnx")), 0);
    assert!(mappings_of(pid, &live.path("b2.onnx")) > 0);

    // Triton's JSON config, with the model sent inline as tritonclient's files= sends it.
    let config = json!({
        "name": "b", "platform": "onnxruntime_onnx", "max_batch_size": 4,
        "input": [{"name": "x", "data_type": "TYPE_FP32", "dims": [1, 4]}],
        "instance_group": [{"count": 3, "kind": "KIND_CPU"}],
    });
    let reply = load(
        &server,
        "b",
        &json!({"parameters": {
            "config": config.to_string(),
            "file:1/model.onnx": base64_of(&live.path("b3.onnx")),
        }}),
    );
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert!(
        reply.json()["notes"][0]
            .as_str()
            .unwrap()
            .contains("max_batch_size 4 is ignored"),
        "{}",
        reply.text()
    );
    assert_eq!(answering_version(&server, "b").unwrap(), 3.0);
    let stored = std::fs::read_to_string(format!("/proc/{pid}/maps"))
        .unwrap()
        .lines()
        .find(|l| l.contains("/1/model.onnx"))
        .and_then(|l| l.split_whitespace().nth(5))
        .map(std::path::PathBuf::from)
        .expect("the stored model is mapped");
    assert_eq!(mappings_of(pid, &live.path("b2.onnx")), 0);

    // Unloaded: 404 with the reason, listed UNAVAILABLE, its mapping and stored file gone.
    let mapped_before = metric(&server, "opal_model_mapped_bytes{model=\"b\"}");
    assert!(mapped_before > 0.0);
    let reply = unload(&server, "b");
    assert_eq!(reply.status, 200, "{}", reply.text());
    let refused = answering_version(&server, "b").unwrap_err();
    assert_eq!(refused.status, 404);
    assert!(
        refused
            .text()
            .contains("model 'b' is unavailable: unloaded"),
        "{}",
        refused.text()
    );
    let ready = server.get("/v2/models/b/ready");
    assert_eq!(ready.status, 404, "{}", ready.text());
    let row = index(&server).into_iter().find(|r| r.0 == "b").unwrap();
    assert_eq!(row.1, "UNAVAILABLE");
    assert!(row.2.contains("unloaded"), "{row:?}");
    assert_eq!(
        mappings_of(pid, &stored),
        0,
        "{} is still mapped",
        stored.display()
    );
    assert!(!stored.exists(), "{} is still stored", stored.display());
    assert_eq!(metric(&server, "opal_model_mapped_bytes{model=\"b\"}"), 0.0);
    assert_eq!(metric(&server, "opal_models_serving"), 1.0);

    // Loaded again as the deployment declares it; `a` served throughout.
    let reply = server.post("/v2/repository/models/b/load", &[], b"");
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(answering_version(&server, "b").unwrap(), 1.0);
    assert_eq!(answering_version(&server, "a").unwrap(), 1.0);
    assert_eq!(
        metric(
            &server,
            "opal_model_loads_total{model=\"b\",outcome=\"success\"}"
        ),
        3.0
    );
    assert_eq!(
        metric(&server, "opal_model_unloads_total{model=\"b\"}"),
        1.0
    );
}

#[test]
fn bad_loads_are_refused_with_a_reason_and_the_serving_model_stays() {
    let live = LiveDeployment::new("");
    let broken = unservable_model(live.dir.path(), "broken.onnx");
    std::fs::write(live.path("garbage.onnx"), b"not a model").unwrap();
    let server = live.serve();
    let cases = [
        // Not in the deployment, and no config.
        (
            "c",
            json!({}),
            404,
            vec!["model 'c' is not in deployment", "send its config"],
        ),
        // A TOML table that does not parse: the key and line are named.
        (
            "b",
            json!({"parameters": {"config": "path = \"b2.onnx\"\nmax_concurent = 2\n"}}),
            400,
            vec!["parameter 'config'", "line 2", "max_concurent"],
        ),
        // A Triton config with a field opal does not know.
        (
            "b",
            json!({"parameters": {"config": "{\"name\": \"b\", \"batcher\": {}}"}}),
            400,
            vec!["config field 'batcher'"],
        ),
        // A Triton config whose input does not match the model's.
        (
            "b",
            json!({"parameters": {"config": "{\"input\": [{\"name\": \"x\", \"data_type\": \"TYPE_INT64\"}]}"}}),
            400,
            vec!["config input 'x': data_type is TYPE_INT64", "TYPE_FP32"],
        ),
        // A file that is not a model.
        (
            "b",
            json!({"parameters": {"config": "path = \"garbage.onnx\""}}),
            400,
            vec!["the version serving keeps serving", "garbage.onnx"],
        ),
        // A model no plugin can run.
        (
            "b",
            json!({"parameters": {"config": format!("path = \"{}\"", broken.display())}}),
            400,
            vec!["the version serving keeps serving", "opal.none:Mystery"],
        ),
        // Files without the model file where Triton puts it.
        (
            "b",
            json!({"parameters": {"config": "{}", "file:model.onnx": "AAAA"}}),
            400,
            vec!["no file 'file:<version>/model.onnx' was sent"],
        ),
        // A file path leaving the model's directory.
        (
            "b",
            json!({"parameters": {"config": "{}", "file:../1/model.onnx": "AAAA"}}),
            400,
            vec!["must be relative"],
        ),
    ];
    for (model, body, status, needles) in cases {
        let reply = load(&server, model, &body);
        assert_eq!(reply.status, status, "{body}: {}", reply.text());
        for needle in needles {
            assert!(reply.text().contains(needle), "{body}: {}", reply.text());
        }
        assert_eq!(
            answering_version(&server, "b").unwrap(),
            1.0,
            "after {body}"
        );
        assert_eq!(state_of(&server, "b").as_deref(), Some("READY"));
    }
    assert_eq!(
        metric(
            &server,
            "opal_model_loads_total{model=\"b\",outcome=\"failure\"}"
        ),
        7.0
    );
    // A model whose first load fails is listed UNAVAILABLE with the reason.
    let reply = load(
        &server,
        "c",
        &json!({"parameters": {"config": format!("path = \"{}\"", broken.display())}}),
    );
    assert_eq!(reply.status, 400, "{}", reply.text());
    assert!(
        reply.text().contains("it is not serving"),
        "{}",
        reply.text()
    );
    let row = index(&server).into_iter().find(|r| r.0 == "c").unwrap();
    assert_eq!(row.1, "UNAVAILABLE");
    assert!(row.2.contains("Mystery"), "{row:?}");

    let reply = unload(&server, "nope");
    assert_eq!(reply.status, 404, "{}", reply.text());
    assert!(
        reply.text().contains("unknown model 'nope'"),
        "{}",
        reply.text()
    );
}

#[test]
fn model_control_requires_the_admin_token() {
    let live = LiveDeployment::new("\n[server]\nadmin_token = \"s3cret\"\n");
    let server = live.serve();
    let load_path = "/v2/repository/models/b/load";
    for path in [
        load_path,
        "/v2/repository/models/b/unload",
        "/v2/repository/reload-config",
    ] {
        let reply = server.post(path, &[], b"");
        assert_eq!(reply.status, 401, "{path}: {}", reply.text());
        let reply = server.post(path, &[("Authorization", "Bearer wrong")], b"");
        assert_eq!(reply.status, 403, "{path}: {}", reply.text());
    }
    assert_eq!(answering_version(&server, "b").unwrap(), 1.0);
    let reply = server.post(load_path, &[("Authorization", "Bearer s3cret")], b"");
    assert_eq!(reply.status, 200, "{}", reply.text());
}
