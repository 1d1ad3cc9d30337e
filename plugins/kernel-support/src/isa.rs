//! The instruction sets that kernels choose between at run time, what this CPU has, and which
//! one a kernel call uses ([`current`]).
//!
//! One build runs on any CPU of its architecture: code that needs more than the build's target
//! (AVX2+FMA or AVX-512 beyond x86-64's baseline) is compiled for it with `#[target_feature]`
//! and entered only after [`Isa::is_available`] said yes.

use opal_plugin_api::KernelContext;
use std::{
    fmt,
    str::FromStr,
    sync::atomic::{AtomicU8, Ordering},
};

/// An instruction set a kernel has a path for. Ordered from the most portable: on x86-64 each
/// of `Baseline`, `Avx2`, `Avx512` includes the ones before it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Isa {
    /// What the build targets, nothing more.
    Baseline,
    /// x86-64 with AVX2 and FMA.
    Avx2,
    /// x86-64 with AVX-512 F, besides AVX2 and FMA.
    Avx512,
    /// aarch64 with Advanced SIMD.
    Neon,
}

/// Every instruction set, most capable first within each architecture.
const ALL: [Isa; 4] = [Isa::Avx512, Isa::Avx2, Isa::Neon, Isa::Baseline];

/// Not yet known, in the caches below.
const UNKNOWN: u8 = u8::MAX;
/// [`Isa::best`], once detected.
static BEST: AtomicU8 = AtomicU8::new(UNKNOWN);
/// The instruction set [`current`] answers, once read.
static CURRENT: AtomicU8 = AtomicU8::new(UNKNOWN);

impl Isa {
    /// The most capable instruction set this CPU reports, detected once per process.
    pub fn best() -> Isa {
        cached(&BEST, detect)
    }

    /// Whether this CPU runs code for `self`.
    pub fn is_available(self) -> bool {
        let best = Isa::best();
        match self {
            Isa::Baseline => true,
            Isa::Avx2 => matches!(best, Isa::Avx2 | Isa::Avx512),
            Isa::Avx512 | Isa::Neon => best == self,
        }
    }

    /// The instruction sets this CPU runs, most capable first.
    pub fn available() -> impl Iterator<Item = Isa> {
        ALL.into_iter().filter(|isa| isa.is_available())
    }

    /// The lower-case name that [`FromStr`] reads and `OPAL_ISA` takes.
    pub fn name(self) -> &'static str {
        match self {
            Isa::Baseline => "baseline",
            Isa::Avx2 => "avx2",
            Isa::Avx512 => "avx512",
            Isa::Neon => "neon",
        }
    }

    fn from_u8(value: u8) -> Option<Isa> {
        ALL.into_iter().find(|&isa| isa as u8 == value)
    }
}

impl fmt::Display for Isa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A name that is not one of [`Isa::name`]'s.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnknownIsa(pub String);

impl fmt::Display for UnknownIsa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown instruction set `{}` (expected avx512, avx2, neon or baseline)",
            self.0
        )
    }
}

impl std::error::Error for UnknownIsa {}

impl FromStr for Isa {
    type Err = UnknownIsa;

    /// An instruction set by its [`Isa::name`], in any case.
    fn from_str(s: &str) -> Result<Isa, UnknownIsa> {
        let s = s.trim();
        ALL.into_iter()
            .find(|isa| isa.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| UnknownIsa(s.to_owned()))
    }
}

/// The instruction set a kernel call runs on: the best this CPU has, or a lower one that the
/// environment variable `OPAL_ISA` names (read once per process; a name this CPU does not run
/// is ignored). Kernels ask only through this function, once per call, and use the answer for
/// everything that depends on it (such as the layout of weights they pack).
pub fn current(cx: &KernelContext<'_>) -> Isa {
    let _ = cx;
    cached(&CURRENT, || {
        capped(Isa::best(), std::env::var("OPAL_ISA").ok().as_deref())
    })
}

/// `best`, or the instruction set `cap` names when this CPU runs it and it is lower.
fn capped(best: Isa, cap: Option<&str>) -> Isa {
    match cap.map(str::parse::<Isa>) {
        Some(Ok(cap)) if cap.is_available() && cap <= best => cap,
        _ => best,
    }
}

/// The instruction set in `cache`, computed by `compute` the first time. (Threads that race
/// there compute the same answer.)
fn cached(cache: &AtomicU8, compute: impl FnOnce() -> Isa) -> Isa {
    if let Some(isa) = Isa::from_u8(cache.load(Ordering::Relaxed)) {
        return isa;
    }
    let isa = compute();
    cache.store(isa as u8, Ordering::Relaxed);
    isa
}

/// What this CPU reports.
fn detect() -> Isa {
    #[cfg(target_arch = "x86_64")]
    {
        let avx2 = is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma");
        if avx2 && is_x86_feature_detected!("avx512f") {
            Isa::Avx512
        } else if avx2 {
            Isa::Avx2
        } else {
            Isa::Baseline
        }
    }
    #[cfg(target_arch = "aarch64")]
    {
        if std::arch::is_aarch64_feature_detected!("neon") {
            Isa::Neon
        } else {
            Isa::Baseline
        }
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        Isa::Baseline
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_read_back() {
        for isa in ALL {
            assert_eq!(isa.name().parse::<Isa>(), Ok(isa));
            assert_eq!(isa.to_string(), isa.name());
            assert_eq!(Isa::from_u8(isa as u8), Some(isa));
        }
        assert_eq!("AVX512".parse::<Isa>(), Ok(Isa::Avx512));
        assert!("sse9".parse::<Isa>().is_err());
    }

    #[test]
    fn the_best_is_available_and_listed_first() {
        let best = Isa::best();
        assert!(best.is_available());
        assert!(Isa::Baseline.is_available());
        assert_eq!(Isa::available().next(), Some(best));
        assert!(Isa::available().all(|isa| isa <= best || isa == Isa::Baseline));
    }

    #[test]
    fn the_cap_only_lowers_to_what_the_cpu_runs() {
        let best = Isa::best();
        assert_eq!(capped(best, None), best);
        assert_eq!(capped(best, Some("baseline")), Isa::Baseline);
        assert_eq!(capped(best, Some("no-such-isa")), best);
        for isa in ALL {
            let expected = if isa.is_available() { isa } else { best };
            assert_eq!(capped(best, Some(isa.name())), expected);
        }
        // Never above what the caller's best is.
        if Isa::Avx512.is_available() {
            assert_eq!(capped(Isa::Avx2, Some("avx512")), Isa::Avx2);
        }
    }
}
