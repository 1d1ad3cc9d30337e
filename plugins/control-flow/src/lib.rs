//! opal's control-flow plugin: If, Loop and Scan (opset 8's batched form and the later one)
//! as ONNX operators behind the plugin ABI.
//!
//! The host compiles and runs their subgraphs (branches and bodies) with its own kernels and
//! memory; these kernels decide which subgraph runs, how often, and on what, and move values
//! between iterations. Values carried between iterations live in the host's scratch arena, so
//! a loop whose shapes stay the same allocates nothing once warm.

mod carried;
mod if_op;
mod loop_op;
mod scan;
mod scan_pass;
mod scan_v8;
mod types;

pub use if_op::If;
pub use loop_op::Loop;
pub use scan::Scan;
pub use scan_v8::ScanV8;

opal_plugin_api::export_plugin! {
    name: "control-flow",
    version: env!("CARGO_PKG_VERSION"),
    operators: [If, Loop, Scan, ScanV8],
}
