//! Watched plugin files (`watch = true`): each usual way of replacing the deployed file reloads
//! the plugin exactly once, reads and rewrites with the same contents reload nothing, and nothing
//! more happens in the quiet seconds afterwards. The deployment names the plugin by a relative
//! path or an absolute one.

use opal_tests::{build_variant, plugin, ModelBuilder, Server};
use std::{
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

/// How long the reload count must stay put after a change, to show that one change is one
/// reload and no more.
const QUIET: Duration = Duration::from_secs(3);
/// How long a change may take to be noticed and reloaded.
const NOTICE: Duration = Duration::from_secs(15);

/// The swap fixture built as `feature`: "first" is served at start, "second" replaces it (an
/// equal build with version 1.0.0-second).
fn swap_build(feature: &str) -> PathBuf {
    build_variant("opal-swap-fixture", "opal_swap_fixture", feature)
}

/// A server whose deployment watches `plugins/libswappable.so` in its own directory.
struct Watched {
    dir: tempfile::TempDir,
    server: Server,
}

impl Watched {
    /// Serves the "first" build; with `relative`, the server runs in the deployment's
    /// directory and both the deployment and the plugin are named by relative paths, as the
    /// README's plugin walk-through writes them.
    fn start(relative: bool) -> Watched {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("plugins")).unwrap();
        let deployed = dir.path().join("plugins/libswappable.so");
        std::fs::copy(swap_build("first"), &deployed).unwrap();
        let model = ModelBuilder::new(17)
            .opset("opal.test", 1)
            .input("x", &[1, 4])
            .output("y", &[1, 4])
            .node("act", "", "Relu", &["x"], &["a"], &[])
            .node("scale", "opal.test", "Scale", &["a"], &["y"], &[])
            .write(dir.path(), "scaled.onnx");
        let (plugin_path, model_path) = if relative {
            ("plugins/libswappable.so".into(), "scaled.onnx".into())
        } else {
            (deployed.display().to_string(), model.display().to_string())
        };
        std::fs::write(
            dir.path().join("deploy.toml"),
            format!(
                "[[plugins]]\npath = \"{}\"\n\n[[plugins]]\npath = \"{plugin_path}\"\nwatch = true\n\n[[models]]\nname = \"scaled\"\npath = \"{model_path}\"\n",
                plugin("opal_core_math").display(),
            ),
        )
        .unwrap();
        let server = if relative {
            Server::start_in(dir.path(), Path::new("deploy.toml"))
        } else {
            Server::start(&dir.path().join("deploy.toml"))
        };
        Watched { dir, server }
    }

    fn deployed(&self) -> PathBuf {
        self.dir.path().join("plugins/libswappable.so")
    }

    /// Successful and failed reloads of the plugin so far, from `/metrics`.
    fn reloads(&self) -> (u64, u64) {
        let metrics = self.server.get("/metrics").text();
        let count = |outcome: &str| {
            let series =
                format!("opal_plugin_reloads_total{{plugin=\"swappable\",outcome=\"{outcome}\"}} ");
            metrics
                .lines()
                .find_map(|line| line.strip_prefix(&series))
                .map_or(0, |n| n.trim().parse().unwrap())
        };
        (count("success"), count("failure"))
    }

    fn version(&self) -> String {
        self.server.plugin_version("swappable")
    }

    /// Waits until `expected` reloads succeeded, then checks that no more happen in the quiet
    /// period after, and that none failed.
    fn assert_reloads_settle_at(&self, expected: u64, change: &str) {
        let start = Instant::now();
        while self.reloads().0 < expected && start.elapsed() < NOTICE {
            std::thread::sleep(Duration::from_millis(100));
        }
        std::thread::sleep(QUIET);
        assert_eq!(
            self.reloads(),
            (expected, 0),
            "(successful, failed) reloads after {change}"
        );
        let reply = self.server.post(
            "/v2/models/scaled/infer",
            &[],
            br#"{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":[-1,0.5,2,3]}]}"#,
        );
        assert_eq!(reply.status, 200, "{}", reply.text());
        assert_eq!(
            reply.json()["outputs"][0]["data"],
            serde_json::json!([0.0, 1.0, 4.0, 6.0])
        );
    }
}

fn run(command: &mut Command) {
    let status = command.status().expect("the command runs");
    assert!(status.success(), "{command:?} failed");
}

/// Replaces the deployed file with the "second" build by `replace`, and checks that exactly one
/// reload follows.
fn one_reload_after(relative: bool, how: &str, replace: impl FnOnce(&Path, &Path)) {
    let second = swap_build("second");
    let watched = Watched::start(relative);
    assert_eq!(watched.version(), "1.0.0");
    replace(&second, &watched.deployed());
    watched.assert_reloads_settle_at(1, how);
    assert_eq!(watched.version(), "1.0.0-second", "after {how}");
}

#[test]
fn cp_over_the_file_reloads_once() {
    for relative in [false, true] {
        one_reload_after(relative, "cp", |new, deployed| {
            run(Command::new("cp").arg(new).arg(deployed));
        });
    }
}

#[test]
fn a_build_systems_hard_link_reloads_once() {
    // What cargo does with target/release/lib*.so: remove it, then hard-link the new build
    // from deps/.
    one_reload_after(true, "a hard link", |new, deployed| {
        let deps = deployed.parent().unwrap().join("deps");
        std::fs::create_dir_all(&deps).unwrap();
        let built = deps.join("libswappable.so");
        std::fs::copy(new, &built).unwrap();
        std::fs::remove_file(deployed).unwrap();
        std::fs::hard_link(&built, deployed).unwrap();
    });
}

#[test]
fn install_reloads_once() {
    one_reload_after(false, "install", |new, deployed| {
        run(Command::new("install")
            .args(["-m", "755"])
            .arg(new)
            .arg(deployed));
    });
}

#[test]
fn an_editors_atomic_rename_reloads_once() {
    one_reload_after(true, "a rename over the file", |new, deployed| {
        let staged = deployed.with_file_name(".libswappable.so.swp");
        std::fs::copy(new, &staged).unwrap();
        std::fs::rename(&staged, deployed).unwrap();
    });
}

#[test]
fn delete_and_recreate_reloads_once() {
    one_reload_after(false, "delete and re-create", |new, deployed| {
        std::fs::remove_file(deployed).unwrap();
        // Longer than the watcher's settling time: the file is seen missing first.
        std::thread::sleep(Duration::from_secs(1));
        std::fs::copy(new, deployed).unwrap();
    });
}

#[test]
fn reads_touches_and_equal_rewrites_reload_nothing() {
    for relative in [false, true] {
        let first = swap_build("first");
        let watched = Watched::start(relative);
        let deployed = watched.deployed();
        std::fs::read(&deployed).unwrap();
        run(Command::new("touch").arg(&deployed));
        run(Command::new("cp").arg(&first).arg(&deployed));
        run(Command::new("chmod").arg("644").arg(&deployed));
        watched.assert_reloads_settle_at(0, "reads, a touch and an equal rewrite");
        assert_eq!(watched.version(), "1.0.0");
    }
}

#[test]
fn a_reload_on_request_is_not_repeated_by_the_watcher() {
    // The reload reads the file; the watcher must not take that read for a change.
    let watched = Watched::start(false);
    let reply = watched
        .server
        .post("/v2/plugins/swappable/reload", &[], b"");
    assert_eq!(reply.status, 200, "{}", reply.text());
    watched.assert_reloads_settle_at(1, "one reload on request");
}
