//! The ABI fixture plugin (`tests/fixtures/abi-variants`) built once per variant per test
//! process, each variant copied to a file of its own. (Its default build, of the current ABI, is
//! a workspace member like any plugin: `crate::plugin("opal_abi_fixture")`.)

use std::{ffi::OsString, fs, path::PathBuf, process::Command, sync::OnceLock};

/// Which ABI the fixture plugin claims; each is a cargo feature of `opal-abi-fixture`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AbiVariant {
    /// ABI 1.0: the module ends at `last_prefix_field`, without `heap_allocations`.
    V1_0,
    /// ABI 1.3: one module field appended after those of 1.2.
    V1_3,
    /// ABI 2.0: a major version the host does not speak.
    V2_0,
    /// Claims ABI 1.1, but the module's `version` field is a `u64`.
    ChangedField,
}

impl AbiVariant {
    /// The cargo feature selecting this variant.
    pub fn feature(self) -> &'static str {
        match self {
            AbiVariant::V1_0 => "abi-1-0",
            AbiVariant::V1_3 => "abi-1-3",
            AbiVariant::V2_0 => "abi-2-0",
            AbiVariant::ChangedField => "abi-changed-field",
        }
    }
}

/// The path of the fixture plugin built as `variant`, building it on first use in this process
/// (`cargo build -p opal-abi-fixture --features <variant> --target-dir target/abi-fixtures`).
/// Each variant is copied to `target/abi-fixtures/libopal_abi_fixture-<feature>.so`.
pub fn abi_fixture(variant: AbiVariant) -> PathBuf {
    static BUILT: [OnceLock<PathBuf>; 4] = [const { OnceLock::new() }; 4];
    BUILT[variant as usize]
        .get_or_init(|| build(variant))
        .clone()
}

fn build(variant: AbiVariant) -> PathBuf {
    let root = crate::workspace_root();
    let target_dir = root.join("target").join("abi-fixtures");
    // Every variant is built into the same file, so one build and its copy must finish before
    // the next starts, in this process and in the other test processes (nextest runs several).
    fs::create_dir_all(&target_dir).expect("the fixture target directory can be made");
    let lock = fs::File::create(target_dir.join("build.lock")).expect("the lock file opens");
    lock.lock().expect("the fixture build lock can be taken");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo"));
    let mut command = Command::new(cargo);
    command
        .current_dir(&root)
        .args(["build", "--offline", "-p", "opal-abi-fixture"])
        .args(["--features", variant.feature(), "--target-dir"])
        .arg(&target_dir);
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("cannot run cargo to build the ABI fixture: {e}"));
    assert!(
        output.status.success(),
        "building the ABI fixture ({variant:?}) failed: {command:?}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );

    let built = target_dir.join("debug").join("libopal_abi_fixture.so");
    let name = variant.feature();
    let copy = target_dir.join(format!("libopal_abi_fixture-{name}.so"));
    // Copy, then rename over the old copy: a library another test process has loaded is
    // replaced, never rewritten in place under its mapping.
    let partial = target_dir.join(format!(
        "libopal_abi_fixture-{name}.so.{}.partial",
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
