//! The `opal` binary end to end: `opal plugins`, `opal run` on the embedded default
//! deployment, and deployment files it must refuse.

use opal_tests::{opal_binary, plugin};
use std::process::{Command, Output};

fn opal(args: &[&str]) -> Output {
    let output = Command::new(opal_binary())
        .args(args)
        .output()
        .expect("the opal binary runs (build the workspace first)");
    assert!(
        output.status.code().is_some(),
        "opal {args:?} was killed by a signal: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// The number after `label` on the line that starts with it.
fn figure(text: &str, label: &str) -> f64 {
    let line = text
        .lines()
        .find(|l| l.starts_with(label))
        .unwrap_or_else(|| panic!("no line '{label}' in:\n{text}"));
    line[label.len()..]
        .trim()
        .split(|c: char| !(c.is_ascii_digit() || c == '.'))
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no number on '{line}'"))
}

#[test]
fn plugins_lists_matmul_with_its_plugin_name_and_version() {
    let out = opal(&["plugins"]);
    let text = stdout(&out);
    assert!(out.status.success(), "{}", stderr(&out));
    let version = env!("CARGO_PKG_VERSION_MAJOR"); // the tests crate is 0.x like the plugin
    assert!(
        text.contains(&format!(
            "plugin core-math {version}.1.0 (ABI {}.{}) from ",
            opal_plugin_api::ABI_MAJOR,
            opal_plugin_api::ABI_MINOR
        )),
        "{text}"
    );
    assert!(
        text.lines().any(|l| l.trim_start().starts_with("MatMul ")),
        "{text}"
    );
}

#[test]
fn the_default_deployment_loads_every_operator_plugin_of_the_workspace() {
    let out = opal(&["plugins"]);
    let text = stdout(&out);
    assert!(out.status.success(), "{}", stderr(&out));
    for (name, operator) in [
        ("core-math", "MatMul"),
        ("tensor-ops", "Gather"),
        ("nn", "Conv"),
        ("transformer", "Attention"),
        ("signal", "DFT"),
        ("control-flow", "Loop"),
        ("ml", "TreeEnsemble"),
        ("training", "Adam"),
        ("image", "ImageDecoder"),
        ("sequence", "SequenceAt"),
        ("text", "StringSplit"),
    ] {
        let section = text
            .split("\nplugin ")
            .find(|s| s.starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("no plugin {name} in:\n{text}"));
        assert!(
            section
                .lines()
                .any(|l| l.trim_start().starts_with(&format!("{operator} "))),
            "plugin {name} does not list {operator}:\n{text}"
        );
    }
}

#[test]
fn run_without_arguments_prints_the_statistics_block() {
    let out = opal(&["run"]);
    let text = stdout(&out);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(figure(&text, "Current usage:") > 0.0, "{text}");
    assert!(
        figure(&text, "Peak usage:") >= figure(&text, "Current usage:"),
        "{text}"
    );
    assert!(figure(&text, "Tensors in pool:") > 0.0, "{text}");
    assert!(figure(&text, "Pool hit rate:") > 0.0, "{text}");
    assert!(figure(&text, "Active operators:") >= 13.0, "{text}");
    assert!(figure(&text, "First output") > 0.0, "{text}");
    let plugins = text
        .split("Bytes per plugin:")
        .nth(1)
        .unwrap_or_else(|| panic!("no per-plugin bytes in:\n{text}"));
    assert!(plugins.contains("core-math"), "{text}");
    assert!(
        text.contains("Output 'save_infer_model/scale_0.tmp_1': f32 [1, 2]"),
        "{text}"
    );
}

#[test]
fn the_default_model_makes_no_heap_allocations_after_warm_up() {
    let out = opal(&["run", "--warmup", "3", "--iterations", "50"]);
    let text = stdout(&out);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        text.contains(
            "Heap allocations per run after warm-up: 0 (host 0, plugins 0, over 50 runs)"
        ),
        "{text}"
    );
}

#[test]
fn two_kernel_threads_make_no_heap_allocations_either() {
    let out = opal(&[
        "run",
        "--threads",
        "2",
        "--warmup",
        "3",
        "--iterations",
        "20",
    ]);
    let text = stdout(&out);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        text.contains(
            "Heap allocations per run after warm-up: 0 (host 0, plugins 0, over 20 runs)"
        ),
        "{text}"
    );
}

#[test]
fn a_malformed_deployment_names_the_file_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broken.toml");
    std::fs::write(&path, "[engine]\nthreads = 1\n\n[pool]\nmax_per_keys = 4\n").unwrap();
    for command in ["plugins", "run"] {
        let out = opal(&[command, "--config", path.to_str().unwrap()]);
        let err = stderr(&out);
        assert!(!out.status.success());
        assert!(err.contains(&path.display().to_string()), "{err}");
        assert!(err.contains("line 5"), "{err}");
        assert!(err.contains("max_per_keys"), "{err}");
    }
}

#[test]
fn a_deployment_with_a_missing_plugin_says_which_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("deploy.toml");
    std::fs::write(&path, "[[plugins]]\npath = \"plugins/libnowhere.so\"\n").unwrap();
    let out = opal(&["plugins", "--config", path.to_str().unwrap()]);
    let err = stderr(&out);
    assert!(!out.status.success());
    assert!(
        err.contains(
            &dir.path()
                .join("plugins/libnowhere.so")
                .display()
                .to_string()
        ),
        "{err}"
    );
    assert!(err.contains("does not exist"), "{err}");
}

#[test]
fn a_missing_plugin_named_bare_lists_the_directories_searched() {
    let dir = tempfile::tempdir().unwrap();
    let extra = dir.path().join("extra-plugins");
    std::fs::create_dir(&extra).unwrap();
    let path = dir.path().join("deploy.toml");
    std::fs::write(&path, "[[plugins]]\npath = \"libnowhere.so\"\n").unwrap();
    let out = Command::new(opal_binary())
        .args(["plugins", "--config", path.to_str().unwrap()])
        .env("OPAL_PLUGIN_PATH", &extra)
        .output()
        .unwrap();
    let err = stderr(&out);
    assert!(!out.status.success());
    assert!(
        err.contains("plugin file libnowhere.so does not exist in any of the directories searched"),
        "{err}"
    );
    // $OPAL_PLUGIN_PATH first, the deployment's directory last, and what to do.
    let extra_at = err.find(&extra.display().to_string()).expect(&err);
    let deployment_dir = format!("{})", dir.path().display());
    let deployment_at = err.find(&deployment_dir).expect(&err);
    assert!(extra_at < deployment_at, "{err}");
    assert!(err.contains("OPAL_PLUGIN_PATH"), "{err}");
    assert_eq!(err.matches("does not exist").count(), 1, "{err}");
}

#[test]
fn a_missing_model_or_deployment_file_is_named_with_its_cause_said_once() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("absent.onnx");
    let deployment = dir.path().join("absent.toml");
    for (args, what) in [
        (vec!["bench", model.to_str().unwrap()], &model),
        (
            vec!["run", "--config", deployment.to_str().unwrap()],
            &deployment,
        ),
    ] {
        let out = opal(&args);
        let err = stderr(&out);
        assert!(!out.status.success(), "{err}");
        assert!(err.contains(&what.display().to_string()), "{err}");
        assert_eq!(err.matches("No such file or directory").count(), 1, "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
    }
}

#[test]
fn two_plugins_with_one_operator_are_refused_unless_the_deployment_picks_one() {
    let dir = tempfile::tempdir().unwrap();
    let plugins = format!(
        "[[plugins]]\npath = \"{}\"\n[[plugins]]\npath = \"{}\"\n",
        plugin("opal_core_math").display(),
        plugin("opal_faulty_plugin").display()
    );
    let conflicting = dir.path().join("conflict.toml");
    std::fs::write(&conflicting, &plugins).unwrap();
    let out = opal(&["plugins", "--config", conflicting.to_str().unwrap()]);
    let err = stderr(&out);
    assert!(!out.status.success());
    assert!(err.contains("Relu"), "{err}");
    assert!(
        err.contains("'core-math'") && err.contains("'faulty'"),
        "{err}"
    );
    // The files the deployment names, not the copies the loader opened.
    let given = plugin("opal_faulty_plugin").display().to_string();
    assert!(err.contains(&given), "{err}");
    assert!(!err.contains("opal-plugins"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");

    let resolved = dir.path().join("resolved.toml");
    std::fs::write(
        &resolved,
        format!("{plugins}[operators]\nRelu = \"core-math\"\n"),
    )
    .unwrap();
    let out = opal(&["plugins", "--config", resolved.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn a_plugin_that_crashes_while_loading_is_refused_without_crashing_opal() {
    let build = opal_tests::build_variant(
        "opal-faulty-plugin",
        "opal_faulty_plugin",
        "panicking-table",
    );
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("deploy.toml");
    std::fs::write(
        &config,
        format!("[[plugins]]\npath = \"{}\"\n", build.display()),
    )
    .unwrap();
    let out = opal(&["plugins", "--config", config.to_str().unwrap()]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    for part in [
        &build.display().to_string(),
        "crashed while a probe process loaded it",
        "SIGABRT",
        "the operator table panics on purpose",
    ] {
        assert!(err.contains(part), "'{part}' not in: {err}");
    }
    assert_eq!(err.lines().count(), 1, "{err}");
}

#[test]
fn run_writes_half_precision_outputs_as_npy_and_bf16_ones_as_tensor_protos() {
    let dir = tempfile::tempdir().unwrap();
    let model = opal_tests::ModelBuilder::new(17)
        .input("x", &[3])
        .output_typed("half", 10, &[3])
        .output_typed("brain", 16, &[3])
        .node("to_half", "", "Cast", &["x"], &["half"], &[("to", 10)])
        .node("to_brain", "", "Cast", &["x"], &["brain"], &[("to", 16)])
        .write(dir.path(), "casts.onnx");
    let input = dir.path().join("x.npy");
    let values = [1.5f32, -2.0, 0.25];
    opal_runtime::tensor_file::write_npy(
        &input,
        opal_runtime::TensorRef::from_slice(&[3], &values),
    )
    .unwrap();
    let out = dir.path().join("out");
    let run = opal(&[
        "run",
        model.to_str().unwrap(),
        "--iterations",
        "1",
        "--input",
        &format!("x={}", input.display()),
        "--output-dir",
        out.to_str().unwrap(),
    ]);
    assert!(run.status.success(), "{}", stderr(&run));
    let tracker = opal_runtime::memory::MemoryTracker::new();
    let owner = tracker.owner("outputs");
    let read = |name: &str| opal_runtime::tensor_file::read_tensor(&out.join(name), &owner);
    // 1.5, -2.0 and 0.25 in each type's bits, little-endian.
    let half = read("output_0.npy").unwrap();
    assert_eq!(half.as_ref().data, [0x00, 0x3e, 0x00, 0xc0, 0x00, 0x34]);
    let brain = read("output_1.pb").unwrap();
    assert_eq!(brain.as_ref().data, [0xc0, 0x3f, 0x00, 0xc0, 0x80, 0x3e]);
}
