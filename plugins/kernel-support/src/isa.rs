//! The instruction set a kernel call runs on, as the host lends it ([`current`]).
//!
//! One build runs on any CPU of its architecture: code that needs more than the build's target
//! (AVX2+FMA or AVX-512 beyond x86-64's baseline) is compiled for it with `#[target_feature]`
//! and entered only after [`Isa::is_available`] said yes.

pub use opal_plugin_api::isa::{Isa, UnknownIsa};
use opal_plugin_api::KernelContext;

/// Whether code compiled for the build's own target may use fused multiply-adds: x86-64 when
/// the target enables FMA, and every aarch64 CPU (FMA is part of its base instruction set, but
/// Rust names no `fma` target feature there).
pub const TARGET_HAS_FMA: bool = cfg!(any(target_feature = "fma", target_arch = "aarch64"));

/// Whether code compiled for `isa` (as [`crate::simd::vectorized`] compiles a kernel's loops)
/// has fused multiply-adds: AVX2 and AVX-512 (with FMA) and NEON do; the baseline has them only
/// when the build's target does.
pub fn has_fma(isa: Isa) -> bool {
    matches!(isa, Isa::Avx2 | Isa::Avx512 | Isa::Neon) || TARGET_HAS_FMA
}

/// The instruction set a kernel call runs on: what the host chose for the process (the best
/// this CPU has, or the lower one `OPAL_ISA` or the deployment's `engine.isa` caps it to).
/// Kernels ask only through this function, once per call, and use the answer for everything
/// that depends on it (such as the layout of weights they pack).
pub fn current(cx: &KernelContext<'_>) -> Isa {
    cx.isa()
}
