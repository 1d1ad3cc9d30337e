//! A deployment whose models change while it serves: model `a`, and model `b` in versions
//! that answer differently, each y = x · W with W filled with the version's number, so a
//! response tells which version ran it.

use crate::{plugin, ModelBuilder, Reply, Server};
use std::path::{Path, PathBuf};

/// A directory holding the deployment `deploy.toml` and its models.
pub struct LiveDeployment {
    pub dir: tempfile::TempDir,
}

/// y = x · W for x of [1, 4] and W of [4, 2] filled with `version`: y = [4v, 4v] for x of ones.
pub fn versioned_model(dir: &Path, file: &str, version: f32) -> PathBuf {
    ModelBuilder::new(17)
        .input("x", &[1, 4])
        .output("y", &[1, 2])
        .initializer("W", &[4, 2], &[version; 8])
        .node("fc", "", "MatMul", &["x", "W"], &["y"], &[])
        .write(dir, file)
}

/// A model with a node no plugin provides.
pub fn unservable_model(dir: &Path, file: &str) -> PathBuf {
    ModelBuilder::new(17)
        .opset("opal.none", 1)
        .input("x", &[1, 4])
        .output("y", &[1, 4])
        .node("mystery", "opal.none", "Mystery", &["x"], &["y"], &[])
        .write(dir, file)
}

impl LiveDeployment {
    /// `a.onnx` (version 1), `b1.onnx`, `b2.onnx` and `b3.onnx`, and a deployment serving `a`
    /// and `b` (from `b1.onnx`) with the core-math plugin; `extra` is appended to it.
    pub fn new(extra: &str) -> LiveDeployment {
        let dir = tempfile::tempdir().unwrap();
        versioned_model(dir.path(), "a.onnx", 1.0);
        for v in 1..=3 {
            versioned_model(dir.path(), &format!("b{v}.onnx"), v as f32);
        }
        let live = LiveDeployment { dir };
        live.write_deployment(&live.deployment_text(2, false, extra));
        live
    }

    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.path().join(file)
    }

    /// The deployment text: `a` with `max_concurrent`, `b` from `b1.onnx`, and the nn plugin
    /// when `with_nn`.
    pub fn deployment_text(&self, max_concurrent: usize, with_nn: bool, extra: &str) -> String {
        let mut text = format!(
            "[[plugins]]\npath = \"{}\"\n",
            plugin("opal_core_math").display()
        );
        if with_nn {
            text += &format!(
                "\n[[plugins]]\npath = \"{}\"\n",
                plugin("opal_nn").display()
            );
        }
        text += &format!(
            "\n[[models]]\nname = \"a\"\npath = \"a.onnx\"\nmax_concurrent = {max_concurrent}\n\n[[models]]\nname = \"b\"\npath = \"b1.onnx\"\n{extra}"
        );
        text
    }

    /// Replaces the deployment file as an editor does: written aside, renamed over it.
    pub fn write_deployment(&self, text: &str) {
        let staged = self.path(".deploy.toml.swp");
        std::fs::write(&staged, text).unwrap();
        std::fs::rename(&staged, self.path("deploy.toml")).unwrap();
    }

    pub fn serve(&self) -> Server {
        Server::start(&self.path("deploy.toml"))
    }
}

/// The request body of x = ones([1, 4]).
pub const ONES: &[u8] =
    br#"{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":[1,1,1,1]}]}"#;

/// The version of `model` that answered, from y = [4v, 4v]; `Err` with the reply otherwise.
pub fn answering_version(server: &Server, model: &str) -> Result<f64, Reply> {
    let reply = server.post(&format!("/v2/models/{model}/infer"), &[], ONES);
    version_of(&reply).ok_or(reply)
}

/// The version a reply to [`ONES`] came from, if it is a right answer of one.
pub fn version_of(reply: &Reply) -> Option<f64> {
    if reply.status != 200 {
        return None;
    }
    let body: serde_json::Value = serde_json::from_slice(&reply.body).ok()?;
    match body["outputs"][0]["data"].as_array().map(|d| d.as_slice()) {
        Some([y0, y1]) if y0 == y1 => Some(y0.as_f64()? / 4.0),
        _ => None,
    }
}

/// Each model of the repository index with its state and reason.
pub fn index(server: &Server) -> Vec<(String, String, String)> {
    let reply = server.post("/v2/repository/index", &[], b"");
    assert_eq!(reply.status, 200, "{}", reply.text());
    reply
        .json()
        .as_array()
        .expect("the index is a list")
        .iter()
        .map(|row| {
            let field = |k: &str| row[k].as_str().unwrap_or_default().to_owned();
            (field("name"), field("state"), field("reason"))
        })
        .collect()
}

/// The state of `model` in the index, or `None` if it is not listed.
pub fn state_of(server: &Server, model: &str) -> Option<String> {
    index(server)
        .into_iter()
        .find(|(name, _, _)| name == model)
        .map(|(_, state, _)| state)
}

/// The value of the `/metrics` series `series` (name and labels, as printed), 0 when absent.
pub fn metric(server: &Server, series: &str) -> f64 {
    let prefix = format!("{series} ");
    server
        .get("/metrics")
        .text()
        .lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .map_or(0.0, |v| v.trim().parse().unwrap())
}

/// Lines of `pid`'s memory map naming `file`.
pub fn mappings_of(pid: u32, file: &Path) -> usize {
    let file = file.display().to_string();
    std::fs::read_to_string(format!("/proc/{pid}/maps"))
        .unwrap()
        .lines()
        .filter(|l| l.contains(&file))
        .count()
}
