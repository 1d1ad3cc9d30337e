//! FlexAttention's modifier subgraphs through the real host: a `prob_mod` runs on every call,
//! warmed-up runs allocate nothing with or without modifiers, and a modifier of the wrong
//! signature is refused naming the node and the subgraph.

use opal_runtime::onnx::proto::GraphProto;
use opal_runtime::{Deployment, Engine, Session, TensorRef};
use opal_tests::{heap_allocations_after_warm_up, ModelBuilder};
use std::{collections::BTreeMap, path::Path, sync::Arc};

const PREVIEW: &str = "ai.onnx.preview";
const DOUBLE: i32 = 11;

fn default_engine() -> Arc<Engine> {
    Engine::new(&Deployment::embedded_default().unwrap()).unwrap()
}

/// A FlexAttention node over Q [1, 2, 3, 4] and K, V [1, 2, 5, 4] with the given modifiers.
fn flex_model(dir: &Path, name: &str, modifiers: Vec<(&str, GraphProto)>) -> std::path::PathBuf {
    ModelBuilder::new(26)
        .opset(PREVIEW, 1)
        .input("q", &[1, 2, 3, 4])
        .input("k", &[1, 2, 5, 4])
        .input("v", &[1, 2, 5, 4])
        .output("y", &[1, 2, 3, 4])
        .graph_node_in(
            PREVIEW,
            "flex",
            "FlexAttention",
            &["q", "k", "v"],
            &["y"],
            modifiers,
        )
        .write(dir, name)
}

/// A modifier of one scores input, giving `outputs` from `nodes` (name, op, inputs, output).
fn modifier(
    inputs: &[&str],
    outputs: &[(&str, i32)],
    nodes: &[(&str, &[&str], &str)],
) -> GraphProto {
    let mut graph = ModelBuilder::new(26).initializer("half", &[], &[0.5]);
    for input in inputs {
        graph = graph.input(input, &[-1, -1, -1, -1]);
    }
    for &(output, elem_type) in outputs {
        graph = graph.output_typed(output, elem_type, &[-1, -1, -1, -1]);
    }
    for &(op, node_inputs, output) in nodes {
        let attributes: &[(&str, i64)] = match op {
            "Concat" => &[("axis", 3)],
            "Cast" => &[("to", DOUBLE as i64)],
            _ => &[],
        };
        graph = graph.node(output, "", op, node_inputs, &[output], attributes);
    }
    graph.into_graph()
}

/// `prob_mod(p) = p * 0.5`.
fn halving() -> GraphProto {
    modifier(&["p"], &[("p_out", 1)], &[("Mul", &["p", "half"], "p_out")])
}

fn values(len: usize, seed: usize) -> Vec<f32> {
    (0..len)
        .map(|i| ((i * 37 + seed * 11) % 29) as f32 / 14.5 - 1.0)
        .collect()
}

fn run(engine: &Arc<Engine>, model: &Path) -> Vec<f32> {
    let model = engine.load_model(model).unwrap();
    let mut session = Session::new(engine.clone(), model, BTreeMap::new());
    let (q, k, v) = (values(24, 1), values(40, 2), values(40, 3));
    let inputs = [
        TensorRef::from_slice(&[1, 2, 3, 4], &q),
        TensorRef::from_slice(&[1, 2, 5, 4], &k),
        TensorRef::from_slice(&[1, 2, 5, 4], &v),
    ];
    let state = session.run(&inputs).unwrap();
    state.output(0).unwrap().as_slice::<f32>().unwrap().to_vec()
}

#[test]
fn a_prob_mod_rewrites_the_probabilities_on_every_run() {
    let dir = tempfile::tempdir().unwrap();
    let engine = default_engine();
    let plain = run(&engine, &flex_model(dir.path(), "plain.onnx", vec![]));
    let halved = flex_model(dir.path(), "halved.onnx", vec![("prob_mod", halving())]);
    for _ in 0..2 {
        let got = run(&engine, &halved);
        let expected: Vec<f32> = plain.iter().map(|y| y * 0.5).collect();
        assert_eq!(got, expected);
    }
}

#[test]
fn warmed_up_runs_allocate_nothing_with_or_without_modifiers() {
    let dir = tempfile::tempdir().unwrap();
    let engine = default_engine();
    let (q, k, v) = (values(24, 1), values(40, 2), values(40, 3));
    let inputs = [
        TensorRef::from_slice(&[1, 2, 3, 4], &q),
        TensorRef::from_slice(&[1, 2, 5, 4], &k),
        TensorRef::from_slice(&[1, 2, 5, 4], &v),
    ];
    for (name, modifiers) in [
        ("plain.onnx", vec![]),
        ("halved.onnx", vec![("prob_mod", halving())]),
    ] {
        let model = engine
            .load_model(&flex_model(dir.path(), name, modifiers))
            .unwrap();
        let mut session = Session::new(engine.clone(), model, BTreeMap::new());
        let allocations = heap_allocations_after_warm_up(&engine, &mut session, &inputs, 50);
        assert_eq!(allocations, (0, 0), "{name}: (host, plugins)");
    }
}

/// Compiles a FlexAttention model with `modifiers` and returns the error.
fn compile_error(name: &str, modifiers: Vec<(&str, GraphProto)>) -> String {
    let dir = tempfile::tempdir().unwrap();
    let engine = default_engine();
    let path = flex_model(dir.path(), name, modifiers);
    let model = engine.load_model(&path).unwrap();
    let mut session = Session::new(engine.clone(), model, BTreeMap::new());
    let (q, k) = (values(24, 1), values(40, 2));
    let inputs = [
        TensorRef::from_slice(&[1, 2, 3, 4], &q),
        TensorRef::from_slice(&[1, 2, 5, 4], &k),
        TensorRef::from_slice(&[1, 2, 5, 4], &k),
    ];
    let error = match session.run(&inputs) {
        Ok(_) => panic!("{name} compiled"),
        Err(e) => e.to_string(),
    };
    assert!(
        error.contains("node 'flex' (ai.onnx.preview:FlexAttention)"),
        "{error}"
    );
    assert_eq!(error.matches(name).count(), 1, "{error}");
    error
}

#[test]
fn a_modifier_of_two_inputs_is_refused() {
    let two_inputs = modifier(
        &["s", "t"],
        &[("s_out", 1)],
        &[("Add", &["s", "t"], "s_out")],
    );
    let error = compile_error("two_inputs.onnx", vec![("score_mod", two_inputs)]);
    assert!(
        error.contains("subgraph 'score_mod' declares 2 inputs, 1 were given"),
        "{error}"
    );
}

#[test]
fn a_modifier_of_two_outputs_is_refused() {
    let two_outputs = modifier(
        &["s"],
        &[("a", 1), ("b", 1)],
        &[("Identity", &["s"], "a"), ("Identity", &["s"], "b")],
    );
    let error = compile_error("two_outputs.onnx", vec![("score_mod", two_outputs)]);
    assert!(
        error.contains("'score_mod' gives 2 outputs; a modifier gives one"),
        "{error}"
    );
}

#[test]
fn a_modifier_that_changes_the_type_is_refused() {
    let to_double = modifier(&["p"], &[("p_out", DOUBLE)], &[("Cast", &["p"], "p_out")]);
    let error = compile_error("to_double.onnx", vec![("prob_mod", to_double)]);
    assert!(
        error.contains("'prob_mod' gives f64 [1,2,3,5]; it must keep its input's dtype and shape, f32 [1,2,3,5]"),
        "{error}"
    );
}

#[test]
fn a_modifier_that_changes_the_shape_is_refused() {
    let wider = modifier(&["s"], &[("s_out", 1)], &[("Concat", &["s", "s"], "s_out")]);
    let error = compile_error("wider.onnx", vec![("score_mod", wider)]);
    assert!(
        error.contains("'score_mod' gives f32 [1,2,3,10]; it must keep its input's dtype and shape, f32 [1,2,3,5]"),
        "{error}"
    );
}
