//! A cache-blocked single-precision matrix product (`C = alpha * op(A) * op(B) + beta * C`,
//! batched) for MatMul, Gemm and the convolutions, in the manner of BLIS/GotoBLAS: for each
//! `KC x NC` block of B (packed into host scratch as `NR`-column micro-panels) and each
//! `MC x KC` block of A (packed as `MR`-row micro-panels), a register-tiled micro-kernel
//! accumulates each `MR x NR` tile of C over the block's depth. Rows (across batches) are split
//! over the host's threads.
//!
//! The micro-kernel, its tile and the blocking are chosen per call from the instruction set
//! [`isa::current`] answers: an AVX-512 kernel (14 x 32, written with intrinsics), the portable
//! kernel compiled for AVX2+FMA (6 x 16), or the portable kernel as the build targets it. A
//! packed A's layout depends on the tile, so [`packed_a_len`], [`pack_a_whole`] and
//! [`PackedA`] name the instruction set too, as do [`packed_b_len`], [`pack_b_whole`] and
//! [`PackedB`] for a B packed ahead. Products with a single row of A and B not packed ahead
//! stream B instead ([`gemv`]).

mod gemv;
mod pack;
mod portable;
#[cfg(test)]
mod tests;
#[cfg(target_arch = "x86_64")]
mod x86;

use crate::{
    isa::{self, Isa},
    parallel::{for_each_chunk, task_count, Tasks},
    simd::vectorized,
};
use gemv::gemv_packed;
use opal_plugin_api::{KernelContext, KernelError, KernelResult};
use pack::{pack_a, pack_b};

/// Columns of the portable kernel's tile as the build targets it: two 8-lane chunks with AVX
/// or NEON (6 x 2 ymm, or 6 x 4 q-register, accumulators), one without (6 x 2 xmm accumulators
/// on baseline SSE2's 16 registers).
const PORTABLE_NR: usize = if cfg!(any(target_feature = "avx", target_feature = "neon")) {
    16
} else {
    8
};
/// Multiply-adds below which a product runs on one thread.
const PARALLEL_GRAIN: usize = 1 << 18;
/// Elements of the result below which [`columns_split`] copies its blocks into place on one
/// thread.
const COPY_GRAIN: usize = 1 << 15;

/// Evaluates `$run::<MR, NR>($args)` with the register tile of `$isa`'s micro-kernel: the one
/// place that maps an instruction set to its tile.
macro_rules! with_tile {
    ($isa:expr, $run:ident($($arg:expr),*)) => {
        match $isa {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => $run::<{ x86::AVX512_MR }, { x86::AVX512_NR }>($($arg),*),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => $run::<{ portable::MR }, 16>($($arg),*),
            _ => $run::<{ portable::MR }, PORTABLE_NR>($($arg),*),
        }
    };
}

/// Packs one micro-panel of a row-major A: `(a, row_stride, rows, out)`, see
/// [`x86::avx512_pack_rows`].
type PackRowsFn = fn(&[f32], usize, usize, &mut [f32]);

/// One tile of a micro-kernel: `(rows, a_panel, b_panel, out)`, see [`portable::tile`].
type TileFn = fn(usize, &[f32], &[f32], Out<'_>);

/// An instruction set's micro-kernel and the blocking tuned for it.
#[derive(Clone, Copy)]
struct Kernel {
    /// The most depth of a packed block: a `KC x NR` micro-panel of B stays in L1 while the
    /// `MR`-row micro-panels of A stream past it from L2. The depth is split into equal blocks
    /// of at most `kc`, so no block is much shallower than the others.
    kc: usize,
    /// The most rows of a packed block of A, a multiple of `MR`: `MC x KC` stays in L2, each
    /// `MR x KC` micro-panel reused across the block's `NC / NR` micro-panels of B.
    mc: usize,
    /// The most columns of a packed block of B, a multiple of `NR`: `KC x NC` about fills L2,
    /// each micro-panel reused across the block of A.
    nc: usize,
    tile: TileFn,
    /// A faster packing of row-major A's micro-panels than the portable one, if any.
    pack_rows: Option<PackRowsFn>,
}

/// The micro-kernel and blocking for `isa`, which the caller has checked the CPU runs.
fn kernel(isa: Isa) -> Kernel {
    match isa {
        // 14 x 32 tiles: a 256-deep B micro-panel is 32 KiB of a 48 KiB L1; a 504-row block of
        // A (504 KiB) and a 1024-wide block of B (1 MiB) share a 2 MiB L2. (Measured on a
        // Sapphire Rapids core: depths of 192 to 384 and blocks of A of 336 to 672 rows ran
        // within a few percent of this; 2048-wide blocks of B ran slower on skinny products.)
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => Kernel {
            kc: 256,
            mc: 36 * x86::AVX512_MR,
            nc: 1024,
            tile: x86::avx512_tile,
            pack_rows: Some(x86::avx512_pack_rows),
        },
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => portable_kernel(x86::avx2_tile),
        _ => portable_kernel(
            portable::tile::<portable::Baseline, PORTABLE_NR, { PORTABLE_NR / portable::LANES }>,
        ),
    }
}

/// The blocking of the portable kernel's 6 x 16 tiles (6 x 8 on a build with neither AVX nor
/// NEON), whichever instruction set it is compiled for: a 256-deep B micro-panel is 16 KiB, a 144-row block of A 144 KiB, a 1024-wide block of
/// B 1 MiB. (4096, with the block in L3 as BLIS does, measured no faster, and the host zeroes
/// scratch on every call.)
fn portable_kernel(tile: TileFn) -> Kernel {
    Kernel {
        kc: 256,
        mc: 24 * portable::MR,
        nc: 1024,
        tile,
        pack_rows: None,
    }
}

/// What transposing one value of a product's result into place costs, in the multiply-adds of
/// padding that computing the transposed product must save to repay it. Measured on AVX-512's
/// tiles, in multiply-adds saved per value transposed: 174 or more ran faster (0.84-0.90x), 192
/// as fast, 40 and 22 slower (1.17x and 1.14x).
const TRANSPOSE_COST: usize = 150;

/// Whether an `m x n` product `k` deep runs faster as its transpose (`n x m`, computed and then
/// transposed into place) on `isa`'s tile: when the tile fits the transposed shape so much better
/// (a few rows of a wide product, where most of the kernel's rows would be padding) that the
/// multiply-adds of padding saved repay the transposition. The caller packs its constant operand
/// for the orientation this chooses.
pub fn transposed_pays_off(isa: Isa, m: usize, n: usize, k: usize) -> bool {
    let (rows, cols) = tile_shape(isa);
    let covered = |m: usize, n: usize| m.div_ceil(rows) * rows * n.div_ceil(cols) * cols;
    let saved = covered(m, n).saturating_sub(covered(n, m)) * k;
    saved >= TRANSPOSE_COST * m * n
}

/// Rows of `y` [`transpose_into`] fills together: one cache line of each row of its transpose.
const TRANSPOSE_ROWS: usize = 16;

/// Puts the result of a transposed product ([`transposed_pays_off`]) into place:
/// `y[i][j] = f(i, t[j][i], y[i][j])` for `y` of `rows` rows and `t`, its transpose. Each row of
/// `t` is read a cache line at a time into as many rows of `y`: reading down a column of `t`
/// instead would touch lines a power of two apart, which share a few sets of L1.
pub fn transpose_into(t: &[f32], y: &mut [f32], rows: usize, f: impl Fn(usize, f32, f32) -> f32) {
    if y.is_empty() {
        return;
    }
    let n = y.len() / rows;
    for (block, y_block) in y.chunks_mut(TRANSPOSE_ROWS * n).enumerate() {
        let first = block * TRANSPOSE_ROWS;
        let count = y_block.len() / n;
        for (j, t_row) in t.chunks_exact(rows).enumerate() {
            for (i, &v) in t_row[first..first + count].iter().enumerate() {
                let at = i * n + j;
                y_block[at] = f(first + i, v, y_block[at]);
            }
        }
    }
}

/// The register tile (`MR` rows, `NR` columns) of `isa`'s micro-kernel.
pub fn tile_shape(isa: Isa) -> (usize, usize) {
    const fn shape<const MR: usize, const NR: usize>() -> (usize, usize) {
        (MR, NR)
    }
    with_tile!(isa, shape())
}

/// A strided matrix operand: element `(i, j)` is `data[offset + i * row_stride + j * col_stride]`,
/// where `offset` is the batch's.
#[derive(Clone, Copy, Debug)]
pub struct Operand<'a> {
    pub data: &'a [f32],
    pub row_stride: usize,
    pub col_stride: usize,
}

impl<'a> Operand<'a> {
    fn at(&self, offset: usize, i: usize, j: usize) -> f32 {
        self.data[offset + i * self.row_stride + j * self.col_stride]
    }

    /// The transpose of this operand, as a view of the same values.
    pub fn transposed(&self) -> Operand<'a> {
        Operand {
            data: self.data,
            row_stride: self.col_stride,
            col_stride: self.row_stride,
        }
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
    /// B already packed by [`pack_b_whole`], read instead of `b`, which is then never read.
    pub packed_b: Option<PackedB<'a>>,
}

/// The A of each batch packed by [`pack_a_whole`].
#[derive(Clone, Copy, Debug)]
pub struct PackedA<'a> {
    pub data: &'a [f32],
    /// Values from one batch's packed A to the next's; 0 when every batch shares one.
    pub batch_stride: usize,
    /// The instruction set `data` was packed for, which must be the product's.
    pub isa: Isa,
}

/// The B of each batch packed by [`pack_b_whole`].
#[derive(Clone, Copy, Debug)]
pub struct PackedB<'a> {
    pub data: &'a [f32],
    /// Values from one batch's packed B to the next's; 0 when every batch shares one.
    pub batch_stride: usize,
    /// The instruction set `data` was packed for, which must be the product's.
    pub isa: Isa,
}

/// The offsets of a single product: zero.
pub fn single_batch(_: usize) -> (usize, usize) {
    (0, 0)
}

/// Computes `product` into `c` (`batches * m * n` elements) on the instruction set
/// [`isa::current`] answers, with packing buffers from the host's scratch, on the host's
/// threads when the work is large.
pub fn sgemm(cx: &KernelContext<'_>, product: &Product<'_>, c: &mut [f32]) -> KernelResult<()> {
    sgemm_on(cx, isa::current(cx), product, c)
}

/// [`sgemm`] on the micro-kernel of `isa`, which must be available (for tests and benchmarks
/// that compare the paths; kernels call [`sgemm`]). A packed A must be packed for `isa`.
pub fn sgemm_on(
    cx: &KernelContext<'_>,
    isa: Isa,
    product: &Product<'_>,
    c: &mut [f32],
) -> KernelResult<()> {
    if !isa.is_available() {
        return Err(KernelError::new(format!(
            "sgemm: this CPU does not run {isa} code"
        )));
    }
    for (operand, packed_for) in [
        ("A", product.packed_a.map(|p| p.isa)),
        ("B", product.packed_b.map(|p| p.isa)),
    ] {
        if let Some(packed_for) = packed_for.filter(|&packed_for| packed_for != isa) {
            return Err(KernelError::new(format!(
                "sgemm: {operand} was packed for {packed_for} but the product runs on {isa}"
            )));
        }
    }
    let kernel = kernel(isa);
    if gemv::applies(product, c) {
        return gemv::gemv(cx, isa, product, c);
    }
    if let Some(packed) = product
        .packed_b
        .filter(|_| gemv::applies_packed(product, c))
    {
        return with_tile!(isa, gemv_packed(cx, isa, &kernel, product, packed, c));
    }
    with_tile!(isa, run(cx, &kernel, product, c))
}

/// The length of an `m x k` A packed by [`pack_a_whole`] for `isa`.
pub fn packed_a_len(isa: Isa, m: usize, k: usize) -> usize {
    round_up(m, tile_shape(isa).0) * k
}

/// Packs all of the `m x k` A (at offset 0 of `a`) into `out` ([`packed_a_len`] values) as
/// [`sgemm`] on `isa` packs its blocks: the depth blocks one after the other, each holding
/// every row as micro-panels of the `isa` kernel's rows.
pub fn pack_a_whole(isa: Isa, a: &Operand<'_>, m: usize, k: usize, out: &mut [f32]) {
    with_tile!(isa, pack_whole(&kernel(isa), a, m, k, out))
}

/// The length of a `k x n` B packed by [`pack_b_whole`] for `isa`.
pub fn packed_b_len(isa: Isa, k: usize, n: usize) -> usize {
    round_up(n, tile_shape(isa).1) * k
}

/// Packs all of the `k x n` B (at offset 0 of `b`) into `out` ([`packed_b_len`] values) as
/// [`sgemm`] on `isa` packs its blocks: for each block of columns, its depth blocks one after
/// the other, each as micro-panels of the `isa` kernel's columns. Constant weights used as B
/// (a fully connected layer's, a recurrent layer's) are packed once so.
pub fn pack_b_whole(isa: Isa, b: &Operand<'_>, k: usize, n: usize, out: &mut [f32]) {
    with_tile!(isa, pack_b_blocks(&kernel(isa), b, k, n, out))
}

/// B packed by [`pack_b_whole`] for the call's instruction set, once, and kept by the host with
/// the node, when B is the node's constant input `input` (a weight); `None` when it is not
/// constant or the host keeps no prepared data for the node. `b` is that input as a `k x n`
/// operand; a node that packs more than one B packs them itself into one prepared buffer.
pub fn prepared_b<'a>(
    cx: &KernelContext<'a>,
    input: usize,
    b: &Operand<'_>,
    k: usize,
    n: usize,
) -> KernelResult<Option<PackedB<'a>>> {
    if !cx.is_constant(input) {
        return Ok(None);
    }
    let isa = isa::current(cx);
    let data = cx.prepared(packed_b_len(isa, k, n), |out| {
        pack_b_whole(isa, b, k, n, out);
        Ok(())
    })?;
    Ok(data.map(|data| PackedB {
        data,
        batch_stride: 0,
        isa,
    }))
}

/// A packed by [`pack_a_whole`] for the call's instruction set, once, and kept by the host with
/// the node, when A is the node's constant input `input`: as [`prepared_b`] for a weight used as
/// A. The kept data holds one value past the panels, so that its length never equals that of
/// the same weight packed by [`prepared_b`]: the host hands prepared data back only at the
/// length first asked for, and a node that packs its weight as A or as B depending on a call's
/// shapes ([`transposed_pays_off`]) then packs it in scratch rather than misreading it.
pub fn prepared_a<'a>(
    cx: &KernelContext<'a>,
    input: usize,
    a: &Operand<'_>,
    m: usize,
    k: usize,
) -> KernelResult<Option<PackedA<'a>>> {
    if !cx.is_constant(input) {
        return Ok(None);
    }
    let isa = isa::current(cx);
    let len = packed_a_len(isa, m, k);
    let data = cx.prepared(len + 1, |out| {
        pack_a_whole(isa, a, m, k, &mut out[..len]);
        Ok(())
    })?;
    Ok(data.map(|data| PackedA {
        data: &data[..len],
        batch_stride: 0,
        isa,
    }))
}

fn pack_b_blocks<const MR: usize, const NR: usize>(
    kernel: &Kernel,
    b: &Operand<'_>,
    k: usize,
    n: usize,
    out: &mut [f32],
) {
    if k == 0 {
        return;
    }
    let kc_step = depth_step(k, kernel.kc);
    for jc in (0..n).step_by(kernel.nc) {
        let nc = kernel.nc.min(n - jc);
        for pc in (0..k).step_by(kc_step) {
            let kc = kc_step.min(k - pc);
            let start = packed_b_block::<NR>(k, jc, nc, pc);
            pack_b::<NR>(
                b,
                0,
                pc,
                kc,
                jc,
                nc,
                &mut out[start..start + round_up(nc, NR) * kc],
            );
        }
    }
}

/// Where the block of columns `jc..jc + nc` and depth from `pc` starts in a B of depth `k`
/// packed by [`pack_b_whole`] (`jc` is a multiple of the blocks' width, itself a multiple of
/// `NR`).
fn packed_b_block<const NR: usize>(k: usize, jc: usize, nc: usize, pc: usize) -> usize {
    jc * k + round_up(nc, NR) * pc
}

fn pack_whole<const MR: usize, const NR: usize>(
    kernel: &Kernel,
    a: &Operand<'_>,
    m: usize,
    k: usize,
    out: &mut [f32],
) {
    if k == 0 {
        return;
    }
    let kc_step = depth_step(k, kernel.kc);
    for pc in (0..k).step_by(kc_step) {
        let kc = kc_step.min(k - pc);
        let start = round_up(m, MR) * pc;
        let out = &mut out[start..start + round_up(m, MR) * kc];
        pack_a::<MR>(kernel.pack_rows, a, 0, 0, m, pc, kc, out);
    }
}

/// [`sgemm_on`] with the kernel's `MR x NR` tile.
fn run<const MR: usize, const NR: usize>(
    cx: &KernelContext<'_>,
    kernel: &Kernel,
    p: &Product<'_>,
    c: &mut [f32],
) -> KernelResult<()> {
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
    // Too few row panels to share evenly (a convolution with few output channels, or a
    // transposed one with few positions): split the columns instead. A B packed ahead splits
    // when its columns are one block, whose micro-panels each piece can take a run of.
    if threads > 1
        && p.batches == 1
        && p.packed_b.is_none_or(|_| p.n <= kernel.nc)
        && panels < 4 * threads
        && p.n >= 4 * NR * threads
    {
        return columns_split::<MR, NR>(cx, kernel, p, c, threads);
    }
    let tasks = threads.min(p.batches * panels);
    // Packing buffers, sized to the problem when it is smaller than a block (none for A
    // packed ahead).
    let kc = depth_step(p.k, kernel.kc);
    let a_len = a_pack_len::<MR>(kernel, p, rows.div_ceil(tasks), kc);
    let b_len = if p.packed_b.is_some() {
        0
    } else {
        round_up(p.n.min(kernel.nc), NR) * kc
    };
    if tasks <= 1 {
        let a_pack = cx.scratch_unzeroed::<f32>(a_len)?;
        let b_pack = cx.scratch_unzeroed::<f32>(b_len)?;
        vectorized(
            isa::current(cx),
            #[inline(always)]
            || rows_range::<MR, NR>(kernel, p, BColumns::all(p), 0, c, a_pack, b_pack),
        );
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
    pieces.run(
        cx,
        #[inline(always)]
        |(first_row, c, a_pack, b_pack)| {
            rows_range::<MR, NR>(kernel, p, BColumns::all(p), first_row, c, a_pack, b_pack)
        },
    );
    Ok(())
}

/// [`run`] of a single batch in `tasks` pieces of whole micro-panels of columns, each
/// computed into its own block of scratch and copied into place afterwards.
fn columns_split<const MR: usize, const NR: usize>(
    cx: &KernelContext<'_>,
    kernel: &Kernel,
    p: &Product<'_>,
    c: &mut [f32],
    tasks: usize,
) -> KernelResult<()> {
    let (m, n) = (p.m, p.n);
    let kc = depth_step(p.k, kernel.kc);
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
        let a_pack = cx.scratch_unzeroed::<f32>(a_pack_len::<MR>(kernel, p, m, kc))?;
        let b_len = if p.packed_b.is_some() {
            0
        } else {
            round_up((j1 - j0).min(kernel.nc), NR) * kc
        };
        let b_pack = cx.scratch_unzeroed::<f32>(b_len)?;
        pieces.push((j0, block, a_pack, b_pack));
    }
    pieces.run(
        cx,
        #[inline(always)]
        |(j0, block, a_pack, b_pack)| {
            let piece = Product {
                n: block.len() / m,
                a: Operand {
                    data: &p.a.data[a_offset.min(p.a.data.len())..],
                    ..p.a
                },
                // A B packed ahead is read through `b_columns` instead.
                b: match p.packed_b {
                    Some(_) => p.b,
                    None => Operand {
                        data: &p.b.data[b_offset + j0 * p.b.col_stride..],
                        ..p.b
                    },
                },
                batches: 1,
                batch_offsets: &single_batch,
                ..*p
            };
            let b_columns = BColumns {
                first: j0,
                total: n,
            };
            rows_range::<MR, NR>(kernel, &piece, b_columns, 0, block, a_pack, b_pack);
        },
    );
    // Each task's block holds its columns of every row, the blocks one after the other.
    let blocks = &*blocks;
    for_each_chunk(
        cx,
        c,
        n,
        COPY_GRAIN,
        #[inline(always)]
        |start, rows| {
            let first_row = start / n;
            for (r, c_row) in rows.chunks_exact_mut(n).enumerate() {
                let row = first_row + r;
                for t in 0..tasks {
                    let (j0, j1) = (columns(t), columns(t + 1));
                    let block = &blocks[m * j0..m * j1];
                    c_row[j0..j1].copy_from_slice(&block[row * (j1 - j0)..(row + 1) * (j1 - j0)]);
                }
            }
        },
    );
    Ok(())
}

/// The length of a buffer for packing blocks of up to `rows` rows of A, `kc` deep: none when
/// A is packed ahead.
fn a_pack_len<const MR: usize>(kernel: &Kernel, p: &Product<'_>, rows: usize, kc: usize) -> usize {
    if p.packed_a.is_some() {
        0
    } else {
        round_up(rows.min(kernel.mc), MR) * kc
    }
}

fn round_up(x: usize, multiple: usize) -> usize {
    x.div_ceil(multiple) * multiple
}

/// The depth of the packed blocks for a depth of `k`: `k` split into equal blocks of at most
/// `kc`.
fn depth_step(k: usize, kc: usize) -> usize {
    k.div_ceil(k.div_ceil(kc).max(1))
}

/// The rows of the packed blocks of A for `rows` rows: split into equal blocks of at most `mc`,
/// rounded up to whole micro-panels of `mr` rows.
fn row_step(rows: usize, mc: usize, mr: usize) -> usize {
    round_up(rows.div_ceil(rows.div_ceil(mc).max(1)), mr)
}

fn scale(c: &mut [f32], beta: f32) {
    if beta == 0.0 {
        c.fill(0.0);
    } else {
        c.iter_mut().for_each(|v| *v *= beta);
    }
}

/// Where a product's columns lie in the B packed ahead ([`Product::packed_b`]): from column
/// `first` of a packed B `total` columns wide. A piece of [`columns_split`] takes a run of
/// the micro-panels of a B packed as one block of columns.
#[derive(Clone, Copy)]
struct BColumns {
    first: usize,
    total: usize,
}

impl BColumns {
    /// All of `p`'s B.
    fn all(p: &Product<'_>) -> Self {
        BColumns {
            first: 0,
            total: p.n,
        }
    }
}

/// Computes the rows `first_row..` (counted across batches) that `c` holds.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn rows_range<const MR: usize, const NR: usize>(
    kernel: &Kernel,
    p: &Product<'_>,
    b_columns: BColumns,
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
        let rows = Rows { batch, i0, i1 };
        block::<MR, NR>(kernel, p, b_columns, rows, chunk, a_pack, b_pack);
        row += i1 - i0;
        rest = tail;
    }
}

/// Rows `i0..i1` of one batch's product.
#[derive(Clone, Copy)]
struct Rows {
    batch: usize,
    i0: usize,
    i1: usize,
}

/// `rows` of one batch's product, into `c` (those rows, `n` wide).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn block<const MR: usize, const NR: usize>(
    kernel: &Kernel,
    p: &Product<'_>,
    b_columns: BColumns,
    Rows { batch, i0, i1 }: Rows,
    c: &mut [f32],
    a_pack: &mut [f32],
    b_pack: &mut [f32],
) {
    let (a_offset, b_offset) = (p.batch_offsets)(batch);
    let n = p.n;
    let kc_step = depth_step(p.k, kernel.kc);
    let mc_step = row_step(i1 - i0, kernel.mc, MR);
    for jc in (0..n).step_by(kernel.nc) {
        let nc = kernel.nc.min(n - jc);
        for pc in (0..p.k).step_by(kc_step) {
            let kc = kc_step.min(p.k - pc);
            let b_len = round_up(nc, NR) * kc;
            let b_pack: &[f32] = match p.packed_b {
                Some(packed) => {
                    // The packed block of columns holding this one, and its micro-panels from
                    // this block's first column (a multiple of `NR` from the block's start).
                    let first = b_columns.first + jc;
                    let packed_jc = first / kernel.nc * kernel.nc;
                    let packed_nc = kernel.nc.min(b_columns.total - packed_jc);
                    let start = batch * packed.batch_stride
                        + packed_b_block::<NR>(p.k, packed_jc, packed_nc, pc)
                        + (first - packed_jc) * kc;
                    &packed.data[start..start + b_len]
                }
                None => {
                    let b_pack = &mut b_pack[..b_len];
                    pack_b::<NR>(&p.b, b_offset, pc, kc, jc, nc, b_pack);
                    b_pack
                }
            };
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
                        pack_a::<MR>(kernel.pack_rows, &p.a, a_offset, ic, mc, pc, kc, a_pack);
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
                        (kernel.tile)(MR.min(i1 - i0 - i), a_panel, b_panel, out);
                    }
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
