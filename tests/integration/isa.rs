//! The instruction set kernels use: chosen at run time from the CPU, capped by `OPAL_ISA` or
//! `engine.isa`, refused when the CPU cannot run the cap, and reported by `opal plugins`,
//! `opal bench --json` and `/metrics`.

use opal_plugin_api::{isa::ALL_ISAS, Isa};
use opal_tests::{opal_binary, Server};
use std::process::{Command, Output};

fn opal(isa: Option<&str>, args: &[&str]) -> Output {
    let mut command = Command::new(opal_binary());
    command.args(args).env_remove("OPAL_ISA");
    if let Some(isa) = isa {
        command.env("OPAL_ISA", isa);
    }
    command.output().expect("the opal binary runs")
}

fn text(output: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn plugins_reports_the_best_instruction_set_and_the_deployed_files() {
    let out = opal(None, &["plugins"]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stdout.contains(&format!("\nInstruction set: {} on ", Isa::best())),
        "{stdout}"
    );
    assert!(!stdout.contains("capped"), "{stdout}");
    // The file the deployment names, not the shadow copy that was loaded.
    let shadow = std::env::temp_dir().join("opal-plugins");
    assert!(!stdout.contains(&shadow.display().to_string()), "{stdout}");
    assert!(stdout.contains("libopal_core_math.so\n"), "{stdout}");
}

#[test]
fn every_available_cap_is_taken_and_reported() {
    for isa in Isa::available() {
        let out = opal(Some(isa.name()), &["plugins"]);
        let (stdout, stderr) = text(&out);
        assert!(out.status.success(), "OPAL_ISA={isa}: {stderr}");
        let expected = format!(
            "Instruction set: {isa} (capped by OPAL_ISA; this CPU offers {}) on ",
            Isa::best()
        );
        assert!(stdout.contains(&expected), "{stdout}");
        let out = opal(
            Some(isa.name()),
            &[
                "bench",
                "mlp",
                "--json",
                "--warmup",
                "1",
                "--iterations",
                "1",
            ],
        );
        let (stdout, stderr) = text(&out);
        assert!(out.status.success(), "OPAL_ISA={isa}: {stderr}");
        let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
        assert_eq!(report["isa"], isa.name(), "{stdout}");
        assert!(report["cpu"].as_str().is_some_and(|cpu| !cpu.is_empty()));
    }
}

#[test]
fn a_cap_the_cpu_cannot_run_is_refused() {
    let missing = ALL_ISAS
        .into_iter()
        .find(|isa| !isa.is_available())
        .expect("no CPU runs both x86-64 and aarch64 kernels");
    let out = opal(Some(missing.name()), &["plugins"]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    let expected = format!("OPAL_ISA={missing} asks for {missing} kernels, but this CPU (");
    assert!(stderr.contains(&expected), "{stderr}");
    assert!(stderr.contains("lower the cap or remove it"), "{stderr}");
    assert_eq!(stderr.matches(&expected).count(), 1, "said once: {stderr}");
}

#[test]
fn an_unknown_cap_is_refused_with_the_names_opal_knows() {
    let out = opal(Some("sse9"), &["plugins"]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr.contains("OPAL_ISA='sse9' names no instruction set opal knows: use one of avx512, avx2, neon, baseline"),
        "{stderr}"
    );
}

#[test]
fn a_deployments_cap_applies_and_an_unknown_one_names_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("capped.toml");
    std::fs::write(
        &config,
        "[engine]\nisa = \"baseline\"\n\n[[plugins]]\npath = \"libopal_core_math.so\"\n",
    )
    .unwrap();
    let out = opal(None, &["plugins", "--config", config.to_str().unwrap()]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stdout.contains("Instruction set: baseline (capped by engine.isa;"),
        "{stdout}"
    );
    std::fs::write(&config, "[engine]\nthreads = 1\nisa = \"fast\"\n").unwrap();
    let out = opal(None, &["config", "check", config.to_str().unwrap()]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr.contains("capped.toml"), "{stderr}");
    assert!(stderr.contains("line 3"), "{stderr}");
    assert!(
        stderr.contains("unknown instruction set 'fast'"),
        "{stderr}"
    );
}

#[test]
fn metrics_report_the_instruction_set() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("serve.toml");
    std::fs::write(&config, "[[plugins]]\npath = \"libopal_core_math.so\"\n").unwrap();
    let server = Server::start(&config);
    let metrics = server.get("/metrics").text();
    let line = metrics
        .lines()
        .find(|l| l.starts_with("opal_isa_info{"))
        .unwrap_or_else(|| panic!("no opal_isa_info in:\n{metrics}"));
    let best = Isa::best();
    assert!(
        line.starts_with(&format!(
            "opal_isa_info{{isa=\"{best}\",best=\"{best}\",cpu=\""
        )),
        "{line}"
    );
}

/// SqueezeNet's convolution weights, packed once for the SGEMM micro-kernel's row panels, for
/// kernels capped to `isa`: (prepared bytes, the instruction set `opal bench` reports).
fn squeezenet_prepared_bytes(isa: Isa) -> (u64, String) {
    let model = crate::conformance::data_dir("light").join("squeezenet/model.onnx");
    let out = opal(
        Some(isa.name()),
        &[
            "bench",
            model.to_str().unwrap(),
            "--json",
            "--warmup",
            "0",
            "--iterations",
            "1",
        ],
    );
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "OPAL_ISA={isa}: {stderr}");
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    (
        report["prepared_bytes"].as_u64().unwrap(),
        report["isa"].as_str().unwrap().to_owned(),
    )
}

#[test]
fn the_cap_changes_the_path_kernels_take() {
    // Each SGEMM micro-kernel has its own tile (AVX-512 14 x 32; AVX2 and this build's baseline
    // 6 x 16), so the weights a convolution packs for it are padded to another number of rows.
    let sizes: Vec<(Isa, u64)> = Isa::available()
        .map(|isa| {
            let (bytes, reported) = squeezenet_prepared_bytes(isa);
            assert_eq!(reported, isa.name());
            (isa, bytes)
        })
        .collect();
    println!("prepared bytes by instruction set: {sizes:?}");
    let bytes = |wanted: Isa| sizes.iter().find(|(isa, _)| *isa == wanted).map(|s| s.1);
    if Isa::Avx512.is_available() {
        assert_ne!(bytes(Isa::Avx512), bytes(Isa::Avx2), "{sizes:?}");
    }
    if Isa::Avx2.is_available() {
        assert_eq!(bytes(Isa::Avx2), bytes(Isa::Baseline), "{sizes:?}");
    }
}
