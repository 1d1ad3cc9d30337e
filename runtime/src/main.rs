//! The `opal` command: list plugins, run, check and benchmark models, and serve them.

mod cli;
mod server;

use opal_runtime::memory::CountingAllocator;

/// Counts every heap allocation of the process, so runs can report how many they made.
#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

fn main() -> std::process::ExitCode {
    if let Some(code) = opal_runtime::plugin::probe::answer_probe() {
        return code;
    }
    // Plugins are tried in a child `opal` first, so one that crashes while loading is refused.
    if let Ok(opal) = std::env::current_exe() {
        opal_runtime::plugin::probe::probe_plugins_with(opal);
    }
    cli::main()
}
