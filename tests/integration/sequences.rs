//! Sequences and optionals through the real plugins and the `opal` binary: a tensor split to a
//! sequence, mapped by a subgraph and joined back; warmed-up runs of it hold no more memory
//! after each run; bad inputs (a sequence where a tensor is declared and the reverse, a
//! position out of range, elements that do not fit together, an empty sequence) are refused
//! naming the input or node.

use opal_plugin_api::DType;
use opal_runtime::{
    onnx::proto::{SequenceProto, TensorProto, ELEM_TENSOR},
    value::{Value, ValueView},
    Deployment, Engine, Session, Tensor, TensorRef,
};
use opal_tests::{opal_binary, ModelBuilder};
use prost::Message;
use std::{collections::BTreeMap, path::Path, process::Command, sync::Arc};

const FLOAT: i32 = 1;
const INT64: i32 = 7;

fn default_engine() -> Arc<Engine> {
    Engine::new(&Deployment::embedded_default().unwrap()).unwrap()
}

/// A tensor of the engine's pool holding `values`.
fn pooled(engine: &Engine, shape: &[usize], values: &[f32]) -> Tensor {
    let mut tensor = engine.pool().get(DType::F32, shape).unwrap();
    let source = TensorRef::from_slice(shape, values);
    tensor.bytes_mut().copy_from_slice(source.data);
    tensor
}

/// x [6, 2] split into pieces of two rows, each piece scaled by the outer `scale` in a
/// SequenceMap body, joined back along axis 0: y = scale·x; the mapped sequence is an output
/// too.
fn split_map_concat(dir: &Path) -> std::path::PathBuf {
    let body = ModelBuilder::new(17)
        .input("piece", &[2, 2])
        .output("scaled", &[2, 2])
        .node("scale", "", "Mul", &["piece", "factor"], &["scaled"], &[])
        .into_graph();
    ModelBuilder::new(17)
        .input("x", &[6, 2])
        .output("y", &[6, 2])
        .output_sequence("pieces", FLOAT, &[2, 2])
        .initializer("factor", &[1], &[3.0])
        .initializer_i64("rows", &[], &[2])
        .node(
            "split",
            "",
            "SplitToSequence",
            &["x", "rows"],
            &["seq"],
            &[],
        )
        .graph_node(
            "map",
            "SequenceMap",
            &["seq"],
            &["pieces"],
            vec![("body", body)],
        )
        .node(
            "join",
            "",
            "ConcatFromSequence",
            &["pieces"],
            &["y"],
            &[("axis", 0)],
        )
        .write(dir, "split_map_concat.onnx")
}

#[test]
fn a_tensor_split_to_a_sequence_mapped_and_joined_comes_back_scaled() {
    let dir = tempfile::tempdir().unwrap();
    let engine = default_engine();
    let model = engine.load_model(&split_map_concat(dir.path())).unwrap();
    let mut session = Session::new(engine.clone(), model, BTreeMap::new());
    let x: Vec<f32> = (0..12).map(|v| v as f32 - 4.0).collect();
    let state = session.run(&[TensorRef::from_slice(&[6, 2], &x)]).unwrap();
    let y = state.output(0).unwrap();
    assert_eq!(y.shape, &[6, 2]);
    let expected: Vec<f32> = x.iter().map(|v| 3.0 * v).collect();
    assert_eq!(y.as_slice::<f32>().unwrap(), expected.as_slice());
    let Some(ValueView::Sequence(pieces)) = state.output_value(1) else {
        panic!("output 1 is not a sequence");
    };
    assert_eq!(pieces.len(), 3);
    for (i, piece) in pieces.iter().enumerate() {
        assert_eq!(piece.shape(), [2, 2]);
        assert_eq!(
            piece.as_slice::<f32>().unwrap(),
            &expected[4 * i..4 * i + 4]
        );
    }
    assert!(state.output(1).is_none(), "a sequence is no tensor output");
}

#[test]
fn warmed_up_runs_hold_no_more_memory_after_each_run() {
    let dir = tempfile::tempdir().unwrap();
    let engine = default_engine();
    let model = engine.load_model(&split_map_concat(dir.path())).unwrap();
    let mut session = Session::new(engine.clone(), model, BTreeMap::new());
    let x: Vec<f32> = (0..12).map(|v| v as f32).collect();
    let inputs = [TensorRef::from_slice(&[6, 2], &x)];
    for _ in 0..3 {
        session.run(&inputs).unwrap();
    }
    let bytes = engine.tracker().current_bytes();
    let pooled = engine.pool().stats().pooled_tensors;
    for run in 0..20 {
        let state = session.run(&inputs).unwrap();
        assert_eq!(
            state.output(0).unwrap().as_slice::<f32>().unwrap()[11],
            33.0
        );
        assert_eq!(
            (
                engine.tracker().current_bytes(),
                engine.pool().stats().pooled_tensors
            ),
            (bytes, pooled),
            "memory held (bytes, pooled tensors) after run {run} differs from after warm-up"
        );
    }
    drop(session);
    assert!(
        engine.tracker().current_bytes() <= bytes,
        "the session's sequences went back to the pool when it was dropped"
    );
}

/// SequenceAt(s, p) of a sequence input `s` of f32 [?, 1] elements.
fn sequence_at(dir: &Path) -> std::path::PathBuf {
    ModelBuilder::new(17)
        .input_sequence("s", FLOAT, &[-1, 1])
        .input_typed("p", INT64, &[])
        .output("e", &[-1, 1])
        .node("at", "", "SequenceAt", &["s", "p"], &["e"], &[])
        .write(dir, "sequence_at.onnx")
}

/// The positions the SequenceAt test reads: the last element, one past the end, the first.
static POSITIONS: [[i64; 1]; 3] = [[-1], [2], [0]];

#[test]
fn a_sequence_input_is_read_by_element_and_a_position_out_of_range_names_the_node() {
    let dir = tempfile::tempdir().unwrap();
    let engine = default_engine();
    let model = engine.load_model(&sequence_at(dir.path())).unwrap();
    let mut session = Session::new(engine.clone(), model, BTreeMap::new());
    let s = Value::Sequence(vec![
        pooled(&engine, &[1, 1], &[1.0]),
        pooled(&engine, &[2, 1], &[2.0, 3.0]),
    ]);
    let at = |p: &'static [i64; 1]| [s.view(), ValueView::Tensor(TensorRef::from_slice(&[], p))];
    let state = session.run(&at(&POSITIONS[0])).unwrap();
    assert_eq!(
        state.output(0).unwrap().as_slice::<f32>().unwrap(),
        [2.0, 3.0]
    );
    let err = session
        .run(&at(&POSITIONS[1]))
        .err()
        .expect("the run fails")
        .to_string();
    assert!(
        err.contains("node 'at' (SequenceAt)")
            && err.contains("position 2 is out of range for a sequence of 2 elements ([-2, 1])"),
        "{err}"
    );
    // The session stays usable, and the sequence was not consumed.
    let state = session.run(&at(&POSITIONS[2])).unwrap();
    assert_eq!(state.output(0).unwrap().as_slice::<f32>().unwrap(), [1.0]);
    s.release(&engine);
}

#[test]
fn a_sequence_where_a_tensor_is_declared_and_the_reverse_are_refused_naming_the_input() {
    let dir = tempfile::tempdir().unwrap();
    let engine = default_engine();
    let tensor_model = ModelBuilder::new(17)
        .input("x", &[2])
        .output("y", &[2])
        .node("same", "", "Identity", &["x"], &["y"], &[])
        .write(dir.path(), "tensor_in.onnx");
    let model = engine.load_model(&tensor_model).unwrap();
    let mut session = Session::new(engine.clone(), model, BTreeMap::new());
    let s = Value::Sequence(vec![pooled(&engine, &[2], &[1.0, 2.0])]);
    let err = session
        .run(&[s.view()])
        .err()
        .expect("the run fails")
        .to_string();
    assert!(
        err.contains("input 'x' is declared a tensor, but a sequence was given"),
        "{err}"
    );

    let model = engine.load_model(&sequence_at(dir.path())).unwrap();
    let mut session = Session::new(engine.clone(), model, BTreeMap::new());
    let x = [1.0f32];
    let p = [0i64];
    let err = session
        .run(&[
            TensorRef::from_slice(&[1, 1], &x),
            TensorRef::from_slice(&[], &p),
        ])
        .err()
        .expect("the run fails")
        .to_string();
    assert!(
        err.contains("input 's' is declared a sequence, but a tensor was given"),
        "{err}"
    );
    s.release(&engine);
}

/// ConcatFromSequence of a sequence input along axis 1.
fn concat(dir: &Path) -> std::path::PathBuf {
    ModelBuilder::new(17)
        .input_sequence("s", FLOAT, &[-1, -1])
        .output("y", &[-1, -1])
        .node(
            "join",
            "",
            "ConcatFromSequence",
            &["s"],
            &["y"],
            &[("axis", 1)],
        )
        .write(dir, "concat.onnx")
}

#[test]
fn elements_that_do_not_fit_together_and_an_empty_sequence_are_refused_naming_the_node() {
    let dir = tempfile::tempdir().unwrap();
    let engine = default_engine();
    let model = engine.load_model(&concat(dir.path())).unwrap();
    let mut session = Session::new(engine.clone(), model, BTreeMap::new());
    let fitting = Value::Sequence(vec![
        pooled(&engine, &[2, 1], &[1.0, 2.0]),
        pooled(&engine, &[2, 2], &[3.0, 4.0, 5.0, 6.0]),
    ]);
    let state = session.run(&[fitting.view()]).unwrap();
    let y = state.output(0).unwrap();
    assert_eq!(y.shape, &[2, 3]);
    assert_eq!(y.as_slice::<f32>().unwrap(), [1.0, 3.0, 4.0, 2.0, 5.0, 6.0]);
    let mismatched = Value::Sequence(vec![
        pooled(&engine, &[2, 1], &[1.0, 2.0]),
        pooled(&engine, &[3, 1], &[3.0, 4.0, 5.0]),
    ]);
    let err = session
        .run(&[mismatched.view()])
        .err()
        .expect("the run fails")
        .to_string();
    assert!(
        err.contains("node 'join' (ConcatFromSequence)")
            && err.contains("element 1 is f32 [3, 1] and element 0 f32 [2, 1]"),
        "{err}"
    );
    let empty = Value::Sequence(Vec::new());
    let err = session
        .run(&[empty.view()])
        .err()
        .expect("the run fails")
        .to_string();
    assert!(
        err.contains("node 'join' (ConcatFromSequence)") && err.contains("the sequence is empty"),
        "{err}"
    );
    fitting.release(&engine);
    mismatched.release(&engine);
}

/// Writes `elements` as an ONNX `SequenceProto` file.
fn write_sequence(path: &Path, elements: &[(&[i64], &[f32])]) {
    let proto = SequenceProto {
        name: "s".into(),
        elem_type: ELEM_TENSOR,
        tensor_values: elements
            .iter()
            .map(|(dims, values)| TensorProto {
                dims: dims.to_vec(),
                data_type: FLOAT,
                float_data: values.to_vec(),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    };
    std::fs::write(path, proto.encode_to_vec()).unwrap();
}

#[test]
fn opal_run_reads_a_sequence_file_and_writes_a_sequence_output_as_a_folder() {
    let dir = tempfile::tempdir().unwrap();
    let model = ModelBuilder::new(17)
        .input_sequence("s", FLOAT, &[-1])
        .input("x", &[1])
        .output_sequence("t", FLOAT, &[-1])
        .node("push", "", "SequenceInsert", &["s", "x"], &["t"], &[])
        .write(dir.path(), "insert.onnx");
    let input = dir.path().join("s.pb");
    write_sequence(&input, &[(&[2], &[1.0, 2.0]), (&[1], &[3.0])]);
    let out_dir = dir.path().join("out");
    let run = |args: &[&str]| {
        Command::new(opal_binary())
            .arg("run")
            .arg(&model)
            .args(args)
            .output()
            .unwrap()
    };
    let out = run(&[
        "--input",
        &format!("s={}", input.display()),
        "--iterations",
        "2",
        "--output-dir",
        out_dir.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("Output 't': a sequence of 3 tensors"),
        "{stdout}"
    );
    let folder = out_dir.join("output_0");
    let mut files: Vec<String> = std::fs::read_dir(&folder)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert_eq!(files, ["0.npy", "1.npy", "2.npy"]);

    // Without the sequence file, the error says how to give it.
    let out = run(&[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("input 's' is a sequence") && stderr.contains("--input s=PATH"),
        "{stderr}"
    );
}

#[test]
fn opal_serve_refuses_a_model_whose_inputs_are_not_tensors_naming_model_and_value() {
    let dir = tempfile::tempdir().unwrap();
    let model = sequence_at(dir.path());
    let plugins = opal_tests::plugin("opal_sequence");
    let config = dir.path().join("serve.toml");
    std::fs::write(
        &config,
        format!(
            "[[plugins]]\npath = \"{}\"\n\n[[models]]\nname = \"pick\"\npath = \"{}\"\n",
            plugins.display(),
            model.display()
        ),
    )
    .unwrap();
    let out = Command::new(opal_binary())
        .args(["serve", "--config"])
        .arg(&config)
        .args(["--listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("model 'pick'")
            && stderr
                .contains("'s' is a sequence, but the KServe v2 protocol carries tensors only"),
        "{stderr}"
    );
}
