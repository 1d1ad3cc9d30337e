//! Models that must be refused with an error naming the file and the node at fault — never a
//! panic, a hang, or an attempt to allocate the impossible.

use opal_plugin_api::DType;
use opal_runtime::{tensor::Shape, Deployment, Engine, Plan};
use opal_tests::{assert_mentions, ModelBuilder};
use std::{path::Path, sync::Arc};

fn engine() -> Arc<Engine> {
    Engine::new(&Deployment::embedded_default().unwrap()).unwrap()
}

/// Compiles the model at `path` for f32 inputs of `shapes` and returns the error message.
fn compile_error(engine: &Engine, path: &Path, shapes: &[&[usize]]) -> String {
    let model = engine.load_model(path).unwrap();
    let types: Vec<(DType, Shape)> = shapes
        .iter()
        .map(|s| (DType::F32, Shape::from_slice(s)))
        .collect();
    let err = Plan::compile(engine, &model, &types)
        .unwrap_err()
        .to_string();
    assert!(err.contains(&path.display().to_string()), "{err}");
    err
}

#[test]
fn a_graph_with_a_cycle() {
    let dir = tempfile::tempdir().unwrap();
    let path = ModelBuilder::new(17)
        .input("x", &[2])
        .output("b", &[2])
        .node("first", "", "Add", &["x", "b"], &["a"], &[])
        .node("second", "", "Relu", &["a"], &["b"], &[])
        .write(dir.path(), "cycle.onnx");
    let err = compile_error(&engine(), &path, &[&[2]]);
    assert_mentions(&err, &["node 'first' (Add)", "cycle"]);
}

#[test]
fn an_input_nobody_produces() {
    let dir = tempfile::tempdir().unwrap();
    let path = ModelBuilder::new(17)
        .input("x", &[2])
        .output("y", &[2])
        .node("adder", "", "Add", &["x", "ghost"], &["y"], &[])
        .write(dir.path(), "orphan.onnx");
    let err = compile_error(&engine(), &path, &[&[2]]);
    assert_mentions(
        &err,
        &["node 'adder' (Add)", "input 'ghost' is not produced"],
    );
}

#[test]
fn a_missing_initializer() {
    let dir = tempfile::tempdir().unwrap();
    // The bias B was meant to be an initializer, but the file does not hold it.
    let path = ModelBuilder::new(17)
        .input("x", &[1, 2])
        .output("y", &[1, 2])
        .initializer("W", &[2, 2], &[1.0, 0.0, 0.0, 1.0])
        .node("fc", "", "Gemm", &["x", "W", "B"], &["y"], &[])
        .write(dir.path(), "no_bias.onnx");
    let err = compile_error(&engine(), &path, &[&[1, 2]]);
    assert_mentions(
        &err,
        &[
            "node 'fc' (Gemm)",
            "input 'B' is not produced by any node, nor a graph input or initializer",
        ],
    );
}

#[test]
fn an_unsupported_opset() {
    let dir = tempfile::tempdir().unwrap();
    let path = ModelBuilder::new(5)
        .input("x", &[2])
        .output("y", &[2])
        .node("old_add", "", "Add", &["x", "x"], &["y"], &[])
        .write(dir.path(), "opset5.onnx");
    let err = compile_error(&engine(), &path, &[&[2]]);
    assert_mentions(
        &err,
        &[
            "node 'old_add' (Add)",
            "opset 5 of 'Add' is not supported",
            "7+ (plugin 'core-math')",
        ],
    );
}

#[test]
fn incompatible_shapes() {
    let dir = tempfile::tempdir().unwrap();
    let path = ModelBuilder::new(17)
        .input("a", &[2, 3])
        .input("b", &[4])
        .output("y", &[-1, -1])
        .node("mismatch", "", "Add", &["a", "b"], &["y"], &[])
        .write(dir.path(), "shapes.onnx");
    let err = compile_error(&engine(), &path, &[&[2, 3], &[4]]);
    assert_mentions(&err, &["node 'mismatch' (Add)", "cannot be broadcast"]);
}

#[test]
fn an_input_whose_shape_contradicts_the_model() {
    let dir = tempfile::tempdir().unwrap();
    let path = ModelBuilder::new(17)
        .input("x", &[2, 3])
        .output("y", &[2, 3])
        .node("r", "", "Relu", &["x"], &["y"], &[])
        .write(dir.path(), "declared.onnx");
    let err = compile_error(&engine(), &path, &[&[3, 2]]);
    assert_mentions(&err, &["input 'x' must have shape [2, 3], got [3, 2]"]);
}

/// `y = a · b` for a column `a` of n rows and a row `b` of n columns: an n × n output.
fn outer_product(dir: &Path) -> std::path::PathBuf {
    ModelBuilder::new(17)
        .input("a", &[-1, 1])
        .input("b", &[1, -2])
        .output("y", &[-1, -2])
        .node("outer", "", "MatMul", &["a", "b"], &["y"], &[])
        .write(dir, "outer.onnx")
}

#[test]
fn a_shape_whose_element_count_overflows() {
    let dir = tempfile::tempdir().unwrap();
    let n = 1usize << 33;
    let err = compile_error(&engine(), &outer_product(dir.path()), &[&[n, 1], &[1, n]]);
    assert_mentions(&err, &["node 'outer' (MatMul)", "overflows"]);
}

#[test]
fn a_shape_beyond_the_memory_limit() {
    let dir = tempfile::tempdir().unwrap();
    let n = 1usize << 16; // 65536² f32 = 16 GiB, over the default deployment's 2 GiB limit
    let err = compile_error(&engine(), &outer_product(dir.path()), &[&[n, 1], &[1, n]]);
    assert_mentions(
        &err,
        &[
            "node 'outer' (MatMul)",
            "17179869184 bytes",
            "memory limit of 2147483648 bytes",
        ],
    );
}

#[test]
fn intermediates_that_together_exceed_the_memory_limit() {
    let dir = tempfile::tempdir().unwrap();
    // Each of the three n×n intermediates fits the 2 GiB limit alone (1.5 GiB), but the two
    // outer products are alive at once.
    let path = ModelBuilder::new(17)
        .input("a", &[-1, 1])
        .input("b", &[1, -2])
        .output("y", &[-1, -2])
        .node("outer1", "", "MatMul", &["a", "b"], &["p"], &[])
        .node("outer2", "", "MatMul", &["a", "b"], &["q"], &[])
        .node("sum", "", "Add", &["p", "q"], &["y"], &[])
        .write(dir.path(), "two_outer.onnx");
    let n = 20_000; // 20000² f32 = 1.6 GB each
    let err = compile_error(&engine(), &path, &[&[n, 1], &[1, n]]);
    assert_mentions(
        &err,
        &["intermediates need", "memory limit of 2147483648 bytes"],
    );
}

#[test]
fn constants_folded_while_compiling_that_together_exceed_the_memory_limit() {
    // Twelve ConstantOfShape nodes of 200 MB each, all folded while compiling: each fits a
    // 256 MiB limit alone, but they are held together (a model the fuzzer found).
    let path = opal_tests::workspace_root()
        .join("tests/fuzz/regressions/model_plan/folded-constants-beyond-the-memory-limit.onnx");
    let mut deployment = Deployment::embedded_default().unwrap();
    deployment.engine.memory_limit = 256 << 20;
    let engine = Engine::new(&deployment).unwrap();
    let err = compile_error(&engine, &path, &[&[1]]);
    assert_mentions(
        &err,
        &[
            "node 'fill1' (ConstantOfShape)",
            "400000000 bytes of constants computed while compiling",
            "memory limit of 268435456 bytes",
        ],
    );
}
