//! Fusion through the real plugins: each fusion case (`tests/data/prepare.py`) compiles to the
//! kernel calls expected, and to one per node with `engine.fusion = false`; real models give
//! the same outputs fused and unfused, and every real model runs fused without heap allocations
//! after warm-up. That
//! the fused cases match onnxruntime is checked with the other cases in `conformance`.

use crate::conformance::data_dir;
use opal_plugin_api::DType;
use opal_runtime::{
    memory::heap_allocations, tensor_file::read_tensor, Deployment, Engine, Session, Tensor,
};
use opal_tests::plugin;
use std::{collections::BTreeMap, path::Path, sync::Arc};

/// An engine with the ten operator plugins of the default deployment, fusing or not.
fn engine(fusion: bool) -> Arc<Engine> {
    let mut text = format!("[engine]\nfusion = {fusion}\n");
    for name in [
        "opal_core_math",
        "opal_tensor_ops",
        "opal_nn",
        "opal_transformer",
        "opal_signal",
        "opal_control_flow",
        "opal_ml",
        "opal_training",
        "opal_image",
        "opal_sequence",
        "opal_text",
    ] {
        text.push_str(&format!(
            "[[plugins]]\npath = \"{}\"\n",
            plugin(name).display()
        ));
    }
    let deployment = Deployment::parse(&text, Path::new("fusion-test.toml")).unwrap();
    Engine::new(&deployment).unwrap()
}

/// A session on `model` and a seeded input of `shape` (the declared one when empty).
fn session(engine: &Arc<Engine>, model: &Path, shape: &[usize]) -> (Session, Tensor) {
    let model = engine.load_model(model).unwrap();
    let mut session = Session::new(engine.clone(), model.clone(), BTreeMap::new());
    if !shape.is_empty() {
        let name = model.value_name(model.inputs[0]).to_owned();
        session = session.with_shapes(BTreeMap::from([(name, shape.to_vec())]));
    }
    let types = session.declared_input_types().unwrap();
    let owner = engine.tracker().owner("inputs");
    let input =
        opal_runtime::synthetic::synthetic_tensor(DType::F32, &types[0].1, 7, &owner).unwrap();
    (session, input)
}

/// (kernel calls, nodes fused into them, nodes in the model) of `model` after one run.
fn compiled(engine: &Arc<Engine>, model: &Path) -> (usize, usize, usize) {
    let (mut session, input) = session(engine, model, &[]);
    session.run(&[input.as_ref()]).unwrap();
    let plan = session.plan().unwrap();
    (
        plan.steps().len(),
        plan.fused_nodes(),
        plan.model().nodes.len(),
    )
}

#[test]
fn steps_absorb_what_their_plugin_accepts_and_only_closed_groups() {
    let (fused, unfused) = (engine(true), engine(false));
    // (case, kernel calls when fused, nodes absorbed)
    let expected = [
        ("conv_bn_relu", 1, 2),
        ("conv_bn_residual_relu", 1, 3),
        ("conv_silu", 1, 2),
        ("conv_bn_hardswish", 1, 5),
        ("conv_channel_add_hardsigmoid", 1, 2),
        ("bn_mul_add_relu", 1, 3),
        // core-math's Mul leads: GlobalAveragePool and Sigmoid stay apart.
        ("mul_residual_relu", 3, 2),
        ("conv_clip6_leaky_relu", 1, 2),
        // The Conv's output is also read by an Identity: the Relu cannot be absorbed.
        ("conv_relu_shared", 3, 0),
        // The Add's output is larger than the Conv's: not elementwise over it.
        ("conv_add_broadcast_up", 2, 0),
    ];
    let dir = data_dir("fusion");
    for (case, calls, absorbed) in expected {
        let model = dir.join(case).join("model.onnx");
        let (steps, fused_nodes, nodes) = compiled(&fused, &model);
        assert_eq!((steps, fused_nodes), (calls, absorbed), "{case} fused");
        assert_eq!(steps + fused_nodes, nodes, "{case}: every node runs once");
        assert_eq!(
            compiled(&unfused, &model),
            (nodes, 0, nodes),
            "{case} unfused"
        );
    }
}

#[test]
fn real_models_give_the_same_outputs_fused_and_unfused() {
    let (fused, unfused) = (engine(true), engine(false));
    let models = [
        ("light/resnet50", vec![]),
        ("real/yolov8n_320", vec![1, 3, 320, 320]),
        ("real/ppocr_mobile_v2_cls", vec![1, 3, 48, 192]),
    ];
    for (model, shape) in models {
        let (kind, name) = model.split_once('/').unwrap();
        let path = data_dir(kind).join(name).join("model.onnx");
        let outputs = |engine: &Arc<Engine>| -> (Vec<f32>, usize) {
            let (mut session, input) = session(engine, &path, &shape);
            let state = session.run(&[input.as_ref()]).unwrap();
            let output = state.output(0).unwrap().as_slice::<f32>().unwrap().to_vec();
            (output, session.plan().unwrap().fused_nodes())
        };
        let ((a, fused_nodes), (b, none)) = (outputs(&fused), outputs(&unfused));
        assert!(fused_nodes > 0, "{model}: nothing was fused");
        assert_eq!(none, 0);
        assert_eq!(a.len(), b.len());
        let scale = b.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-6);
        let worst = a
            .iter()
            .zip(&b)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max);
        assert!(
            worst <= 1e-4 * scale,
            "{model}: fused and unfused outputs differ by {worst} (largest output {scale})"
        );
    }
}

#[test]
fn every_real_model_runs_fused_without_heap_allocations() {
    let engine = engine(true);
    let plugin_allocations = || -> u64 {
        engine
            .registry()
            .plugins()
            .iter()
            .filter_map(|p| p.own_heap_allocations())
            .sum()
    };
    let mut cases: Vec<_> = std::fs::read_dir(data_dir("real"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    cases.sort();
    assert_eq!(cases.len(), 5, "{cases:?}");
    for case in cases {
        let owner = engine.tracker().owner("inputs");
        let input = read_tensor(&case.join("test_data_set_0/input_0.pb"), &owner).unwrap();
        let model = engine.load_model(&case.join("model.onnx")).unwrap();
        let name = model.value_name(model.inputs[0]).to_owned();
        let shape = input.as_ref().shape.to_vec();
        let mut session = Session::new(engine.clone(), model, BTreeMap::new())
            .with_shapes(BTreeMap::from([(name, shape)]));
        for _ in 0..3 {
            session.run(&[input.as_ref()]).unwrap();
        }
        assert!(session.plan().unwrap().fused_nodes() > 0, "{case:?}");
        let (host_before, plugins_before) = (heap_allocations(), plugin_allocations());
        for _ in 0..5 {
            session.run(&[input.as_ref()]).unwrap();
        }
        assert_eq!(
            (
                heap_allocations() - host_before,
                plugin_allocations() - plugins_before
            ),
            (0, 0),
            "heap allocations over 5 runs of {case:?} (host, plugins)"
        );
    }
}

#[test]
fn opal_bench_profiles_time_by_operator_with_fused_calls_named_by_their_chain() {
    let case = data_dir("fusion").join("conv_bn_residual_relu/model.onnx");
    let config =
        std::env::temp_dir().join(format!("opal-fusion-bench-{}.toml", std::process::id()));
    let mut text = String::new();
    for name in ["opal_core_math", "opal_tensor_ops", "opal_nn"] {
        text.push_str(&format!(
            "[[plugins]]\npath = \"{}\"\n",
            plugin(name).display()
        ));
    }
    std::fs::write(&config, text).unwrap();
    let output = std::process::Command::new(opal_tests::opal_binary())
        .args([
            "bench",
            "--json",
            "--profile",
            "--iterations",
            "5",
            "--config",
        ])
        .arg(&config)
        .arg(&case)
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&config);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["kernel_calls"], 1);
    assert_eq!(report["fused_nodes"], 3);
    let profile = report["profile"].as_array().unwrap();
    assert_eq!(profile.len(), 1, "{profile:?}");
    assert_eq!(profile[0]["operator"], "Conv+BatchNormalization+Sum+Relu");
    assert_eq!(profile[0]["calls"], 1);
    let ms = profile[0]["ms"].as_f64().unwrap();
    assert!(
        ms > 0.0 && ms <= report["mean_ms"].as_f64().unwrap(),
        "{report}"
    );
    let steps = report["steps"].as_array().unwrap();
    assert!(
        steps[0]["node"].as_str().unwrap().contains("fused with"),
        "{steps:?}"
    );
}
