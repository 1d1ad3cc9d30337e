//! Subgraphs through the real plugins: If, Loop and Scan from the control-flow plugin run their
//! branches and bodies through the host, reading values of the enclosing graph; a static loop
//! makes no heap allocation once warm; bad subgraphs are refused naming the node.

use opal_plugin_api::DType;
use opal_runtime::onnx::proto::GraphProto;
use opal_runtime::{Deployment, Engine, Session, TensorRef};
use opal_tests::{heap_allocations_after_warm_up, ModelBuilder};
use std::{collections::BTreeMap, path::Path, sync::Arc};

const BOOL: i32 = 9;
const INT64: i32 = 7;

fn default_engine() -> Arc<Engine> {
    Engine::new(&Deployment::embedded_default().unwrap()).unwrap()
}

/// A Loop of five iterations (trip count an initializer, no condition input) whose body adds
/// the outer input `x` to its carried value and stacks twice that value, `two` being an outer
/// initializer: y = 6x, s[k] = 2(k + 2)x.
fn static_loop(dir: &Path) -> std::path::PathBuf {
    let body = ModelBuilder::new(17)
        .input_typed("i", INT64, &[])
        .input_typed("c", BOOL, &[])
        .input("y_in", &[4])
        .output_typed("c_out", BOOL, &[])
        .output("y_out", &[4])
        .output("s_out", &[4])
        .node("keep_going", "", "Identity", &["c"], &["c_out"], &[])
        .node("accumulate", "", "Add", &["y_in", "x"], &["y_out"], &[])
        .node("double", "", "Mul", &["y_out", "two"], &["s_out"], &[])
        .into_graph();
    ModelBuilder::new(17)
        .input("x", &[4])
        .output("y", &[4])
        .output("s", &[-1, 4])
        .initializer_i64("M", &[], &[5])
        .initializer("two", &[1], &[2.0])
        .graph_node(
            "loop",
            "Loop",
            &["M", "", "x"],
            &["y", "s"],
            vec![("body", body)],
        )
        .write(dir, "static_loop.onnx")
}

#[test]
fn a_loop_reads_outer_values_and_stacks_its_scan_outputs() {
    let dir = tempfile::tempdir().unwrap();
    let engine = default_engine();
    let model = engine.load_model(&static_loop(dir.path())).unwrap();
    let mut session = Session::new(engine.clone(), model, BTreeMap::new());
    let x = [1.0f32, -2.0, 0.5, 3.0];
    let state = session.run(&[TensorRef::from_slice(&[4], &x)]).unwrap();
    let y = state.output(0).unwrap();
    assert_eq!(y.shape, &[4]);
    let expected: Vec<f32> = x.iter().map(|v| 6.0 * v).collect();
    assert_eq!(y.as_slice::<f32>().unwrap(), expected.as_slice());
    let s = state.output(1).unwrap();
    assert_eq!(s.shape, &[5, 4]);
    let expected: Vec<f32> = (0..5)
        .flat_map(|k| x.iter().map(move |v| 2.0 * (k as f32 + 2.0) * v))
        .collect();
    assert_eq!(s.as_slice::<f32>().unwrap(), expected.as_slice());
}

#[test]
fn a_loop_with_static_shapes_makes_no_heap_allocation_after_warm_up() {
    let dir = tempfile::tempdir().unwrap();
    let engine = default_engine();
    let model = engine.load_model(&static_loop(dir.path())).unwrap();
    let mut session = Session::new(engine.clone(), model, BTreeMap::new());
    let x = [1.0f32, -2.0, 0.5, 3.0];
    let inputs = [TensorRef::from_slice(&[4], &x)];
    let (host, plugins) = heap_allocations_after_warm_up(&engine, &mut session, &inputs, 100);
    assert_eq!(
        (host, plugins),
        (0, 0),
        "heap allocations over 100 runs of a 5-iteration loop (host, plugins)"
    );
    let last = session.run(&inputs).unwrap();
    assert_eq!(last.output(0).unwrap().as_slice::<f32>().unwrap()[3], 18.0);
}

/// A branch computing `output` of [3] (or `dims`) with one node.
fn branch(output: &str, dims: &[i64], op_type: &str, inputs: &[&str]) -> GraphProto {
    let attributes: &[(&str, i64)] = if op_type == "Concat" {
        &[("axis", 0)]
    } else {
        &[]
    };
    ModelBuilder::new(17)
        .output(output, dims)
        .node(output, "", op_type, inputs, &[output], attributes)
        .into_graph()
}

/// `model` with node 'choose': If on `cond`, giving `y`.
fn choose(
    model: ModelBuilder,
    cond: &str,
    then_branch: GraphProto,
    else_branch: GraphProto,
) -> ModelBuilder {
    model.graph_node(
        "choose",
        "If",
        &[cond],
        &["y"],
        vec![("then_branch", then_branch), ("else_branch", else_branch)],
    )
}

/// A model of an `x` of [3] and a bool `cond` whose `y` has `dims`.
fn with_condition(dims: &[i64]) -> ModelBuilder {
    ModelBuilder::new(17)
        .input("x", &[3])
        .input_typed("cond", BOOL, &[])
        .output("y", dims)
}

/// An If whose branches give outputs of different shapes: `then` adds one to `x`, `else`
/// concatenates `x` with itself.
fn branching(dir: &Path) -> std::path::PathBuf {
    choose(
        with_condition(&[-1]).initializer("one", &[1], &[1.0]),
        "cond",
        branch("t", &[3], "Add", &["x", "one"]),
        branch("e", &[6], "Concat", &["x", "x"]),
    )
    .write(dir, "branching.onnx")
}

#[test]
fn if_runs_the_branch_its_condition_picks_with_that_branch_s_shape() {
    let dir = tempfile::tempdir().unwrap();
    let engine = default_engine();
    let model = engine.load_model(&branching(dir.path())).unwrap();
    let mut session = Session::new(engine.clone(), model, BTreeMap::new());
    let x = [1.0f32, 2.0, 3.0];
    for (cond, expected) in [
        (true, vec![2.0f32, 3.0, 4.0]),
        (false, vec![1.0, 2.0, 3.0, 1.0, 2.0, 3.0]),
        (true, vec![2.0, 3.0, 4.0]),
    ] {
        let flag = [u8::from(cond)];
        let inputs = [
            TensorRef::from_slice(&[3], &x),
            TensorRef::new(DType::BOOL, &[], &flag),
        ];
        let state = session.run(&inputs).unwrap();
        let y = state.output(0).unwrap();
        assert_eq!(y.shape, &[expected.len()], "cond {cond}");
        assert_eq!(
            y.as_slice::<f32>().unwrap(),
            expected.as_slice(),
            "cond {cond}"
        );
    }
}

/// Compiles `model` for an `x` of [3] (and a bool `cond` when it has one) and returns the
/// error.
fn compile_error(engine: &Arc<Engine>, model: &Path) -> String {
    let model = engine.load_model(model).unwrap();
    let mut session = Session::new(engine.clone(), model, BTreeMap::new());
    let x = [1.0f32, 2.0, 3.0];
    let flag = [1u8];
    let cond = TensorRef::new(DType::BOOL, &[], &flag);
    let inputs = [TensorRef::from_slice(&[3], &x), cond];
    let count = session.model().inputs.len();
    match session.run(&inputs[..count]) {
        Ok(_) => panic!("the model compiled"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn branches_with_different_output_counts_are_refused_naming_the_node_and_branch() {
    let dir = tempfile::tempdir().unwrap();
    let then_branch = ModelBuilder::new(17)
        .output("t", &[3])
        .output("u", &[3])
        .node("a", "", "Identity", &["x"], &["t"], &[])
        .node("b", "", "Identity", &["x"], &["u"], &[])
        .into_graph();
    let else_branch = branch("e", &[3], "Identity", &["x"]);
    let path = choose(with_condition(&[3]), "cond", then_branch, else_branch)
        .write(dir.path(), "uneven.onnx");
    let error = compile_error(&default_engine(), &path);
    assert!(error.contains("node 'choose' (If)"), "{error}");
    assert!(
        error.contains("'then_branch' gives 2 outputs; the node has 1"),
        "{error}"
    );
    assert_eq!(error.matches("uneven.onnx").count(), 1, "{error}");
}

/// A Loop of four iterations over an `x` of [3] (no condition input) whose body carries `y`
/// with one node (name, op_type, inputs) giving `y_out`; the body declares its iteration number
/// and condition with `counter_dims`.
fn loop_over_x(
    dir: &Path,
    file: &str,
    counter_dims: &[i64],
    (name, op_type, inputs): (&str, &str, &[&str]),
) -> std::path::PathBuf {
    let body = ModelBuilder::new(17)
        .input_typed("i", INT64, counter_dims)
        .input_typed("c", BOOL, counter_dims)
        .input("y_in", &[3])
        .output_typed("c_out", BOOL, &[])
        .output("y_out", &[3])
        .node("keep_going", "", "Identity", &["c"], &["c_out"], &[])
        .node(name, "", op_type, inputs, &["y_out"], &[])
        .into_graph();
    ModelBuilder::new(17)
        .input("x", &[3])
        .output("y", &[3])
        .initializer_i64("M", &[], &[4])
        .graph_node(
            "loop",
            "Loop",
            &["M", "", "x"],
            &["y"],
            vec![("body", body)],
        )
        .write(dir, file)
}

#[test]
fn a_subgraph_node_that_fails_to_compile_is_named_inside_its_node() {
    let dir = tempfile::tempdir().unwrap();
    let path = loop_over_x(
        dir.path(),
        "unknown_in_body.onnx",
        &[],
        ("bad", "NoSuchOperator", &["y_in"]),
    );
    let error = compile_error(&default_engine(), &path);
    assert!(error.contains("node 'loop' (Loop)"), "{error}");
    assert!(
        error.contains("subgraph 'body': node 'bad' (NoSuchOperator)"),
        "{error}"
    );
    assert!(
        error.contains("no loaded plugin provides operator 'NoSuchOperator'"),
        "{error}"
    );
    assert_eq!(error.matches("unknown_in_body.onnx").count(), 1, "{error}");
}

#[test]
fn a_subgraph_reading_a_value_no_graph_defines_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = choose(
        with_condition(&[3]),
        "cond",
        branch("t", &[3], "Add", &["x", "nowhere"]),
        branch("e", &[3], "Identity", &["x"]),
    )
    .write(dir.path(), "dangling.onnx");
    let error = compile_error(&default_engine(), &path);
    assert!(error.contains("node 'choose' (If)"), "{error}");
    assert!(error.contains("'nowhere'"), "{error}");
}

#[test]
fn a_condition_that_is_not_bool_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let model = ModelBuilder::new(17)
        .input("x", &[3])
        .output("y", &[3])
        .initializer("flag", &[], &[1.0]);
    let path = choose(
        model,
        "flag",
        branch("t", &[3], "Identity", &["x"]),
        branch("e", &[3], "Identity", &["x"]),
    )
    .write(dir.path(), "float_condition.onnx");
    let error = compile_error(&default_engine(), &path);
    assert!(error.contains("node 'choose' (If)"), "{error}");
    assert!(
        error.contains("the condition must be bool, got f32"),
        "{error}"
    );
}

/// An opset-8 Scan summing a batch of sequences of [2] vectors: the state is the running
/// sum, the scan output each step's sum. `lens` is a graph input when `with_lens`;
/// `reverse` scans backwards.
fn batched_sum(dir: &Path, name: &str, with_lens: bool, reverse: bool) -> std::path::PathBuf {
    let body = ModelBuilder::new(8)
        .input("sum_in", &[2])
        .input("next", &[2])
        .output("sum_out", &[2])
        .output("scan_out", &[2])
        .node("add", "", "Add", &["sum_in", "next"], &["sum_out"], &[])
        .node("copy", "", "Identity", &["sum_out"], &["scan_out"], &[])
        .into_graph();
    let mut model = ModelBuilder::new(8);
    if with_lens {
        model = model.input_i64("lens", &[2]);
    }
    let lens = if with_lens { "lens" } else { "" };
    let mut model = model
        .input("initial", &[2, 2])
        .input("x", &[2, 3, 2])
        .output("y", &[2, 2])
        .output("z", &[2, 3, 2])
        .graph_node(
            "scan",
            "Scan",
            &[lens, "initial", "x"],
            &["y", "z"],
            vec![("body", body)],
        )
        .int_attribute("num_scan_inputs", 1);
    if reverse {
        model = model.ints_attribute("directions", &[1]);
    }
    model.write(dir, name)
}

/// Runs `model` on two batch entries: initial sums [0, 0] and [100, 100], steps 1..=3 and
/// 10, 20, 30 (each twice), and `lens` when given.
fn run_batched(
    engine: &Arc<Engine>,
    model: &Path,
    lens: Option<&[i64]>,
) -> Result<(Vec<f32>, Vec<f32>), String> {
    let model = engine.load_model(model).unwrap();
    let mut session = Session::new(engine.clone(), model, BTreeMap::new());
    let initial = [0.0f32, 0.0, 100.0, 100.0];
    let x = [
        1.0f32, 1.0, 2.0, 2.0, 3.0, 3.0, 10.0, 10.0, 20.0, 20.0, 30.0, 30.0,
    ];
    let mut inputs = Vec::new();
    if let Some(lens) = lens {
        inputs.push(TensorRef::from_slice(&[2], lens));
    }
    inputs.push(TensorRef::from_slice(&[2, 2], &initial));
    inputs.push(TensorRef::from_slice(&[2, 3, 2], &x));
    let state = session.run(&inputs).map_err(|e| e.to_string())?;
    let y = state.output(0).unwrap();
    let z = state.output(1).unwrap();
    assert_eq!((y.shape, z.shape), (&[2, 2][..], &[2, 3, 2][..]));
    Ok((
        y.as_slice::<f32>().unwrap().to_vec(),
        z.as_slice::<f32>().unwrap().to_vec(),
    ))
}

#[test]
fn opset_8_scan_runs_each_batch_entry_for_its_sequence_length() {
    let dir = tempfile::tempdir().unwrap();
    let engine = default_engine();
    let full = batched_sum(dir.path(), "full.onnx", false, false);
    let (y, z) = run_batched(&engine, &full, None).unwrap();
    assert_eq!(y, [6.0, 6.0, 160.0, 160.0]);
    assert_eq!(
        z,
        [1.0, 1.0, 3.0, 3.0, 6.0, 6.0, 110.0, 110.0, 130.0, 130.0, 160.0, 160.0]
    );

    // Lengths 2 and 1: the outputs past each length are zero.
    let with_lens = batched_sum(dir.path(), "lens.onnx", true, false);
    let (y, z) = run_batched(&engine, &with_lens, Some(&[2, 1])).unwrap();
    assert_eq!(y, [3.0, 3.0, 110.0, 110.0]);
    assert_eq!(
        z,
        [1.0, 1.0, 3.0, 3.0, 0.0, 0.0, 110.0, 110.0, 0.0, 0.0, 0.0, 0.0]
    );

    // Backwards, each entry from the last step of its own length.
    let reverse = batched_sum(dir.path(), "reverse.onnx", true, true);
    let (y, z) = run_batched(&engine, &reverse, Some(&[2, 3])).unwrap();
    assert_eq!(y, [3.0, 3.0, 160.0, 160.0]);
    assert_eq!(
        z,
        [2.0, 2.0, 3.0, 3.0, 0.0, 0.0, 130.0, 130.0, 150.0, 150.0, 160.0, 160.0]
    );
}

#[test]
fn opset_8_scan_refuses_a_sequence_length_beyond_the_sequence_axis() {
    let dir = tempfile::tempdir().unwrap();
    let engine = default_engine();
    let path = batched_sum(dir.path(), "too_long.onnx", true, false);
    let error = run_batched(&engine, &path, Some(&[2, 4])).unwrap_err();
    assert!(error.contains("node 'scan' (Scan)"), "{error}");
    assert!(
        error.contains("sequence_lens[1] is 4, outside 0..=3"),
        "{error}"
    );
    assert_eq!(error.matches("too_long.onnx").count(), 1, "{error}");
    // The session keeps working after the refusal.
    let (y, _) = run_batched(&engine, &path, Some(&[3, 0])).unwrap();
    assert_eq!(y, [6.0, 6.0, 100.0, 100.0]);
}

/// An If whose `then` branch multiplies `x` of [3] by a [2, 2] matrix, which no `x` of [3]
/// fits, and whose `else` branch passes `x` through.
fn one_branch_fits(dir: &Path) -> std::path::PathBuf {
    choose(
        with_condition(&[3]).initializer("w", &[2, 2], &[1.0, 0.0, 0.0, 1.0]),
        "cond",
        branch("t", &[2], "MatMul", &["x", "w"]),
        branch("e", &[3], "Identity", &["x"]),
    )
    .write(dir, "one_branch_fits.onnx")
}

#[test]
fn a_branch_its_inputs_cannot_take_fails_only_when_the_condition_takes_it() {
    let dir = tempfile::tempdir().unwrap();
    let engine = default_engine();
    let model = engine.load_model(&one_branch_fits(dir.path())).unwrap();
    let mut session = Session::new(engine.clone(), model, BTreeMap::new());
    let x = [1.0f32, 2.0, 3.0];
    let run = |session: &mut Session, cond: bool| {
        let flag = [u8::from(cond)];
        let inputs = [
            TensorRef::from_slice(&[3], &x),
            TensorRef::new(DType::BOOL, &[], &flag),
        ];
        session
            .run(&inputs)
            .map(|state| state.output(0).unwrap().as_slice::<f32>().unwrap().to_vec())
            .map_err(|e| e.to_string())
    };
    assert_eq!(run(&mut session, false).unwrap(), x);
    let error = run(&mut session, true).unwrap_err();
    assert!(error.contains("node 'choose' (If)"), "{error}");
    assert!(error.contains("subgraph 'then_branch'"), "{error}");
    assert!(error.contains("node 't' (MatMul)"), "{error}");
    assert_eq!(error.matches("one_branch_fits.onnx").count(), 1, "{error}");
    // The failed run leaves the session usable.
    assert_eq!(run(&mut session, false).unwrap(), x);
}

#[test]
fn a_branch_using_an_operator_no_plugin_provides_is_refused_at_compile_time() {
    let dir = tempfile::tempdir().unwrap();
    let path = choose(
        with_condition(&[3]),
        "cond",
        branch("t", &[3], "NoSuchOperator", &["x"]),
        branch("e", &[3], "Identity", &["x"]),
    )
    .write(dir.path(), "unknown_in_branch.onnx");
    let error = compile_error(&default_engine(), &path);
    assert!(error.contains("node 'choose' (If)"), "{error}");
    assert!(
        error.contains("subgraph 'then_branch': node 't' (NoSuchOperator)"),
        "{error}"
    );
    assert!(
        error.contains("no loaded plugin provides operator 'NoSuchOperator'"),
        "{error}"
    );
    assert_eq!(
        error.matches("unknown_in_branch.onnx").count(),
        1,
        "{error}"
    );
}

#[test]
fn a_loop_body_declaring_its_iteration_number_and_condition_as_one_element_runs() {
    // As exporters write them: the Loop passes scalars where the body declares [1].
    let dir = tempfile::tempdir().unwrap();
    let path = loop_over_x(
        dir.path(),
        "declared_one_element.onnx",
        &[1],
        ("accumulate", "Add", &["y_in", "x"]),
    );
    let engine = default_engine();
    let model = engine.load_model(&path).unwrap();
    let mut session = Session::new(engine.clone(), model, BTreeMap::new());
    let x = [1.0f32, 2.0, 3.0];
    let state = session.run(&[TensorRef::from_slice(&[3], &x)]).unwrap();
    assert_eq!(
        state.output(0).unwrap().as_slice::<f32>().unwrap(),
        &[5.0, 10.0, 15.0]
    );
}
