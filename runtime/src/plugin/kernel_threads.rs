//! The threads the host lends kernels through `parallel_for`: a fixed set of workers that, with
//! the calling thread, take chunks of a range from a shared counter. A call allocates nothing,
//! so runs stay allocation-free with several threads. The caller never waits for a worker that
//! has not joined its job (one still waking up finds the job closed). Both sides spin briefly
//! before they sleep — workers for the next job, since kernel calls follow each other closely,
//! and the caller for the workers still in its job, whose last chunks usually end moments
//! after its own — so the scheduler's wake-up latency stays off the common path.

use parking_lot::{Condvar, Mutex};
use std::{
    sync::{
        atomic::{AtomicU64, AtomicUsize, Ordering},
        Arc,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

/// How long a worker watches for the next job before it sleeps: longer than most runs of
/// single-threaded kernels between two parallel ones, so a worker is awake for the next.
const SPIN: Duration = Duration::from_micros(200);
/// Spins between two looks at the clock.
const SPINS_PER_CLOCK: u32 = 256;

/// A task over a range of indices, run on several threads at once.
type Task<'a> = dyn Fn(usize, usize) + Sync + 'a;

/// What the workers share.
struct Shared {
    job: Mutex<Job>,
    /// Signalled when a job is posted or the pool shuts down.
    posted: Condvar,
    /// Signalled when a worker finishes its part of a job.
    finished: Condvar,
    /// The next chunk to take.
    next: AtomicUsize,
    /// The job's epoch, readable without the lock by spinning workers.
    posted_epoch: AtomicU64,
    /// Workers in the current job: they join under the job's lock while it is open, and leave
    /// (decrement) once they no longer touch the task, so the caller may spin on it.
    active: AtomicUsize,
}

struct Job {
    /// Bumped for each job, so a worker runs each one once.
    epoch: u64,
    /// The task while the job is open; `None` once the caller has closed it.
    task: Option<TaskRef>,
    n: usize,
    chunks: usize,
    shutdown: bool,
}

/// A borrowed task, lent to the workers only while [`KernelThreads::run`] waits for them.
#[derive(Clone, Copy)]
struct TaskRef(*const Task<'static>);

// SAFETY: the task is `Sync` (so it may be called from several threads), and `run` does not
// return while any worker can still reach it.
unsafe impl Send for TaskRef {}

/// A pool of `threads - 1` workers; the caller of [`KernelThreads::run`] is the last thread.
pub struct KernelThreads {
    threads: usize,
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
    /// Held while a job runs: a second caller (another request) runs its task on its own thread.
    running: Mutex<()>,
}

impl KernelThreads {
    /// Starts `threads - 1` workers (none for 1 thread).
    pub fn new(threads: usize) -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            job: Mutex::new(Job {
                epoch: 0,
                task: None,
                n: 0,
                chunks: 0,
                shutdown: false,
            }),
            posted: Condvar::new(),
            finished: Condvar::new(),
            next: AtomicUsize::new(0),
            posted_epoch: AtomicU64::new(0),
            active: AtomicUsize::new(0),
        });
        let workers = (1..threads.max(1))
            .map(|i| {
                let shared = shared.clone();
                std::thread::Builder::new()
                    .name(format!("opal-kernel-{i}"))
                    .spawn(move || work(&shared))
            })
            .collect::<Result<_, _>>()?;
        Ok(KernelThreads {
            threads: threads.max(1),
            shared,
            workers,
            running: Mutex::new(()),
        })
    }

    /// How many threads a call uses, the caller included.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Runs `task(start, end)` over disjoint chunks covering `0..n` on every thread, and returns
    /// when all have finished.
    pub fn run(&self, n: usize, task: &Task<'_>) {
        let chunks = n.min(self.threads * 4);
        let running = self.running.try_lock();
        if chunks <= 1 || self.workers.is_empty() || running.is_none() {
            if n > 0 {
                task(0, n);
            }
            return;
        }
        let erased: *const Task<'_> = task;
        // SAFETY: only the lifetime is changed. The workers reach the task through the job,
        // which is cleared below before this function returns, after every worker is done.
        let erased =
            unsafe { std::mem::transmute::<*const Task<'_>, *const Task<'static>>(erased) };
        {
            let mut job = self.shared.job.lock();
            job.epoch += 1;
            job.task = Some(TaskRef(erased));
            job.n = n;
            job.chunks = chunks;
            self.shared.next.store(0, Ordering::Release);
            self.shared.posted_epoch.store(job.epoch, Ordering::Release);
        }
        self.shared.posted.notify_all();
        run_chunks(&self.shared, task, n, chunks);
        // Close the job, so workers not yet in it stay out, and wait for those in it: spinning
        // first, since the last chunks usually end within microseconds of each other and a
        // sleeping caller would wait for the scheduler to wake it.
        self.shared.job.lock().task = None;
        let active = &self.shared.active;
        spin_while(|| active.load(Ordering::Acquire) > 0);
        let mut job = self.shared.job.lock();
        while active.load(Ordering::Acquire) > 0 {
            self.shared.finished.wait(&mut job);
        }
    }
}

impl Drop for KernelThreads {
    fn drop(&mut self) {
        self.shared.job.lock().shutdown = true;
        self.shared.posted.notify_all();
        for worker in self.workers.drain(..) {
            let _ = worker.join();
        }
    }
}

/// Takes chunks until none are left.
fn run_chunks(shared: &Shared, task: &Task<'_>, n: usize, chunks: usize) {
    loop {
        let c = shared.next.fetch_add(1, Ordering::AcqRel);
        if c >= chunks {
            return;
        }
        task(c * n / chunks, (c + 1) * n / chunks);
    }
}

/// Spins while `busy` holds, for at most [`SPIN`].
fn spin_while(busy: impl Fn() -> bool) {
    let spin_until = Instant::now() + SPIN;
    while Instant::now() < spin_until {
        for _ in 0..SPINS_PER_CLOCK {
            if !busy() {
                return;
            }
            std::hint::spin_loop();
        }
    }
}

/// A worker: waits for each new job, joins it while it is open, reports leaving.
fn work(shared: &Shared) {
    let mut seen = 0;
    loop {
        spin_while(|| shared.posted_epoch.load(Ordering::Acquire) == seen);
        let (task, n, chunks) = {
            let mut job = shared.job.lock();
            while job.epoch == seen && !job.shutdown {
                shared.posted.wait(&mut job);
            }
            if job.shutdown {
                return;
            }
            seen = job.epoch;
            let Some(task) = job.task else {
                continue;
            };
            shared.active.fetch_add(1, Ordering::AcqRel);
            (task, job.n, job.chunks)
        };
        // SAFETY: the caller waits for every worker that joined (`active`) before it returns,
        // so the task is valid until this worker leaves below.
        run_chunks(shared, unsafe { &*task.0 }, n, chunks);
        if shared.active.fetch_sub(1, Ordering::AcqRel) == 1 {
            // Under the lock, so a caller that saw this worker active is waiting already.
            let _job = shared.job.lock();
            shared.finished.notify_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_index_is_covered_once_on_several_threads() {
        let pool = KernelThreads::new(3).unwrap();
        for n in [0, 1, 5, 100, 1001] {
            let hits: Vec<AtomicUsize> = (0..n).map(|_| AtomicUsize::new(0)).collect();
            pool.run(n, &|start, end| {
                for h in &hits[start..end] {
                    h.fetch_add(1, Ordering::Relaxed);
                }
            });
            assert!(
                hits.iter().all(|h| h.load(Ordering::Relaxed) == 1),
                "n = {n}"
            );
        }
    }

    #[test]
    fn work_runs_on_more_than_one_thread() {
        let pool = KernelThreads::new(2).unwrap();
        let ids = Mutex::new(std::collections::HashSet::new());
        for _ in 0..50 {
            pool.run(64, &|_, _| {
                std::thread::sleep(std::time::Duration::from_micros(200));
                ids.lock().insert(std::thread::current().id());
            });
        }
        assert_eq!(ids.lock().len(), 2);
    }
}
