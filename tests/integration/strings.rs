//! String tensors through the real plugins and the `opal` binary: a text pipeline (StringSplit,
//! StringNormalizer, LabelEncoder) whose results are checked, and a folded Constant of strings;
//! warmed-up runs hold no more memory after each run; `opal run` reads and writes strings as
//! `.npy` unicode arrays; the official Triton client sends and gets BYTES tensors as JSON and
//! binary. Bad inputs: a string where a float is declared and the reverse, a `.npy` object
//! array, a string into an operator that does not take strings, an invalid pattern, and bytes
//! that are not UTF-8 over HTTP.

use opal_plugin_api::DType;
use opal_runtime::{Deployment, Engine, Session, Tensor, TensorRef};
use opal_tests::{opal_binary, workspace_root, ModelBuilder, Server};
use std::{collections::BTreeMap, path::Path, process::Command, sync::Arc};

const FLOAT: i32 = 1;
const INT64: i32 = 7;
const STRING: i32 = 8;
const BOOL: i32 = 9;

fn default_engine() -> Arc<Engine> {
    Engine::new(&Deployment::embedded_default().unwrap()).unwrap()
}

/// A string tensor of the engine's memory.
fn strings(engine: &Engine, shape: &[usize], values: &[&str]) -> Tensor {
    Tensor::from_strings(
        shape,
        values.iter().map(|v| v.as_bytes()),
        engine.pool().tensor_owner(),
    )
    .unwrap()
}

/// text [1] split at spaces into words [1, n], normalized (lower case, "the" dropped) and
/// looked up in a vocabulary: ids [1, m] (-1 for unknown words), with the words and counts.
fn pipeline(dir: &Path) -> std::path::PathBuf {
    ModelBuilder::new(20)
        .opset("ai.onnx.ml", 4)
        .input_typed("text", STRING, &[1])
        .output_typed("ids", INT64, &[1, -1])
        .output_typed("words", STRING, &[1, -1])
        .output_typed("count", INT64, &[1])
        .node(
            "split",
            "",
            "StringSplit",
            &["text"],
            &["pieces", "count"],
            &[],
        )
        .string_attribute("delimiter", " ")
        .node(
            "normalize",
            "",
            "StringNormalizer",
            &["pieces"],
            &["words"],
            &[],
        )
        .string_attribute("case_change_action", "LOWER")
        .strings_attribute("stopwords", &["the"])
        .node(
            "lookup",
            "ai.onnx.ml",
            "LabelEncoder",
            &["words"],
            &["ids"],
            &[],
        )
        .strings_attribute("keys_strings", &["cat", "dog", "sat", "mat"])
        .ints_attribute("values_int64s", &[1, 2, 3, 4])
        .write(dir, "pipeline.onnx")
}

#[test]
fn a_text_pipeline_splits_normalizes_and_looks_up_words() {
    let dir = tempfile::tempdir().unwrap();
    let engine = default_engine();
    let model = engine.load_model(&pipeline(dir.path())).unwrap();
    let mut session = Session::new(engine.clone(), model, BTreeMap::new());
    let text = strings(&engine, &[1], &["The Cat sat on THE Mat"]);
    let state = session.run(&[text.as_ref()]).unwrap();
    let words = state.output(1).unwrap();
    assert_eq!(words.shape, &[1, 4]);
    assert_eq!(words.strings().unwrap(), ["cat", "sat", "on", "mat"]);
    assert_eq!(
        state.output(0).unwrap().as_slice::<i64>().unwrap(),
        [1, 3, -1, 4]
    );
    assert_eq!(state.output(2).unwrap().as_slice::<i64>().unwrap(), [6]);
    // Another text of another length through the same session.
    let text = strings(&engine, &[1], &["dog"]);
    let state = session.run(&[text.as_ref()]).unwrap();
    assert_eq!(state.output(1).unwrap().strings().unwrap(), ["dog"]);
    assert_eq!(state.output(0).unwrap().as_slice::<i64>().unwrap(), [2]);
}

#[test]
fn a_constant_of_strings_is_folded_and_joins_the_input() {
    let dir = tempfile::tempdir().unwrap();
    let model = ModelBuilder::new(20)
        .input_typed("x", STRING, &[2])
        .output_typed("y", STRING, &[2])
        .node("suffixes", "", "Constant", &[], &["s"], &[])
        .strings_attribute("value_strings", &["-a", "-日本"])
        .node("join", "", "StringConcat", &["x", "s"], &["y"], &[])
        .write(dir.path(), "constant_strings.onnx");
    let engine = default_engine();
    let model = engine.load_model(&model).unwrap();
    let mut session = Session::new(engine.clone(), model, BTreeMap::new());
    let x = strings(&engine, &[2], &["one", ""]);
    let state = session.run(&[x.as_ref()]).unwrap();
    assert_eq!(
        state.output(0).unwrap().strings().unwrap(),
        ["one-a", "-日本"]
    );
}

#[test]
fn warmed_up_runs_hold_no_more_memory_after_each_run() {
    let dir = tempfile::tempdir().unwrap();
    let engine = default_engine();
    let model = engine.load_model(&pipeline(dir.path())).unwrap();
    let mut session = Session::new(engine.clone(), model, BTreeMap::new());
    let text = strings(&engine, &[1], &["the dog sat on the cat"]);
    for _ in 0..3 {
        session.run(&[text.as_ref()]).unwrap();
    }
    let bytes = engine.tracker().current_bytes();
    for run in 0..20 {
        let state = session.run(&[text.as_ref()]).unwrap();
        assert_eq!(
            state.output(1).unwrap().strings().unwrap(),
            ["dog", "sat", "on", "cat"]
        );
        assert_eq!(
            engine.tracker().current_bytes(),
            bytes,
            "memory held after run {run} differs from after warm-up"
        );
    }
    drop(session);
    drop(text);
    assert!(engine.tracker().current_bytes() < bytes);
}

/// y = Abs(x) for x of ONNX element type `elem_type`.
fn abs_of(dir: &Path, elem_type: i32) -> std::path::PathBuf {
    ModelBuilder::new(17)
        .input_typed("x", elem_type, &[2])
        .output_typed("y", elem_type, &[2])
        .node("magnitude", "", "Abs", &["x"], &["y"], &[])
        .write(dir, &format!("abs_{elem_type}.onnx"))
}

#[test]
fn a_string_where_a_float_is_declared_and_the_reverse_are_refused_naming_the_input() {
    let dir = tempfile::tempdir().unwrap();
    let engine = default_engine();
    let model = engine.load_model(&abs_of(dir.path(), FLOAT)).unwrap();
    let mut session = Session::new(engine.clone(), model, BTreeMap::new());
    let text = strings(&engine, &[2], &["1.5", "2"]);
    let err = session.run(&[text.as_ref()]).err().unwrap().to_string();
    assert!(err.contains("input 'x' must be f32, got string"), "{err}");

    let model = engine.load_model(&pipeline(dir.path())).unwrap();
    let mut session = Session::new(engine.clone(), model, BTreeMap::new());
    let x = [1.0f32];
    let err = session
        .run(&[TensorRef::from_slice(&[1], &x)])
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("input 'text' must be string, got f32"),
        "{err}"
    );
}

#[test]
fn a_string_into_an_operator_that_does_not_take_strings_names_the_node_and_operator() {
    let dir = tempfile::tempdir().unwrap();
    let engine = default_engine();
    let err = engine
        .load_model(&abs_of(dir.path(), STRING))
        .err()
        .map(|e| e.to_string())
        .unwrap_or_else(|| {
            let model = engine.load_model(&abs_of(dir.path(), STRING)).unwrap();
            let mut session = Session::new(engine.clone(), model, BTreeMap::new());
            let text = strings(&engine, &[2], &["a", "b"]);
            session.run(&[text.as_ref()]).err().unwrap().to_string()
        });
    assert!(
        err.contains("node 'magnitude' (Abs)")
            && err.contains(
                "input 'x' is a string tensor, but operator Abs of plugin 'core-math' does not take strings"
            ),
        "{err}"
    );
}

#[test]
fn an_invalid_pattern_is_refused_at_compile_time_naming_the_node_and_attribute() {
    let dir = tempfile::tempdir().unwrap();
    let model = ModelBuilder::new(20)
        .input_typed("x", STRING, &[2])
        .output_typed("y", BOOL, &[2])
        .node("match", "", "RegexFullMatch", &["x"], &["y"], &[])
        .string_attribute("pattern", "[a-z")
        .write(dir.path(), "bad_pattern.onnx");
    let out = Command::new(opal_binary())
        .args(["run", "--iterations", "1"])
        .arg(&model)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("node 'match' (RegexFullMatch)")
            && stderr.contains("attribute 'pattern' (\"[a-z\") is not a regular expression"),
        "{stderr}"
    );
}

#[test]
fn opal_run_reads_and_writes_strings_as_npy_unicode_and_refuses_object_arrays() {
    let dir = tempfile::tempdir().unwrap();
    let model = pipeline(dir.path());
    let engine = default_engine();
    let input = dir.path().join("text.npy");
    let text = strings(&engine, &[1], &["the dog sat"]);
    opal_runtime::tensor_file::write_npy(&input, text.as_ref()).unwrap();
    let out_dir = dir.path().join("out");
    let run = |input: &Path| {
        Command::new(opal_binary())
            .args(["run", "--iterations", "1", "--input"])
            .arg(format!("text={}", input.display()))
            .arg("--output-dir")
            .arg(&out_dir)
            .arg(&model)
            .output()
            .unwrap()
    };
    let out = run(&input);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let owner = engine.pool().tensor_owner();
    let words =
        opal_runtime::tensor_file::read_tensor(&out_dir.join("output_1.npy"), owner).unwrap();
    assert_eq!(words.dtype, DType::STRING);
    assert_eq!(words.as_ref().strings().unwrap(), ["dog", "sat"]);

    // numpy's np.save of an object array: a pickle after the header.
    let header = "{'descr': '|O', 'fortran_order': False, 'shape': (1,), }";
    let mut object = b"\x93NUMPY\x01\x00".to_vec();
    let padded = format!("{header:<117}\n");
    object.extend_from_slice(&(padded.len() as u16).to_le_bytes());
    object.extend_from_slice(padded.as_bytes());
    object.extend_from_slice(b"\x80\x04\x95\x00");
    let objects = dir.path().join("objects.npy");
    std::fs::write(&objects, object).unwrap();
    let out = run(&objects);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains(&format!("tensor file {}", objects.display()))
            && stderr.contains("Python objects (dtype object)")
            && stderr.contains("np.asarray(values, dtype=str)"),
        "{stderr}"
    );
}

/// text [?] normalized (lower case, "the" dropped) and matched against `[a-z]+`.
fn normalize_and_match(dir: &Path) -> std::path::PathBuf {
    ModelBuilder::new(20)
        .input_typed("text", STRING, &[-1])
        .output_typed("normalized", STRING, &[-1])
        .output_typed("matches", BOOL, &[-1])
        .node(
            "normalize",
            "",
            "StringNormalizer",
            &["text"],
            &["normalized"],
            &[],
        )
        .string_attribute("case_change_action", "LOWER")
        .strings_attribute("stopwords", &["the"])
        .node(
            "letters",
            "",
            "RegexFullMatch",
            &["normalized"],
            &["matches"],
            &[],
        )
        .string_attribute("pattern", "[a-z]+")
        .write(dir, "normalize_and_match.onnx")
}

#[test]
fn the_python_client_sends_and_gets_strings_and_invalid_utf8_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let python = workspace_root().join(".cache/venv/bin/python");
    assert!(
        python.is_file(),
        "{} is missing: run tests/run.sh, which makes the venv with tritonclient",
        python.display()
    );
    let model = normalize_and_match(dir.path());
    let text = opal_tests::plugin("opal_text");
    let config = dir.path().join("serve.toml");
    std::fs::write(
        &config,
        format!(
            "[[plugins]]\npath = \"{}\"\n\n[[models]]\nname = \"words\"\npath = \"{}\"\n",
            text.display(),
            model.display()
        ),
    )
    .unwrap();
    let server = Server::start(&config);
    let client = Command::new(python)
        .arg(workspace_root().join("tests/python/kserve_strings.py"))
        .arg(&server.address)
        .arg("words")
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&client.stdout);
    assert!(
        client.status.success(),
        "{out}\n{}",
        String::from_utf8_lossy(&client.stderr)
    );
    assert!(
        out.contains("strings with JSON tensors: as expected"),
        "{out}"
    );
    assert!(
        out.contains("strings with binary tensors: as expected"),
        "{out}"
    );

    let header = r#"{"inputs":[{"name":"text","shape":[2],"datatype":"BYTES","parameters":{"binary_data_size":11}}]}"#;
    let mut body = header.as_bytes().to_vec();
    body.extend_from_slice(b"\x02\0\0\0ok\x01\0\0\0\xff");
    let length = header.len().to_string();
    let reply = server.post(
        "/v2/models/words/infer",
        &[("Inference-Header-Content-Length", &length)],
        &body,
    );
    assert_eq!(reply.status, 400, "{}", reply.text());
    assert!(
        reply
            .text()
            .contains("input 'text': element 1 is not UTF-8 text"),
        "{}",
        reply.text()
    );
    // The server still answers.
    let json = r#"{"inputs":[{"name":"text","shape":[1],"datatype":"BYTES","data":["Fine"]}]}"#;
    let reply = server.post("/v2/models/words/infer", &[], json.as_bytes());
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json()["outputs"][0]["data"][0], "fine");
}
