//! The statistics block the seed prints, with bytes per owner and per plugin.

use super::{OwnerUsage, PoolStats};
use std::fmt;

/// A snapshot of the engine's memory figures.
#[derive(Debug, Clone, PartialEq)]
pub struct MemoryReport {
    pub current_bytes: usize,
    pub peak_bytes: usize,
    pub allocations: u64,
    pub pool: PoolStats,
    pub active_operators: usize,
    /// Host-side owners: tensors, pool, scratch, weights.
    pub owners: Vec<OwnerUsage>,
    /// Each loaded plugin's temporaries, and its own heap allocations when it reports them.
    pub plugins: Vec<OwnerReport>,
}

/// One plugin's memory.
#[derive(Debug, Clone, PartialEq)]
pub struct OwnerReport {
    pub usage: OwnerUsage,
    /// Allocations the plugin made from its own heap (ABI ≥ 1.1), `None` if it cannot say.
    pub own_heap_allocations: Option<u64>,
}

impl fmt::Display for MemoryReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "=== MEMORY STATISTICS ===")?;
        writeln!(f, "Current usage: {} bytes", self.current_bytes)?;
        writeln!(f, "Peak usage: {} bytes", self.peak_bytes)?;
        writeln!(f, "Tracked allocations: {}", self.allocations)?;
        writeln!(
            f,
            "Tensors in pool: {} ({} bytes)",
            self.pool.pooled_tensors, self.pool.pooled_bytes
        )?;
        writeln!(
            f,
            "Pool hit rate: {:.1}% ({} hits, {} misses, {} bypassed)",
            self.pool.hit_rate() * 100.0,
            self.pool.hits,
            self.pool.misses,
            self.pool.bypassed
        )?;
        writeln!(f, "Active operators: {}", self.active_operators)?;
        writeln!(f, "Bytes by owner:")?;
        for o in &self.owners {
            writeln!(
                f,
                "  {:<10} current {} bytes, peak {} bytes",
                o.name, o.current_bytes, o.peak_bytes
            )?;
        }
        writeln!(f, "Bytes per plugin:")?;
        for p in &self.plugins {
            let heap = match p.own_heap_allocations {
                Some(n) => format!("{n} own heap allocations"),
                None => "own heap not reported".to_owned(),
            };
            writeln!(
                f,
                "  {:<10} current {} bytes, peak {} bytes, {heap}",
                p.usage.name, p.usage.current_bytes, p.usage.peak_bytes
            )?;
        }
        Ok(())
    }
}
