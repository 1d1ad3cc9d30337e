//! The portable micro-kernel: plain safe Rust over fixed-size arrays of `LANES` values that LLVM
//! turns into vector FMAs for whatever the function it lands in is compiled for (one `[f32; 8]`
//! chunk per ymm register with AVX2, two xmm registers without), and the stores of its tiles.

use super::Out;

/// Values per vector chunk of a tile row: one 256-bit register of f32 (two SSE registers).
pub(super) const LANES: usize = 8;
/// Rows of a register tile. With AVX2 + FMA (16 ymm registers) a 6 x 16 tile keeps 12
/// accumulators, two chunks of B and one broadcast of A in registers: 12 independent FMAs per
/// depth step hide the FMA latency on two FMA pipes.
pub(super) const MR: usize = 6;

/// One register tile of `R` rows: `R x C` chunks of `LANES` accumulators.
type Tile<const R: usize, const C: usize> = [[[f32; LANES]; C]; R];

/// The code of one tile shape of the portable kernel, as compiled for an instruction set: the
/// first `R` rows and `C` chunks of the tile of micro-panels `a_panel` (`MR` rows) and
/// `b_panel` (`NR` columns), written to `out`.
pub(super) trait Rows<const NR: usize> {
    fn rows<const R: usize, const C: usize>(a_panel: &[f32], b_panel: &[f32], out: Out<'_>);
}

/// The portable kernel compiled for the build's target, nothing more: FMAs only when the
/// target has them.
pub(super) struct Baseline;

impl<const NR: usize> Rows<NR> for Baseline {
    #[inline(never)]
    fn rows<const R: usize, const C: usize>(a_panel: &[f32], b_panel: &[f32], out: Out<'_>) {
        tile_rows::<R, C, NR, { crate::isa::TARGET_HAS_FMA }>(a_panel, b_panel, out);
    }
}

/// One tile of `rows` (at most `MR`) rows and `out.cols` (at most `NR = C * LANES`) columns,
/// on the code `K` has for the row count and for whether one chunk of columns is enough, so
/// partial panels at the bottom and right edges do little work for their zero padding.
#[inline(always)]
pub(super) fn tile<K: Rows<NR>, const NR: usize, const C: usize>(
    rows: usize,
    a_panel: &[f32],
    b_panel: &[f32],
    out: Out<'_>,
) {
    const { assert!(NR == C * LANES) };
    if C > 1 && out.cols <= LANES {
        tile_chunks::<K, NR, 1>(rows, a_panel, b_panel, out);
    } else {
        tile_chunks::<K, NR, C>(rows, a_panel, b_panel, out);
    }
}

#[inline(always)]
fn tile_chunks<K: Rows<NR>, const NR: usize, const C: usize>(
    rows: usize,
    a_panel: &[f32],
    b_panel: &[f32],
    out: Out<'_>,
) {
    match rows {
        1 => K::rows::<1, C>(a_panel, b_panel, out),
        2 => K::rows::<2, C>(a_panel, b_panel, out),
        3 => K::rows::<3, C>(a_panel, b_panel, out),
        4 => K::rows::<4, C>(a_panel, b_panel, out),
        5 => K::rows::<5, C>(a_panel, b_panel, out),
        _ => K::rows::<MR, C>(a_panel, b_panel, out),
    }
}

/// The body of [`Rows::rows`], inlined into the function compiled for an instruction set;
/// `FMA`: whether to fuse the multiply-adds (without FMA hardware `mul_add` is a slow library
/// call, and Rust never contracts a plain `a * b + c` into an FMA).
#[inline(always)]
pub(super) fn tile_rows<const R: usize, const C: usize, const NR: usize, const FMA: bool>(
    a_panel: &[f32],
    b_panel: &[f32],
    out: Out<'_>,
) {
    let acc = micro_kernel::<R, C, NR, FMA>(a_panel, b_panel);
    store(&acc, out);
}

/// The first `R` rows and `C` chunks of columns of `A_panel * B_panel` (micro-panels of `MR`
/// rows and `NR` columns), as accumulators that stay in vector registers: per depth step, one
/// broadcast value of A times each `LANES`-chunk of B's step, added to the row's chunk.
#[inline(always)]
fn micro_kernel<const R: usize, const C: usize, const NR: usize, const FMA: bool>(
    a_panel: &[f32],
    b_panel: &[f32],
) -> Tile<R, C> {
    let mut acc: Tile<R, C> = [[[0.0; LANES]; C]; R];
    let (a_steps, _) = a_panel.as_chunks::<MR>();
    let (b_steps, _) = b_panel.as_chunks::<NR>();
    for (a, b) in a_steps.iter().zip(b_steps) {
        let (b, _) = b.as_chunks::<LANES>();
        for (acc_row, &a) in acc.iter_mut().zip(a) {
            for (acc_chunk, b_chunk) in acc_row.iter_mut().zip(b) {
                for (x, &b) in acc_chunk.iter_mut().zip(b_chunk) {
                    *x = if FMA { a.mul_add(b, *x) } else { a * b + *x };
                }
            }
        }
    }
    acc
}

/// Writes `tile` to `out`.
#[inline(always)]
fn store<const R: usize, const C: usize>(tile: &Tile<R, C>, out: Out<'_>) {
    let Out {
        c,
        ldc,
        cols,
        alpha,
        beta,
    } = out;
    for (r, tile_row) in tile.iter().enumerate() {
        let row = &mut c[r * ldc..r * ldc + cols];
        let tile_row = &tile_row.as_flattened()[..cols];
        if beta == 0.0 {
            for (c, &t) in row.iter_mut().zip(tile_row) {
                *c = alpha * t;
            }
        } else if beta == 1.0 {
            for (c, &t) in row.iter_mut().zip(tile_row) {
                *c += alpha * t;
            }
        } else {
            for (c, &t) in row.iter_mut().zip(tile_row) {
                *c = alpha * t + beta * *c;
            }
        }
    }
}
