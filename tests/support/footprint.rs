//! What a server process holds, read from `/proc`: resident memory, open descriptors, and the
//! files it maps.

use std::{collections::BTreeSet, time::Duration};

/// Resident memory, open descriptors, and the mapped files of interest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Footprint {
    pub resident_kib: u64,
    pub descriptors: usize,
    /// Mapped files whose path contains one of the patterns asked for.
    pub mapped: BTreeSet<String>,
}

/// The files `pid` maps whose path contains `pattern`.
pub fn mapped_files(pid: u32, pattern: &str) -> BTreeSet<String> {
    std::fs::read_to_string(format!("/proc/{pid}/maps"))
        .unwrap()
        .lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .filter(|path| path.contains(pattern))
        .map(str::to_owned)
        .collect()
}

/// `pid`'s footprint now, with the mapped files matching any of `patterns`.
pub fn footprint(pid: u32, patterns: &[&str]) -> Footprint {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let resident_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/<pid>/status");
    Footprint {
        resident_kib,
        descriptors: std::fs::read_dir(format!("/proc/{pid}/fd"))
            .unwrap()
            .count(),
        mapped: patterns
            .iter()
            .flat_map(|pattern| mapped_files(pid, pattern))
            .collect(),
    }
}

/// [`footprint`] once clients stopped: the server closes their last connections a moment
/// after they do, so the sample with the fewest descriptors within a second counts.
pub fn settled_footprint(pid: u32, patterns: &[&str]) -> Footprint {
    (0..10)
        .map(|_| {
            std::thread::sleep(Duration::from_millis(100));
            footprint(pid, patterns)
        })
        .min_by_key(|f| f.descriptors)
        .expect("ten samples")
}
