//! opal's host runtime: it owns the memory, loads operator plugins through the stable ABI, and
//! runs ONNX models with them.
//!
//! - [`config`]: deployment files.
//! - [`engine`]: what a deployment sets up once: memory, plugins, registry, threads.
//! - [`memory`]: tracker, aligned buffers, tensor pool, scratch arenas, mapped files, stats.
//! - [`instruction_set`]: which kernels (AVX-512, AVX2, NEON, baseline) the engine lends.
//! - [`plugin`]: loading `.so` plugins, the operator registry, services lent to kernels;
//!   [`hot_swap`] and [`plugin_changes`]: replacing, adding and removing them while serving.
//! - [`onnx`]: model files.
//! - [`plan`], [`run_state`], [`session`]: compiling a model and running it; [`run_control`]:
//!   stopping a run between kernels; [`session_pool`]: sessions of a model shared by threads,
//!   and plugin reloads tried on them; [`input_check`]: callers' tensors against a model's
//!   declared inputs.
//! - [`kserve`]: the KServe v2 wire format `opal serve` speaks.
//! - [`value`]: sequences and optionals beside tensors; [`value_file`]: their files.
//! - [`tensor_file`], [`compare`], [`synthetic`]: inputs and outputs of the CLI's runs and checks.

pub mod compare;
pub mod config;
pub mod engine;
pub mod hot_swap;
pub mod input_check;
pub mod instruction_set;
pub mod kserve;
pub mod memory;
pub mod npy_unicode;
pub mod onnx;
pub mod plan;
pub mod plugin;
pub mod plugin_changes;
pub mod run_control;
pub mod run_state;
pub mod session;
pub mod session_pool;
pub mod synthetic;
pub mod tensor;
pub mod tensor_file;
pub mod value;
pub mod value_file;

pub use config::Deployment;
pub use engine::{Engine, EngineError};
pub use plan::{Plan, PlanError};
pub use run_control::RunControl;
pub use run_state::{RunError, RunState};
pub use session::{Session, SessionError};
pub use tensor::{Tensor, TensorRef};
