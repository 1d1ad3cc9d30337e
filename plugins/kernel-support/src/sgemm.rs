//! A portable, cache-blocked single-precision matrix product (`C = alpha * op(A) * op(B) +
//! beta * C`, batched) for MatMul and Gemm, in the manner of BLIS/GotoBLAS: for each `KC x NC`
//! block of B (packed into host scratch as `NR`-column micro-panels) and each `MC x KC` block
//! of A (packed as `MR`-row micro-panels), a register-tiled micro-kernel accumulates each
//! `MR x NR` tile of C over the block's depth. The micro-kernel is plain safe Rust over
//! fixed-size arrays of `LANES` values that LLVM turns into vector FMAs (one `[f32; 8]` chunk
//! per 256-bit register with AVX2). Rows (across batches) are split over the host's threads.

use crate::parallel::{for_each_chunk, task_count, Tasks};
use opal_plugin_api::{KernelContext, KernelResult};

/// Values per vector chunk of a tile row: one 256-bit register of f32 (two SSE registers).
const LANES: usize = 8;
/// Rows of a register tile. With AVX2 + FMA (16 ymm registers) a 6 x 16 tile keeps 12
/// accumulators, two chunks of B and one broadcast of A in registers: 12 independent FMAs per
/// depth step hide the FMA latency on two FMA pipes.
const MR: usize = 6;
/// Columns of a register tile: two 8-lane chunks with AVX (6 x 2 ymm accumulators), one
/// without (6 x 2 xmm accumulators on baseline SSE2's 16 registers).
#[cfg(target_feature = "avx")]
const NR: usize = 16;
#[cfg(not(target_feature = "avx"))]
const NR: usize = 8;
/// Chunks of `LANES` per tile row.
const CHUNKS: usize = NR / LANES;
/// The most depth of a packed block: a `KC x NR` micro-panel of B (16 KiB) stays in a 32-48 KiB
/// L1 while the `MR`-row micro-panels of A stream past it from L2. The depth is split into
/// equal blocks of at most `KC`, so no block is much shallower than the others.
const KC: usize = 256;
/// The most rows of a packed block of A: `MC x KC` (144 KiB) stays in L2, each `MR x KC`
/// micro-panel reused across the block's `NC / NR` micro-panels of B. A multiple of `MR`.
const MC: usize = 24 * MR;
/// The most columns of a packed block of B: `KC x NC` (1 MiB) about fills a 1-2 MiB L2, each
/// micro-panel reused across the block of A. (4096, with the block in L3 as BLIS does, measured
/// no faster, and the host zeroes scratch on every call.) A multiple of `NR`.
const NC: usize = 1024;
/// Rows of B copied together when packing row-major B.
const PACK_ROWS: usize = 8;
/// Multiply-adds below which a product runs on one thread.
const PARALLEL_GRAIN: usize = 1 << 18;
/// Elements of the result below which [`columns_split`] copies its blocks into place on one
/// thread.
const COPY_GRAIN: usize = 1 << 15;

/// One register tile of `R` rows: `R x C` chunks of `LANES` accumulators.
type Tile<const R: usize, const C: usize> = [[[f32; LANES]; C]; R];

/// A strided matrix operand: element `(i, j)` is `data[offset + i * row_stride + j * col_stride]`,
/// where `offset` is the batch's.
#[derive(Clone, Copy, Debug)]
pub struct Operand<'a> {
    pub data: &'a [f32],
    pub row_stride: usize,
    pub col_stride: usize,
}

impl Operand<'_> {
    fn at(&self, offset: usize, i: usize, j: usize) -> f32 {
        self.data[offset + i * self.row_stride + j * self.col_stride]
    }
}

/// A batch of products `C[b] = alpha * A[b] * B[b] + beta * C[b]`, `A[b]` of `m x k` and `B[b]`
/// of `k x n`; `C` is `batches` row-major `m x n` matrices back to back.
pub struct Product<'a> {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub alpha: f32,
    /// When 0, C is only written, never read.
    pub beta: f32,
    pub a: Operand<'a>,
    pub b: Operand<'a>,
    pub batches: usize,
    /// The offsets of batch `b`'s A and B in their data.
    pub batch_offsets: &'a (dyn Fn(usize) -> (usize, usize) + Sync),
    /// A already packed by [`pack_a_whole`] (as a kernel keeps constant weights in its
    /// prepared data), read instead of `a`, which is then never read.
    pub packed_a: Option<PackedA<'a>>,
}

/// The A of each batch packed by [`pack_a_whole`].
#[derive(Clone, Copy, Debug)]
pub struct PackedA<'a> {
    pub data: &'a [f32],
    /// Values from one batch's packed A to the next's; 0 when every batch shares one.
    pub batch_stride: usize,
}

/// The offsets of a single product: zero.
pub fn single_batch(_: usize) -> (usize, usize) {
    (0, 0)
}

/// Computes `product` into `c` (`batches * m * n` elements), with packing buffers from the
/// host's scratch, on the host's threads when the work is large.
pub fn sgemm(cx: &KernelContext<'_>, p: &Product<'_>, c: &mut [f32]) -> KernelResult<()> {
    let rows = p.batches * p.m;
    debug_assert_eq!(c.len(), rows * p.n);
    if c.is_empty() {
        return Ok(());
    }
    if p.k == 0 {
        scale(c, p.beta);
        return Ok(());
    }
    let work = rows.saturating_mul(p.n).saturating_mul(p.k);
    let threads = task_count(cx, work, PARALLEL_GRAIN);
    let panels = p.m.div_ceil(MR);
    // Too few row panels to share evenly (a convolution with few output channels): split the
    // columns instead.
    if threads > 1 && p.batches == 1 && panels < 4 * threads && p.n >= 4 * NR * threads {
        return columns_split(cx, p, c, threads);
    }
    let tasks = threads.min(p.batches * panels);
    // Packing buffers, sized to the problem when it is smaller than a block (none for A
    // packed ahead).
    let kc = depth_step(p.k);
    let a_len = a_pack_len(p, rows.div_ceil(tasks), kc);
    let b_len = round_up(p.n.min(NC), NR) * kc;
    if tasks <= 1 {
        let a_pack = cx.scratch_unzeroed::<f32>(a_len)?;
        let b_pack = cx.scratch_unzeroed::<f32>(b_len)?;
        rows_range(p, 0, c, a_pack, b_pack);
        return Ok(());
    }
    let mut pieces = Tasks::new();
    let mut rest = c;
    let mut start = 0;
    // Pieces start on a micro-panel of their batch, where A packed ahead starts its panels.
    let units = p.batches * panels;
    let first_row = |unit: usize| (unit / panels) * p.m + (unit % panels * MR).min(p.m);
    for t in 0..tasks {
        let end = first_row((t + 1) * units / tasks);
        let (chunk, tail) = rest.split_at_mut((end - start) * p.n);
        pieces.push((
            start,
            chunk,
            cx.scratch_unzeroed::<f32>(a_len)?,
            cx.scratch_unzeroed::<f32>(b_len)?,
        ));
        rest = tail;
        start = end;
    }
    pieces.run(cx, |(first_row, c, a_pack, b_pack)| {
        rows_range(p, first_row, c, a_pack, b_pack)
    });
    Ok(())
}

/// The length of an `m x k` A packed by [`pack_a_whole`].
pub fn packed_a_len(m: usize, k: usize) -> usize {
    round_up(m, MR) * k
}

/// Packs all of the `m x k` A (at offset 0 of `a`) into `out` ([`packed_a_len`] values) as
/// [`sgemm`] packs its blocks: the depth blocks one after the other, each holding every row
/// as `MR`-row micro-panels.
pub fn pack_a_whole(a: &Operand<'_>, m: usize, k: usize, out: &mut [f32]) {
    if k == 0 {
        return;
    }
    let kc_step = depth_step(k);
    for pc in (0..k).step_by(kc_step) {
        let kc = kc_step.min(k - pc);
        let start = round_up(m, MR) * pc;
        pack_a(
            a,
            0,
            0,
            m,
            pc,
            kc,
            &mut out[start..start + round_up(m, MR) * kc],
        );
    }
}

/// [`sgemm`] of a single batch in `tasks` pieces of whole micro-panels of columns, each
/// computed into its own block of scratch and copied into place afterwards.
fn columns_split(
    cx: &KernelContext<'_>,
    p: &Product<'_>,
    c: &mut [f32],
    tasks: usize,
) -> KernelResult<()> {
    let (m, n) = (p.m, p.n);
    let kc = depth_step(p.k);
    let (a_offset, b_offset) = (p.batch_offsets)(0);
    let units = n.div_ceil(NR);
    let columns = |t: usize| (t * units / tasks * NR).min(n);
    let blocks = cx.scratch_unzeroed::<f32>(m * n)?;
    let mut pieces = Tasks::new();
    let mut rest = &mut blocks[..];
    for t in 0..tasks {
        let (j0, j1) = (columns(t), columns(t + 1));
        let (block, tail) = rest.split_at_mut(m * (j1 - j0));
        rest = tail;
        if p.beta != 0.0 {
            for (row, c_row) in block.chunks_exact_mut(j1 - j0).zip(c.chunks_exact(n)) {
                row.copy_from_slice(&c_row[j0..j1]);
            }
        }
        let a_pack = cx.scratch_unzeroed::<f32>(a_pack_len(p, m, kc))?;
        let b_pack = cx.scratch_unzeroed::<f32>(round_up((j1 - j0).min(NC), NR) * kc)?;
        pieces.push((j0, block, a_pack, b_pack));
    }
    pieces.run(cx, |(j0, block, a_pack, b_pack)| {
        let piece = Product {
            n: block.len() / m,
            a: Operand {
                data: &p.a.data[a_offset.min(p.a.data.len())..],
                ..p.a
            },
            b: Operand {
                data: &p.b.data[b_offset + j0 * p.b.col_stride..],
                ..p.b
            },
            batches: 1,
            batch_offsets: &single_batch,
            ..*p
        };
        rows_range(&piece, 0, block, a_pack, b_pack);
    });
    // Each task's block holds its columns of every row, the blocks one after the other.
    let blocks = &*blocks;
    for_each_chunk(cx, c, n, COPY_GRAIN, |start, rows| {
        let first_row = start / n;
        for (r, c_row) in rows.chunks_exact_mut(n).enumerate() {
            let row = first_row + r;
            for t in 0..tasks {
                let (j0, j1) = (columns(t), columns(t + 1));
                let block = &blocks[m * j0..m * j1];
                c_row[j0..j1].copy_from_slice(&block[row * (j1 - j0)..(row + 1) * (j1 - j0)]);
            }
        }
    });
    Ok(())
}

/// The length of a buffer for packing blocks of up to `rows` rows of A, `kc` deep: none when
/// A is packed ahead.
fn a_pack_len(p: &Product<'_>, rows: usize, kc: usize) -> usize {
    if p.packed_a.is_some() {
        0
    } else {
        round_up(rows.min(MC), MR) * kc
    }
}

fn round_up(x: usize, multiple: usize) -> usize {
    x.div_ceil(multiple) * multiple
}

/// The depth of the packed blocks for a depth of `k`: `k` split into equal blocks of at most
/// `KC`.
fn depth_step(k: usize) -> usize {
    k.div_ceil(k.div_ceil(KC).max(1))
}

/// The rows of the packed blocks of A for `rows` rows: split into equal blocks of at most `MC`,
/// rounded up to whole micro-panels.
fn row_step(rows: usize) -> usize {
    round_up(rows.div_ceil(rows.div_ceil(MC).max(1)), MR)
}

fn scale(c: &mut [f32], beta: f32) {
    if beta == 0.0 {
        c.fill(0.0);
    } else {
        c.iter_mut().for_each(|v| *v *= beta);
    }
}

/// Computes the rows `first_row..` (counted across batches) that `c` holds.
fn rows_range(
    p: &Product<'_>,
    first_row: usize,
    c: &mut [f32],
    a_pack: &mut [f32],
    b_pack: &mut [f32],
) {
    let mut row = first_row;
    let mut rest = c;
    while !rest.is_empty() {
        let (batch, i0) = (row / p.m, row % p.m);
        let i1 = p.m.min(i0 + rest.len() / p.n);
        let (chunk, tail) = rest.split_at_mut((i1 - i0) * p.n);
        block(p, batch, i0, i1, chunk, a_pack, b_pack);
        row += i1 - i0;
        rest = tail;
    }
}

/// Rows `i0..i1` of one batch's product, into `c` (those rows, `n` wide).
#[allow(clippy::too_many_arguments)]
fn block(
    p: &Product<'_>,
    batch: usize,
    i0: usize,
    i1: usize,
    c: &mut [f32],
    a_pack: &mut [f32],
    b_pack: &mut [f32],
) {
    let (a_offset, b_offset) = (p.batch_offsets)(batch);
    let n = p.n;
    let kc_step = depth_step(p.k);
    let mc_step = row_step(i1 - i0);
    for jc in (0..n).step_by(NC) {
        let nc = NC.min(n - jc);
        for pc in (0..p.k).step_by(kc_step) {
            let kc = kc_step.min(p.k - pc);
            let b_pack = &mut b_pack[..round_up(nc, NR) * kc];
            pack_b(&p.b, b_offset, pc, kc, jc, nc, b_pack);
            let beta = if pc == 0 { p.beta } else { 1.0 };
            for ic in (i0..i1).step_by(mc_step) {
                let mc = mc_step.min(i1 - ic);
                let panels_len = round_up(mc, MR) * kc;
                let a_pack: &[f32] = match p.packed_a {
                    Some(packed) => {
                        // `sgemm` starts every piece of rows on a micro-panel of its batch,
                        // where A packed ahead has one.
                        debug_assert!(i0.is_multiple_of(MR));
                        let start = batch * packed.batch_stride + round_up(p.m, MR) * pc + ic * kc;
                        &packed.data[start..start + panels_len]
                    }
                    _ => {
                        let a_pack = &mut a_pack[..panels_len];
                        pack_a(&p.a, a_offset, ic, mc, pc, kc, a_pack);
                        a_pack
                    }
                };
                for (jr, b_panel) in b_pack.chunks_exact(NR * kc).enumerate() {
                    let j = jc + jr * NR;
                    for (ir, a_panel) in a_pack.chunks_exact(MR * kc).enumerate() {
                        let i = ic - i0 + ir * MR;
                        let out = Out {
                            c: &mut c[i * n + j..],
                            ldc: n,
                            cols: NR.min(n - j),
                            alpha: p.alpha,
                            beta,
                        };
                        tile(MR.min(i1 - i0 - i), a_panel, b_panel, out);
                    }
                }
            }
        }
    }
}

/// Packs rows `i..i + mc`, columns `p..p + kc` of A as `MR`-row micro-panels, each `kc` steps of
/// `MR` consecutive values (one per row); rows beyond `mc` are zero. `out` holds whole panels.
fn pack_a(
    a: &Operand<'_>,
    offset: usize,
    i: usize,
    mc: usize,
    p: usize,
    kc: usize,
    out: &mut [f32],
) {
    for (panel, out) in out.chunks_exact_mut(MR * kc).enumerate() {
        let r0 = i + panel * MR;
        let rows = MR.min(i + mc - r0);
        let (steps, _) = out.as_chunks_mut::<MR>();
        if a.col_stride == 1 {
            // Rows of A are contiguous: read each along the depth.
            for r in 0..MR {
                if r < rows {
                    let start = offset + (r0 + r) * a.row_stride + p;
                    for (step, &v) in steps.iter_mut().zip(&a.data[start..start + kc]) {
                        step[r] = v;
                    }
                } else {
                    steps.iter_mut().for_each(|step| step[r] = 0.0);
                }
            }
        } else if a.row_stride == 1 {
            // Columns of A are contiguous: each step is a piece of one.
            for (q, step) in steps.iter_mut().enumerate() {
                let start = offset + (p + q) * a.col_stride + r0;
                step[..rows].copy_from_slice(&a.data[start..start + rows]);
                step[rows..].fill(0.0);
            }
        } else {
            for (q, step) in steps.iter_mut().enumerate() {
                for (r, v) in step.iter_mut().enumerate() {
                    *v = if r < rows {
                        a.at(offset, r0 + r, p + q)
                    } else {
                        0.0
                    };
                }
            }
        }
    }
}

/// Packs rows `p..p + kc`, columns `j..j + nc` of B as `NR`-column micro-panels, each `kc` steps
/// of `NR` consecutive values (one per column); columns beyond `nc` are zero. `out` holds whole
/// panels.
fn pack_b(
    b: &Operand<'_>,
    offset: usize,
    p: usize,
    kc: usize,
    j: usize,
    nc: usize,
    out: &mut [f32],
) {
    if b.col_stride == 1 {
        // Rows of B are contiguous: copy a few rows at a time across all panels, so the reads
        // are a few sequential streams rather than one jump between rows per 16 values.
        let full = nc / NR;
        for q0 in (0..kc).step_by(PACK_ROWS) {
            let rows = PACK_ROWS.min(kc - q0);
            for (panel, out) in out.chunks_exact_mut(NR * kc).enumerate() {
                let c0 = j + panel * NR;
                let (steps, _) = out[q0 * NR..(q0 + rows) * NR].as_chunks_mut::<NR>();
                for (q, step) in steps.iter_mut().enumerate() {
                    let start = offset + (p + q0 + q) * b.row_stride + c0;
                    if panel < full {
                        step.copy_from_slice(&b.data[start..start + NR]);
                    } else {
                        let cols = j + nc - c0;
                        step[..cols].copy_from_slice(&b.data[start..start + cols]);
                        step[cols..].fill(0.0);
                    }
                }
            }
        }
        return;
    }
    for (panel, out) in out.chunks_exact_mut(NR * kc).enumerate() {
        let c0 = j + panel * NR;
        let cols = NR.min(j + nc - c0);
        let (steps, _) = out.as_chunks_mut::<NR>();
        if b.row_stride == 1 {
            // Columns of B are contiguous: read each along the depth.
            for x in 0..NR {
                if x < cols {
                    let start = offset + p + (c0 + x) * b.col_stride;
                    for (step, &v) in steps.iter_mut().zip(&b.data[start..start + kc]) {
                        step[x] = v;
                    }
                } else {
                    steps.iter_mut().for_each(|step| step[x] = 0.0);
                }
            }
        } else {
            for (q, step) in steps.iter_mut().enumerate() {
                for (x, v) in step.iter_mut().enumerate() {
                    *v = if x < cols {
                        b.at(offset, p + q, c0 + x)
                    } else {
                        0.0
                    };
                }
            }
        }
    }
}

/// Where a tile goes: the top-left `rows x cols` of it into `c` (row stride `ldc`), as
/// `alpha * tile + beta * c`, reading `c` only when `beta` is not 0.
struct Out<'c> {
    c: &'c mut [f32],
    ldc: usize,
    cols: usize,
    alpha: f32,
    beta: f32,
}

/// One tile of `rows` (at most `MR`) rows and `out.cols` (at most `NR`) columns, on a
/// micro-kernel specialised to the row count and to whether one chunk of columns is enough, so
/// partial panels at the bottom and right edges do little work for their zero padding.
fn tile(rows: usize, a_panel: &[f32], b_panel: &[f32], out: Out<'_>) {
    if CHUNKS > 1 && out.cols <= LANES {
        tile_chunks::<1>(rows, a_panel, b_panel, out);
    } else {
        tile_chunks::<CHUNKS>(rows, a_panel, b_panel, out);
    }
}

#[inline(always)]
fn tile_chunks<const C: usize>(rows: usize, a_panel: &[f32], b_panel: &[f32], out: Out<'_>) {
    match rows {
        1 => tile_rows::<1, C>(a_panel, b_panel, out),
        2 => tile_rows::<2, C>(a_panel, b_panel, out),
        3 => tile_rows::<3, C>(a_panel, b_panel, out),
        4 => tile_rows::<4, C>(a_panel, b_panel, out),
        5 => tile_rows::<5, C>(a_panel, b_panel, out),
        _ => tile_rows::<MR, C>(a_panel, b_panel, out),
    }
}

#[inline(never)]
fn tile_rows<const R: usize, const C: usize>(a_panel: &[f32], b_panel: &[f32], out: Out<'_>) {
    let acc = micro_kernel::<R, C>(a_panel, b_panel);
    store(&acc, out);
}

/// The first `R` rows and `C` chunks of columns of `A_panel * B_panel` (micro-panels of `MR`
/// rows and `NR` columns), as accumulators that stay in vector registers: per depth step, one
/// broadcast value of A times each `LANES`-chunk of B's step, added to the row's chunk.
#[inline(always)]
fn micro_kernel<const R: usize, const C: usize>(a_panel: &[f32], b_panel: &[f32]) -> Tile<R, C> {
    let mut acc: Tile<R, C> = [[[0.0; LANES]; C]; R];
    let (a_steps, _) = a_panel.as_chunks::<MR>();
    let (b_steps, _) = b_panel.as_chunks::<NR>();
    for (a, b) in a_steps.iter().zip(b_steps) {
        let (b, _) = b.as_chunks::<LANES>();
        for (acc_row, &a) in acc.iter_mut().zip(a) {
            for (acc_chunk, b_chunk) in acc_row.iter_mut().zip(b) {
                for (x, &b) in acc_chunk.iter_mut().zip(b_chunk) {
                    *x = multiply_add(a, b, *x);
                }
            }
        }
    }
    acc
}

/// `a * b + c`, fused when the target has FMA. (Rust never contracts a plain `a * b + c`
/// into an FMA, and without FMA hardware `mul_add` is a slow library call.)
#[inline(always)]
fn multiply_add(a: f32, b: f32, c: f32) -> f32 {
    #[cfg(target_feature = "fma")]
    {
        a.mul_add(b, c)
    }
    #[cfg(not(target_feature = "fma"))]
    {
        a * b + c
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{reference, values};
    use opal_plugin_api::{
        testing::{assert_close, OwnedTensor, TestHost},
        Operator,
    };

    /// Runs one product through `sgemm` inside a kernel call. Inputs: A, B, C (all flat), and
    /// a 1-D tensor `[m, n, k, trans_a, trans_b]` as f32; attributes alpha, beta and `packed`
    /// (1: A is packed ahead with `pack_a_whole`).
    struct Raw;

    impl Operator for Raw {
        const OP_TYPE: &'static str = "RawSgemm";

        fn infer(
            cx: &opal_plugin_api::InferContext<'_>,
        ) -> KernelResult<Vec<opal_plugin_api::OutputType>> {
            let c = cx.input(2)?;
            Ok(vec![opal_plugin_api::OutputType::new(
                c.dtype,
                c.shape.to_vec(),
            )])
        }

        fn compute(cx: &mut KernelContext<'_>) -> KernelResult<()> {
            let a = cx.input(0)?.f32()?;
            let b = cx.input(1)?.f32()?;
            let c0 = cx.input(2)?.f32()?;
            let dims = cx.input(3)?.f32()?;
            let [m, n, k, ta, tb] = [0, 1, 2, 3, 4].map(|i| dims[i] as usize);
            let alpha = cx.attributes().float("alpha", 1.0)?;
            let beta = cx.attributes().float("beta", 0.0)?;
            let c = cx.output(0)?.f32_mut()?;
            if beta != 0.0 {
                c.copy_from_slice(c0);
            }
            let a = if ta == 1 {
                Operand {
                    data: a,
                    row_stride: 1,
                    col_stride: m,
                }
            } else {
                Operand {
                    data: a,
                    row_stride: k,
                    col_stride: 1,
                }
            };
            let b = if tb == 1 {
                Operand {
                    data: b,
                    row_stride: 1,
                    col_stride: k,
                }
            } else {
                Operand {
                    data: b,
                    row_stride: n,
                    col_stride: 1,
                }
            };
            let packed = if cx.attributes().int("packed", 0)? == 1 {
                let packed = cx.scratch::<f32>(packed_a_len(m, k))?;
                pack_a_whole(&a, m, k, packed);
                Some(PackedA {
                    data: packed,
                    batch_stride: 0,
                })
            } else {
                None
            };
            let product = Product {
                m,
                n,
                k,
                alpha,
                beta,
                a,
                b,
                batches: 1,
                batch_offsets: &single_batch,
                packed_a: packed,
            };
            sgemm(cx, &product, c)
        }
    }

    /// Batched products whose A is packed ahead, one per batch: inputs A (`batches x m x k`),
    /// B (`batches x k x n`) and `[batches, m, n, k]` as f32.
    struct PackedBatches;

    impl Operator for PackedBatches {
        const OP_TYPE: &'static str = "RawPackedBatches";

        fn infer(
            cx: &opal_plugin_api::InferContext<'_>,
        ) -> KernelResult<Vec<opal_plugin_api::OutputType>> {
            let dims = cx.input(2)?;
            let dims = dims.value_as::<f32>()?.unwrap_or_default();
            let [batches, m, n] = [0, 1, 2].map(|i| dims[i] as i64);
            Ok(vec![opal_plugin_api::OutputType::new(
                opal_plugin_api::DType::F32,
                vec![batches, m, n],
            )])
        }

        const VALUE_INPUTS: &'static [usize] = &[2];

        fn compute(cx: &mut KernelContext<'_>) -> KernelResult<()> {
            let a = cx.input(0)?.f32()?;
            let b = cx.input(1)?.f32()?;
            let dims = cx.input(2)?.f32()?;
            let [batches, m, n, k] = [0, 1, 2, 3].map(|i| dims[i] as usize);
            let stride = packed_a_len(m, k);
            let c = cx.output(0)?.f32_mut()?;
            let packed = cx.scratch::<f32>(batches * stride)?;
            for (batch, out) in packed.chunks_exact_mut(stride).enumerate() {
                let a = Operand {
                    data: &a[batch * m * k..][..m * k],
                    row_stride: k,
                    col_stride: 1,
                };
                pack_a_whole(&a, m, k, out);
            }
            let offsets = |batch: usize| (0, batch * k * n);
            let product = Product {
                m,
                n,
                k,
                alpha: 1.0,
                beta: 0.0,
                a: Operand {
                    data: &[],
                    row_stride: k,
                    col_stride: 1,
                },
                b: Operand {
                    data: b,
                    row_stride: n,
                    col_stride: 1,
                },
                batches,
                batch_offsets: &offsets,
                packed_a: Some(PackedA {
                    data: packed,
                    batch_stride: stride,
                }),
            };
            sgemm(cx, &product, c)
        }
    }

    #[test]
    fn batches_with_their_own_packed_a_match_the_reference() {
        // Row counts that are not whole micro-panels, so the split across threads must start
        // pieces on a batch's panel.
        for (batches, m, n, k, threads) in
            [(3, 13, 40, 300, 2), (36, 7, 20, 33, 2), (2, 64, 64, 64, 3)]
        {
            let a = values(batches * m * k, 1);
            let b = values(batches * k * n, 2);
            let dims = [batches, m, n, k].map(|d| d as f32);
            let inputs = [
                OwnedTensor::f32(&[batches * m * k], &a),
                OwnedTensor::f32(&[batches * k * n], &b),
                OwnedTensor::f32(&[4], &dims),
            ];
            let y = TestHost::new()
                .threads(threads)
                .run::<PackedBatches>(&inputs, &[], 1)
                .unwrap();
            let zeros = vec![0.0; m * n];
            let expected: Vec<f32> = (0..batches)
                .flat_map(|batch| {
                    reference(
                        m,
                        n,
                        k,
                        1.0,
                        &a[batch * m * k..][..m * k],
                        (k, 1),
                        &b[batch * k * n..][..k * n],
                        (n, 1),
                        0.0,
                        &zeros,
                    )
                })
                .collect();
            assert_close(y[0].as_slice(), &expected, 1e-5 * (k as f32).sqrt());
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn check(
        m: usize,
        n: usize,
        k: usize,
        ta: bool,
        tb: bool,
        alpha: f32,
        beta: f32,
        threads: usize,
    ) {
        let a = values(m * k, 1);
        let b = values(k * n, 2);
        let c = values(m * n, 3);
        let a_strides = if ta { (1, m) } else { (k, 1) };
        let b_strides = if tb { (1, k) } else { (n, 1) };
        let expected = reference(m, n, k, alpha, &a, a_strides, &b, b_strides, beta, &c);
        let dims = [m, n, k, ta as usize, tb as usize].map(|d| d as f32);
        let inputs = [
            OwnedTensor::f32(&[m * k], &a),
            OwnedTensor::f32(&[k * n], &b),
            OwnedTensor::f32(&[m * n], &c),
            OwnedTensor::f32(&[5], &dims),
        ];
        for packed in [0, 1] {
            let attributes = [
                opal_plugin_api::testing::float_attr("alpha", alpha),
                opal_plugin_api::testing::float_attr("beta", beta),
                opal_plugin_api::testing::int_attr("packed", packed),
            ];
            let y = TestHost::new()
                .threads(threads)
                .run::<Raw>(&inputs, &attributes, 1)
                .unwrap();
            let tolerance = 1e-5 * (k as f32).sqrt().max(1.0);
            assert_close(y[0].as_slice(), &expected, tolerance);
        }
    }

    #[test]
    fn odd_sizes_match_the_reference() {
        for &(m, n, k) in &[
            (1, 1, 1),
            (17, 33, 65),
            (5, 1, 300),
            (1, 40, 7),
            (3, 2000, 5),
        ] {
            check(m, n, k, false, false, 1.0, 0.0, 1);
        }
    }

    #[test]
    fn transposed_operands_alpha_and_beta() {
        for (ta, tb) in [(false, true), (true, false), (true, true)] {
            check(17, 33, 65, ta, tb, 1.0, 0.0, 1);
            check(9, 20, 300, ta, tb, 0.5, 2.0, 2);
        }
        check(6, 7, 8, false, false, -1.5, 1.0, 1);
    }

    #[test]
    fn few_rows_split_their_columns_across_threads() {
        check(10, 700, 300, false, false, 1.0, 0.0, 2);
        check(20, 1000, 64, true, true, 0.5, 2.0, 3);
        check(6, 2000, 100, false, true, 1.0, 1.0, 2);
        // Enough of a result that copying the blocks into place is split as well.
        check(8, 9000, 5, false, false, 1.0, 0.0, 2);
    }

    #[test]
    fn large_products_split_across_threads() {
        check(128, 256, 64, false, false, 1.0, 0.0, 3);
        check(130, 70, 600, true, true, 1.0, 0.5, 2);
    }

    #[test]
    fn empty_depth_scales_c() {
        check(3, 4, 0, false, false, 1.0, 0.5, 1);
        check(3, 4, 0, false, false, 1.0, 0.0, 1);
    }

    #[test]
    fn every_edge_and_block_shape_matches_the_reference() {
        // Every bottom-edge row count and right-edge column count, depths over one block.
        for m in 1..=13 {
            check(m, 37, 5, false, false, 1.0, 0.0, 1);
        }
        for n in [1, 8, 15, 16, 17, 31, 33] {
            check(7, n, 9, false, false, 1.0, 0.0, 1);
        }
        check(200, 40, 600, false, false, 1.0, 0.0, 1);
        check(13, 4100, 3, false, true, 1.0, 0.5, 1);
        check(175, 19, 257, true, false, 2.0, 1.0, 1);
    }
}
