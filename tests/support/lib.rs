//! Shared helpers of the integration tests: where the built artifacts are, fixture plugins built
//! on demand, writing models, running one operator through the host's services, and running
//! `opal serve`, with deployments whose models change while it serves.

mod abi_fixture;
mod fixture_build;
mod footprint;
pub mod live_models;
mod load;
mod model_builder;
mod run_operator;
mod server;

pub use abi_fixture::{abi_fixture, AbiVariant};
pub use fixture_build::build_variant;
pub use footprint::{footprint, mapped_files, settled_footprint, Footprint};
pub use load::{p99, Check, Clients};
pub use model_builder::ModelBuilder;
pub use run_operator::{run_f32, F32Tensor};
pub use server::{request, Reply, Server};

use std::path::PathBuf;

/// The directory holding the `opal` binary and the plugin libraries of the profile the tests
/// were built with (`target/debug` or `target/release`).
pub fn artifact_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary knows its path");
    // target/<profile>/deps/<test binary>
    exe.parent()
        .and_then(|deps| deps.parent())
        .expect("the test binary lives in target/<profile>/deps")
        .to_owned()
}

/// The path of a plugin library built in this workspace, e.g. `plugin("opal_core_math")`.
pub fn plugin(crate_name: &str) -> PathBuf {
    let path = artifact_dir().join(format!("lib{crate_name}.so"));
    assert!(
        path.is_file(),
        "{} is missing: build the workspace first (cargo build --workspace)",
        path.display()
    );
    path
}

/// The `opal` binary of this profile.
pub fn opal_binary() -> PathBuf {
    artifact_dir().join("opal")
}

/// The workspace's root directory.
pub fn workspace_root() -> PathBuf {
    let tests = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    tests
        .parent()
        .expect("the tests crate lives in the workspace root")
        .to_owned()
}

/// Heap allocations made by `runs` runs of `session` on `inputs` after three warm-up runs, as
/// (host, plugins): the host's through the test binary's counting allocator, the plugins'
/// through theirs.
pub fn heap_allocations_after_warm_up(
    engine: &opal_runtime::Engine,
    session: &mut opal_runtime::Session,
    inputs: &[opal_runtime::TensorRef<'_>],
    runs: usize,
) -> (u64, u64) {
    for _ in 0..3 {
        session.run(inputs).expect("a warm-up run");
    }
    let plugin_allocations = || -> u64 {
        engine
            .registry()
            .plugins()
            .iter()
            .map(|p| {
                p.own_heap_allocations()
                    .expect("every plugin of the workspace reports its heap")
            })
            .sum()
    };
    let (host_before, plugins_before) = (
        opal_runtime::memory::heap_allocations(),
        plugin_allocations(),
    );
    for _ in 0..runs {
        session.run(inputs).expect("a measured run");
    }
    (
        opal_runtime::memory::heap_allocations() - host_before,
        plugin_allocations() - plugins_before,
    )
}

/// Asserts that `message` contains every one of `parts`.
#[track_caller]
pub fn assert_mentions(message: &str, parts: &[&str]) {
    for part in parts {
        assert!(
            message.contains(part),
            "the message does not mention {part:?}:\n{message}"
        );
    }
}
