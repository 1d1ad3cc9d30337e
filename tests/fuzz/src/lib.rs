//! What the fuzz targets share: the engine with the workspace's release-built plugins, and the fixed model the KServe request target decodes for.

use opal_plugin_api::DType;
use opal_runtime::{
    config::ModelSpec,
    onnx::{
        proto::{
            tensor_shape_proto::{dimension::Value as DimValue, Dimension},
            type_proto, GraphProto, ModelProto, OperatorSetIdProto, TensorShapeProto, TypeProto,
            ValueInfoProto,
        },
        Model,
    },
    Deployment, Engine,
};
use prost::Message;
use std::{
    path::{Path, PathBuf},
    sync::{Arc, OnceLock},
};

/// The path fuzzed models and deployments are reported as. Its directory does not exist, so
/// relative paths they name (external data, plugin folders) resolve to nothing.
pub const FUZZ_SOURCE_DIR: &str = "/nonexistent-opal-fuzz";

/// The plugins the model target compiles with, as cargo names their libraries.
const PLUGINS: &[&str] = &[
    "libopal_core_math.so",
    "libopal_tensor_ops.so",
    "libopal_nn.so",
    "libopal_transformer.so",
    "libopal_signal.so",
    "libopal_control_flow.so",
    "libopal_ml.so",
    "libopal_training.so",
    "libopal_image.so",
    "libopal_sequence.so",
    "libopal_text.so",
];

/// The engine's memory limit: well under libFuzzer's `-rss_limit_mb=2048`, so a model that
/// declares huge tensors is refused by the planner rather than reported as an out-of-memory.
const MEMORY_LIMIT: u64 = 256 << 20;

/// The directory holding the release-built plugins: `OPAL_FUZZ_PLUGIN_DIR`, else the
/// workspace's `target/release`.
pub fn plugin_dir() -> PathBuf {
    match std::env::var_os("OPAL_FUZZ_PLUGIN_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/release"),
    }
}

/// An engine loading the workspace's five operator plugins, one kernel thread, built once.
pub fn plugin_engine() -> &'static Arc<Engine> {
    static ENGINE: OnceLock<Arc<Engine>> = OnceLock::new();
    ENGINE.get_or_init(|| {
        let dir = plugin_dir();
        let mut text = format!(
            "[engine]\nthreads = 1\nmemory_limit = {MEMORY_LIMIT}\nscratch_limit = {}\n",
            MEMORY_LIMIT / 4
        );
        for plugin in PLUGINS {
            let path = dir.join(plugin);
            assert!(
                path.is_file(),
                "{} is missing: run `cargo build --workspace --release` first, or set OPAL_FUZZ_PLUGIN_DIR",
                path.display()
            );
            text.push_str(&format!("[[plugins]]\npath = {:?}\n", path.display().to_string()));
        }
        let deployment = Deployment::parse(&text, &fuzz_path("deployment.toml"))
            .expect("the fuzz deployment parses");
        Engine::new(&deployment).unwrap_or_else(|e| panic!("the fuzz engine cannot start: {e}"))
    })
}

/// An engine without plugins: its tracker and owners, for targets that decode only.
pub fn bare_engine() -> &'static Arc<Engine> {
    static ENGINE: OnceLock<Arc<Engine>> = OnceLock::new();
    ENGINE.get_or_init(|| {
        let deployment = Deployment::parse("", &fuzz_path("deployment.toml"))
            .expect("an empty deployment parses");
        Engine::new(&deployment).unwrap_or_else(|e| panic!("the fuzz engine cannot start: {e}"))
    })
}

/// `name` inside [`FUZZ_SOURCE_DIR`].
pub fn fuzz_path(name: &str) -> PathBuf {
    Path::new(FUZZ_SOURCE_DIR).join(name)
}

/// One declared dim of a request model input.
enum DeclaredDim {
    Fixed(i64),
    Symbol(&'static str),
    Unknown,
}

/// The model requests are decoded for, and the deployment entry serving it: inputs of five
/// dtypes with fixed, symbolic (one given a size by the deployment, one not) and unknown dims,
/// one without a declared shape and one whose shape the deployment fixes.
pub fn request_model() -> &'static (ModelSpec, Model) {
    static MODEL: OnceLock<(ModelSpec, Model)> = OnceLock::new();
    MODEL.get_or_init(|| {
        use DeclaredDim::{Fixed, Symbol, Unknown};
        let inputs = [
            ("image", DType::F32, Some(vec![Symbol("batch"), Fixed(3), Fixed(2)])),
            ("ids", DType::I64, Some(vec![Symbol("seq")])),
            ("mask", DType::BOOL, Some(vec![Unknown, Fixed(2)])),
            ("half", DType::F16, Some(vec![Fixed(1)])),
            ("raw", DType::U8, None),
            ("window", DType::I32, Some(vec![Unknown, Unknown])),
        ];
        let graph = GraphProto {
            name: "requests".into(),
            input: inputs
                .iter()
                .map(|(name, dtype, dims)| value_info(name, *dtype, dims.as_deref()))
                .collect(),
            output: vec![value_info("image", DType::F32, None)],
            ..Default::default()
        };
        let bytes = ModelProto {
            ir_version: 8,
            opset_import: vec![OperatorSetIdProto {
                domain: String::new(),
                version: 17,
            }],
            graph: Some(graph),
            ..Default::default()
        }
        .encode_to_vec();
        let path = fuzz_path("requests.onnx");
        let model = Model::from_bytes(bytes.into(), &path, bare_engine().weights_owner())
            .expect("the request model decodes");
        let deployment = Deployment::parse(
            "[[models]]\nname = \"requests\"\npath = \"requests.onnx\"\ndims = { seq = 5 }\nshapes = { window = [2, 2] }\n",
            &fuzz_path("deployment.toml"),
        )
        .expect("the request model's deployment parses");
        let spec = deployment.models[0].clone();
        (spec, model)
    })
}

fn value_info(name: &str, dtype: DType, dims: Option<&[DeclaredDim]>) -> ValueInfoProto {
    let shape = dims.map(|dims| TensorShapeProto {
        dim: dims
            .iter()
            .map(|d| Dimension {
                value: match d {
                    DeclaredDim::Fixed(n) => Some(DimValue::DimValue(*n)),
                    DeclaredDim::Symbol(s) => Some(DimValue::DimParam((*s).to_owned())),
                    DeclaredDim::Unknown => None,
                },
                ..Default::default()
            })
            .collect(),
    });
    ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: dtype.0,
                shape,
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}
