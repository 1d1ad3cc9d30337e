//! Convolution as matrix products: per image and group, `Y_g = W_g · col`, where `col` holds one
//! row per (input channel, kernel tap) and one column per output position (im2col), built in
//! host scratch in tiles of whole output rows so that it stays bounded; 1x1 convolutions without
//! stride or padding use the input itself as `col`. Constant weights are packed for the matrix
//! product once ([`pack_weights`]) and kept by the host with the node.
//!
//! Where the output has few positions (a late stage's 7x7 or 14x14 maps), the product runs
//! transposed, `Y_gᵀ = colᵀ · W_gᵀ` ([`Orientation::PositionRows`]): positions then fill the
//! micro-kernel's rows and channels its wider columns, where few positions would leave most of a
//! column panel empty.

use crate::{
    conv::ConvShape,
    window::{valid_outputs, Window, SPATIAL},
};
use opal_kernel_support::{
    isa::{self, Isa},
    parallel::for_each_chunk,
    sgemm::{
        pack_a_whole, pack_b_whole, packed_a_len, packed_b_len, sgemm, single_batch,
        transpose_into, transposed_pays_off, Operand, PackedA, PackedB, Product,
    },
};
use opal_plugin_api::prelude::*;

/// The most f32 values an im2col tile holds (16 MiB).
const TILE_BUDGET: usize = 1 << 20;
/// Elements of col below which im2col runs on one thread.
const IM2COL_GRAIN: usize = 1 << 13;

/// The most output positions for which a product may run transposed (measured on AVX-512's
/// 14 x 32 tiles: 49 and 196 positions ran in 0.7 and 0.9 of the time, 400 positions slower).
const MAX_POSITION_ROWS: usize = 256;
/// Which operand of a group's matrix product the output channels are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Orientation {
    /// `Y_g = W_g · col`: channels are the rows, the weights packed as A.
    ChannelRows,
    /// `Y_gᵀ = colᵀ · W_gᵀ` into scratch, then transposed into place: positions are the rows,
    /// the weights packed as B.
    PositionRows,
}

impl Orientation {
    /// The orientation for `shape` on `isa`'s tile: transposed when the output has few
    /// positions, col is one tile, and the transposed product repays its transposition
    /// ([`transposed_pays_off`]).
    fn choose(isa: Isa, shape: &ConvShape) -> Orientation {
        let (mg, positions) = (shape.out_per_group(), shape.window.output_size());
        let depth = gemm_depth(shape);
        let one_tile = depth * positions <= TILE_BUDGET;
        if positions <= MAX_POSITION_ROWS
            && one_tile
            && transposed_pays_off(isa, mg, positions, depth)
        {
            Orientation::PositionRows
        } else {
            Orientation::ChannelRows
        }
    }

    /// The length of one group's packed weights.
    fn group_len(self, isa: Isa, shape: &ConvShape) -> usize {
        let (mg, depth) = (shape.out_per_group(), gemm_depth(shape));
        match self {
            Orientation::ChannelRows => packed_a_len(isa, mg, depth),
            Orientation::PositionRows => packed_b_len(isa, depth, mg),
        }
    }
}

/// The length of the weights of a `shape` convolution packed by [`pack_weights`] for `isa`.
/// Transposed products keep one more value past their groups, so that the two layouts never
/// have the same length: the host hands prepared data back only at the length first asked for,
/// and a node whose output size changes between calls then packs the other layout in scratch
/// rather than misreading the kept one.
pub(crate) fn packed_weights_len(isa: Isa, shape: &ConvShape) -> usize {
    let orientation = Orientation::choose(isa, shape);
    let marker = usize::from(orientation == Orientation::PositionRows);
    shape.group * orientation.group_len(isa, shape) + marker
}

/// Packs each group's weights (`out_per_group x in_per_group * taps`) for [`sgemm`] on `isa`
/// (the instruction set [`isa::current`] answers), one group after the other, into `out`
/// ([`packed_weights_len`] values): as A, or transposed as B for [`Orientation::PositionRows`].
pub(crate) fn pack_weights(isa: Isa, shape: &ConvShape, w: &[f32], out: &mut [f32]) {
    let (mg, depth) = (shape.out_per_group(), gemm_depth(shape));
    let orientation = Orientation::choose(isa, shape);
    let group_len = orientation.group_len(isa, shape);
    for (g, out) in out.chunks_exact_mut(group_len.max(1)).enumerate() {
        let weights = Operand {
            data: &w[g * mg * depth..][..mg * depth],
            row_stride: depth,
            col_stride: 1,
        };
        match orientation {
            Orientation::ChannelRows => pack_a_whole(isa, &weights, mg, depth, out),
            Orientation::PositionRows => pack_b_whole(isa, &weights.transposed(), depth, mg, out),
        }
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
    let isa = isa::current(cx);
    let orientation = Orientation::choose(isa, shape);
    let window = &shape.window;
    let (in_size, out_size) = (window.input_size(), window.output_size());
    let (cg, mg) = (shape.in_per_group(), shape.out_per_group());
    let depth = gemm_depth(shape);
    let group_len = orientation.group_len(isa, shape);
    let direct = window.kernel_size() == 1 && window.is_unit_stride_unpadded();
    // Tiles of whole output rows (the innermost axis), each col at most TILE_BUDGET values
    // (always one tile for a transposed product).
    let row_len = window.axes[SPATIAL - 1].output;
    let rows = out_size / row_len;
    let rows_per_tile = (TILE_BUDGET / (depth * row_len).max(1)).clamp(1, rows);
    let tile_cols = rows_per_tile * row_len;
    let tiled = !direct && rows_per_tile < rows;
    debug_assert!(!tiled || orientation == Orientation::ChannelRows);
    let col = if direct {
        &mut [][..]
    } else {
        cx.scratch_unzeroed::<f32>(depth * tile_cols)?
    };
    let tile_out = if tiled {
        cx.scratch_unzeroed::<f32>(mg * tile_cols)?
    } else {
        &mut [][..]
    };
    let transposed = match orientation {
        Orientation::ChannelRows => &mut [][..],
        Orientation::PositionRows => cx.scratch_unzeroed::<f32>(out_size * mg)?,
    };
    for (image, y_image) in y
        .chunks_exact_mut(shape.out_channels * out_size)
        .enumerate()
    {
        for (g, y_group) in y_image.chunks_exact_mut(mg * out_size).enumerate() {
            let x_group = &x[(image * shape.in_channels + g * cg) * in_size..][..cg * in_size];
            let bias_group = bias.map(|b| &b[g * mg..][..mg]);
            let weights = Weights {
                stored: Operand {
                    data: &w[g * mg * depth..][..mg * depth],
                    row_stride: depth,
                    col_stride: 1,
                },
                packed: packed.map(|p| &p[g * group_len..][..group_len]),
                isa,
                orientation,
            };
            if direct {
                weights.multiply(cx, x_group, out_size, bias_group, transposed, y_group)?;
                continue;
            }
            for first_row in (0..rows).step_by(rows_per_tile) {
                let tile_rows = rows_per_tile.min(rows - first_row);
                let cols = tile_rows * row_len;
                let col = &mut col[..depth * cols];
                fill_col(cx, window, x_group, first_row, cols, col);
                if !tiled {
                    weights.multiply(cx, col, cols, bias_group, transposed, y_group)?;
                    continue;
                }
                let out = &mut tile_out[..mg * cols];
                weights.multiply(cx, col, cols, None, transposed, out)?;
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

/// One group's weights (`channels x depth`): as stored, and packed for the orientation of the
/// node's products when the caller has them packed.
#[derive(Clone, Copy)]
struct Weights<'a> {
    stored: Operand<'a>,
    packed: Option<&'a [f32]>,
    isa: Isa,
    orientation: Orientation,
}

impl Weights<'_> {
    /// `out = W · col + bias` for `col` of `depth x positions` values, row-major, and `out` of
    /// `channels x positions`. A transposed product is computed into `transposed` (`positions x
    /// channels` values) and then put into place.
    fn multiply(
        &self,
        cx: &KernelContext<'_>,
        col: &[f32],
        positions: usize,
        bias: Option<&[f32]>,
        transposed: &mut [f32],
        out: &mut [f32],
    ) -> KernelResult<()> {
        let depth = self.stored.row_stride;
        let channels = out.len() / positions;
        let col = Operand {
            data: col,
            row_stride: positions,
            col_stride: 1,
        };
        let (m, n, a, b, packed_a, packed_b) = match self.orientation {
            Orientation::ChannelRows => {
                let packed = self.packed.map(|data| PackedA {
                    data,
                    batch_stride: 0,
                    isa: self.isa,
                });
                (channels, positions, self.stored, col, packed, None)
            }
            Orientation::PositionRows => {
                let packed = self.packed.map(|data| PackedB {
                    data,
                    batch_stride: 0,
                    isa: self.isa,
                });
                let (a, b) = (col.transposed(), self.stored.transposed());
                (positions, channels, a, b, None, packed)
            }
        };
        let product = Product {
            m,
            n,
            k: depth,
            alpha: 1.0,
            beta: 0.0,
            a,
            b,
            batches: 1,
            batch_offsets: &single_batch,
            packed_a,
            packed_b,
        };
        match self.orientation {
            Orientation::ChannelRows => {
                sgemm(cx, &product, out)?;
                add_bias(out, positions, bias);
            }
            Orientation::PositionRows => {
                let transposed = &mut transposed[..positions * channels];
                sgemm(cx, &product, transposed)?;
                let bias = |channel: usize| bias.map_or(0.0, |b| b[channel]);
                transpose_into(transposed, out, channels, |channel, value, _| {
                    value + bias(channel)
                });
            }
        }
        Ok(())
    }
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
    // Stride-1 rows as long as the input's: a tap's rows are one shifted copy of the plane.
    let shifted_plane = ad.kernel == 1
        && ad.output == 1
        && ah.stride == 1
        && aw.stride == 1
        && aw.output == aw.input;
    for_each_chunk(
        cx,
        col,
        cols,
        IM2COL_GRAIN,
        #[inline(always)]
        |start, chunk| {
            for (r, dst) in chunk.chunks_exact_mut(cols).enumerate() {
                let row = start / cols + r;
                let (channel, tap) = (row / taps, row % taps);
                let (kd, kh, kw) = (
                    tap / (ah.kernel * aw.kernel),
                    tap / aw.kernel % ah.kernel,
                    tap % aw.kernel,
                );
                let x_channel = &x[channel * plane..][..plane];
                if shifted_plane {
                    copy_shifted_plane(window, x_channel, kh, kw, first_row, dst);
                } else {
                    copy_tap_rows(window, x_channel, [kd, kh, kw], first_row, dst);
                }
            }
        },
    );
}

/// One col row for a stride-1 2-D window whose output rows are as long as the input's: the
/// output rows whose tap row lies in the input are one contiguous copy of the plane shifted by
/// the tap's offset, after which the columns that wrapped around the row ends become zeros.
#[inline(always)]
fn copy_shifted_plane(
    window: &Window,
    x_channel: &[f32],
    kh: usize,
    kw: usize,
    first_row: usize,
    dst: &mut [f32],
) {
    let [_, ah, aw] = window.axes;
    let width = aw.input;
    let rows = dst.len() / width;
    let h_offset = ah.tap_offset(kh);
    let w_offset = aw.tap_offset(kw);
    let valid_rows = valid_outputs(ah.output, 1, h_offset, ah.input);
    let lo = valid_rows.start.clamp(first_row, first_row + rows) - first_row;
    let hi = valid_rows.end.clamp(first_row + lo, first_row + rows) - first_row;
    dst[..lo * width].fill(0.0);
    dst[hi * width..].fill(0.0);
    let block = &mut dst[lo * width..hi * width];
    if block.is_empty() {
        return;
    }
    // Flat input index of the block's first value; the block maps to source[first..first + len].
    let first = ((first_row + lo) as isize + h_offset) * width as isize + w_offset;
    let skip = (-first).clamp(0, block.len() as isize) as usize;
    let end = (first + block.len() as isize).min(x_channel.len() as isize);
    let source_start = first + skip as isize;
    let copied = (end - source_start).max(0) as usize;
    block[..skip].fill(0.0);
    if copied > 0 {
        let source = &x_channel[source_start as usize..][..copied];
        block[skip..skip + copied].copy_from_slice(source);
    }
    block[skip + copied..].fill(0.0);
    let valid = valid_outputs(aw.output, 1, w_offset, width);
    if valid.start > 0 || valid.end < width {
        for out_row in block.chunks_exact_mut(width) {
            out_row[..valid.start].fill(0.0);
            out_row[valid.end..].fill(0.0);
        }
    }
}

/// One col row for any window: the input values under tap `(kd, kh, kw)` for each output row,
/// zeros where the tap falls in the padding.
#[inline(always)]
fn copy_tap_rows(
    window: &Window,
    x_channel: &[f32],
    [kd, kh, kw]: [usize; 3],
    first_row: usize,
    dst: &mut [f32],
) {
    let [ad, ah, aw] = window.axes;
    let w_offset = aw.tap_offset(kw);
    let valid = valid_outputs(aw.output, aw.stride, w_offset, aw.input);
    let (mut od, mut oh) = (first_row / ah.output, first_row % ah.output);
    for out_row in dst.chunks_exact_mut(aw.output) {
        let id = (od * ad.stride) as isize + ad.tap_offset(kd);
        let ih = (oh * ah.stride) as isize + ah.tap_offset(kh);
        oh += 1;
        if oh == ah.output {
            (od, oh) = (od + 1, 0);
        }
        let outside = id < 0 || id >= ad.input as isize || ih < 0 || ih >= ah.input as isize;
        if outside || valid.is_empty() {
            out_row.fill(0.0);
            continue;
        }
        let x_row = &x_channel[(id as usize * ah.input + ih as usize) * aw.input..][..aw.input];
        out_row[..valid.start].fill(0.0);
        out_row[valid.end..].fill(0.0);
        let first_input = ((valid.start * aw.stride) as isize + w_offset) as usize;
        let out_row = &mut out_row[valid.clone()];
        match aw.stride {
            1 => out_row.copy_from_slice(&x_row[first_input..first_input + out_row.len()]),
            2 => gather_every::<2>(&x_row[first_input..], out_row),
            _ => {
                for (v, &x) in out_row
                    .iter_mut()
                    .zip(x_row[first_input..].iter().step_by(aw.stride))
                {
                    *v = x;
                }
            }
        }
    }
}

/// `out[i] = x[i * STRIDE]`, in fixed-step loads that vectorize; the last value may sit fewer
/// than `STRIDE` values before the end of `x`.
#[inline(always)]
fn gather_every<const STRIDE: usize>(x: &[f32], out: &mut [f32]) {
    let whole = (x.len() / STRIDE).min(out.len());
    for (v, c) in out[..whole].iter_mut().zip(x.chunks_exact(STRIDE)) {
        *v = c[0];
    }
    for (v, &x) in out[whole..]
        .iter_mut()
        .zip(x[whole * STRIDE..].iter().step_by(STRIDE))
    {
        *v = x;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        testutil::conv_reference,
        window::{window, AutoPad, WindowAttributes},
        Conv,
    };
    use opal_kernel_support::testutil::values;
    use opal_plugin_api::testing::{assert_close, int_attr, ints_attr, OwnedTensor, TestHost};

    /// Conv of `x_shape` by `w_shape` with `pads` and `strides` against the definition.
    fn check(x_shape: &[usize], w_shape: &[usize], pads: &[i64], strides: &[i64]) {
        let x = OwnedTensor::f32(x_shape, &values(x_shape.iter().product(), 1));
        let w = OwnedTensor::f32(w_shape, &values(w_shape.iter().product(), 2));
        let attributes = [ints_attr("pads", pads), ints_attr("strides", strides)];
        let inputs = [x, w];
        for threads in [1, 2] {
            let y = TestHost::new()
                .threads(threads)
                .run::<Conv>(&inputs, &attributes, 1)
                .unwrap();
            let (shape, expected) = conv_reference(&inputs, &attributes);
            assert_eq!(y[0].shape(), shape.as_slice());
            assert_close(y[0].as_slice(), &expected, 1e-4);
        }
    }

    #[test]
    fn stride_one_rows_as_long_as_the_input_are_shifted_copies_of_the_plane() {
        for (kernel, pads) in [
            ([3, 3], [1, 1, 1, 1]),
            ([5, 5], [2, 2, 2, 2]),
            ([3, 3], [0, 0, 2, 2]),
            ([3, 3], [2, 2, 0, 0]),
            ([1, 3], [0, 1, 0, 1]),
            ([3, 1], [1, 0, 1, 0]),
            ([4, 2], [3, 0, 2, 1]),
        ] {
            for (height, width) in [(1, 1), (2, 7), (6, 5), (9, 1)] {
                check(
                    &[2, 3, height, width],
                    &[4, 3, kernel[0], kernel[1]],
                    &pads,
                    &[1, 1],
                );
            }
        }
    }

    /// The ConvShape of `x_shape` by `w_shape` with `pads`, unit strides and `group`.
    fn conv_shape(x_shape: &[usize], w_shape: &[usize], pads: &[i64], group: usize) -> ConvShape {
        let attributes = WindowAttributes {
            auto_pad: AutoPad::NotSet,
            pads: Some(pads),
            strides: None,
            dilations: None,
            ceil_mode: false,
        };
        ConvShape {
            batch: x_shape[0],
            in_channels: x_shape[1],
            out_channels: w_shape[0],
            group,
            window: window("Conv", &attributes, &x_shape[2..], &w_shape[2..]).unwrap(),
        }
    }

    #[test]
    fn few_output_positions_run_transposed_on_every_instruction_set() {
        // 3x3 and 1x10 outputs with 64 or 96 channels per group, 3x3 and 1x1 (the input itself
        // as col), one and two groups, each with its bias.
        let cases = [
            ([2, 64, 3, 3], [64, 64, 3, 3], [1, 1, 1, 1], 1),
            ([1, 128, 3, 3], [128, 64, 3, 3], [1, 1, 1, 1], 2),
            ([2, 512, 3, 3], [64, 512, 1, 1], [0, 0, 0, 0], 1),
            ([1, 192, 1, 10], [96, 192, 1, 3], [0, 1, 0, 1], 1),
        ];
        for (x_shape, w_shape, pads, group) in cases {
            let (x_shape, w_shape, pads) = (&x_shape[..], &w_shape[..], &pads[..]);
            let x = OwnedTensor::f32(x_shape, &values(x_shape.iter().product(), 1));
            let w = OwnedTensor::f32(w_shape, &values(w_shape.iter().product(), 2));
            let b = OwnedTensor::f32(&[w_shape[0]], &values(w_shape[0], 3));
            let attributes = [ints_attr("pads", pads), int_attr("group", group as i64)];
            let inputs = [x, w, b];
            let (shape, expected) = conv_reference(&inputs, &attributes);
            for isa in Isa::available() {
                let conv = conv_shape(x_shape, w_shape, pads, group);
                assert_eq!(
                    Orientation::choose(isa, &conv),
                    Orientation::PositionRows,
                    "{isa} {x_shape:?} {w_shape:?}"
                );
                for (threads, constant_weights) in [(1, false), (2, false), (1, true), (2, true)] {
                    let y = TestHost::new()
                        .isa(isa)
                        .threads(threads)
                        .constant_inputs(if constant_weights { 0b110 } else { 0 })
                        .run::<Conv>(&inputs, &attributes, 1)
                        .unwrap();
                    assert_eq!(y[0].shape(), shape.as_slice());
                    assert_close(y[0].as_slice(), &expected, 1e-4);
                }
            }
        }
    }

    #[test]
    fn the_two_layouts_of_packed_weights_never_have_the_same_length() {
        // 224 channels are whole tiles of both 14 and 32 (and 6 and 16) columns: the same
        // weights at 3x3 (transposed) and at 28x28 (not) must still ask for different lengths.
        for isa in Isa::available() {
            let small = conv_shape(&[1, 64, 3, 3], &[224, 64, 3, 3], &[1, 1, 1, 1], 1);
            let large = conv_shape(&[1, 64, 28, 28], &[224, 64, 3, 3], &[1, 1, 1, 1], 1);
            assert_eq!(Orientation::choose(isa, &small), Orientation::PositionRows);
            assert_eq!(Orientation::choose(isa, &large), Orientation::ChannelRows);
            assert_ne!(
                packed_weights_len(isa, &small),
                packed_weights_len(isa, &large),
                "{isa}"
            );
        }
    }

    #[test]
    fn tiles_of_output_rows_and_strided_taps() {
        // 16 * 9 rows of 64 * 128 columns exceed the tile budget: several tiles of rows.
        check(&[1, 16, 64, 128], &[2, 16, 3, 3], &[1, 1, 1, 1], &[1, 1]);
        check(&[1, 16, 64, 128], &[2, 16, 3, 3], &[1, 0, 1, 0], &[1, 1]);
        for strides in [[2, 2], [1, 2], [2, 1], [3, 3]] {
            for (height, width) in [(7, 8), (5, 9), (2, 3)] {
                check(
                    &[1, 3, height, width],
                    &[2, 3, 3, 3],
                    &[1, 1, 1, 1],
                    &strides,
                );
                check(
                    &[1, 3, height, width],
                    &[2, 3, 2, 3],
                    &[0, 1, 1, 0],
                    &strides,
                );
            }
        }
    }
}
