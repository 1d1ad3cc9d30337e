//! Clients sending requests in a loop, for load tests: each request's latency is recorded and
//! each answer checked.

use crate::Reply;
use std::{
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc,
    },
    thread::JoinHandle,
    time::Instant,
};

/// Whether a reply is the right answer.
pub type Check = Arc<dyn Fn(&Reply) -> bool + Send + Sync>;

/// Clients sending `POST path` with the same body until stopped.
pub struct Clients {
    stop: Arc<AtomicBool>,
    failures: Arc<AtomicUsize>,
    threads: Vec<JoinHandle<Vec<f64>>>,
}

impl Clients {
    /// `count` clients of the server at `address`, each on a connection per request.
    pub fn start(count: usize, address: &str, path: &str, body: &[u8], check: Check) -> Clients {
        let stop = Arc::new(AtomicBool::new(false));
        let failures = Arc::new(AtomicUsize::new(0));
        let threads = (0..count)
            .map(|_| {
                let (stop, failures, check) = (stop.clone(), failures.clone(), check.clone());
                let (address, path, body) = (address.to_owned(), path.to_owned(), body.to_vec());
                std::thread::spawn(move || {
                    let mut latencies = Vec::new();
                    while !stop.load(Ordering::Relaxed) {
                        let start = Instant::now();
                        let reply = crate::request(&address, "POST", &path, &[], &body);
                        latencies.push(start.elapsed().as_secs_f64());
                        if !check(&reply) {
                            failures.fetch_add(1, Ordering::Relaxed);
                            eprintln!("failed request: {} {}", reply.status, reply.text());
                        }
                    }
                    latencies
                })
            })
            .collect();
        Clients {
            stop,
            failures,
            threads,
        }
    }

    /// Stops the clients; returns every request's latency in seconds and how many failed.
    pub fn stop(self) -> (Vec<f64>, usize) {
        self.stop.store(true, Ordering::Relaxed);
        let latencies = self
            .threads
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect();
        (latencies, self.failures.load(Ordering::Relaxed))
    }
}

/// The 99th percentile of `latencies`.
pub fn p99(latencies: &mut [f64]) -> f64 {
    latencies.sort_by(f64::total_cmp);
    latencies[((latencies.len() - 1) as f64 * 0.99).round() as usize]
}
