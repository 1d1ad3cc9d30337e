//! Single-thread SGEMM throughput, opal's on each instruction set this CPU runs against
//! OpenBLAS's in the same run:
//! `env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE cargo bench -p opal-kernel-support --bench sgemm`
//! (those variables hold OpenBLAS to a lesser kernel; the bench warns when one is set).
//!
//! Each `opal-<isa>` iteration is one `sgemm_on` of row-major `m x k` by `k x n` on that
//! instruction set's micro-kernel, called as MatMul and Conv call it, inside a kernel call on a
//! `TestHost` (one thread): the time of that call is measured, host scratch for its packing
//! buffers included, and not the test host's own work around it (making and filling the output
//! tensor, reading the attributes), which the runtime does differently. The test host also
//! allocates, zeroes and fills every scratch request, where the runtime's arena lends memory it
//! keeps, so opal's figures are if anything low. Each `openblas` iteration is one `cblas_sgemm`
//! of the same operands on one OpenBLAS thread. The bench prints the CPU model and the kernel
//! OpenBLAS chose. Criterion's throughput is counted in floating-point operations
//! (`2 * m * n * k` per product), so its `Gelem/s` reads as GFLOP/s. The shapes are the square
//! sizes and the skinny products that convolutions make (output channels x output positions x
//! input channels times taps).
//!
//! OpenBLAS is the build numpy's wheel bundles (`libscipy_openblas64_*.so` in the test venv
//! that `tests/run.sh` makes under `.cache/venv`), or the library named by `OPAL_OPENBLAS`
//! (exporting `cblas_sgemm` or numpy's prefixed ILP64 names). Without one, only opal's
//! figures are measured and the bench says so.
//!
//! The time is the thread's CPU time (`/proc/thread-self/schedstat`) where Linux provides it,
//! wall-clock time otherwise: the machines this runs on share their cores with other builds,
//! and CPU time keeps their preemptions out of the measurement.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use opal_kernel_support::{
    isa::Isa,
    sgemm::{sgemm_on, single_batch, Operand, Product},
    testutil::values,
};
use opal_plugin_api::{
    testing::{string_attr, OwnedTensor, TestHost},
    InferContext, KernelContext, KernelError, KernelResult, Operator, OutputType,
};
use std::{
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicU64, Ordering},
        OnceLock,
    },
    time::{Duration, Instant},
};

/// `C = A * B` through `sgemm_on`. Inputs: A (`m x k`), B (`k x n`), a C of the output's
/// shape, and `[m, n, k]` as f32; attribute `isa`, the instruction set's name; output C.
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
        let isa: Isa =
            cx.attributes().string("isa", "")?.parse().map_err(
                |e: opal_kernel_support::isa::UnknownIsa| KernelError::new(e.to_string()),
            )?;
        let c = cx.output(0)?.f32_mut()?;
        let start = clock();
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
            packed_a: None,
            packed_b: None,
        };
        let result = sgemm_on(cx, isa, &product, c);
        let nanos = (clock() - start).as_nanos();
        SGEMM_TIME.fetch_add(nanos.try_into().unwrap_or(u64::MAX), Ordering::Relaxed);
        result
    }
}

/// The time of the `sgemm_on` calls of [`Product1`] since [`time_opal`] last cleared it, in
/// nanoseconds.
static SGEMM_TIME: AtomicU64 = AtomicU64::new(0);

/// The calling thread's CPU time, if Linux reports it.
fn thread_cpu_time() -> Option<Duration> {
    // A yield makes the kernel bring the running thread's count up to date.
    std::thread::yield_now();
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let nanos = stat.split_whitespace().next()?.parse().ok()?;
    Some(Duration::from_nanos(nanos))
}

/// The clock the bench times with: the thread's CPU time where Linux reports it, wall-clock
/// time (since the first reading) otherwise.
fn clock() -> Duration {
    static START: OnceLock<Instant> = OnceLock::new();
    let start = *START.get_or_init(Instant::now);
    thread_cpu_time().unwrap_or_else(|| start.elapsed())
}

/// The time of `reps` runs of `f`, after one warm-up run.
fn time_runs(reps: u64, mut f: impl FnMut()) -> Duration {
    f();
    let start = clock();
    for _ in 0..reps {
        f();
    }
    clock() - start
}

/// The time of `reps` opal products of `m x k` by `k x n` on one thread, on `isa`: of the
/// `sgemm_on` calls alone, after one warm-up run.
fn time_opal(isa: Isa, m: usize, n: usize, k: usize, reps: u64) -> Duration {
    let inputs = [
        OwnedTensor::f32(&[m * k], &values(m * k, 1)),
        OwnedTensor::f32(&[k * n], &values(k * n, 2)),
        OwnedTensor::f32(&[m * n], &vec![0.0; m * n]),
        OwnedTensor::f32(&[3], &[m as f32, n as f32, k as f32]),
    ];
    let attributes = [string_attr("isa", isa.name())];
    let host = TestHost::new().threads(1);
    host.run::<Product1>(&inputs, &attributes, 1).unwrap();
    SGEMM_TIME.store(0, Ordering::Relaxed);
    for _ in 0..reps {
        host.run::<Product1>(&inputs, &attributes, 1).unwrap();
    }
    Duration::from_nanos(SGEMM_TIME.load(Ordering::Relaxed))
}

/// `cblas_sgemm` of an ILP64 OpenBLAS: order, transposes, m, n, k, alpha, A, lda, B, ldb, beta,
/// C, ldc.
type CblasSgemm = unsafe extern "C" fn(
    i32,
    i32,
    i32,
    i64,
    i64,
    i64,
    f32,
    *const f32,
    i64,
    *const f32,
    i64,
    f32,
    *mut f32,
    i64,
);
/// `openblas_set_num_threads`.
type SetThreads = unsafe extern "C" fn(i32);
/// `openblas_get_corename` and `openblas_get_config`: static NUL-terminated strings.
type GetName = unsafe extern "C" fn() -> *const std::ffi::c_char;
const CBLAS_ROW_MAJOR: i32 = 101;
const CBLAS_NO_TRANS: i32 = 111;

/// A loaded OpenBLAS, set to one thread.
struct OpenBlas {
    sgemm: CblasSgemm,
    path: PathBuf,
    /// The kernel OpenBLAS chose for this CPU (its core name) and its build configuration,
    /// when it tells.
    core: String,
    _library: libloading::Library,
}

impl OpenBlas {
    /// The library `OPAL_OPENBLAS` names, or numpy's bundled one in the test venv.
    fn find() -> Option<PathBuf> {
        if let Some(path) = std::env::var_os("OPAL_OPENBLAS") {
            return Some(path.into());
        }
        let venv_lib = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.cache/venv/lib");
        for python in std::fs::read_dir(venv_lib).ok()?.flatten() {
            let libs = python.path().join("site-packages/numpy.libs");
            for file in std::fs::read_dir(libs).into_iter().flatten().flatten() {
                let name = file.file_name();
                if name.to_string_lossy().starts_with("libscipy_openblas64_") {
                    return Some(file.path());
                }
            }
        }
        None
    }

    fn load(path: PathBuf) -> Result<OpenBlas, String> {
        // SAFETY: OpenBLAS's initialisers only set up its own state.
        let library = unsafe { libloading::Library::new(&path) }.map_err(|e| e.to_string())?;
        // SAFETY: the symbols have the signatures of the CBLAS and OpenBLAS headers for the
        // ILP64 interface that numpy's OpenBLAS (its names end in `64_`) is built with.
        let (sgemm, set_threads) = unsafe {
            let sgemm = library
                .get::<CblasSgemm>(b"scipy_cblas_sgemm64_")
                .or_else(|_| library.get::<CblasSgemm>(b"cblas_sgemm"))
                .map_err(|e| e.to_string())?;
            let set_threads = library
                .get::<SetThreads>(b"scipy_openblas_set_num_threads64_")
                .or_else(|_| library.get::<SetThreads>(b"openblas_set_num_threads"))
                .map_err(|e| e.to_string())?;
            (*sgemm, *set_threads)
        };
        // SAFETY: a plain setter of OpenBLAS's thread count.
        unsafe { set_threads(1) };
        let core = ["scipy_openblas_get_corename64_", "openblas_get_corename"]
            .iter()
            .zip(["scipy_openblas_get_config64_", "openblas_get_config"])
            .find_map(|(corename, config)| {
                let name = |symbol: &str| {
                    // SAFETY: both functions take nothing and return a static NUL-terminated
                    // string (OpenBLAS's `openblas_get_corename` and `openblas_get_config`).
                    unsafe {
                        let get = library.get::<GetName>(symbol.as_bytes()).ok()?;
                        let name = get();
                        (!name.is_null()).then(|| {
                            std::ffi::CStr::from_ptr(name)
                                .to_string_lossy()
                                .into_owned()
                        })
                    }
                };
                Some(format!("{} ({})", name(corename)?, name(config)?.trim()))
            })
            .unwrap_or_else(|| "unknown".into());
        Ok(OpenBlas {
            sgemm,
            path,
            core,
            _library: library,
        })
    }

    /// The time of `reps` products of `m x k` by `k x n`.
    fn time(&self, m: usize, n: usize, k: usize, reps: u64) -> Duration {
        let a = values(m * k, 1);
        let b = values(k * n, 2);
        let mut c = vec![0.0f32; m * n];
        let [mi, ni, ki] = [m, n, k].map(|d| d as i64);
        time_runs(reps, || {
            // SAFETY: A is `m x k` (lda k), B `k x n` (ldb n) and C `m x n` (ldc n), all
            // row-major and as long as those shapes need.
            unsafe {
                (self.sgemm)(
                    CBLAS_ROW_MAJOR,
                    CBLAS_NO_TRANS,
                    CBLAS_NO_TRANS,
                    mi,
                    ni,
                    ki,
                    1.0,
                    a.as_ptr(),
                    ki,
                    b.as_ptr(),
                    ni,
                    0.0,
                    c.as_mut_ptr(),
                    ni,
                )
            }
        })
    }
}

/// The CPU's model name, from `/proc/cpuinfo`.
fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find_map(|line| line.strip_prefix("model name")?.split_once(':'))
                .map(|(_, model)| model.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".into())
}

fn bench(c: &mut Criterion) {
    let isas: Vec<Isa> = Isa::available().collect();
    let names: Vec<&str> = isas.iter().map(|isa| isa.name()).collect();
    eprintln!("CPU: {}; opal runs on {}", cpu_model(), names.join(", "));
    for variable in ["OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"] {
        if let Some(value) = std::env::var_os(variable) {
            eprintln!(
                "warning: {variable}={} holds OpenBLAS to a kernel it would not choose; run with \
                 `env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE` for its best",
                value.to_string_lossy()
            );
        }
    }
    let openblas = match OpenBlas::find().map(OpenBlas::load) {
        Some(Ok(openblas)) => {
            eprintln!(
                "OpenBLAS baseline: {}, kernel {}",
                openblas.path.display(),
                openblas.core
            );
            Some(openblas)
        }
        Some(Err(e)) => {
            eprintln!("OpenBLAS baseline not measured: {e}");
            None
        }
        None => {
            eprintln!(
                "OpenBLAS baseline not measured: no .cache/venv numpy (run tests/run.sh) and no \
                 OPAL_OPENBLAS"
            );
            None
        }
    };
    let mut group = c.benchmark_group("sgemm_1thread");
    group.sample_size(10);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(3));
    let shapes = [
        ("256^3", 256, 256, 256),
        ("512^3", 512, 512, 512),
        ("1024^3", 1024, 1024, 1024),
        ("2048^3", 2048, 2048, 2048),
        // ResNet-50's 3x3 convolutions at 56x56 and 7x7, a 1x1 one at 28x28, and YOLOv8n's
        // first 3x3 convolution at 320x320 (16 channels out of 3 in, stride 2).
        ("conv_64x3136x576", 64, 3136, 576),
        ("conv_512x49x4608", 512, 49, 4608),
        ("conv_128x784x512", 128, 784, 512),
        ("conv_16x25600x27", 16, 25600, 27),
    ];
    for (name, m, n, k) in shapes {
        group.throughput(Throughput::Elements(2 * (m * n * k) as u64));
        for &isa in &isas {
            let id = BenchmarkId::new(format!("opal-{isa}"), name);
            group.bench_function(id, |bencher| {
                bencher.iter_custom(|reps| time_opal(isa, m, n, k, reps))
            });
        }
        if let Some(openblas) = &openblas {
            group.bench_function(BenchmarkId::new("openblas", name), |bencher| {
                bencher.iter_custom(|reps| openblas.time(m, n, k, reps))
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
