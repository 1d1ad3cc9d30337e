//! The x86-64 micro-kernels that need more of the CPU than the build targets, and the only
//! `unsafe` code of kernel-support: the portable kernel compiled for AVX2+FMA, and an AVX-512
//! kernel written with `std::arch` intrinsics. Their code is compiled with `#[target_feature]`;
//! each entry checks that the CPU has those features ([`Isa::is_available`], a cached atomic
//! load) before it calls in, so no safe caller can reach them on a CPU without.
//!
//! The AVX-512 kernel keeps an `AVX512_MR x AVX512_NR` tile of C in `AVX512_MR x VECTORS`
//! zmm accumulators (28 of the 32 registers), loads `VECTORS` vectors of B per depth step and
//! broadcasts each of A's `AVX512_MR` values against them: 28 independent FMAs per step keep
//! both 512-bit FMA pipes busy through their 4-cycle latency.

use super::{
    portable::{self, Rows},
    Out,
};
use crate::isa::Isa;
use std::arch::x86_64::{
    __m512, __mmask16, _mm512_add_ps, _mm512_fmadd_ps, _mm512_loadu_ps, _mm512_mask_storeu_ps,
    _mm512_maskz_loadu_ps, _mm512_mul_ps, _mm512_set1_ps, _mm512_setzero_ps,
};

/// f32 values per zmm register.
const ZMM: usize = 16;
/// Rows of the AVX-512 register tile.
pub(super) const AVX512_MR: usize = 14;
/// Vectors of the AVX-512 register tile's rows.
const VECTORS: usize = 2;
/// Columns of the AVX-512 register tile.
pub(super) const AVX512_NR: usize = VECTORS * ZMM;

/// The portable kernel compiled for AVX2+FMA, 16 columns wide.
pub(super) fn avx2_tile(rows: usize, a_panel: &[f32], b_panel: &[f32], out: Out<'_>) {
    portable::tile::<Avx2, 16, 2>(rows, a_panel, b_panel, out);
}

/// [`portable::Rows`] compiled for AVX2+FMA.
struct Avx2;

impl Rows<16> for Avx2 {
    #[inline(always)]
    fn rows<const R: usize, const C: usize>(a_panel: &[f32], b_panel: &[f32], out: Out<'_>) {
        assert!(Isa::Avx2.is_available(), "the CPU lacks AVX2 or FMA");
        // SAFETY: the CPU has AVX2 and FMA, checked just above.
        unsafe { avx2_rows::<R, C>(a_panel, b_panel, out) }
    }
}

#[target_feature(enable = "avx2,fma")]
#[inline(never)]
fn avx2_rows<const R: usize, const C: usize>(a_panel: &[f32], b_panel: &[f32], out: Out<'_>) {
    portable::tile_rows::<R, C, 16, true>(a_panel, b_panel, out);
}

/// One tile of the AVX-512 kernel: the first `rows` (at most [`AVX512_MR`]) rows and
/// `out.cols` (at most [`AVX512_NR`]) columns of the product of the micro-panels `a_panel`
/// (`AVX512_MR` values per depth step) and `b_panel` (`AVX512_NR` values per step).
pub(super) fn avx512_tile(rows: usize, a_panel: &[f32], b_panel: &[f32], out: Out<'_>) {
    assert!(Isa::Avx512.is_available(), "the CPU lacks AVX-512");
    // SAFETY: the CPU has AVX-512 F, AVX2 and FMA, checked just above.
    unsafe { avx512_dispatch(rows, a_panel, b_panel, out) }
}

/// The code specialised to the tile's rows and to the vectors its columns need, so partial
/// panels at the bottom and right edges do little work for their zero padding.
#[target_feature(enable = "avx512f,avx2,fma")]
fn avx512_dispatch(rows: usize, a_panel: &[f32], b_panel: &[f32], out: Out<'_>) {
    if out.cols <= ZMM {
        avx512_rows_of::<1>(rows, a_panel, b_panel, out);
    } else {
        avx512_rows_of::<VECTORS>(rows, a_panel, b_panel, out);
    }
}

#[target_feature(enable = "avx512f,avx2,fma")]
fn avx512_rows_of<const V: usize>(rows: usize, a_panel: &[f32], b_panel: &[f32], out: Out<'_>) {
    match rows {
        1 => avx512_rows::<1, V>(a_panel, b_panel, out),
        2 => avx512_rows::<2, V>(a_panel, b_panel, out),
        3 => avx512_rows::<3, V>(a_panel, b_panel, out),
        4 => avx512_rows::<4, V>(a_panel, b_panel, out),
        5 => avx512_rows::<5, V>(a_panel, b_panel, out),
        6 => avx512_rows::<6, V>(a_panel, b_panel, out),
        7 => avx512_rows::<7, V>(a_panel, b_panel, out),
        8 => avx512_rows::<8, V>(a_panel, b_panel, out),
        9 => avx512_rows::<9, V>(a_panel, b_panel, out),
        10 => avx512_rows::<10, V>(a_panel, b_panel, out),
        11 => avx512_rows::<11, V>(a_panel, b_panel, out),
        12 => avx512_rows::<12, V>(a_panel, b_panel, out),
        13 => avx512_rows::<13, V>(a_panel, b_panel, out),
        _ => avx512_rows::<AVX512_MR, V>(a_panel, b_panel, out),
    }
}

/// The first `R` rows and `V` vectors of columns of a tile, accumulated in zmm registers over
/// the panels' depth and written to `out`.
#[target_feature(enable = "avx512f,avx2,fma")]
#[inline(never)]
fn avx512_rows<const R: usize, const V: usize>(a_panel: &[f32], b_panel: &[f32], out: Out<'_>) {
    const { assert!(R <= AVX512_MR && V <= VECTORS) };
    let mut acc = [[_mm512_setzero_ps(); V]; R];
    let (a_steps, _) = a_panel.as_chunks::<AVX512_MR>();
    let (b_steps, _) = b_panel.as_chunks::<AVX512_NR>();
    for (a, b) in a_steps.iter().zip(b_steps) {
        let mut b_vectors = [_mm512_setzero_ps(); V];
        for (v, b_vector) in b_vectors.iter_mut().enumerate() {
            // SAFETY: `b` holds `AVX512_NR = VECTORS * ZMM` values and `v < V <= VECTORS`,
            // so the `ZMM` values from `v * ZMM` are in it (unaligned loads are allowed).
            *b_vector = unsafe { _mm512_loadu_ps(b.as_ptr().add(v * ZMM)) };
        }
        for (acc_row, &a) in acc.iter_mut().zip(a) {
            let a = _mm512_set1_ps(a);
            for (acc, &b) in acc_row.iter_mut().zip(&b_vectors) {
                *acc = _mm512_fmadd_ps(a, b, *acc);
            }
        }
    }
    store(&acc, out);
}

/// Writes the accumulators to `out`, `alpha * tile + beta * c`, reading C only when `beta` is
/// not 0; masked loads and stores keep to the tile's `out.cols` columns.
#[target_feature(enable = "avx512f,avx2,fma")]
#[inline]
fn store<const R: usize, const V: usize>(acc: &[[__m512; V]; R], out: Out<'_>) {
    let Out {
        c,
        ldc,
        cols,
        alpha,
        beta,
    } = out;
    let (alpha, beta_v) = (_mm512_set1_ps(alpha), _mm512_set1_ps(beta));
    for (r, acc_row) in acc.iter().enumerate() {
        let row = &mut c[r * ldc..r * ldc + cols];
        for (v, &x) in acc_row.iter().enumerate() {
            let start = v * ZMM;
            if start >= cols {
                break;
            }
            let lanes = (cols - start).min(ZMM);
            let mask: __mmask16 = if lanes == ZMM { !0 } else { (1 << lanes) - 1 };
            let ptr = row[start..].as_mut_ptr();
            let x = _mm512_mul_ps(alpha, x);
            let y = if beta == 0.0 {
                x
            } else {
                // SAFETY: `ptr` is `row[start]`, and the mask enables only the
                // `lanes <= row.len() - start` values from it; masked-off lanes are not read.
                let old = unsafe { _mm512_maskz_loadu_ps(mask, ptr) };
                if beta == 1.0 {
                    _mm512_add_ps(x, old)
                } else {
                    _mm512_fmadd_ps(beta_v, old, x)
                }
            };
            // SAFETY: as for the load: only the `lanes` values of `row` from `start` are
            // written.
            unsafe { _mm512_mask_storeu_ps(ptr, mask, y) };
        }
    }
}
