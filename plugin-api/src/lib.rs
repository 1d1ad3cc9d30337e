//! The stable ABI between the opal runtime and its operator plugins, and the safe layer plugin
//! authors write against.
//!
//! Two halves live here:
//! - the ABI types that cross the library boundary (`abi_stable`, `#[repr(C)]`): [`dtype`],
//!   [`tensor`], [`attribute`], [`host`], [`operator`], [`fusion`], [`subgraph`], [`value`],
//!   [`module`];
//! - the authoring layer a plugin author uses from plain safe Rust: [`kernel`], [`infer`],
//!   [`sequence`], [`strings`], [`export_plugin!`]. All the `unsafe` plumbing (views, panics, exporting) is done here once.

pub mod attribute;
pub mod dtype;
pub mod fusion;
pub mod host;
pub mod infer;
pub mod isa;
pub mod kernel;
pub mod module;
pub mod operator;
mod parallel_chunks;
pub mod sequence;
pub mod strings;
pub mod subgraph;
pub mod tensor;
pub mod testing;
pub mod value;

mod element;
mod export;
mod panic;

pub use attribute::{AttrValue, Attribute, Attributes, StringList};
pub use dtype::DType;
pub use element::Element;
pub use fusion::{FuseQuery, FusedOperand};
pub use infer::{InferContext, InferInput, OutputType};
pub use isa::Isa;
pub use kernel::{KernelContext, KernelError, KernelResult, ScratchBuffer, TensorMut, TensorRef};
pub use module::{PluginDescriptor, ABI_MAJOR, ABI_MINOR, DESCRIPTOR_SYMBOL};
pub use operator::Operator;
pub use sequence::{SequenceRef, Value};
pub use strings::{Strings, StringsMut};
pub use value::ValueKind;

#[doc(hidden)]
pub mod __private {
    //! Re-exports used by [`export_plugin!`](crate::export_plugin); not part of the API.
    pub use crate::export::{module_ref, operator_vtable_ref, plugin_module, CountingAllocator};
    pub use abi_stable::{prefix_type::WithMetadata, std_types::RVec};
}

/// Everything a plugin author needs, in one `use`.
pub mod prelude {
    pub use crate::{
        export_plugin, Attributes, DType, Element, FuseQuery, FusedOperand, InferContext,
        InferInput, Isa, KernelContext, KernelError, KernelResult, Operator, OutputType,
        SequenceRef, Strings, StringsMut, TensorMut, TensorRef, Value, ValueKind,
    };
}
