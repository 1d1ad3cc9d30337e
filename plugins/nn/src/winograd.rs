//! Winograd convolution F(4x4, 3x3) for 2-D 3x3 convolutions with unit stride and dilation and
//! a single group (Lavin and Gray, "Fast Algorithms for Convolutional Neural Networks", with the
//! points 0, ±1, ±2 and ∞). Each 4x4 output tile is `Aᵀ [(G g Gᵀ) ⊙ (Bᵀ d B)] A` for the 6x6
//! input tile `d` under it, so the 36 products of each tile replace 144 multiply-adds per input
//! channel. Per block of tiles, the input tiles are transformed into `V[channel][point][tile]`,
//! the weights into `U[out channel][point][channel]` (once for constant weights, kept packed
//! for the matrix products by the host with the node; otherwise on every call); one batched
//! [`sgemm`] over the 36 points computes `M[point] = U[point] · V[point]`, and the output
//! transform adds the bias. Tiles run in the lanes of fixed-size arrays, so the transforms
//! vectorise.

use crate::conv::ConvShape;
use opal_kernel_support::{
    isa::{self, Isa},
    parallel::for_each_chunk,
    sgemm::{pack_a_whole, packed_a_len, sgemm, Operand, PackedA, Product},
};
use opal_plugin_api::prelude::*;

/// Side of an input tile.
const TILE: usize = 6;
/// Side of an output tile.
const OUT: usize = TILE - 2;
/// Transform points per tile.
const POINTS: usize = TILE * TILE;
/// Tiles (or channels, for the weights) transformed together, one per lane.
const LANES: usize = 8;
/// The most f32 values of the transformed inputs and products of one block of tiles (8 MiB;
/// small under test, so that the tests cover several blocks per image).
const BLOCK_BUDGET: usize = if cfg!(test) { 1 << 15 } else { 1 << 21 };
/// Tiles of a block when the image does not fit in one: a multiple of the GEMM's panel width.
const BLOCK_MULTIPLE: usize = 16;
/// Elements below which a transform runs on one thread.
const TRANSFORM_GRAIN: usize = 1 << 12;
/// The fewest input and output channels for which Winograd pays off (measured: 16 channels at
/// 160x160 ran in 0.85 of the im2col time).
const MIN_CHANNELS: usize = 16;
/// The fewest output tiles per call for which Winograd pays off when the weights are
/// transformed on every call and each GEMM repacks its point's weights, a cost the tiles must
/// amortise (measured: 16 tiles of 256 or 512 channels ran 1.2x and 1.8x slower than im2col,
/// 25 tiles of 128 channels in 0.82 of its time, 49 tiles in 0.6).
const MIN_TILES: usize = 24;
/// The fewest output tiles per call for which Winograd pays off with the weights prepared
/// once: only the input and output transforms remain to amortise.
const MIN_TILES_PREPARED: usize = 12;

/// One value per lane.
type Lanes = [f32; LANES];

/// Whether `shape` is a convolution this module computes, and one where it beats im2col: 3x3,
/// unit stride and dilation, one group, two spatial axes, enough channels and tiles to repay the
/// transforms (the weight transform too, unless the weights are `prepared` once).
pub(crate) fn pays_off(shape: &ConvShape, prepared: bool) -> bool {
    let min_tiles = if prepared {
        MIN_TILES_PREPARED
    } else {
        MIN_TILES
    };
    applies(shape)
        && shape.in_channels >= MIN_CHANNELS
        && shape.out_channels >= MIN_CHANNELS
        && shape.batch * tile_count(shape) >= min_tiles
}

/// The length of the weights of a `shape` convolution as [`prepare_weights`] prepares them
/// for `isa`.
pub(crate) fn prepared_len(isa: Isa, shape: &ConvShape) -> usize {
    POINTS * packed_a_len(isa, shape.out_channels, shape.in_channels)
}

/// Transforms the weights `w` and packs each point's `U[point]` (out x in channels) for
/// [`sgemm`] on `isa` (the instruction set [`isa::current`] answers), one point after the
/// other, into `out` ([`prepared_len`] values).
pub(crate) fn prepare_weights(
    cx: &KernelContext<'_>,
    isa: Isa,
    shape: &ConvShape,
    w: &[f32],
    out: &mut [f32],
) -> KernelResult<()> {
    let (c, m) = (shape.in_channels, shape.out_channels);
    let u = cx.scratch_unzeroed::<f32>(m * POINTS * c)?;
    transform_weights(cx, w, c, u);
    let point_len = packed_a_len(isa, m, c).max(1);
    for (point, out) in out.chunks_exact_mut(point_len).enumerate() {
        let u_point = Operand {
            data: &u[point * c..],
            row_stride: POINTS * c,
            col_stride: 1,
        };
        pack_a_whole(isa, &u_point, m, c, out);
    }
    Ok(())
}

/// Whether [`winograd`] can compute `shape`.
pub(crate) fn applies(shape: &ConvShape) -> bool {
    let window = &shape.window;
    let [_, ah, aw] = window.axes;
    shape.group == 1
        && window.dims == 2
        && [ah, aw]
            .iter()
            .all(|a| a.kernel == 3 && a.stride == 1 && a.dilation == 1)
}

/// Output tiles of one image.
fn tile_count(shape: &ConvShape) -> usize {
    let [_, ah, aw] = shape.window.axes;
    ah.output.div_ceil(OUT) * aw.output.div_ceil(OUT)
}

/// The geometry of one image's tiles.
#[derive(Clone, Copy)]
struct Tiles {
    input_h: usize,
    input_w: usize,
    output_h: usize,
    output_w: usize,
    pad_top: usize,
    pad_left: usize,
    /// Tiles per row.
    across: usize,
}

impl Tiles {
    /// The top-left output position of tile `t`.
    fn origin(&self, t: usize) -> (usize, usize) {
        (t / self.across * OUT, t % self.across * OUT)
    }
}

/// `y = conv(x, w) + bias` for a shape that [`applies`]; `prepared` is `w` as
/// [`prepare_weights`] prepares it, when kept.
pub(crate) fn winograd(
    cx: &KernelContext<'_>,
    shape: &ConvShape,
    x: &[f32],
    w: &[f32],
    prepared: Option<&[f32]>,
    bias: Option<&[f32]>,
    y: &mut [f32],
) -> KernelResult<()> {
    let [_, ah, aw] = shape.window.axes;
    let (c, m) = (shape.in_channels, shape.out_channels);
    let tiles = Tiles {
        input_h: ah.input,
        input_w: aw.input,
        output_h: ah.output,
        output_w: aw.output,
        pad_top: ah.pad_begin,
        pad_left: aw.pad_begin,
        across: aw.output.div_ceil(OUT),
    };
    let image_tiles = tile_count(shape);
    let block = block_tiles(c, m, image_tiles);
    let (in_size, out_size) = (ah.input * aw.input, ah.output * aw.output);
    let isa = isa::current(cx);

    let (u, packed_u): (&[f32], _) = match prepared {
        Some(data) => (
            &[],
            Some(PackedA {
                data,
                batch_stride: packed_a_len(isa, m, c),
                isa,
            }),
        ),
        None => {
            let u = cx.scratch_unzeroed::<f32>(m * POINTS * c)?;
            transform_weights(cx, w, c, u);
            (u, None)
        }
    };
    let v = cx.scratch_unzeroed::<f32>(c * POINTS * block)?;
    let products = cx.scratch_unzeroed::<f32>(POINTS * m * block)?;
    for (image, y_image) in y.chunks_exact_mut(m * out_size).enumerate() {
        let x_image = &x[image * c * in_size..][..c * in_size];
        for first in (0..image_tiles).step_by(block) {
            let n = block.min(image_tiles - first);
            let v = &mut v[..c * POINTS * n];
            transform_inputs(cx, &tiles, x_image, first, n, v);
            let products = &mut products[..POINTS * m * n];
            let batch_offsets = |point: usize| (point * c, point * n);
            let product = Product {
                m,
                n,
                k: c,
                alpha: 1.0,
                beta: 0.0,
                a: Operand {
                    data: u,
                    row_stride: POINTS * c,
                    col_stride: 1,
                },
                b: Operand {
                    data: v,
                    row_stride: POINTS * n,
                    col_stride: 1,
                },
                batches: POINTS,
                batch_offsets: &batch_offsets,
                packed_a: packed_u,
                packed_b: None,
            };
            sgemm(cx, &product, products)?;
            transform_outputs(cx, &tiles, products, bias, first, n, y_image);
        }
    }
    Ok(())
}

/// Tiles per block: the whole image when its transforms fit in [`BLOCK_BUDGET`], else the most
/// that fit, rounded down to [`BLOCK_MULTIPLE`].
fn block_tiles(in_channels: usize, out_channels: usize, image_tiles: usize) -> usize {
    let fit = BLOCK_BUDGET / ((in_channels + out_channels) * POINTS).max(1);
    if fit >= image_tiles {
        image_tiles
    } else {
        (fit / BLOCK_MULTIPLE * BLOCK_MULTIPLE).max(BLOCK_MULTIPLE)
    }
}

/// `u[o][point][i] = (G w[o][i] Gᵀ)[point]` for `w` of `[out][in][3][3]`.
fn transform_weights(cx: &KernelContext<'_>, w: &[f32], c: usize, u: &mut [f32]) {
    for_each_chunk(
        cx,
        u,
        POINTS * c,
        TRANSFORM_GRAIN,
        #[inline(always)]
        |start, chunk| {
            for (o, u_out) in chunk.chunks_exact_mut(POINTS * c).enumerate() {
                let first_out = start / (POINTS * c) + o;
                let w_out = &w[first_out * c * 9..][..c * 9];
                for i0 in (0..c).step_by(LANES) {
                    let lanes = LANES.min(c - i0);
                    let mut g = [[[0.0; LANES]; 3]; 3];
                    for (l, taps) in w_out[i0 * 9..(i0 + lanes) * 9].chunks_exact(9).enumerate() {
                        for (k, &tap) in taps.iter().enumerate() {
                            g[k / 3][k % 3][l] = tap;
                        }
                    }
                    // G g, then (G g) Gᵀ along the rows.
                    let columns: [[Lanes; 6]; 3] =
                        std::array::from_fn(|j| weight_1d(&[g[0][j], g[1][j], g[2][j]]));
                    for r in 0..TILE {
                        let row = weight_1d(&[columns[0][r], columns[1][r], columns[2][r]]);
                        for (s, values) in row.iter().enumerate() {
                            store_lanes(&mut u_out[(r * TILE + s) * c + i0..], values, lanes);
                        }
                    }
                }
            }
        },
    );
}

/// `v[i][point][t] = (Bᵀ d B)[point]` for the input tile `d` of channel `i` under tile
/// `first + t`, for `n` tiles.
fn transform_inputs(
    cx: &KernelContext<'_>,
    tiles: &Tiles,
    x: &[f32],
    first: usize,
    n: usize,
    v: &mut [f32],
) {
    let plane = tiles.input_h * tiles.input_w;
    for_each_chunk(
        cx,
        v,
        POINTS * n,
        TRANSFORM_GRAIN,
        #[inline(always)]
        |start, chunk| {
            for (i, v_channel) in chunk.chunks_exact_mut(POINTS * n).enumerate() {
                let channel = start / (POINTS * n) + i;
                let x_channel = &x[channel * plane..][..plane];
                for t0 in (0..n).step_by(LANES) {
                    let lanes = LANES.min(n - t0);
                    let mut d = [[[0.0; LANES]; TILE]; TILE];
                    if lanes < LANES || !gather_row_of_tiles(tiles, x_channel, first + t0, &mut d) {
                        for l in 0..lanes {
                            gather_tile(tiles, x_channel, first + t0 + l, l, &mut d);
                        }
                    }
                    // d B along each row, then Bᵀ (d B) down each column.
                    let mut rows = [[[0.0; LANES]; TILE]; TILE];
                    each_of_six(|r| input_1d(&d[r], &mut rows[r]));
                    each_of_six(|s| {
                        let column: [Lanes; TILE] = [
                            rows[0][s], rows[1][s], rows[2][s], rows[3][s], rows[4][s], rows[5][s],
                        ];
                        let mut out = [[0.0; LANES]; TILE];
                        input_1d(&column, &mut out);
                        each_of_six(|r| {
                            let at = (r * TILE + s) * n + t0;
                            store_lanes(&mut v_channel[at..], &out[r], lanes);
                        });
                    });
                }
            }
        },
    );
}

/// Writes the first `lanes` values of `values` to the start of `out`.
#[inline(always)]
fn store_lanes(out: &mut [f32], values: &Lanes, lanes: usize) {
    if lanes == LANES {
        out[..LANES].copy_from_slice(values);
    } else {
        for (o, &v) in out.iter_mut().zip(&values[..lanes]) {
            *o = v;
        }
    }
}

/// Reads `lanes` values from the start of `data` into a lane array, zeros after them.
#[inline(always)]
fn load_lanes(data: &[f32], lanes: usize) -> Lanes {
    if lanes == LANES {
        let mut out = [0.0; LANES];
        out.copy_from_slice(&data[..LANES]);
        out
    } else {
        let mut out = [0.0; LANES];
        for (o, &v) in out.iter_mut().zip(&data[..lanes]) {
            *o = v;
        }
        out
    }
}

/// Input columns read by [`LANES`] neighbouring tiles of one row.
const ROW_SPAN: usize = OUT * (LANES - 1) + TILE;

/// Copies the input tiles under the [`LANES`] tiles from `t` into the lanes of `d`, with zeros
/// in the padding, when they lie in one row of tiles; returns whether they did.
#[inline(always)]
fn gather_row_of_tiles(tiles: &Tiles, x: &[f32], t: usize, d: &mut [[Lanes; TILE]; TILE]) -> bool {
    if t % tiles.across + LANES > tiles.across {
        return false;
    }
    let (oh, ow) = tiles.origin(t);
    let (w, h) = (tiles.input_w, tiles.input_h);
    let top = oh as isize - tiles.pad_top as isize;
    let left = ow as isize - tiles.pad_left as isize;
    let inside = left >= 0 && left as usize + ROW_SPAN <= w;
    for (r, d_row) in d.iter_mut().enumerate() {
        let ih = top + r as isize;
        if ih < 0 || ih >= h as isize {
            continue;
        }
        let x_row = &x[ih as usize * w..][..w];
        if inside {
            let span: &[f32; ROW_SPAN] = x_row[left as usize..][..ROW_SPAN]
                .try_into()
                .expect("ROW_SPAN values");
            spread_row(span, d_row);
        } else {
            let mut span = [0.0; ROW_SPAN];
            for (k, value) in span.iter_mut().enumerate() {
                let iw = left + k as isize;
                if iw >= 0 && iw < w as isize {
                    *value = x_row[iw as usize];
                }
            }
            spread_row(&span, d_row);
        }
    }
    true
}

/// Spreads one input row under [`LANES`] neighbouring tiles over the lanes of a tile row.
#[inline(always)]
fn spread_row(span: &[f32; ROW_SPAN], d_row: &mut [Lanes; TILE]) {
    for (s, values) in d_row.iter_mut().enumerate() {
        for (l, value) in values.iter_mut().enumerate() {
            *value = span[OUT * l + s];
        }
    }
}

/// Copies the 6x6 input tile under tile `t` into lane `l` of `d`, with zeros in the padding.
#[inline(always)]
fn gather_tile(tiles: &Tiles, x: &[f32], t: usize, l: usize, d: &mut [[Lanes; TILE]; TILE]) {
    let (oh, ow) = tiles.origin(t);
    let (w, h) = (tiles.input_w, tiles.input_h);
    let top = oh as isize - tiles.pad_top as isize;
    let left = ow as isize - tiles.pad_left as isize;
    let inside = top >= 0 && left >= 0 && top as usize + TILE <= h && left as usize + TILE <= w;
    if inside {
        let (top, left) = (top as usize, left as usize);
        for (r, d_row) in d.iter_mut().enumerate() {
            let x_row: &[f32; TILE] = x[(top + r) * w + left..][..TILE]
                .try_into()
                .expect("TILE values");
            each_of_six(|s| d_row[s][l] = x_row[s]);
        }
        return;
    }
    for (r, d_row) in d.iter_mut().enumerate() {
        let ih = top + r as isize;
        if ih < 0 || ih >= h as isize {
            continue;
        }
        let x_row = &x[ih as usize * w..][..w];
        each_of_six(|s| {
            let iw = left + s as isize;
            if iw >= 0 && iw < w as isize {
                d_row[s][l] = x_row[iw as usize];
            }
        });
    }
}

/// Writes the output tiles `first..first + n` of every output channel (planes of `y`) from the
/// products `m[point][out channel][t]`, plus the bias.
fn transform_outputs(
    cx: &KernelContext<'_>,
    tiles: &Tiles,
    m: &[f32],
    bias: Option<&[f32]>,
    first: usize,
    n: usize,
    y: &mut [f32],
) {
    let plane = tiles.output_h * tiles.output_w;
    let out_channels = y.len() / plane;
    for_each_chunk(
        cx,
        y,
        plane,
        TRANSFORM_GRAIN,
        #[inline(always)]
        |start, chunk| {
            for (o, y_channel) in chunk.chunks_exact_mut(plane).enumerate() {
                let channel = start / plane + o;
                let b = bias.map_or(0.0, |b| b[channel]);
                for t0 in (0..n).step_by(LANES) {
                    let lanes = LANES.min(n - t0);
                    // m A along each row, then Aᵀ (m A) down each column.
                    let mut rows = [[[0.0; LANES]; OUT]; TILE];
                    for (r, row) in rows.iter_mut().enumerate() {
                        let at = |s: usize| ((r * TILE + s) * out_channels + channel) * n + t0;
                        let products: [Lanes; TILE] = [
                            load_lanes(&m[at(0)..], lanes),
                            load_lanes(&m[at(1)..], lanes),
                            load_lanes(&m[at(2)..], lanes),
                            load_lanes(&m[at(3)..], lanes),
                            load_lanes(&m[at(4)..], lanes),
                            load_lanes(&m[at(5)..], lanes),
                        ];
                        output_1d(&products, row);
                    }
                    let mut tile = [[[0.0; LANES]; OUT]; OUT];
                    for s in 0..OUT {
                        let column: [Lanes; TILE] = [
                            rows[0][s], rows[1][s], rows[2][s], rows[3][s], rows[4][s], rows[5][s],
                        ];
                        let mut out = [[0.0; LANES]; OUT];
                        output_1d(&column, &mut out);
                        for (tile_row, values) in tile.iter_mut().zip(&out) {
                            for (t, &v) in tile_row[s].iter_mut().zip(values) {
                                *t = v + b;
                            }
                        }
                    }
                    if lanes < LANES || !scatter_row_of_tiles(tiles, &tile, first + t0, y_channel) {
                        for l in 0..lanes {
                            scatter_tile(tiles, &tile, first + t0 + l, l, y_channel);
                        }
                    }
                }
            }
        },
    );
}

/// Writes the [`LANES`] output tiles from `t` when they lie in one row of tiles and wholly inside
/// the plane `y`; returns whether they did.
#[inline(always)]
fn scatter_row_of_tiles(
    tiles: &Tiles,
    tile: &[[Lanes; OUT]; OUT],
    t: usize,
    y: &mut [f32],
) -> bool {
    let (oh, ow) = tiles.origin(t);
    let same_row = t % tiles.across + LANES <= tiles.across;
    if !same_row || oh + OUT > tiles.output_h || ow + OUT * LANES > tiles.output_w {
        return false;
    }
    for (r, tile_row) in tile.iter().enumerate() {
        let mut row = [0.0; OUT * LANES];
        for (s, values) in tile_row.iter().enumerate() {
            for (l, &v) in values.iter().enumerate() {
                row[OUT * l + s] = v;
            }
        }
        y[(oh + r) * tiles.output_w + ow..][..OUT * LANES].copy_from_slice(&row);
    }
    true
}

/// Writes lane `l` of the output tile `tile` to tile `t` of the plane `y`, clipped to the plane.
#[inline(always)]
fn scatter_tile(tiles: &Tiles, tile: &[[Lanes; OUT]; OUT], t: usize, l: usize, y: &mut [f32]) {
    let (oh, ow) = tiles.origin(t);
    let rows = OUT.min(tiles.output_h - oh);
    let cols = OUT.min(tiles.output_w - ow);
    for (r, tile_row) in tile.iter().enumerate().take(rows) {
        let y_row = &mut y[(oh + r) * tiles.output_w + ow..][..cols];
        for (s, y) in y_row.iter_mut().enumerate() {
            *y = tile_row[s][l];
        }
    }
}

/// `G g` on one column of three taps, per lane.
#[inline(always)]
fn weight_1d(g: &[Lanes; 3]) -> [Lanes; TILE] {
    let mut out = [[0.0; LANES]; TILE];
    for l in 0..LANES {
        let (g0, g1, g2) = (g[0][l], g[1][l], g[2][l]);
        let even = g0 + g2;
        let quarter = g0 * (1.0 / 24.0) + g2 * (1.0 / 6.0);
        out[0][l] = g0 * 0.25;
        out[1][l] = -(even + g1) * (1.0 / 6.0);
        out[2][l] = -(even - g1) * (1.0 / 6.0);
        out[3][l] = quarter + g1 * (1.0 / 12.0);
        out[4][l] = quarter - g1 * (1.0 / 12.0);
        out[5][l] = g2;
    }
    out
}

/// Calls `f(0)` to `f(5)` as straight-line code. The transforms' passes over a tile's six rows
/// or columns are written so: as loops, LLVM vectorises them across the six (with gathers and
/// scatters) rather than across the lanes inside.
#[inline(always)]
fn each_of_six(mut f: impl FnMut(usize)) {
    f(0);
    f(1);
    f(2);
    f(3);
    f(4);
    f(5);
}

/// `Bᵀ d` on one column of six inputs, per lane.
#[inline(always)]
fn input_1d(d: &[Lanes; TILE], out: &mut [Lanes; TILE]) {
    for l in 0..LANES {
        let (d0, d1, d2, d3, d4, d5) = (d[0][l], d[1][l], d[2][l], d[3][l], d[4][l], d[5][l]);
        let a = d4 - 4.0 * d2;
        let b = d3 - 4.0 * d1;
        let p = d4 - d2;
        let q = 2.0 * (d3 - d1);
        out[0][l] = 4.0 * d0 - 5.0 * d2 + d4;
        out[1][l] = a + b;
        out[2][l] = a - b;
        out[3][l] = p + q;
        out[4][l] = p - q;
        out[5][l] = 4.0 * d1 - 5.0 * d3 + d5;
    }
}

/// `Aᵀ m` on one column of six products, per lane.
#[inline(always)]
fn output_1d(m: &[Lanes; TILE], out: &mut [Lanes; OUT]) {
    for l in 0..LANES {
        let (m0, m1, m2, m3, m4, m5) = (m[0][l], m[1][l], m[2][l], m[3][l], m[4][l], m[5][l]);
        let (sum12, diff12) = (m1 + m2, m1 - m2);
        let (sum34, diff34) = (m3 + m4, m3 - m4);
        out[0][l] = m0 + sum12 + sum34;
        out[1][l] = diff12 + 2.0 * diff34;
        out[2][l] = sum12 + 4.0 * sum34;
        out[3][l] = diff12 + 8.0 * diff34 + m5;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        float::{input_f32, optional_input_f32, output_f32},
        testutil::conv_reference,
        window::{window, WindowAttributes},
    };
    use opal_kernel_support::testutil::values;
    use opal_plugin_api::testing::{ints_attr, string_attr, OwnedTensor, TestHost};

    /// Conv through [`winograd`] whatever the sizes.
    struct WinogradConv;

    impl Operator for WinogradConv {
        const OP_TYPE: &'static str = "Conv";

        fn infer(cx: &InferContext<'_>) -> KernelResult<Vec<OutputType>> {
            crate::conv::Conv::infer(cx)
        }

        fn compute(cx: &mut KernelContext<'_>) -> KernelResult<()> {
            let (x_shape, w_shape) = (cx.input(0)?.shape(), cx.input(1)?.shape());
            let attributes = WindowAttributes::read("Conv", &cx.attributes())?;
            let shape = ConvShape {
                batch: x_shape[0],
                in_channels: x_shape[1],
                out_channels: w_shape[0],
                group: 1,
                window: window("Conv", &attributes, &x_shape[2..], &w_shape[2..])?,
            };
            assert!(applies(&shape));
            let x = input_f32(cx, "Conv", 0)?;
            let w = input_f32(cx, "Conv", 1)?;
            let bias = optional_input_f32(cx, "Conv", 2)?;
            let prepared = if cx.is_constant(1) {
                let isa = opal_kernel_support::isa::current(cx);
                cx.prepared(prepared_len(isa, &shape), |out| {
                    prepare_weights(cx, isa, &shape, w, out)
                })?
            } else {
                None
            };
            let (y, sink) = output_f32(cx, 0)?;
            winograd(cx, &shape, x, w, prepared, bias, y)?;
            sink.finish("Conv", y)
        }
    }

    fn check(
        x_shape: [usize; 4],
        out_channels: usize,
        bias: bool,
        attributes: &[opal_plugin_api::Attribute<'_>],
    ) {
        let w_shape = [out_channels, x_shape[1], 3, 3];
        let x = values(x_shape.iter().product(), 1);
        let w = values(w_shape.iter().product(), 2);
        let b = values(out_channels, 3);
        let mut inputs = vec![
            OwnedTensor::f32(&x_shape, &x),
            OwnedTensor::f32(&w_shape, &w),
        ];
        if bias {
            inputs.push(OwnedTensor::f32(&[out_channels], &b));
        }
        let (shape, expected) = conv_reference(&inputs, attributes);
        // Weights transformed per call, and prepared once as constant weights.
        for (threads, constant_weights) in [(1, false), (2, false), (1, true), (2, true)] {
            let y = TestHost::new()
                .threads(threads)
                .constant_inputs(if constant_weights { 0b10 } else { 0 })
                .run::<WinogradConv>(&inputs, attributes, 1)
                .unwrap();
            assert_eq!(y[0].shape(), shape.as_slice());
            // F(4x4, 3x3) rounds more than a direct sum: errors scale with the largest output.
            let scale = expected.iter().fold(1.0f32, |m, v| m.max(v.abs()));
            for (i, (&got, &want)) in y[0].as_slice::<f32>().iter().zip(&expected).enumerate() {
                assert!(
                    (got - want).abs() <= 2e-5 * scale,
                    "{x_shape:?} element {i}: got {got}, expected {want}"
                );
            }
        }
    }

    #[test]
    fn unpadded_odd_and_tiny_images() {
        check([1, 3, 7, 9], 5, true, &[]);
        check([1, 1, 3, 3], 1, false, &[]);
        check([2, 5, 6, 6], 3, true, &[]);
        check([1, 17, 13, 11], 19, false, &[]);
    }

    #[test]
    fn symmetric_and_asymmetric_padding() {
        check([1, 4, 8, 8], 6, true, &[ints_attr("pads", &[1, 1, 1, 1])]);
        check([2, 7, 11, 5], 9, false, &[ints_attr("pads", &[1, 1, 1, 1])]);
        check([1, 3, 9, 10], 4, true, &[ints_attr("pads", &[0, 2, 1, 0])]);
        check([1, 2, 5, 4], 3, true, &[ints_attr("pads", &[2, 0, 0, 3])]);
        check([1, 3, 9, 41], 4, true, &[ints_attr("pads", &[0, 2, 1, 0])]);
        check([1, 2, 7, 70], 3, false, &[ints_attr("pads", &[1, 0, 2, 1])]);
        check(
            [2, 6, 10, 7],
            5,
            true,
            &[string_attr("auto_pad", "SAME_UPPER")],
        );
        check(
            [1, 3, 6, 9],
            2,
            false,
            &[string_attr("auto_pad", "SAME_LOWER")],
        );
    }

    #[test]
    fn many_channels_and_blocks() {
        check(
            [1, 33, 20, 18],
            40,
            true,
            &[ints_attr("pads", &[1, 1, 1, 1])],
        );
        // More tiles than one block holds.
        check(
            [2, 64, 62, 61],
            70,
            true,
            &[ints_attr("pads", &[1, 1, 1, 1])],
        );
    }
}
