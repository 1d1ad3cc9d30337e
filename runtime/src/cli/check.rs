//! `opal check DIR...`: runs ONNX backend-test cases (`model.onnx` and `test_data_set_*/` of
//! `input_<k>.pb` and `output_<k>.pb`) and compares the outputs with the references. Prints a
//! line per case, then `N passed, M failed`; exits 1 if any failed.
//!
//! Tolerances are rtol 1e-3 and atol 1e-7 unless the case's `data.json` gives its own `rtol` and
//! `atol` (as the ONNX backend tests' model cases do), or the command line does. Integer outputs
//! compare exactly unless `atol` is 1 or more.

use opal_plugin_api::ValueKind;
use opal_runtime::{
    compare::{compare_values, Tolerance},
    input_check::runnable_values,
    value::Value,
    value_file::read_value,
    Engine, Session,
};
use std::{
    collections::BTreeMap,
    io::Write as _,
    panic::{catch_unwind, AssertUnwindSafe},
    path::{Path, PathBuf},
    process::ExitCode,
    sync::Arc,
};

#[derive(clap::Args)]
pub(crate) struct Args {
    /// Case directories, each holding model.onnx and test_data_set_*/.
    #[arg(required = true)]
    dirs: Vec<PathBuf>,
    /// Deployment file; the embedded default when absent.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Relative tolerance for floating-point outputs (default: the case's, else 1e-3).
    #[arg(long)]
    rtol: Option<f64>,
    /// Absolute tolerance for floating-point outputs, and for integer ones when 1 or more
    /// (default: the case's, else 1e-7).
    #[arg(long)]
    atol: Option<f64>,
}

pub(crate) fn main(args: Args) -> anyhow::Result<ExitCode> {
    let deployment = super::deployment(args.config.as_ref())?;
    let engine = Engine::new(&deployment)?;
    let out = &mut std::io::stdout().lock();
    let (mut passed, mut failed) = (0, 0);
    for dir in &args.dirs {
        let name = dir.file_name().map_or_else(
            || dir.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        );
        let tolerance = case_tolerance(dir, args.rtol, args.atol);
        let outcome = catch_unwind(AssertUnwindSafe(|| check_case(&engine, dir, tolerance)))
            .unwrap_or_else(|_| Err("opal panicked on this case (a bug: please report it)".into()));
        match outcome {
            Ok(()) => {
                passed += 1;
                writeln!(out, "PASS {name}")?;
            }
            Err(reason) => {
                failed += 1;
                writeln!(out, "FAIL {name}: {}", reason.replace('\n', " "))?;
            }
        }
    }
    writeln!(out, "{passed} passed, {failed} failed")?;
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The tolerance for the case in `dir`: the command line's, else its `data.json`'s, else the
/// backend tests' defaults.
fn case_tolerance(dir: &Path, rtol: Option<f64>, atol: Option<f64>) -> Tolerance {
    let declared: serde_json::Value = std::fs::read(dir.join("data.json"))
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or_default();
    let defaults = Tolerance::default();
    Tolerance {
        rtol: rtol.or(declared["rtol"].as_f64()).unwrap_or(defaults.rtol),
        atol: atol.or(declared["atol"].as_f64()).unwrap_or(defaults.atol),
    }
}

/// Runs every data set of the case in `dir`.
fn check_case(engine: &Arc<Engine>, dir: &Path, tolerance: Tolerance) -> Result<(), String> {
    let model = engine
        .load_model(&dir.join("model.onnx"))
        .map_err(|e| e.to_string())?;
    let mut sets: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| format!("cannot list {}: {e}", dir.display()))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("test_data_set_"))
        })
        .collect();
    sets.sort();
    if sets.is_empty() {
        return Err(format!(
            "{} has no test_data_set_* directory",
            dir.display()
        ));
    }
    runnable_values(&model)?;
    let owner = engine.tracker().owner("inputs");
    let mut session = Session::new(engine.clone(), model.clone(), BTreeMap::new());
    for set in sets {
        let files = |prefix: &str, values: &[usize]| -> Result<Vec<Value>, String> {
            (0..)
                .map(|k| set.join(format!("{prefix}_{k}.pb")))
                .take_while(|p| p.is_file())
                .enumerate()
                .map(|(k, p)| {
                    let kind = values
                        .get(k)
                        .map_or(ValueKind::TENSOR, |&id| model.values[id].kind);
                    read_value(&p, kind, &owner)
                })
                .collect()
        };
        let inputs = files("input", &model.inputs)?;
        let expected = files("output", &model.outputs)?;
        if inputs.len() != model.inputs.len() {
            return Err(format!(
                "{} holds {} inputs, the model takes {}",
                set.display(),
                inputs.len(),
                model.inputs.len()
            ));
        }
        let state = session.run(&inputs).map_err(|e| e.to_string())?;
        for (k, reference) in expected.iter().enumerate() {
            let name = model.outputs.get(k).map_or("?", |&id| model.value_name(id));
            let actual = state
                .output_value(k)
                .ok_or_else(|| format!("output {k} ('{name}') was not produced"))?;
            compare_values(actual, reference.view(), tolerance)
                .map_err(|e| format!("output {k} ('{name}'): {e}"))?;
        }
    }
    Ok(())
}
