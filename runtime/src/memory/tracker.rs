//! MemoryTracker: current and peak bytes, allocation count, and bytes by owner (tensors, pool,
//! scratch, weights, and each plugin by name).

use parking_lot::Mutex;
use std::sync::{
    atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    Arc,
};

/// Counts every byte the host allocates, in total and per owner.
#[derive(Debug, Default)]
pub struct MemoryTracker {
    current: AtomicUsize,
    peak: AtomicUsize,
    allocations: AtomicU64,
    owners: Mutex<Vec<Arc<OwnerCounters>>>,
    log: AtomicBool,
}

#[derive(Debug)]
struct OwnerCounters {
    name: String,
    current: AtomicUsize,
    peak: AtomicUsize,
    allocations: AtomicU64,
}

/// A handle that allocations are accounted to; cheap to clone.
#[derive(Debug, Clone)]
pub struct Owner {
    tracker: Arc<MemoryTracker>,
    counters: Arc<OwnerCounters>,
}

/// One owner's figures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnerUsage {
    pub name: String,
    pub current_bytes: usize,
    pub peak_bytes: usize,
    pub allocations: u64,
}

impl MemoryTracker {
    pub fn new() -> Arc<Self> {
        Arc::new(MemoryTracker::default())
    }

    /// The owner called `name`, created on first use.
    pub fn owner(self: &Arc<Self>, name: &str) -> Owner {
        let mut owners = self.owners.lock();
        let counters = match owners.iter().find(|o| o.name == name) {
            Some(existing) => existing.clone(),
            None => {
                let created = Arc::new(OwnerCounters {
                    name: name.to_owned(),
                    current: AtomicUsize::new(0),
                    peak: AtomicUsize::new(0),
                    allocations: AtomicU64::new(0),
                });
                owners.push(created.clone());
                created
            }
        };
        Owner {
            tracker: self.clone(),
            counters,
        }
    }

    /// Logs every allocation and free to stderr while enabled.
    pub fn set_logging(&self, enabled: bool) {
        self.log.store(enabled, Ordering::Relaxed);
    }

    pub fn current_bytes(&self) -> usize {
        self.current.load(Ordering::Relaxed)
    }

    pub fn peak_bytes(&self) -> usize {
        self.peak.load(Ordering::Relaxed)
    }

    /// Allocations made through the tracker since it was created.
    pub fn allocations(&self) -> u64 {
        self.allocations.load(Ordering::Relaxed)
    }

    /// Makes the peak equal to the current usage, so the next peak measures what follows.
    pub fn reset_peak(&self) {
        self.peak.store(self.current_bytes(), Ordering::Relaxed);
        for owner in self.owners.lock().iter() {
            owner
                .peak
                .store(owner.current.load(Ordering::Relaxed), Ordering::Relaxed);
        }
    }

    /// Every owner's figures, in the order they were created.
    pub fn owners(&self) -> Vec<OwnerUsage> {
        self.owners
            .lock()
            .iter()
            .map(|o| OwnerUsage {
                name: o.name.clone(),
                current_bytes: o.current.load(Ordering::Relaxed),
                peak_bytes: o.peak.load(Ordering::Relaxed),
                allocations: o.allocations.load(Ordering::Relaxed),
            })
            .collect()
    }
}

impl Owner {
    pub fn name(&self) -> &str {
        &self.counters.name
    }

    pub fn tracker(&self) -> &Arc<MemoryTracker> {
        &self.tracker
    }

    /// Bytes this owner holds now.
    pub fn current_bytes(&self) -> usize {
        self.counters.current.load(Ordering::Relaxed)
    }

    /// Records that this owner allocated `bytes`.
    pub(crate) fn record_alloc(&self, bytes: usize) {
        let t = &self.tracker;
        let now = t.current.fetch_add(bytes, Ordering::Relaxed) + bytes;
        t.peak.fetch_max(now, Ordering::Relaxed);
        t.allocations.fetch_add(1, Ordering::Relaxed);
        let c = &self.counters;
        let mine = c.current.fetch_add(bytes, Ordering::Relaxed) + bytes;
        c.peak.fetch_max(mine, Ordering::Relaxed);
        c.allocations.fetch_add(1, Ordering::Relaxed);
        if t.log.load(Ordering::Relaxed) {
            eprintln!("ALLOC {bytes} bytes by {}, total {now}", c.name);
        }
    }

    /// Records that this owner freed `bytes`.
    pub(crate) fn record_free(&self, bytes: usize) {
        let now = self.tracker.current.fetch_sub(bytes, Ordering::Relaxed) - bytes;
        self.counters.current.fetch_sub(bytes, Ordering::Relaxed);
        if self.tracker.log.load(Ordering::Relaxed) {
            eprintln!("FREE {bytes} bytes by {}, total {now}", self.counters.name);
        }
    }

    /// Moves `bytes` from this owner's account to `to`'s, without changing the total.
    pub(crate) fn transfer(&self, to: &Owner, bytes: usize) {
        self.counters.current.fetch_sub(bytes, Ordering::Relaxed);
        let theirs = to.counters.current.fetch_add(bytes, Ordering::Relaxed) + bytes;
        to.counters.peak.fetch_max(theirs, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owners_add_up_to_the_total_and_keep_their_peak() {
        let tracker = MemoryTracker::new();
        let a = tracker.owner("a");
        let b = tracker.owner("b");
        a.record_alloc(100);
        b.record_alloc(50);
        a.record_free(100);
        assert_eq!(tracker.current_bytes(), 50);
        assert_eq!(tracker.peak_bytes(), 150);
        assert_eq!(tracker.allocations(), 2);
        let owners = tracker.owners();
        assert_eq!((owners[0].current_bytes, owners[0].peak_bytes), (0, 100));
        assert_eq!((owners[1].current_bytes, owners[1].peak_bytes), (50, 50));
    }

    #[test]
    fn an_owner_is_found_again_by_name() {
        let tracker = MemoryTracker::new();
        tracker.owner("x").record_alloc(8);
        assert_eq!(tracker.owner("x").current_bytes(), 8);
        assert_eq!(tracker.owners().len(), 1);
    }
}
