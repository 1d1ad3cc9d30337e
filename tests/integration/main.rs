//! opal integration tests, one binary with a module per area.

mod bad_models;
mod cli;
mod conformance;
mod control_flow;
mod example_plugin;
mod flex_attention;
mod fusion;
mod hot_swap;
mod image_decoder;
mod isa;
mod kserve_client;
mod live_config;
mod live_load;
mod model_control;
mod models;
mod overload;
mod plugin_loading;
mod sequences;
mod serve;
mod strings;
mod watch;

/// Counts heap allocations, so tests can assert that steady-state runs make none.
#[global_allocator]
static ALLOCATOR: opal_runtime::memory::CountingAllocator = opal_runtime::memory::CountingAllocator;
