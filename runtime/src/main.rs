//! The `opal` command: list plugins, run, check and benchmark models, and serve them.

mod cli;
mod server;

use opal_runtime::memory::CountingAllocator;

/// Counts every heap allocation of the process, so runs can report how many they made.
#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

fn main() -> std::process::ExitCode {
    cli::main()
}
