//! Running a kernel's loops compiled for the instruction set the call runs on: [`vectorized`]
//! enters a `#[target_feature]` function made for that set, into which LLVM inlines the
//! loops' closure, so the one build vectorises them with AVX-512, AVX2+FMA or the build's own
//! baseline as the host chose.
//!
//! The closure's own code is what gets the wider instructions: the functions it calls are
//! inlined with it when they are small or `#[inline]`, and keep the build's target when they
//! are not. A kernel calls [`vectorized`] once per piece of work (a chunk of its output or a
//! plane), not per element: the check behind it is a cached atomic load.

use crate::isa::Isa;

/// Runs `body`, compiled for `isa`'s instructions when the CPU has them (on a CPU without,
/// for the build's target: never an instruction the CPU lacks).
#[inline(always)]
pub fn vectorized<R>(isa: Isa, body: impl FnOnce() -> R) -> R {
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 if Isa::Avx512.is_available() => {
            // SAFETY: the CPU has every feature `x86::avx512` enables, checked just above
            // (`Isa::Avx512` stands for AVX-512 F/BW/DQ/VL with AVX2, FMA, F16C and BMI2).
            unsafe { x86::avx512(body) }
        }
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 | Isa::Avx512 if Isa::Avx2.is_available() => {
            // SAFETY: the CPU has every feature `x86::avx2` enables, checked just above.
            unsafe { x86::avx2(body) }
        }
        _ => body(),
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    /// `body` inlined into code compiled for AVX-512 (F, BW, DQ, VL) with AVX2, FMA, F16C and BMI2.
    #[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma,f16c,bmi2")]
    #[inline]
    pub(super) unsafe fn avx512<R>(body: impl FnOnce() -> R) -> R {
        body()
    }

    /// `body` inlined into code compiled for AVX2, FMA, F16C and BMI2.
    #[target_feature(enable = "avx2,fma,f16c,bmi2")]
    #[inline]
    pub(super) unsafe fn avx2<R>(body: impl FnOnce() -> R) -> R {
        body()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_instruction_set_gives_the_same_sums() {
        let values: Vec<f32> = (0..1000).map(|i| (i as f32).sin()).collect();
        let expected: Vec<f32> = values.iter().map(|v| v * 2.0 + 1.0).collect();
        for isa in opal_plugin_api::isa::ALL_ISAS {
            let got: Vec<f32> = vectorized(isa, || values.iter().map(|v| v * 2.0 + 1.0).collect());
            assert_eq!(got, expected, "{isa}");
        }
    }
}
