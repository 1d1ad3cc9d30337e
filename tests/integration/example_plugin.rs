//! The README's plugin, `plugins/example-swish`, end to end: listed by `opal plugins` and
//! running a model with its custom-domain operator.

use opal_runtime::{Deployment, Engine, Session, TensorRef};
use opal_tests::{opal_binary, plugin, ModelBuilder};
use std::{collections::BTreeMap, process::Command};

fn deployment(dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("swish.toml");
    std::fs::write(
        &path,
        format!(
            "[[plugins]]\npath = \"{}\"\n",
            plugin("opal_example_swish").display()
        ),
    )
    .unwrap();
    path
}

#[test]
fn opal_plugins_lists_the_custom_operator() {
    let dir = tempfile::tempdir().unwrap();
    let config = deployment(dir.path());
    let out = Command::new(opal_binary())
        .args(["plugins", "--config", config.to_str().unwrap()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains(&format!(
            "plugin example-swish 0.1.0 (ABI {}.{})",
            opal_plugin_api::ABI_MAJOR,
            opal_plugin_api::ABI_MINOR
        )),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.trim_start().starts_with("Swish") && l.contains("com.example")),
        "{text}"
    );
}

#[test]
fn a_model_with_the_custom_operator_runs() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::new(&Deployment::from_file(&deployment(dir.path())).unwrap()).unwrap();
    let mut builder = ModelBuilder::new(17)
        .opset("com.example", 1)
        .input("x", &[4])
        .output("y", &[4]);
    builder = builder.node("swish", "com.example", "Swish", &["x"], &["y"], &[]);
    let model = engine
        .load_model(&builder.write(dir.path(), "swish.onnx"))
        .unwrap();
    let mut session = Session::new(engine.clone(), model, BTreeMap::new());
    let x = [-2.0f32, -0.5, 0.0, 3.0];
    let state = session.run(&[TensorRef::from_slice(&[4], &x)]).unwrap();
    let y = state.output(0).unwrap().as_slice::<f32>().unwrap().to_vec();
    for (y, x) in y.iter().zip(x) {
        let expected = x / (1.0 + (-x).exp());
        assert!(
            (y - expected).abs() < 1e-6,
            "swish({x}) = {y}, expected {expected}"
        );
    }
}

#[test]
fn opal_serve_serves_a_model_with_the_custom_operator() {
    let dir = tempfile::tempdir().unwrap();
    let model = ModelBuilder::new(17)
        .opset("com.example", 1)
        .input("x", &[4])
        .output("y", &[4])
        .node("swish", "com.example", "Swish", &["x"], &["y"], &[])
        .write(dir.path(), "swish.onnx");
    let config = dir.path().join("serve.toml");
    std::fs::write(
        &config,
        format!(
            "[[plugins]]\npath = \"{}\"\n\n[[models]]\nname = \"swish\"\npath = \"{}\"\n",
            plugin("opal_example_swish").display(),
            model.display()
        ),
    )
    .unwrap();
    let server = opal_tests::Server::start(&config);
    let reply = server.post(
        "/v2/models/swish/infer",
        &[],
        br#"{"inputs":[{"name":"x","shape":[4],"datatype":"FP32","data":[-2.0,-0.5,0.0,3.0]}]}"#,
    );
    assert_eq!(reply.status, 200, "{}", reply.text());
    let y: Vec<f64> = reply.json()["outputs"][0]["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    for (y, x) in y.iter().zip([-2.0f64, -0.5, 0.0, 3.0]) {
        assert!(
            (y - x / (1.0 + (-x).exp())).abs() < 1e-6,
            "swish({x}) = {y}"
        );
    }
}
