//! Building a fixture plugin crate with a cargo feature that makes it a variant (an old ABI, a
//! kernel that panics, …), and keeping each variant's `.so` in a file of its own.

use std::{
    ffi::OsString,
    fs,
    path::{Path, PathBuf},
    process::Command,
};

/// Where fixture variants are built: `$OPAL_FIXTURE_TARGET_DIR` when set, else
/// `target/fixtures`. The sanitizer run (tests/sanitizers.sh) sets it so that its fixtures,
/// built with its own flags, neither share files nor force rebuilds with the regular build's.
const FIXTURE_TARGET_DIR_VAR: &str = "OPAL_FIXTURE_TARGET_DIR";

/// The directory under the fixture target directory where cargo puts the debug build: like
/// cargo itself, it is `<triple>/debug` when `$CARGO_BUILD_TARGET` names a target (the cargo
/// building the fixture inherits that variable), else `debug`.
fn built_dir(target_dir: &Path) -> PathBuf {
    match std::env::var_os("CARGO_BUILD_TARGET") {
        Some(triple) if !triple.is_empty() => target_dir.join(triple).join("debug"),
        _ => target_dir.join("debug"),
    }
}

/// Builds workspace package `package` (library `lib_name`) with `feature` into the fixture
/// target directory (`$OPAL_FIXTURE_TARGET_DIR`, else `target/fixtures`) and returns a copy of
/// the library named after the feature.
pub fn build_variant(package: &str, lib_name: &str, feature: &str) -> PathBuf {
    let root = crate::workspace_root();
    let target_dir = std::env::var_os(FIXTURE_TARGET_DIR_VAR)
        .filter(|dir| !dir.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target").join("fixtures"));
    // Every variant of a package is built into the same file, so one build and its copy must
    // finish before the next starts, in this process and in other test processes.
    fs::create_dir_all(&target_dir).expect("the fixture target directory can be made");
    let lock = fs::File::create(target_dir.join("build.lock")).expect("the lock file opens");
    lock.lock().expect("the fixture build lock can be taken");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo"));
    let mut command = Command::new(cargo);
    command
        .current_dir(&root)
        .args(["build", "--offline", "-p", package])
        .args(["--features", feature, "--target-dir"])
        .arg(&target_dir);
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("cannot run cargo to build fixture {package}: {e}"));
    assert!(
        output.status.success(),
        "building fixture {package} ({feature}) failed: {command:?}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let built = built_dir(&target_dir).join(format!("lib{lib_name}.so"));
    let copy = target_dir.join(format!("lib{lib_name}-{feature}.so"));
    // Copy, then rename over the old copy: a library another test process has loaded is
    // replaced, never rewritten in place under its mapping.
    let partial = target_dir.join(format!(
        "lib{lib_name}-{feature}.so.{}.partial",
        std::process::id()
    ));
    fs::copy(&built, &partial).unwrap_or_else(|e| {
        panic!(
            "cannot copy {} to {}: {e}",
            built.display(),
            partial.display()
        )
    });
    fs::rename(&partial, &copy).unwrap_or_else(|e| {
        panic!(
            "cannot rename {} to {}: {e}",
            partial.display(),
            copy.display()
        )
    });
    copy
}
