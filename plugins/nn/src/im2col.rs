//! Convolution as matrix products: per image and group, `Y_g = W_g · col`, where `col` holds one
//! row per (input channel, kernel tap) and one column per output position (im2col), built in
//! host scratch in tiles of whole output rows so that it stays bounded; 1x1 convolutions without
//! stride or padding use the input itself as `col`. Constant weights are packed for the matrix
//! product once ([`pack_weights`]) and kept by the host with the node.

use crate::{
    conv::ConvShape,
    window::{valid_outputs, Window, SPATIAL},
};
use opal_kernel_support::{
    parallel::for_each_chunk,
    sgemm::{pack_a_whole, packed_a_len, sgemm, single_batch, Operand, Product},
};
use opal_plugin_api::prelude::*;

/// The most f32 values an im2col tile holds (16 MiB).
const TILE_BUDGET: usize = 1 << 20;
/// Elements of col below which im2col runs on one thread.
const IM2COL_GRAIN: usize = 1 << 15;

/// The length of the weights of a `shape` convolution packed by [`pack_weights`].
pub(crate) fn packed_weights_len(shape: &ConvShape) -> usize {
    shape.group * packed_a_len(shape.out_per_group(), gemm_depth(shape))
}

/// Packs each group's weights (`out_per_group x in_per_group * taps`) for [`sgemm`], one group
/// after the other, into `out` ([`packed_weights_len`] values).
pub(crate) fn pack_weights(shape: &ConvShape, w: &[f32], out: &mut [f32]) {
    let (mg, depth) = (shape.out_per_group(), gemm_depth(shape));
    let group_len = packed_a_len(mg, depth);
    for (g, out) in out.chunks_exact_mut(group_len.max(1)).enumerate() {
        let weights = Operand {
            data: &w[g * mg * depth..][..mg * depth],
            row_stride: depth,
            col_stride: 1,
        };
        pack_a_whole(&weights, mg, depth, out);
    }
}

/// The depth of each group's matrix product: input channels of a group times kernel taps.
fn gemm_depth(shape: &ConvShape) -> usize {
    shape.in_per_group() * shape.window.kernel_size()
}

/// `y = conv(x, w) + bias` for any grouping, through [`sgemm`]; `packed` is `w` as
/// [`pack_weights`] packs it, when the caller has it.
pub(crate) fn grouped_gemm(
    cx: &KernelContext<'_>,
    shape: &ConvShape,
    x: &[f32],
    w: &[f32],
    packed: Option<&[f32]>,
    bias: Option<&[f32]>,
    y: &mut [f32],
) -> KernelResult<()> {
    let window = &shape.window;
    let (in_size, out_size) = (window.input_size(), window.output_size());
    let (cg, mg) = (shape.in_per_group(), shape.out_per_group());
    let depth = gemm_depth(shape);
    let direct = window.kernel_size() == 1 && window.is_unit_stride_unpadded();
    // Tiles of whole output rows (the innermost axis), each col at most TILE_BUDGET values.
    let row_len = window.axes[SPATIAL - 1].output;
    let rows = out_size / row_len;
    let rows_per_tile = (TILE_BUDGET / (depth * row_len).max(1)).clamp(1, rows);
    let tile_cols = rows_per_tile * row_len;
    let tiled = !direct && rows_per_tile < rows;
    let col = if direct {
        &mut [][..]
    } else {
        cx.scratch::<f32>(depth * tile_cols)?
    };
    let tile_out = if tiled {
        cx.scratch::<f32>(mg * tile_cols)?
    } else {
        &mut [][..]
    };
    for (image, y_image) in y
        .chunks_exact_mut(shape.out_channels * out_size)
        .enumerate()
    {
        for (g, y_group) in y_image.chunks_exact_mut(mg * out_size).enumerate() {
            let x_group = &x[(image * shape.in_channels + g * cg) * in_size..][..cg * in_size];
            let w_group = &w[g * mg * depth..][..mg * depth];
            let bias_group = bias.map(|b| &b[g * mg..][..mg]);
            let weights = Weights {
                operand: Operand {
                    data: w_group,
                    row_stride: depth,
                    col_stride: 1,
                },
                packed: packed
                    .map(|p| &p[g * packed_a_len(mg, depth)..][..packed_a_len(mg, depth)]),
            };
            if direct {
                multiply(cx, weights, x_group, mg, depth, out_size, y_group)?;
                add_bias(y_group, out_size, bias_group);
                continue;
            }
            for first_row in (0..rows).step_by(rows_per_tile) {
                let tile_rows = rows_per_tile.min(rows - first_row);
                let cols = tile_rows * row_len;
                let col = &mut col[..depth * cols];
                fill_col(cx, window, x_group, first_row, cols, col);
                if !tiled {
                    multiply(cx, weights, col, mg, depth, cols, y_group)?;
                    add_bias(y_group, out_size, bias_group);
                    continue;
                }
                let out = &mut tile_out[..mg * cols];
                multiply(cx, weights, col, mg, depth, cols, out)?;
                let first = first_row * row_len;
                for (channel, (y_row, tile_row)) in y_group
                    .chunks_exact_mut(out_size)
                    .zip(out.chunks_exact(cols))
                    .enumerate()
                {
                    let b = bias_group.map_or(0.0, |b| b[channel]);
                    for (y, &t) in y_row[first..first + cols].iter_mut().zip(tile_row) {
                        *y = t + b;
                    }
                }
            }
        }
    }
    Ok(())
}

/// One group's weights: as stored, and packed when the caller has them packed.
#[derive(Clone, Copy)]
struct Weights<'a> {
    operand: Operand<'a>,
    packed: Option<&'a [f32]>,
}

/// `out (m x n) = a (m x k) · b (k x n)`, `b` row-major.
fn multiply(
    cx: &KernelContext<'_>,
    a: Weights<'_>,
    b: &[f32],
    m: usize,
    k: usize,
    n: usize,
    out: &mut [f32],
) -> KernelResult<()> {
    let product = Product {
        m,
        n,
        k,
        alpha: 1.0,
        beta: 0.0,
        a: a.operand,
        b: Operand {
            data: b,
            row_stride: n,
            col_stride: 1,
        },
        batches: 1,
        batch_offsets: &single_batch,
        packed_a: a.packed,
    };
    sgemm(cx, &product, out)
}

/// Adds `bias[c]` to every value of row `c` (rows of `len`).
pub(crate) fn add_bias(y: &mut [f32], len: usize, bias: Option<&[f32]>) {
    if let Some(bias) = bias {
        for (row, &b) in y.chunks_exact_mut(len).zip(bias) {
            row.iter_mut().for_each(|v| *v += b);
        }
    }
}

/// Fills `col` (`channels * kernel_size` rows of `cols` values) with the input values under each
/// kernel tap for the output positions of `cols / row_len` whole output rows from `first_row`.
fn fill_col(
    cx: &KernelContext<'_>,
    window: &Window,
    x: &[f32],
    first_row: usize,
    cols: usize,
    col: &mut [f32],
) {
    let [ad, ah, aw] = window.axes;
    let taps = window.kernel_size();
    let plane = window.input_size();
    for_each_chunk(cx, col, cols, IM2COL_GRAIN, |start, chunk| {
        for (r, dst) in chunk.chunks_exact_mut(cols).enumerate() {
            let row = start / cols + r;
            let (channel, tap) = (row / taps, row % taps);
            let (kd, kh, kw) = (
                tap / (ah.kernel * aw.kernel),
                tap / aw.kernel % ah.kernel,
                tap % aw.kernel,
            );
            let x_channel = &x[channel * plane..][..plane];
            let w_offset = aw.tap_offset(kw);
            let valid = valid_outputs(aw.output, aw.stride, w_offset, aw.input);
            for (t, out_row) in dst.chunks_exact_mut(aw.output).enumerate() {
                let output_row = first_row + t;
                let (od, oh) = (output_row / ah.output, output_row % ah.output);
                let id = (od * ad.stride) as isize + ad.tap_offset(kd);
                let ih = (oh * ah.stride) as isize + ah.tap_offset(kh);
                let outside =
                    id < 0 || id >= ad.input as isize || ih < 0 || ih >= ah.input as isize;
                if outside || valid.is_empty() {
                    out_row.fill(0.0);
                    continue;
                }
                let x_row =
                    &x_channel[(id as usize * ah.input + ih as usize) * aw.input..][..aw.input];
                out_row[..valid.start].fill(0.0);
                out_row[valid.end..].fill(0.0);
                let first_input = (valid.start * aw.stride) as isize + w_offset;
                let first_input = first_input as usize;
                if aw.stride == 1 {
                    out_row[valid.clone()]
                        .copy_from_slice(&x_row[first_input..first_input + valid.len()]);
                } else {
                    for (v, &x) in out_row[valid.clone()]
                        .iter_mut()
                        .zip(x_row[first_input..].iter().step_by(aw.stride))
                    {
                        *v = x;
                    }
                }
            }
        }
    });
}
