//! Models through the library: the default model's result checked against a reference, weights
//! used in place, zero allocations after warm-up, and the bad models and faulty kernels that
//! must come back as clear errors; random draws made anew in each run.

use opal_plugin_api::DType;
use opal_runtime::{
    memory::heap_allocations, Deployment, Engine, Session, SessionError, Tensor, TensorRef,
};
use opal_tests::{heap_allocations_after_warm_up, plugin, ModelBuilder};
use std::{collections::BTreeMap, path::Path, sync::Arc};

fn default_engine() -> (Deployment, Arc<Engine>) {
    let deployment = Deployment::embedded_default().unwrap();
    let engine = Engine::new(&deployment).unwrap();
    (deployment, engine)
}

fn mlp_path(deployment: &Deployment) -> &Path {
    &deployment.model("mlp").unwrap().path
}

/// An engine with core-math and the faulty plugin (core-math wins Relu).
fn engine_with_faulty_plugin(dir: &Path) -> Arc<Engine> {
    let path = dir.join("deploy.toml");
    std::fs::write(
        &path,
        format!(
            "[[plugins]]\npath = \"{}\"\n[[plugins]]\npath = \"{}\"\n[operators]\nRelu = \"core-math\"\n",
            plugin("opal_core_math").display(),
            plugin("opal_faulty_plugin").display()
        ),
    )
    .unwrap();
    Engine::new(&Deployment::from_file(&path).unwrap()).unwrap()
}

fn f32_input(values: &[f32], shape: &[usize]) -> (Vec<usize>, Vec<f32>) {
    (shape.to_vec(), values.to_vec())
}

fn run_once(
    session: &mut Session,
    shape: &[usize],
    values: &[f32],
) -> Result<Vec<f32>, SessionError> {
    let input = TensorRef::from_slice(shape, values);
    let state = session.run(&[input])?;
    Ok(state.output(0).unwrap().as_slice::<f32>().unwrap().to_vec())
}

#[test]
fn the_default_model_matches_a_reference_computation() {
    let (deployment, engine) = default_engine();
    let model = engine.load_model(mlp_path(&deployment)).unwrap();
    let weight = |name: &str| -> Vec<f32> {
        let id = model.value_id(name).unwrap();
        opal_runtime::onnx::Constant::as_ref(&model.constants[&id])
            .as_slice::<f32>()
            .unwrap()
            .to_vec()
    };
    let x: Vec<f32> = (0..16).map(|i| (i as f32 - 7.5) / 8.0).collect();
    // x·w1 + b1, relu; ·w2ᵀ + b2, tanh; ·w3 + b3; softmax.
    let dense = |input: &[f32], w: &[f32], b: &[f32], n: usize, transposed: bool| -> Vec<f32> {
        let k = input.len();
        (0..n)
            .map(|j| {
                b[j] + (0..k)
                    .map(|p| {
                        input[p]
                            * if transposed {
                                w[j * k + p]
                            } else {
                                w[p * n + j]
                            }
                    })
                    .sum::<f32>()
            })
            .collect()
    };
    let h1: Vec<f32> = dense(&x, &weight("w1"), &weight("b1"), 32, false)
        .into_iter()
        .map(|v| v.max(0.0))
        .collect();
    let h2: Vec<f32> = dense(&h1, &weight("w2"), &weight("b2"), 32, true)
        .into_iter()
        .map(f32::tanh)
        .collect();
    let logits = dense(&h2, &weight("w3"), &weight("b3"), 10, false);
    let max = logits.iter().copied().fold(f32::MIN, f32::max);
    let exp: Vec<f32> = logits.iter().map(|v| (v - max).exp()).collect();
    let expected: Vec<f32> = exp.iter().map(|v| v / exp.iter().sum::<f32>()).collect();

    let mut session = Session::new(engine.clone(), model, BTreeMap::new());
    let (shape, values) = f32_input(&x, &[1, 16]);
    let got = run_once(&mut session, &shape, &values).unwrap();
    assert_eq!(got.len(), 10);
    for (g, e) in got.iter().zip(&expected) {
        assert!(
            (g - e).abs() <= 1e-5 + 1e-4 * e.abs(),
            "got {got:?}, expected {expected:?}"
        );
    }
}

#[test]
fn weights_are_views_into_the_mapped_model_file() {
    let (deployment, engine) = default_engine();
    let model = engine.load_model(mlp_path(&deployment)).unwrap();
    assert_eq!(model.constants.len(), 6);
    for constant in model.constants.values() {
        assert!(constant.is_mapped());
        assert!(opal_runtime::memory::contains(
            model.mapping(),
            constant.bytes()
        ));
    }
    let weights = engine
        .tracker()
        .owners()
        .into_iter()
        .find(|o| o.name == "weights")
        .unwrap();
    assert_eq!(weights.current_bytes, 0, "no weight was copied to the heap");
}

#[test]
fn after_warm_up_runs_make_zero_heap_allocations() {
    let (deployment, engine) = default_engine();
    let model = engine.load_model(mlp_path(&deployment)).unwrap();
    let mut session = Session::new(engine.clone(), model, BTreeMap::new());
    let owner = engine.tracker().owner("inputs");
    let input: Tensor =
        opal_runtime::synthetic::synthetic_tensor(DType::F32, &[1, 16], 1, &owner).unwrap();
    let inputs = [input.as_ref()];
    let (host, plugins) = heap_allocations_after_warm_up(&engine, &mut session, &inputs, 100);
    assert_eq!(
        (host, plugins),
        (0, 0),
        "heap allocations over 100 runs (host, plugins)"
    );
    assert!(engine.pool().stats().hit_rate() > 0.5);
}

#[test]
fn a_truncated_model_file_is_refused_naming_the_file() {
    let (deployment, engine) = default_engine();
    let bytes = std::fs::read(mlp_path(&deployment)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("truncated.onnx");
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let err = engine.load_model(&path).unwrap_err().to_string();
    assert!(err.contains(&path.display().to_string()), "{err}");
    assert!(err.contains("is not a valid ONNX model"), "{err}");
}

#[test]
fn a_file_that_is_not_onnx_is_refused_naming_the_file() {
    let (_, engine) = default_engine();
    let dir = tempfile::tempdir().unwrap();
    for (name, bytes) in [
        (
            "text.onnx",
            b"this is a text file, not a model\n".as_slice(),
        ),
        ("empty.onnx", b"".as_slice()),
    ] {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        let err = engine.load_model(&path).unwrap_err().to_string();
        assert!(err.contains(&path.display().to_string()), "{err}");
        assert!(err.contains("is not a valid ONNX model"), "{err}");
    }
}

#[test]
fn an_operator_no_plugin_provides_names_the_node_and_op_type() {
    let (_, engine) = default_engine();
    let dir = tempfile::tempdir().unwrap();
    let path = ModelBuilder::new(17)
        .input("x", &[2])
        .output("y", &[2])
        .node("mystery", "", "FancyOp", &["x"], &["y"], &[])
        .write(dir.path(), "fancy.onnx");
    let model = engine.load_model(&path).unwrap();
    let mut session = Session::new(engine.clone(), model, BTreeMap::new());
    let err = run_once(&mut session, &[2], &[1.0, 2.0])
        .unwrap_err()
        .to_string();
    assert!(err.contains(&path.display().to_string()), "{err}");
    assert!(err.contains("node 'mystery' (FancyOp)"), "{err}");
    assert!(
        err.contains("no loaded plugin provides operator 'FancyOp'"),
        "{err}"
    );
}

/// Checks that `engine` still runs the default model: the probabilities sum to 1.
fn assert_default_model_runs(engine: &Arc<Engine>) {
    let (deployment, _) = default_engine();
    let mlp = engine.load_model(mlp_path(&deployment)).unwrap();
    let mut healthy = Session::new(engine.clone(), mlp, BTreeMap::new());
    let probs = run_once(&mut healthy, &[1, 16], &[0.5; 16]).unwrap();
    assert!((probs.iter().sum::<f32>() - 1.0).abs() < 1e-5);
}

/// A model whose one node is `opal.test:<op_type>` from the faulty plugin.
fn faulty_model(dir: &Path, op_type: &str) -> std::path::PathBuf {
    ModelBuilder::new(17)
        .opset("opal.test", 1)
        .input("x", &[3])
        .output("y", &[3])
        .node("faulty_node", "opal.test", op_type, &["x"], &["y"], &[])
        .write(dir, &format!("{op_type}.onnx"))
}

#[test]
fn a_kernel_that_panics_is_an_error_naming_plugin_and_operator_and_the_next_run_works() {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine_with_faulty_plugin(dir.path());
    let model = engine
        .load_model(&faulty_model(dir.path(), "Panic"))
        .unwrap();
    let mut faulty = Session::new(engine.clone(), model, BTreeMap::new());
    for _ in 0..2 {
        let err = run_once(&mut faulty, &[3], &[1.0, 2.0, 3.0])
            .unwrap_err()
            .to_string();
        assert!(err.contains("plugin 'faulty'"), "{err}");
        assert!(err.contains("opal.test:Panic"), "{err}");
        assert!(err.contains("node 'faulty_node'"), "{err}");
        assert!(err.contains("panics on purpose"), "{err}");
    }
    assert_default_model_runs(&engine);
}

#[test]
fn a_kernel_that_returns_an_error_is_reported_with_its_message() {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine_with_faulty_plugin(dir.path());
    let model = engine
        .load_model(&faulty_model(dir.path(), "Fail"))
        .unwrap();
    let mut session = Session::new(engine.clone(), model, BTreeMap::new());
    let err = run_once(&mut session, &[3], &[1.0, 2.0, 3.0])
        .unwrap_err()
        .to_string();
    assert!(err.contains("plugin 'faulty'"), "{err}");
    assert!(err.contains("opal.test:Fail"), "{err}");
    assert!(err.contains("fails on purpose"), "{err}");
}

/// A model whose one node is `opal.test:<op_type>` with integer attributes.
fn faulty_model_with(dir: &Path, op_type: &str, attributes: &[(&str, i64)]) -> std::path::PathBuf {
    ModelBuilder::new(17)
        .opset("opal.test", 1)
        .input("x", &[3])
        .output("y", &[3])
        .node(
            "faulty_node",
            "opal.test",
            op_type,
            &["x"],
            &["y"],
            attributes,
        )
        .write(dir, &format!("{op_type}{}.onnx", attributes.len()))
}

/// Checks that running `model` fails, when its plan is compiled, with an error naming the node,
/// the plugin and `expected`, and that the engine still runs the default model afterwards.
fn assert_plan_fails(engine: &Arc<Engine>, model: &Path, expected: &[&str]) {
    let model = engine.load_model(model).unwrap();
    let mut session = Session::new(engine.clone(), model, BTreeMap::new());
    let err = run_once(&mut session, &[3], &[1.0, 2.0, 3.0])
        .unwrap_err()
        .to_string();
    for part in ["node 'faulty_node'", "plugin 'faulty'"]
        .iter()
        .chain(expected)
    {
        assert!(err.contains(part), "'{part}' not in: {err}");
    }
    assert_default_model_runs(engine);
}

#[test]
fn an_inference_that_panics_fails_the_plan_naming_node_and_plugin() {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine_with_faulty_plugin(dir.path());
    let model = faulty_model_with(dir.path(), "InferPanic", &[]);
    assert_plan_fails(
        &engine,
        &model,
        &["panicked", "inference panics on purpose"],
    );
}

#[test]
fn an_inferred_negative_or_overflowing_shape_fails_the_plan() {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine_with_faulty_plugin(dir.path());
    let negative = faulty_model_with(dir.path(), "BadShape", &[("mode", 0)]);
    assert_plan_fails(&engine, &negative, &["[3, -7]"]);
    let dir = tempfile::tempdir().unwrap();
    let overflowing = faulty_model_with(dir.path(), "BadShape", &[("mode", 1)]);
    assert_plan_fails(&engine, &overflowing, &["1099511627776"]);
}

#[test]
fn a_kernel_asking_for_scratch_beyond_the_limit_is_an_error_and_the_next_run_works() {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine_with_faulty_plugin(dir.path());
    let model = engine
        .load_model(&faulty_model_with(dir.path(), "ScratchHog", &[]))
        .unwrap();
    let mut session = Session::new(engine.clone(), model, BTreeMap::new());
    for _ in 0..2 {
        let err = run_once(&mut session, &[3], &[1.0, 2.0, 3.0])
            .unwrap_err()
            .to_string();
        for part in [
            "plugin 'faulty'",
            "opal.test:ScratchHog",
            "node 'faulty_node'",
            "engine.scratch_limit",
        ] {
            assert!(err.contains(part), "'{part}' not in: {err}");
        }
    }
}

/// y = x + W, with W's bytes at offset 64 of `weights.bin` beside the model.
fn external_model(dir: &Path, location: &str) -> std::path::PathBuf {
    let mut file = vec![0u8; 64];
    for v in [1.0f32, 2.0, 3.0, 4.0] {
        file.extend(v.to_le_bytes());
    }
    std::fs::write(dir.join("weights.bin"), file).unwrap();
    ModelBuilder::new(17)
        .input("x", &[4])
        .output("y", &[4])
        .external_initializer("W", &[4], location, 64)
        .node("add", "", "Add", &["x", "W"], &["y"], &[])
        .write(dir, "external.onnx")
}

#[test]
fn external_data_is_mapped_and_used_in_place() {
    let (_, engine) = default_engine();
    let dir = tempfile::tempdir().unwrap();
    let model = engine
        .load_model(&external_model(dir.path(), "weights.bin"))
        .unwrap();
    let w = &model.constants[&model.value_id("W").unwrap()];
    assert!(w.is_mapped(), "the external bytes were copied");
    let mut session = Session::new(engine.clone(), model, BTreeMap::new());
    let y = run_once(&mut session, &[4], &[0.5, 0.5, 0.5, 0.5]).unwrap();
    assert_eq!(y, vec![1.5, 2.5, 3.5, 4.5]);
}

#[test]
fn external_data_outside_the_model_directory_is_refused() {
    let (_, engine) = default_engine();
    let dir = tempfile::tempdir().unwrap();
    let path = external_model(dir.path(), "../weights.bin");
    let err = engine.load_model(&path).unwrap_err().to_string();
    assert!(err.contains(&path.display().to_string()), "{err}");
    assert!(err.contains("initializer 'W'"), "{err}");
    assert!(
        err.contains("must be a path inside the model's directory"),
        "{err}"
    );
}

#[test]
fn outputs_too_large_for_the_pool_are_reused_without_allocating() {
    let (_, engine) = default_engine();
    let dir = tempfile::tempdir().unwrap();
    // 2.4 MB of output: over the pool's 1 MiB bypass size.
    let path = ModelBuilder::new(17)
        .input("x", &[1, 600_000])
        .output("y", &[1, 600_000])
        .node("relu", "", "Relu", &["x"], &["y"], &[])
        .write(dir.path(), "large.onnx");
    let model = engine.load_model(&path).unwrap();
    let mut session = Session::new(engine.clone(), model, BTreeMap::new());
    let x = vec![-0.5f32; 600_000];
    let inputs = [TensorRef::from_slice(&[1, 600_000], &x)];
    for _ in 0..3 {
        session.run(&inputs).unwrap();
    }
    let before = heap_allocations();
    for _ in 0..10 {
        let state = session.run(&inputs).unwrap();
        assert_eq!(state.output(0).unwrap().as_slice::<f32>().unwrap()[0], 0.0);
    }
    assert_eq!(heap_allocations() - before, 0);
}

/// Runs `opal.test:<op_type>` once, drops the engine, and returns the plugin libraries the
/// process reports as left mapped after their unload.
fn unload_after_running(op_type: &str) -> Vec<opal_runtime::plugin::LeftMapped> {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine_with_faulty_plugin(dir.path());
    let model = engine
        .load_model(&faulty_model(dir.path(), op_type))
        .unwrap();
    let mut session = Session::new(engine.clone(), model, BTreeMap::new());
    run_once(&mut session, &[3], &[1.0, 2.0, 3.0]).unwrap();
    drop(session);
    assert_eq!(
        Arc::strong_count(&engine),
        1,
        "the test holds the last engine"
    );
    drop(engine);
    opal_runtime::plugin::libraries_left_mapped()
}

#[test]
fn a_plugin_that_starts_a_thread_is_reported_left_mapped_at_unload() {
    let left = unload_after_running("StartThread");
    assert_eq!(left.len(), 1, "{left:?}");
    assert_eq!(left[0].plugin, "faulty");
    assert_eq!(left[0].source, plugin("opal_faulty_plugin"));
}

#[test]
fn a_plugin_that_keeps_a_thread_local_with_a_destructor_is_reported_left_mapped() {
    let left = unload_after_running("ThreadLocal");
    assert_eq!(left.len(), 1, "{left:?}");
    assert_eq!(left[0].plugin, "faulty");
}

#[test]
fn a_plugin_that_does_neither_is_unmapped_at_unload() {
    assert_eq!(unload_after_running("Slow"), []);
}

#[test]
fn random_draws_are_made_in_every_run_even_from_constant_inputs() {
    // RandomUniformLike of an initializer: every input is constant, yet the node must not be
    // folded into one draw for all runs.
    let dir = tempfile::tempdir().unwrap();
    let path = ModelBuilder::new(22)
        .input("x", &[64])
        .output("y", &[64])
        .initializer("like", &[64], &[0.0; 64])
        .node("draw", "", "RandomUniformLike", &["like"], &["r"], &[])
        .node("add", "", "Add", &["x", "r"], &["y"], &[])
        .write(dir.path(), "random.onnx");
    let (_, engine) = default_engine();
    let model = engine.load_model(&path).unwrap();
    let mut session = Session::new(engine.clone(), model, BTreeMap::new());
    let zeros = [0.0f32; 64];
    let first = run_once(&mut session, &[64], &zeros).unwrap();
    let second = run_once(&mut session, &[64], &zeros).unwrap();
    assert!(first.iter().chain(&second).all(|v| (0.0..1.0).contains(v)));
    assert_ne!(first, second, "two runs drew the same 64 numbers");
}
