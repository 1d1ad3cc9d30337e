//! Loading plugin libraries: refusals that name the file, the versions and what to do; plugins
//! of older and newer ABI minors that load and run; operator conflicts between plugins; kernels
//! that panic or fail; and unloading that really unmaps.

use opal_plugin_api::{ABI_MAJOR, ABI_MINOR};
use opal_runtime::plugin::{OperatorEntry, OperatorKey, PluginLibrary, Registry};
use opal_tests::{abi_fixture, assert_mentions, plugin, run_f32, AbiVariant, F32Tensor};
use std::{collections::HashMap, fs, path::Path, process::Command, sync::Arc};

/// The host's ABI version as messages spell it.
fn host_abi() -> String {
    format!("{ABI_MAJOR}.{ABI_MINOR}")
}

fn load(path: &Path) -> Arc<PluginLibrary> {
    PluginLibrary::load(path).unwrap_or_else(|e| panic!("loading {} failed: {e}", path.display()))
}

/// The message of the error loading `path` gives.
fn load_error(path: &Path) -> String {
    match PluginLibrary::load(path) {
        Ok(library) => panic!(
            "{} loaded, but should be refused: {library:?}",
            path.display()
        ),
        Err(e) => e.to_string(),
    }
}

fn operator(library: &Arc<PluginLibrary>, domain: &str, op_type: &str) -> OperatorEntry {
    library
        .operators()
        .into_iter()
        .find(|e| e.domain() == domain && e.op_type() == op_type)
        .unwrap_or_else(|| panic!("{} has no operator {domain}:{op_type}", library.name()))
}

/// Runs `opal.test:Double` of `library` through the host and checks `y = 2x`.
fn assert_double_runs(library: &Arc<PluginLibrary>) {
    let double = operator(library, "opal.test", "Double");
    let x = F32Tensor::new(&[2, 3], &[1.0, -2.0, 3.5, 0.0, 1e6, -0.25]);
    let y = run_f32(&double, &[x], 1)
        .unwrap_or_else(|e| panic!("Double of {} failed: {e}", library.path().display()));
    assert_eq!(
        y,
        [F32Tensor::new(&[2, 3], &[2.0, -4.0, 7.0, 0.0, 2e6, -0.5])]
    );
}

#[test]
fn a_missing_plugin_file_is_named_with_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("libnot_built.so");
    let message = load_error(&path);
    assert_mentions(
        &message,
        &[&path.display().to_string(), "does not exist", "cargo build"],
    );
}

#[test]
fn a_file_that_is_not_a_shared_library_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.so");
    fs::write(&path, "this is text, not a shared library\n").unwrap();
    let message = load_error(&path);
    assert_mentions(
        &message,
        &[&path.display().to_string(), "not a loadable shared library"],
    );
}

#[test]
fn a_plugin_listing_an_operator_twice_is_refused_naming_it() {
    let path = opal_tests::build_variant(
        "opal-faulty-plugin",
        "opal_faulty_plugin",
        "duplicate-operators",
    );
    let message = load_error(&path);
    assert_mentions(
        &message,
        &[
            &path.display().to_string(),
            "invalid operator table",
            "operator 'Relu' is listed twice",
        ],
    );
}

#[test]
fn an_elf_for_another_architecture_is_refused_naming_both() {
    // A real plugin whose ELF header says aarch64 (e_machine 183, at byte 18).
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("libforeign.so");
    let mut bytes = fs::read(plugin("opal_core_math")).unwrap();
    let foreign: u16 = if cfg!(target_arch = "aarch64") {
        62
    } else {
        183
    };
    bytes[18..20].copy_from_slice(&foreign.to_le_bytes());
    fs::write(&path, bytes).unwrap();
    let message = load_error(&path);
    let (theirs, ours) = if cfg!(target_arch = "aarch64") {
        ("x86_64", "aarch64")
    } else {
        ("aarch64", "x86_64")
    };
    assert_mentions(
        &message,
        &[
            &path.display().to_string(),
            theirs,
            ours,
            "build the plugin for",
        ],
    );
}

#[test]
fn a_shared_library_without_the_descriptor_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("plain.c");
    fs::write(&source, "int plain_answer(void) { return 42; }\n").unwrap();
    let path = dir.path().join("libplain.so");
    let status = Command::new("gcc")
        .args(["-shared", "-fPIC", "-o"])
        .arg(&path)
        .arg(&source)
        .status()
        .expect("gcc runs");
    assert!(status.success(), "gcc could not build {}", path.display());
    let message = load_error(&path);
    assert_mentions(
        &message,
        &[
            &path.display().to_string(),
            "not an opal plugin",
            "OPAL_PLUGIN_DESCRIPTOR",
            "export_plugin!",
        ],
    );
}

#[test]
fn a_plugin_of_another_abi_major_is_refused_naming_both_versions() {
    let path = abi_fixture(AbiVariant::V2_0);
    let message = load_error(&path);
    assert_mentions(
        &message,
        &[
            &path.display().to_string(),
            "ABI 2.0",
            &format!("ABI {}", host_abi()),
            &format!("rebuild the plugin against opal-plugin-api {ABI_MAJOR}"),
        ],
    );
}

#[test]
fn a_plugin_whose_module_layout_changed_is_refused_naming_both_versions() {
    let path = abi_fixture(AbiVariant::ChangedField);
    let message = load_error(&path);
    assert_mentions(
        &message,
        &[
            &path.display().to_string(),
            "(ABI 1.1)",
            &format!("this host's layout (ABI {})", host_abi()),
            "`version` is RStr<'a> in the host but u64 in the plugin",
            &format!("rebuild the plugin against an unmodified opal-plugin-api {ABI_MAJOR}.x"),
        ],
    );
}

#[test]
fn a_plugin_of_an_older_abi_minor_loads_and_runs() {
    let library = load(&abi_fixture(AbiVariant::V1_0));
    assert_eq!(library.abi_version(), (1, 0));
    assert_eq!(
        (library.name(), library.version()),
        ("abi-fixture", "1.0.0")
    );
    // ABI 1.0 has no `heap_allocations` field: the host reads it as absent.
    assert_eq!(library.own_heap_allocations(), None);
    assert_double_runs(&library);
}

#[test]
fn a_plugin_of_a_newer_abi_minor_loads_and_runs() {
    let library = load(&abi_fixture(AbiVariant::V1_6));
    assert_eq!(library.abi_version(), (1, 3));
    assert_eq!(
        (library.name(), library.version()),
        ("abi-fixture", "1.6.0")
    );
    assert_eq!(library.own_heap_allocations(), Some(0));
    assert_double_runs(&library);
}

#[test]
fn a_plugin_of_the_current_abi_reports_its_own_heap_allocations() {
    let library = load(&plugin("opal_abi_fixture"));
    assert_eq!(library.abi_version(), (ABI_MAJOR, ABI_MINOR));
    // Reading the operator table allocated (a `Vec`) through the plugin's counting allocator.
    assert!(library.own_heap_allocations().is_some_and(|n| n > 0));
    assert_double_runs(&library);
}

#[test]
fn two_plugins_providing_one_operator_need_a_winner() {
    let core_math = load(&plugin("opal_core_math"));
    let faulty = load(&plugin("opal_faulty_plugin"));
    let both = vec![Arc::clone(&core_math), Arc::clone(&faulty)];
    let message = Registry::build(both.clone(), &HashMap::new())
        .expect_err("Relu is provided twice")
        .to_string();
    assert_mentions(
        &message,
        &[
            "Relu",
            &format!("'{}'", core_math.name()),
            &format!("'{}'", faulty.name()),
            &core_math.path().display().to_string(),
            &faulty.path().display().to_string(),
            "[operators]",
        ],
    );

    let winners = HashMap::from([(OperatorKey::new("", "Relu"), "faulty".to_owned())]);
    let registry = Registry::build(both, &winners).unwrap_or_else(|e| panic!("{e}"));
    let relu = registry
        .lookup("", "Relu", 14)
        .expect("a Relu for opset 14");
    assert_eq!(relu.plugin_name(), "faulty");
    let y = run_f32(relu, &[F32Tensor::new(&[3], &[-1.0, 0.0, 2.5])], 1).unwrap();
    assert_eq!(y, [F32Tensor::new(&[3], &[0.0, 0.0, 2.5])]);
}

#[test]
fn a_panicking_kernel_returns_its_message_and_the_process_lives() {
    let faulty = load(&plugin("opal_faulty_plugin"));
    let panic = operator(&faulty, "opal.test", "Panic");
    let x = F32Tensor::new(&[2], &[1.0, 2.0]);
    for _ in 0..2 {
        let message = run_f32(&panic, std::slice::from_ref(&x), 1).expect_err("Panic panics");
        assert_mentions(
            &message,
            &["panicked", "the Panic operator panics on purpose"],
        );
    }
    // The plugin still works after its panics.
    let relu = operator(&faulty, "", "Relu");
    let y = run_f32(&relu, &[x], 1).unwrap();
    assert_eq!(y, [F32Tensor::new(&[2], &[1.0, 2.0])]);
}

#[test]
fn a_failing_kernel_returns_its_error() {
    let faulty = load(&plugin("opal_faulty_plugin"));
    let fail = operator(&faulty, "opal.test", "Fail");
    let message = run_f32(&fail, &[F32Tensor::new(&[1], &[1.0])], 1).expect_err("Fail fails");
    assert_eq!(message, "faulty plugin: the Fail operator fails on purpose");
}

/// Set in the child process that runs [`load_run_unload_100_times`]'s cycles alone.
const CYCLES_CHILD: &str = "OPAL_TEST_PLUGIN_CYCLES_CHILD";

/// Cycles measured (after [`WARM_UP_CYCLES`]).
const CYCLES: usize = 100;
const WARM_UP_CYCLES: usize = 5;

/// The resident-memory growth allowed over [`CYCLES`] cycles: 1 MiB, about 10 KiB a cycle.
/// Measured (debug build, 2-core machine): +4 to +68 KiB over 100 cycles, from allocator and
/// dynamic-loader bookkeeping; a leak of the plugin's module or operator table, or of a
/// library copy, would cost far more per cycle.
const RSS_GROWTH_BOUND_KIB: u64 = 1024;

/// Loads, runs and unloads one plugin 100 times: afterwards it is no longer mapped, and resident
/// memory did not grow. RSS is process-wide, so the cycles run in a child process of this test
/// binary that runs only this test, away from the other tests' allocations.
#[test]
fn load_run_unload_100_times() {
    if std::env::var_os(CYCLES_CHILD).is_some() {
        load_run_unload_cycles();
        return;
    }
    let module = module_path!();
    let name = format!(
        "{}::load_run_unload_100_times",
        module.split_once("::").map_or(module, |(_, path)| path)
    );
    let output = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", &name, "--nocapture", "--test-threads=1"])
        .env(CYCLES_CHILD, "1")
        .output()
        .expect("the test binary runs again");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    eprintln!("{stderr}");
    assert!(output.status.success(), "the cycles failed");
    assert!(
        stdout.contains("1 passed"),
        "the child did not run {name}:\n{stdout}"
    );
}

fn load_run_unload_cycles() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("libopal_unload_cycles.so");
    fs::copy(plugin("opal_abi_fixture"), &path).unwrap();
    // /proc/self/maps names the file by its canonical path.
    let path = fs::canonicalize(&path).unwrap();

    let cycle = |check_mapped: bool| {
        let library = load(&path);
        assert_double_runs(&library);
        if check_mapped {
            assert!(!mappings_of(&path).is_empty(), "a loaded library is mapped");
        }
    };
    for i in 0..WARM_UP_CYCLES {
        cycle(i == 0);
    }
    let before = resident_kib();
    for _ in 0..CYCLES {
        cycle(false);
    }
    let after = resident_kib();
    let growth = after.saturating_sub(before);
    println!(
        "VmRSS over {CYCLES} load/run/unload cycles: {before} KiB -> {after} KiB (+{growth} KiB)"
    );

    let mapped = mappings_of(&path);
    assert!(
        mapped.is_empty(),
        "{} is still mapped after its last unload:\n{}",
        path.display(),
        mapped.join("\n")
    );
    assert!(
        growth < RSS_GROWTH_BOUND_KIB,
        "resident memory grew by {growth} KiB over {CYCLES} cycles (bound {RSS_GROWTH_BOUND_KIB} KiB)"
    );
}

/// The lines of `/proc/self/maps` that map `path`.
fn mappings_of(path: &Path) -> Vec<String> {
    let path = path.display().to_string();
    fs::read_to_string("/proc/self/maps")
        .expect("/proc/self/maps is readable")
        .lines()
        .filter(|line| line.contains(&path))
        .map(str::to_owned)
        .collect()
}

/// Resident memory of this process (VmRSS), in KiB.
fn resident_kib() -> u64 {
    let status = fs::read_to_string("/proc/self/status").expect("/proc/self/status is readable");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.trim().strip_suffix("kB"))
        .and_then(|kib| kib.trim().parse().ok())
        .expect("/proc/self/status has VmRSS")
}
