//! Plugins: loading `.so` files through the stable ABI, the operator registry, the services
//! the host lends kernels, and unloading.

mod call_scope;
mod call_strings;
mod call_values;
mod digest;
mod elf;
mod error;
mod host_services;
mod kernel_threads;
mod layout;
mod library;
pub mod probe;
mod registry;
mod shadow;
mod unload;

pub use call_scope::{infer_host, InferScope, ShapedOutputs, SubgraphRunner, SubgraphTypes};
pub use call_strings::StringOutputs;
pub use call_values::{CallValues, SubgraphValues};
pub use digest::ContentDigest;
pub use error::PluginError;
pub use host_services::{CallHost, HOST_VTABLE};
pub use kernel_threads::KernelThreads;
pub use library::{OperatorEntry, PluginLibrary};
pub use registry::{OperatorKey, Registry, RegistryError};
pub use shadow::{load_shadow_copy, shadow_dir};
pub use unload::{libraries_left_mapped, LeftMapped};
