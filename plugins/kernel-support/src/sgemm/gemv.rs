//! Products whose A has a single row (a fully connected layer on one sample, a vector times a
//! matrix): each of B's values is used once, so the time is that of reading B, and B is
//! streamed in the layout it has instead of being packed first. A B stored as `n x k` (Gemm's
//! `transB`) gives one dot product per column; one stored as `k x n` gives a sum of its rows
//! scaled by A's values. A B packed ahead (a recurrent layer's weights, reused at every time
//! step) is read panel by panel, each panel's columns summing four depth steps at a time.

use super::{depth_step, packed_b_block, Kernel, PackedB, Product, PARALLEL_GRAIN};
use crate::{isa::Isa, parallel::for_each_chunk, simd::vectorized};
use opal_plugin_api::{KernelContext, KernelResult};

/// Columns of C computed together by the row-sum form: their sums stay in L1 while B's rows
/// stream past.
const COLUMN_BLOCK: usize = 1024;
/// Lanes of the dot products' accumulators: four 16-lane vectors, so independent additions
/// hide their latency.
const DOT_LANES: usize = 64;

/// Whether [`gemv`] computes `p` into `c`: one row of A, neither operand packed ahead, a B
/// whose columns or rows are contiguous, and something to compute.
pub(super) fn applies(p: &Product<'_>, c: &[f32]) -> bool {
    single_row(p, c) && p.packed_b.is_none() && (p.b.row_stride == 1 || p.b.col_stride == 1)
}

/// Whether [`gemv_packed`] computes `p` into `c`: one row of A, not packed ahead, against a B
/// packed ahead.
pub(super) fn applies_packed(p: &Product<'_>, c: &[f32]) -> bool {
    single_row(p, c) && p.packed_b.is_some()
}

/// One row of A, not packed ahead, a depth and a C that are not empty.
fn single_row(p: &Product<'_>, c: &[f32]) -> bool {
    p.m == 1 && p.packed_a.is_none() && p.k > 0 && !c.is_empty()
}

/// Runs `columns(a_row, batch, j0, out)` over each batch's row of C in pieces of whole
/// `granule`s of columns (`out` from column `j0`), on the host's threads when there is enough
/// work, compiled for `isa`; `a_row` is the batch's row of A times alpha.
fn for_each_row(
    cx: &KernelContext<'_>,
    isa: Isa,
    p: &Product<'_>,
    c: &mut [f32],
    granule: usize,
    columns: impl Fn(&[f32], usize, usize, &mut [f32]) + Sync,
) -> KernelResult<()> {
    let a_row = cx.scratch_unzeroed::<f32>(p.k)?;
    let grain = (PARALLEL_GRAIN / p.k).max(granule);
    for (batch, c_row) in c.chunks_exact_mut(p.n).enumerate() {
        let (a_offset, _) = (p.batch_offsets)(batch);
        for (i, value) in a_row.iter_mut().enumerate() {
            *value = p.alpha * p.a.at(a_offset, 0, i);
        }
        let a_row = &*a_row;
        for_each_chunk(
            cx,
            c_row,
            granule,
            grain,
            #[inline(always)]
            |j0, out| {
                vectorized(
                    isa,
                    #[inline(always)]
                    || columns(a_row, batch, j0, out),
                )
            },
        );
    }
    Ok(())
}

/// `y = sum + beta * y`, reading `y` only when `beta` is not 0.
#[inline(always)]
fn finish(y: &mut f32, sum: f32, beta: f32) {
    *y = if beta == 0.0 { sum } else { sum + beta * *y };
}

/// Computes `p` (which [`applies`]) into `c`.
pub(super) fn gemv(
    cx: &KernelContext<'_>,
    isa: Isa,
    p: &Product<'_>,
    c: &mut [f32],
) -> KernelResult<()> {
    for_each_row(
        cx,
        isa,
        p,
        c,
        DOT_LANES,
        #[inline(always)]
        |a_row, batch, j0, out| {
            let (_, b_offset) = (p.batch_offsets)(batch);
            let b = &p.b.data[b_offset.min(p.b.data.len())..];
            if p.b.row_stride == 1 {
                dot_columns(a_row, b, p.b.col_stride, j0, p.beta, out)
            } else {
                sum_rows(a_row, b, p.b.row_stride, j0, p.beta, out)
            }
        },
    )
}

/// `out[j] = a · B[.., j0 + j] + beta * out[j]` for columns stored contiguously,
/// `col_stride` apart.
#[inline(always)]
fn dot_columns(a: &[f32], b: &[f32], col_stride: usize, j0: usize, beta: f32, out: &mut [f32]) {
    let k = a.len();
    for (j, y) in out.iter_mut().enumerate() {
        let column = &b[(j0 + j) * col_stride..][..k];
        finish(y, dot(a, column), beta);
    }
}

/// The dot product of two slices of one length, accumulated in [`DOT_LANES`] lanes.
#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let (a_chunks, a_tail) = a.as_chunks::<DOT_LANES>();
    let (b_chunks, b_tail) = b.as_chunks::<DOT_LANES>();
    let mut lanes = [0.0f32; DOT_LANES];
    for (x, y) in a_chunks.iter().zip(b_chunks) {
        for l in 0..DOT_LANES {
            lanes[l] += x[l] * y[l];
        }
    }
    let mut width = DOT_LANES;
    while width > 1 {
        width /= 2;
        for l in 0..width {
            lanes[l] += lanes[l + width];
        }
    }
    let tail: f32 = a_tail.iter().zip(b_tail).map(|(x, y)| x * y).sum();
    lanes[0] + tail
}

/// `out[j] = sum_i a[i] * B[i, j0 + j] + beta * out[j]` for rows stored contiguously,
/// `row_stride` apart: blocks of [`COLUMN_BLOCK`] columns, four rows at a time.
#[inline(always)]
fn sum_rows(a: &[f32], b: &[f32], row_stride: usize, j0: usize, beta: f32, out: &mut [f32]) {
    let k = a.len();
    for (block_index, block) in out.chunks_mut(COLUMN_BLOCK).enumerate() {
        let first = j0 + block_index * COLUMN_BLOCK;
        let width = block.len();
        if beta == 0.0 {
            block.fill(0.0);
        } else if beta != 1.0 {
            block.iter_mut().for_each(|y| *y *= beta);
        }
        let row = |i: usize| &b[i * row_stride + first..][..width];
        let mut i = 0;
        while i + 4 <= k {
            let (b0, b1, b2, b3) = (row(i), row(i + 1), row(i + 2), row(i + 3));
            let (a0, a1, a2, a3) = (a[i], a[i + 1], a[i + 2], a[i + 3]);
            for j in 0..width {
                block[j] += a0 * b0[j] + a1 * b1[j] + a2 * b2[j] + a3 * b3[j];
            }
            i += 4;
        }
        for (i, &a_i) in a.iter().enumerate().skip(i) {
            for (y, &b_ij) in block.iter_mut().zip(row(i)) {
                *y += a_i * b_ij;
            }
        }
    }
}

/// Computes `p` (which [`applies_packed`]) into `c`, its B packed by
/// [`super::pack_b_whole`] for `kernel`'s blocking and `NR`-column panels: each panel of
/// columns summed over its depth blocks.
pub(super) fn gemv_packed<const MR: usize, const NR: usize>(
    cx: &KernelContext<'_>,
    isa: Isa,
    kernel: &Kernel,
    p: &Product<'_>,
    packed: PackedB<'_>,
    c: &mut [f32],
) -> KernelResult<()> {
    let (n, k, nc) = (p.n, p.k, kernel.nc);
    let kc_step = depth_step(k, kernel.kc);
    for_each_row(
        cx,
        isa,
        p,
        c,
        NR,
        #[inline(always)]
        |a_row, batch, j0, out| {
            let packed = &packed.data[batch * packed.batch_stride..];
            for (q, out) in out.chunks_mut(NR).enumerate() {
                let j = j0 + q * NR;
                let jc = j / nc * nc;
                let panel = (j - jc) / NR;
                let mut sums = [0.0f32; NR];
                for pc in (0..k).step_by(kc_step) {
                    let depth = kc_step.min(k - pc);
                    let block = packed_b_block::<NR>(k, jc, nc.min(n - jc), pc);
                    let panel = &packed[block + panel * NR * depth..][..NR * depth];
                    sum_panel::<NR>(&a_row[pc..pc + depth], panel, &mut sums);
                }
                for (y, sum) in out.iter_mut().zip(sums) {
                    finish(y, sum, p.beta);
                }
            }
        },
    )
}

/// `sums[l] += sum_q a[q] * panel[q][l]` over a packed micro-panel (`a.len()` steps of `NR`
/// values), four steps at a time, so that each lane's sum waits on one addition per four
/// steps.
#[inline(always)]
fn sum_panel<const NR: usize>(a: &[f32], panel: &[f32], sums: &mut [f32; NR]) {
    let (steps, _) = panel.as_chunks::<NR>();
    let mut quads = steps.chunks_exact(4);
    let mut a_quads = a.chunks_exact(4);
    for (s, a) in (&mut quads).zip(&mut a_quads) {
        for l in 0..NR {
            sums[l] += (a[0] * s[0][l] + a[1] * s[1][l]) + (a[2] * s[2][l] + a[3] * s[3][l]);
        }
    }
    for (s, &a) in quads.remainder().iter().zip(a_quads.remainder()) {
        for l in 0..NR {
            sums[l] += a * s[l];
        }
    }
}
