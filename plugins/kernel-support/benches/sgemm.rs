//! Single-thread SGEMM throughput: `cargo bench -p opal-kernel-support --bench sgemm`.
//!
//! Each iteration is one kernel call on a `TestHost` (one thread) that runs one `sgemm` of
//! row-major `m x k` by `k x n`, as MatMul and Conv call it (host scratch for the packing
//! buffers included). Criterion's throughput is counted in floating-point operations
//! (`2 * m * n * k` per product), so its `Gelem/s` reads as GFLOP/s.
//!
//! The time is the thread's CPU time (`/proc/thread-self/schedstat`) where Linux provides it,
//! wall-clock time otherwise: the machines this runs on share their cores with other builds,
//! and CPU time keeps their preemptions out of the measurement.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use opal_kernel_support::{
    sgemm::{sgemm, single_batch, Operand, Product},
    testutil::values,
};
use opal_plugin_api::{
    testing::{OwnedTensor, TestHost},
    InferContext, KernelContext, KernelResult, Operator, OutputType,
};
use std::time::{Duration, Instant};

/// `C = A * B` through `sgemm`. Inputs: A (`m x k`), B (`k x n`), a C of the output's shape,
/// and `[m, n, k]` as f32; output C.
struct Product1;

impl Operator for Product1 {
    const OP_TYPE: &'static str = "BenchSgemm";

    fn infer(cx: &InferContext<'_>) -> KernelResult<Vec<OutputType>> {
        let c = cx.input(2)?;
        Ok(vec![OutputType::new(c.dtype, c.shape.to_vec())])
    }

    fn compute(cx: &mut KernelContext<'_>) -> KernelResult<()> {
        let a = cx.input(0)?.f32()?;
        let b = cx.input(1)?.f32()?;
        let dims = cx.input(3)?.f32()?;
        let [m, n, k] = [0, 1, 2].map(|i| dims[i] as usize);
        let c = cx.output(0)?.f32_mut()?;
        let product = Product {
            m,
            n,
            k,
            alpha: 1.0,
            beta: 0.0,
            a: Operand {
                data: a,
                row_stride: k,
                col_stride: 1,
            },
            b: Operand {
                data: b,
                row_stride: n,
                col_stride: 1,
            },
            batches: 1,
            batch_offsets: &single_batch,
        };
        sgemm(cx, &product, c)
    }
}

/// The calling thread's CPU time, if Linux reports it.
fn thread_cpu_time() -> Option<Duration> {
    // A yield makes the kernel bring the running thread's count up to date.
    std::thread::yield_now();
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let nanos = stat.split_whitespace().next()?.parse().ok()?;
    Some(Duration::from_nanos(nanos))
}

/// The time of `reps` products of `m x k` by `k x n` on one thread, after one warm-up call.
fn time(m: usize, n: usize, k: usize, reps: u64) -> Duration {
    let inputs = [
        OwnedTensor::f32(&[m * k], &values(m * k, 1)),
        OwnedTensor::f32(&[k * n], &values(k * n, 2)),
        OwnedTensor::f32(&[m * n], &vec![0.0; m * n]),
        OwnedTensor::f32(&[3], &[m as f32, n as f32, k as f32]),
    ];
    let host = TestHost::new().threads(1);
    host.run::<Product1>(&inputs, &[], 1).unwrap();
    let wall = Instant::now();
    let cpu = thread_cpu_time();
    for _ in 0..reps {
        host.run::<Product1>(&inputs, &[], 1).unwrap();
    }
    match (cpu, thread_cpu_time()) {
        (Some(start), Some(end)) => end - start,
        _ => wall.elapsed(),
    }
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("sgemm_1thread");
    group.sample_size(10);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(3));
    let shapes = [
        ("256^3", 256, 256, 256),
        ("512^3", 512, 512, 512),
        ("1024^3", 1024, 1024, 1024),
        ("conv_64x3136x576", 64, 3136, 576),
    ];
    for (name, m, n, k) in shapes {
        group.throughput(Throughput::Elements(2 * (m * n * k) as u64));
        group.bench_function(BenchmarkId::from_parameter(name), |bencher| {
            bencher.iter_custom(|reps| time(m, n, k, reps))
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
