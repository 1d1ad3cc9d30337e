//! The host's memory: tracked allocations by owner, aligned buffers, the tensor pool, per-run
//! scratch arenas, string tensors' bytes, the counting global allocator, and the statistics
//! block.

mod arena;
mod buffer;
mod counting;
mod mapped;
mod pool;
mod slab;
mod stats;
mod strings;
mod tracker;

pub use arena::ScratchArena;
pub use buffer::{AlignedBuffer, ALIGNMENT};
pub use counting::{heap_allocations, CountingAllocator};
pub use mapped::{contains, map_file};
pub use pool::{AllocError, PoolConfig, PoolStats, TensorPool};
pub use slab::{Reads, Slab, Writes};
pub use stats::{MemoryReport, OwnerReport};
pub use strings::StringBytes;
pub use tracker::{MemoryTracker, Owner, OwnerUsage};
