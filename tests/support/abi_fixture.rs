//! The ABI fixture plugin (`tests/fixtures/abi-variants`) built once per variant per test
//! process, each variant copied to a file of its own. (Its default build, of the current ABI, is
//! a workspace member like any plugin: `crate::plugin("opal_abi_fixture")`.)

use std::{path::PathBuf, sync::OnceLock};

/// Which ABI the fixture plugin claims; each is a cargo feature of `opal-abi-fixture`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AbiVariant {
    /// ABI 1.0: the module ends at `last_prefix_field`, without `heap_allocations`.
    V1_0,
    /// ABI 1.6: one module field appended after those of 1.5.
    V1_6,
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
            AbiVariant::V1_6 => "abi-1-6",
            AbiVariant::V2_0 => "abi-2-0",
            AbiVariant::ChangedField => "abi-changed-field",
        }
    }
}

/// The path of the fixture plugin built as `variant`, building it on first use in this process
/// (`cargo build -p opal-abi-fixture --features <variant> --target-dir target/fixtures`, or the
/// directory `$OPAL_FIXTURE_TARGET_DIR` names). Each variant is copied to
/// `libopal_abi_fixture-<feature>.so` in that directory.
pub fn abi_fixture(variant: AbiVariant) -> PathBuf {
    static BUILT: [OnceLock<PathBuf>; 4] = [const { OnceLock::new() }; 4];
    BUILT[variant as usize]
        .get_or_init(|| build(variant))
        .clone()
}

fn build(variant: AbiVariant) -> PathBuf {
    crate::fixture_build::build_variant("opal-abi-fixture", "opal_abi_fixture", variant.feature())
}
