//! The scoreboard: the ONNX backend node cases, the light model zoo, the fusion cases and the
//! real models, run through `opal check` on the test data `tests/data/prepare.py` writes
//! (tests/run.sh makes it), once on each instruction set this CPU can run (`OPAL_ISA`). Every
//! node case on `tests/conformance/expected-pass.txt` must pass; the list only grows. Every
//! case that fails must be listed, with its reason, in `tests/conformance/known-failures.md`.

use opal_plugin_api::Isa;
use opal_tests::{opal_binary, workspace_root};
use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    process::Command,
};

/// The prepared test data (`$OPAL_TEST_DATA`, or `.cache/data` in the workspace).
pub(crate) fn data_dir(kind: &str) -> PathBuf {
    let root = std::env::var_os("OPAL_TEST_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join(".cache/data"));
    let dir = root.join(kind);
    assert!(
        dir.join(".complete").is_file(),
        "{} is not prepared: run tests/run.sh, which makes the Python venv and the test data \
         (or: python tests/data/prepare.py {})",
        dir.display(),
        root.display()
    );
    dir
}

/// Runs `opal check` on every case directory under `dir` with kernels capped to `isa`; returns
/// (passed, failed lines).
fn check_all(dir: &Path, isa: Isa) -> (BTreeSet<String>, Vec<String>) {
    let mut cases: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    cases.sort();
    let output = Command::new(opal_binary())
        .arg("check")
        .args(&cases)
        .env("OPAL_ISA", isa.name())
        .output()
        .expect("opal runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.code().is_some(),
        "opal check ({isa}) was killed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let last = stdout.lines().last().unwrap_or_default();
    assert!(
        last.ends_with(" failed") && last.contains(" passed, "),
        "opal check ({isa}) did not finish with its summary line:\n{stdout}"
    );
    let passed = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("PASS "))
        .map(str::to_owned)
        .collect();
    let failed = stdout
        .lines()
        .filter(|l| l.starts_with("FAIL "))
        .map(str::to_owned)
        .collect();
    (passed, failed)
}

#[test]
fn every_node_case_on_the_expected_list_passes() {
    let list =
        std::fs::read_to_string(workspace_root().join("tests/conformance/expected-pass.txt"))
            .unwrap();
    let expected: BTreeSet<&str> = list
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    for isa in Isa::available() {
        check_node_cases(&expected, isa);
    }
}

fn check_node_cases(expected: &BTreeSet<&str>, isa: Isa) {
    let (passed, failed) = check_all(&data_dir("node"), isa);
    let regressions: Vec<&String> = failed
        .iter()
        .filter(|l| {
            let name = l["FAIL ".len()..].split(':').next().unwrap_or_default();
            expected.contains(name)
        })
        .collect();
    let new: Vec<&String> = passed
        .iter()
        .filter(|c| !expected.contains(c.as_str()))
        .collect();
    println!(
        "{isa}: {} of {} node cases pass ({} on the expected list); {} pass but are not listed yet",
        passed.len(),
        passed.len() + failed.len(),
        expected.len(),
        new.len()
    );
    assert!(
        regressions.is_empty(),
        "{isa}: cases on the expected list failed:\n{}",
        regressions
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    );
    let known =
        std::fs::read_to_string(workspace_root().join("tests/conformance/known-failures.md"))
            .unwrap();
    let known: BTreeSet<&str> = known
        .lines()
        .filter_map(|l| l.strip_prefix("| test_"))
        .filter_map(|l| l.split(' ').next())
        .collect();
    let unlisted: Vec<&String> = failed
        .iter()
        .filter(|l| {
            !known.contains(
                l["FAIL test_".len()..]
                    .split(':')
                    .next()
                    .unwrap_or_default(),
            )
        })
        .collect();
    assert!(
        unlisted.is_empty(),
        "{isa}: cases fail that tests/conformance/known-failures.md does not list (run \
         tests/conformance/known_failures.py):\n{}",
        unlisted
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    );
    let missing: Vec<&&str> = expected.iter().filter(|c| !passed.contains(**c)).collect();
    assert!(
        missing.is_empty(),
        "{isa}: expected cases not found in the data: {missing:?}"
    );
}

/// Every case under `kind` passes on every instruction set, and there are `count` of them.
fn all_pass(kind: &str, count: usize) {
    for isa in Isa::available() {
        let (passed, failed) = check_all(&data_dir(kind), isa);
        assert!(failed.is_empty(), "{isa}: {failed:#?}");
        assert_eq!(passed.len(), count, "{isa}: {passed:?}");
    }
}

#[test]
fn the_light_model_zoo_passes() {
    all_pass("light", 9);
}

#[test]
fn the_fusion_cases_pass() {
    all_pass("fusion", 10);
}

#[test]
fn the_real_models_pass() {
    all_pass("real", 5);
}

#[test]
fn the_real_models_with_control_flow_pass() {
    all_pass("real-control-flow", 3);
}
