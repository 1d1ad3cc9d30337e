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
    __m512, __mmask16, _mm512_add_ps, _mm512_castpd_ps, _mm512_castps_pd, _mm512_fmadd_ps,
    _mm512_loadu_ps, _mm512_mask_storeu_ps, _mm512_maskz_loadu_ps, _mm512_mul_ps, _mm512_set1_ps,
    _mm512_setzero_ps, _mm512_shuffle_f32x4, _mm512_unpackhi_pd, _mm512_unpackhi_ps,
    _mm512_unpacklo_pd, _mm512_unpacklo_ps, _mm_prefetch, _MM_HINT_T0,
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
    match out.cols.div_ceil(ZMM) {
        1 => avx512_rows_of::<1>(rows, a_panel, b_panel, out),
        2 => avx512_rows_of::<{ min(2, VECTORS) }>(rows, a_panel, b_panel, out),
        _ => avx512_rows_of::<VECTORS>(rows, a_panel, b_panel, out),
    }
}

#[target_feature(enable = "avx512f,avx2,fma")]
fn avx512_rows_of<const V: usize>(rows: usize, a_panel: &[f32], b_panel: &[f32], out: Out<'_>) {
    match rows {
        1 => avx512_rows::<1, V>(a_panel, b_panel, out),
        2 => avx512_rows::<{ min(2, AVX512_MR) }, V>(a_panel, b_panel, out),
        3 => avx512_rows::<{ min(3, AVX512_MR) }, V>(a_panel, b_panel, out),
        4 => avx512_rows::<{ min(4, AVX512_MR) }, V>(a_panel, b_panel, out),
        5 => avx512_rows::<{ min(5, AVX512_MR) }, V>(a_panel, b_panel, out),
        6 => avx512_rows::<{ min(6, AVX512_MR) }, V>(a_panel, b_panel, out),
        7 => avx512_rows::<{ min(7, AVX512_MR) }, V>(a_panel, b_panel, out),
        8 => avx512_rows::<{ min(8, AVX512_MR) }, V>(a_panel, b_panel, out),
        9 => avx512_rows::<{ min(9, AVX512_MR) }, V>(a_panel, b_panel, out),
        10 => avx512_rows::<{ min(10, AVX512_MR) }, V>(a_panel, b_panel, out),
        11 => avx512_rows::<{ min(11, AVX512_MR) }, V>(a_panel, b_panel, out),
        12 => avx512_rows::<{ min(12, AVX512_MR) }, V>(a_panel, b_panel, out),
        13 => avx512_rows::<{ min(13, AVX512_MR) }, V>(a_panel, b_panel, out),
        _ => avx512_rows::<AVX512_MR, V>(a_panel, b_panel, out),
    }
}

/// The smaller of `a` and `b`, for the row counts above: an instance for more rows than the
/// tile has would not compile.
const fn min(a: usize, b: usize) -> usize {
    if a < b {
        a
    } else {
        b
    }
}

/// The first `R` rows and `V` vectors of columns of a tile, accumulated in zmm registers over
/// the panels' depth and written to `out`.
#[target_feature(enable = "avx512f,avx2,fma")]
#[inline(never)]
fn avx512_rows<const R: usize, const V: usize>(a_panel: &[f32], b_panel: &[f32], out: Out<'_>) {
    const { assert!(R <= AVX512_MR && V <= VECTORS) };
    // The tile of C (in L3 or beyond for a large C), needed at the end, on its way to L1
    // while the FMAs run. (A prefetch never faults, so the address needs no bounds.)
    for r in 0..R {
        for v in 0..V {
            _mm_prefetch::<_MM_HINT_T0>(out.c.as_ptr().wrapping_add(r * out.ldc + v * ZMM).cast());
        }
    }
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

/// Packs one micro-panel of a row-major A for the AVX-512 kernel: `rows` (at most
/// [`AVX512_MR`]) rows, `row_stride` apart in `a` from `a[0]`, each `out.len() / AVX512_MR`
/// values deep, into `out` as depth steps of `AVX512_MR` values (rows beyond `rows` zero).
/// Blocks of 16 steps of every row are transposed in zmm registers.
pub(super) fn avx512_pack_rows(a: &[f32], row_stride: usize, rows: usize, out: &mut [f32]) {
    assert!(Isa::Avx512.is_available(), "the CPU lacks AVX-512");
    // SAFETY: the CPU has AVX-512 F, AVX2 and FMA, checked just above.
    unsafe { avx512_pack_rows_featured(a, row_stride, rows, out) }
}

#[target_feature(enable = "avx512f,avx2,fma")]
fn avx512_pack_rows_featured(a: &[f32], row_stride: usize, rows: usize, out: &mut [f32]) {
    let kc = out.len() / AVX512_MR;
    assert!(rows <= AVX512_MR && out.len() == kc * AVX512_MR);
    assert!(rows == 0 || (rows - 1) * row_stride + kc <= a.len());
    let blocks = kc / ZMM;
    let step_mask: __mmask16 = (1 << AVX512_MR) - 1;
    for block in 0..blocks {
        let q0 = block * ZMM;
        let mut v = [_mm512_setzero_ps(); ZMM];
        for (r, v) in v.iter_mut().enumerate().take(rows) {
            // SAFETY: `r < rows` and `q0 + ZMM <= kc`, so the `ZMM` values from
            // `r * row_stride + q0` are in `a` (its length is checked above).
            *v = unsafe { _mm512_loadu_ps(a.as_ptr().add(r * row_stride + q0)) };
        }
        let steps = transpose(v);
        for (q, &step) in steps.iter().enumerate() {
            // SAFETY: `(q0 + q + 1) * AVX512_MR <= kc * AVX512_MR = out.len()`, and the mask
            // writes only the `AVX512_MR` values from `(q0 + q) * AVX512_MR`.
            unsafe {
                _mm512_mask_storeu_ps(out.as_mut_ptr().add((q0 + q) * AVX512_MR), step_mask, step)
            };
        }
    }
    let (steps, _) = out.as_chunks_mut::<AVX512_MR>();
    for (q, step) in steps.iter_mut().enumerate().skip(blocks * ZMM) {
        for (r, v) in step.iter_mut().enumerate() {
            *v = if r < rows { a[r * row_stride + q] } else { 0.0 };
        }
    }
}

/// The transpose of the 16 x 16 matrix whose rows are `rows`.
#[target_feature(enable = "avx512f,avx2,fma")]
#[inline]
fn transpose(rows: [__m512; ZMM]) -> [__m512; ZMM] {
    // Pairs of rows interleaved, then pairs of pairs: each 128-bit lane `j` of `quads[4 g + s]`
    // holds column `4 j + s` of rows `4 g..4 g + 4`.
    let mut pairs = [_mm512_setzero_ps(); ZMM];
    for i in 0..ZMM / 2 {
        pairs[2 * i] = _mm512_unpacklo_ps(rows[2 * i], rows[2 * i + 1]);
        pairs[2 * i + 1] = _mm512_unpackhi_ps(rows[2 * i], rows[2 * i + 1]);
    }
    let mut quads = [_mm512_setzero_ps(); ZMM];
    for g in 0..ZMM / 4 {
        let [t0, t1, t2, t3] = [0, 1, 2, 3].map(|i| _mm512_castps_pd(pairs[4 * g + i]));
        quads[4 * g] = _mm512_castpd_ps(_mm512_unpacklo_pd(t0, t2));
        quads[4 * g + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(t0, t2));
        quads[4 * g + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(t1, t3));
        quads[4 * g + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(t1, t3));
    }
    // Lane `j` of every group, side by side: column `4 j + s` of all 16 rows.
    let mut columns = [_mm512_setzero_ps(); ZMM];
    for s in 0..4 {
        let [g0, g1, g2, g3] = [0, 1, 2, 3].map(|g| quads[4 * g + s]);
        let low01 = _mm512_shuffle_f32x4::<0x44>(g0, g1);
        let high01 = _mm512_shuffle_f32x4::<0xEE>(g0, g1);
        let low23 = _mm512_shuffle_f32x4::<0x44>(g2, g3);
        let high23 = _mm512_shuffle_f32x4::<0xEE>(g2, g3);
        columns[s] = _mm512_shuffle_f32x4::<0x88>(low01, low23);
        columns[4 + s] = _mm512_shuffle_f32x4::<0xDD>(low01, low23);
        columns[8 + s] = _mm512_shuffle_f32x4::<0x88>(high01, high23);
        columns[12 + s] = _mm512_shuffle_f32x4::<0xDD>(high01, high23);
    }
    columns
}
