//! The engine's statistics block (the one `opal run` prints) as a Python dict.

use opal_runtime::memory::MemoryReport;
use pyo3::{prelude::*, types::PyDict};

/// `report` as a dict: bytes now and at peak, tracked allocations, the pool's figures, the
/// active operators, and bytes by host owner and by plugin.
pub(crate) fn report_dict<'py>(
    py: Python<'py>,
    report: &MemoryReport,
) -> PyResult<Bound<'py, PyDict>> {
    let dict = PyDict::new(py);
    dict.set_item("current_bytes", report.current_bytes)?;
    dict.set_item("peak_bytes", report.peak_bytes)?;
    dict.set_item("tracked_allocations", report.allocations)?;
    dict.set_item("pooled_tensors", report.pool.pooled_tensors)?;
    dict.set_item("pooled_bytes", report.pool.pooled_bytes)?;
    dict.set_item("pool_hits", report.pool.hits)?;
    dict.set_item("pool_misses", report.pool.misses)?;
    dict.set_item("pool_bypassed", report.pool.bypassed)?;
    dict.set_item("pool_hit_rate", report.pool.hit_rate())?;
    dict.set_item("active_operators", report.active_operators)?;
    let owners = PyDict::new(py);
    for owner in &report.owners {
        let usage = PyDict::new(py);
        usage.set_item("current_bytes", owner.current_bytes)?;
        usage.set_item("peak_bytes", owner.peak_bytes)?;
        owners.set_item(&owner.name, usage)?;
    }
    dict.set_item("owners", owners)?;
    let plugins = PyDict::new(py);
    for plugin in &report.plugins {
        let usage = PyDict::new(py);
        usage.set_item("current_bytes", plugin.usage.current_bytes)?;
        usage.set_item("peak_bytes", plugin.usage.peak_bytes)?;
        usage.set_item("own_heap_allocations", plugin.own_heap_allocations)?;
        plugins.set_item(&plugin.usage.name, usage)?;
    }
    dict.set_item("plugins", plugins)?;
    Ok(dict)
}
