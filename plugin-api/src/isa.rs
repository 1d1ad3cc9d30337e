//! The instruction sets kernels choose between at run time. The host picks one per process —
//! the best the CPU reports, or a lower one a deployment (`engine.isa`) or the environment
//! (`OPAL_ISA`) caps it to — and lends it to every kernel call
//! ([`KernelContext::isa`](crate::KernelContext::isa)); kernels never decide it from build
//! flags.

use std::{fmt, str::FromStr};

/// An instruction set a kernel may use. On x86-64 the paths are ordered
/// `Baseline < Avx2 < Avx512`; on aarch64 `Baseline < Neon`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Isa {
    /// What every CPU of the architecture has (SSE2 on x86-64): portable code only.
    Baseline,
    /// x86-64 with AVX2 and FMA (x86-64-v3 level: also F16C, BMI1/2, LZCNT, MOVBE).
    Avx2,
    /// x86-64 with AVX-512 F, BW, DQ and VL, besides all of `Avx2`.
    Avx512,
    /// aarch64 with Advanced SIMD (NEON).
    Neon,
}

/// Every instruction set, each architecture's best first.
pub const ALL_ISAS: [Isa; 4] = [Isa::Avx512, Isa::Avx2, Isa::Neon, Isa::Baseline];

impl Isa {
    /// The name used by `OPAL_ISA`, `engine.isa` and reports: `avx512`, `avx2`, `baseline`,
    /// `neon`.
    pub const fn name(self) -> &'static str {
        match self {
            Isa::Baseline => "baseline",
            Isa::Avx2 => "avx2",
            Isa::Avx512 => "avx512",
            Isa::Neon => "neon",
        }
    }

    /// The instruction set called `name` (see [`Isa::name`]), case-insensitively.
    pub fn from_name(name: &str) -> Option<Isa> {
        ALL_ISAS
            .into_iter()
            .find(|isa| isa.name().eq_ignore_ascii_case(name.trim()))
    }

    /// Whether this CPU can run kernels of this instruction set.
    pub fn is_available(self) -> bool {
        match self {
            Isa::Baseline => true,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => {
                std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
                    && std::arch::is_x86_feature_detected!("f16c")
                    && std::arch::is_x86_feature_detected!("bmi2")
            }
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => {
                Isa::Avx2.is_available()
                    && std::arch::is_x86_feature_detected!("avx512f")
                    && std::arch::is_x86_feature_detected!("avx512bw")
                    && std::arch::is_x86_feature_detected!("avx512dq")
                    && std::arch::is_x86_feature_detected!("avx512vl")
            }
            #[cfg(target_arch = "aarch64")]
            Isa::Neon => std::arch::is_aarch64_feature_detected!("neon"),
            #[allow(unreachable_patterns)]
            _ => false,
        }
    }

    /// The best instruction set this CPU offers. (The feature checks are cached by `std`.)
    pub fn best() -> Isa {
        ALL_ISAS
            .into_iter()
            .find(|isa| isa.is_available())
            .unwrap_or(Isa::Baseline)
    }

    /// The instruction sets this CPU can run, best first.
    pub fn available() -> impl Iterator<Item = Isa> {
        ALL_ISAS.into_iter().filter(|isa| isa.is_available())
    }

    /// The best instruction set, capped by the `OPAL_ISA` environment variable when it names
    /// one this CPU can run; what a host without a cap of its own, such as
    /// [`TestHost`](crate::testing::TestHost), uses.
    pub fn from_environment() -> Isa {
        std::env::var("OPAL_ISA")
            .ok()
            .and_then(|name| Isa::from_name(&name))
            .filter(|isa| isa.is_available())
            .unwrap_or_else(Isa::best)
    }

    /// The value that crosses the ABI.
    pub const fn to_abi(self) -> u32 {
        match self {
            Isa::Baseline => 0,
            Isa::Avx2 => 1,
            Isa::Avx512 => 2,
            Isa::Neon => 3,
        }
    }

    /// The instruction set of an ABI value; `None` for values of a newer ABI.
    pub const fn from_abi(value: u32) -> Option<Isa> {
        Some(match value {
            0 => Isa::Baseline,
            1 => Isa::Avx2,
            2 => Isa::Avx512,
            3 => Isa::Neon,
            _ => return None,
        })
    }
}

/// The names of `isas`, comma-separated, for messages.
pub fn names(isas: impl IntoIterator<Item = Isa>) -> String {
    let names: Vec<&str> = isas.into_iter().map(Isa::name).collect();
    names.join(", ")
}

/// A name that is none of [`Isa::name`]'s.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnknownIsa(pub String);

impl fmt::Display for UnknownIsa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown instruction set '{}': use one of {}",
            self.0,
            names(ALL_ISAS)
        )
    }
}

impl std::error::Error for UnknownIsa {}

impl FromStr for Isa {
    type Err = UnknownIsa;

    /// [`Isa::from_name`], with an error that names the choices.
    fn from_str(name: &str) -> Result<Isa, UnknownIsa> {
        Isa::from_name(name).ok_or_else(|| UnknownIsa(name.trim().to_owned()))
    }
}

impl fmt::Display for Isa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_abi_values_round_trip() {
        for isa in ALL_ISAS {
            assert_eq!(Isa::from_name(isa.name()), Some(isa));
            assert_eq!(Isa::from_abi(isa.to_abi()), Some(isa));
        }
        assert_eq!(Isa::from_name(" AVX2 "), Some(Isa::Avx2));
        assert_eq!(Isa::from_name("sse9"), None);
        assert_eq!(Isa::from_abi(99), None);
    }

    #[test]
    fn the_best_is_available_and_so_is_the_baseline() {
        assert!(Isa::best().is_available());
        assert!(Isa::Baseline.is_available());
        assert_eq!(Isa::available().next(), Some(Isa::best()));
        assert_eq!(
            "sse9".parse::<Isa>().unwrap_err().to_string(),
            "unknown instruction set 'sse9': use one of avx512, avx2, neon, baseline"
        );
        #[cfg(target_arch = "x86_64")]
        assert!(!Isa::Neon.is_available());
    }
}
