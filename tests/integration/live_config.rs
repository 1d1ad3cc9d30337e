//! Changing the deployment file of a running server: `opal reload-config` applies the
//! difference model by model and plugin by plugin (added, removed, replaced, settings changed)
//! while unchanged models keep serving; an invalid file, or one whose new model cannot run,
//! changes nothing and is counted; with `--watch-config` each change of the file's contents is
//! applied once, and nothing more happens in the quiet seconds after.

use opal_tests::{
    live_models::{answering_version, index, mappings_of, metric, state_of, LiveDeployment},
    opal_binary, Server,
};
use std::{
    process::{Command, Output},
    time::{Duration, Instant},
};

fn reload_config(server: &Server) -> Output {
    Command::new(opal_binary())
        .args(["reload-config", "--server", &server.address])
        .output()
        .unwrap()
}

fn plugins(server: &Server) -> Vec<String> {
    server
        .get("/v2/plugins")
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap().to_owned())
        .collect()
}

fn reloads(server: &Server) -> (f64, f64) {
    (
        metric(server, "opal_config_reloads_total{outcome=\"applied\"}"),
        metric(server, "opal_config_reloads_total{outcome=\"refused\"}"),
    )
}

#[test]
fn reload_config_applies_the_difference_and_refuses_an_invalid_file_whole() {
    let live = LiveDeployment::new("");
    let server = live.serve();
    assert_eq!(plugins(&server), ["core-math"]);

    // Add a plugin and a model, change a's max_concurrent, take b away.
    let text = live.deployment_text(3, true, "").replace(
        "name = \"b\"\npath = \"b1.onnx\"",
        "name = \"c\"\npath = \"b2.onnx\"",
    );
    live.write_deployment(&text);
    let out = reload_config(&server);
    let answer = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{answer}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let changes: serde_json::Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(changes["models_added"], serde_json::json!(["c"]));
    assert_eq!(changes["models_removed"], serde_json::json!(["b"]));
    assert_eq!(
        changes["models_with_new_settings"],
        serde_json::json!(["a"])
    );
    assert_eq!(changes["plugins_added"], serde_json::json!(["nn"]));
    assert_eq!(plugins(&server), ["core-math", "nn"]);
    assert_eq!(answering_version(&server, "c").unwrap(), 2.0);
    assert_eq!(answering_version(&server, "a").unwrap(), 1.0);
    assert_eq!(answering_version(&server, "b").unwrap_err().status, 404);
    assert_eq!(state_of(&server, "b"), None);
    assert_eq!(mappings_of(server.pid(), &live.path("b1.onnx")), 0);

    // A retrained file at the same path replaces the model.
    opal_tests::live_models::versioned_model(live.dir.path(), "b2.onnx", 3.0);
    let out = reload_config(&server);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let changes: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(changes["models_replaced"], serde_json::json!(["c"]));
    assert_eq!(answering_version(&server, "c").unwrap(), 3.0);

    // Invalid files change nothing: a misspelt key (file and line named), and a valid file
    // whose new model no plugin can run, together with a plugin that must then not load.
    let before = index(&server);
    live.write_deployment(&format!(
        "{text}\n[[models]]\nname = \"d\"\npaht = \"a.onnx\"\n"
    ));
    let out = reload_config(&server);
    let error =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success());
    assert!(
        error.contains(&live.path("deploy.toml").display().to_string()),
        "{error}"
    );
    assert!(
        error.contains("line 18") && error.contains("paht"),
        "{error}"
    );
    assert!(error.contains("nothing changed"), "{error}");
    opal_tests::live_models::unservable_model(live.dir.path(), "broken.onnx");
    let with_broken = live
        .deployment_text(3, true, "")
        .replace("b1.onnx", "broken.onnx")
        + &format!(
            "\n[[plugins]]\npath = \"{}\"\n",
            opal_tests::plugin("opal_signal").display()
        );
    live.write_deployment(&with_broken);
    let out = reload_config(&server);
    let error = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success());
    assert!(error.contains("opal.none:Mystery"), "{error}");
    assert_eq!(index(&server), before);
    assert_eq!(plugins(&server), ["core-math", "nn"]);
    assert_eq!(answering_version(&server, "c").unwrap(), 3.0);
    assert_eq!(reloads(&server), (2.0, 2.0));

    // Back to the start: the plugin added is removed, b serves again.
    live.write_deployment(&live.deployment_text(2, false, ""));
    let out = reload_config(&server);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(plugins(&server), ["core-math"]);
    assert_eq!(answering_version(&server, "b").unwrap(), 1.0);
    assert_eq!(answering_version(&server, "a").unwrap(), 1.0);
    assert_eq!(state_of(&server, "c"), None);
}

/// How long a change may take to be noticed and applied.
const NOTICE: Duration = Duration::from_secs(15);
/// How long nothing more may happen after one change.
const QUIET: Duration = Duration::from_secs(3);

fn settle_at(server: &Server, expected: (f64, f64), change: &str) {
    let start = Instant::now();
    while reloads(server) != expected && start.elapsed() < NOTICE {
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(QUIET);
    assert_eq!(
        reloads(server),
        expected,
        "(applied, refused) after {change}"
    );
}

#[test]
fn a_watched_deployment_is_applied_once_per_change() {
    let live = LiveDeployment::new("");
    let server = Server::start_watching_config(&live.path("deploy.toml"));
    live.write_deployment(&live.deployment_text(3, false, ""));
    settle_at(&server, (1.0, 0.0), "one edit");
    assert_eq!(answering_version(&server, "b").unwrap(), 1.0);

    // Reads, a touch and an equal rewrite are no change.
    std::fs::read(live.path("deploy.toml")).unwrap();
    Command::new("touch")
        .arg(live.path("deploy.toml"))
        .status()
        .unwrap();
    live.write_deployment(&live.deployment_text(3, false, ""));
    settle_at(&server, (1.0, 0.0), "a read, a touch and an equal rewrite");

    // An invalid edit is refused once, and the server keeps serving.
    live.write_deployment("[[models]\n");
    settle_at(&server, (1.0, 1.0), "an invalid edit");
    assert!(server.log().contains("nothing changed"), "{}", server.log());
    assert_eq!(answering_version(&server, "a").unwrap(), 1.0);
    live.write_deployment(
        &live
            .deployment_text(3, false, "")
            .replace("b1.onnx", "b2.onnx"),
    );
    settle_at(&server, (2.0, 1.0), "the edit that fixes it");
    assert_eq!(answering_version(&server, "b").unwrap(), 2.0);
}
