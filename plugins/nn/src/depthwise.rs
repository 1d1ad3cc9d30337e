//! Depthwise convolution (one input channel per group, any channel multiplier) as a direct loop,
//! plane by plane, with the fused epilogue applied to each plane while it is in cache.
//!
//! 1-D and 2-D windows run on a [`Band`]: a few rows of the input, padded and split by column
//! phase of the stride, copied onto the stack so that every kernel tap reads a contiguous run of
//! it. Each tap then adds into a register tile of output (four rows of sixteen, or as many
//! values in fewer rows on smaller planes), and each output is written once. Other windows
//! (3-D, or rows too wide for the band) run [`plane_conv`], which adds each tap into whole
//! output rows.

use crate::{
    conv::ConvShape,
    window::{valid_outputs, valid_taps, Axis, Window},
};
use opal_kernel_support::{
    epilogue::{Epilogue, PlaneTemps},
    fast_math::mul_add,
    isa::{self, has_fma},
    parallel::for_each_chunk,
};
use opal_plugin_api::prelude::*;
use std::ops::Range;

/// Output elements below which planes are computed on one thread.
const GRAIN: usize = 1 << 14;
/// Outputs of one row a register holds (one AVX-512 register, two AVX2 ones).
const LANES: usize = 16;
/// Values of the band on the stack: 32 KiB, about an L1 data cache.
const BAND_CAPACITY: usize = 8192;
/// The most kernel taps the band path takes (9 x 9 and below).
const MAX_TAPS: usize = 81;
/// Values past a tile's columns that [`Band::square_tiles`] takes with them from a band row:
/// room for the furthest tap of a 5 x 5 kernel.
const WINDOW_EXTRA: usize = 8;

/// `y = epilogue(conv(x, w) + bias)` for a convolution with one input channel per group.
pub(crate) fn depthwise(
    cx: &KernelContext<'_>,
    shape: &ConvShape,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    epilogue: Option<&Epilogue<'_>>,
    y: &mut [f32],
) {
    let window = &shape.window;
    let (in_size, out_size, taps) = (
        window.input_size(),
        window.output_size(),
        window.kernel_size(),
    );
    let multiplier = shape.out_per_group();
    let isa = isa::current(cx);
    let fma = has_fma(isa);
    let band = Band::fit(window);
    for_each_chunk(
        cx,
        y,
        out_size,
        GRAIN,
        #[inline(always)]
        |start, chunk| {
            let mut band_values = [0f32; BAND_CAPACITY];
            let mut temps = PlaneTemps::default();
            for (p, y_plane) in chunk.chunks_exact_mut(out_size).enumerate() {
                let plane = start / out_size + p;
                let (image, channel) = (plane / shape.out_channels, plane % shape.out_channels);
                let input_channel = channel / multiplier;
                let x_plane =
                    &x[(image * shape.in_channels + input_channel) * in_size..][..in_size];
                let w_plane = &w[channel * taps..][..taps];
                let b = bias.map_or(0.0, |b| b[channel]);
                match (&band, fma) {
                    (Some(band), true) => {
                        band.convolve::<true>(x_plane, w_plane, b, &mut band_values, y_plane)
                    }
                    (Some(band), false) => {
                        band.convolve::<false>(x_plane, w_plane, b, &mut band_values, y_plane)
                    }
                    (None, _) => {
                        y_plane.fill(b);
                        plane_conv(window, x_plane, w_plane, y_plane);
                    }
                }
                if let Some(epilogue) = epilogue {
                    epilogue.apply_to_plane(isa, y_plane, plane, shape.out_channels, &mut temps);
                }
            }
        },
    );
}

/// A band of padded input rows for a 1-D or 2-D window, on the stack. Input row `r` of the
/// band, column phase `p` (of the stride `s`), holds padded columns `p, p + s, p + 2s, …`, so
/// output column `o`'s tap at padded column `o * s + t` is value `o + t / s` of phase `t % s`:
/// consecutive outputs read consecutive values. Rows and columns past the input are zeros.
struct Band {
    height: Axis,
    width: Axis,
    /// Output rows computed together: 4 (sixteen columns each), or all the rows of a smaller
    /// plane (1 x 64, 2 x 32 or 3 x 16).
    tile_rows: usize,
    /// Values of one phase of one band row: the outputs rounded up to whole tiles, plus room
    /// for the furthest tap.
    phase_len: usize,
    /// Output rows of each band, a multiple of `tile_rows`.
    out_rows: usize,
    /// Input rows of each band.
    in_rows: usize,
    /// Per kernel tap (row-major), its offset in the band from the value a tile starts at.
    tap_offsets: [usize; MAX_TAPS],
}

impl Band {
    /// The band for `window`, or `None` when the band path does not take it: a depth axis, more
    /// than [`MAX_TAPS`] taps, or rows too wide for [`BAND_CAPACITY`].
    fn fit(window: &Window) -> Option<Band> {
        let [depth, height, width] = window.axes;
        if depth.kernel != 1 || depth.input != 1 || depth.output != 1 {
            return None;
        }
        if height.kernel * width.kernel > MAX_TAPS || height.output == 0 || width.output == 0 {
            return None;
        }
        // Planes of fewer than four rows take tiles of their height, as wide as four rows'.
        let tile_rows = height.output.min(4);
        let tile_cols = if tile_rows == 3 {
            LANES
        } else {
            4 * LANES / tile_rows
        };
        // Room past the last tile for its furthest tap, and for a whole window of
        // `square_tiles`.
        let furthest = (width.kernel - 1) * width.dilation / width.stride;
        let phase_len = width.output.next_multiple_of(tile_cols) + furthest.max(WINDOW_EXTRA);
        let row_len = width.stride * phase_len;
        let span = (height.kernel - 1) * height.dilation + 1;
        let in_rows = |out_rows: usize| (out_rows - 1) * height.stride + span;
        let mut out_rows = height.output.next_multiple_of(tile_rows);
        while in_rows(out_rows) * row_len > BAND_CAPACITY {
            if out_rows == tile_rows {
                return None;
            }
            out_rows = (out_rows / 2).next_multiple_of(tile_rows);
        }
        let mut tap_offsets = [0; MAX_TAPS];
        for kh in 0..height.kernel {
            for kw in 0..width.kernel {
                let (row, column) = (kh * height.dilation, kw * width.dilation);
                let phase = column % width.stride;
                tap_offsets[kh * width.kernel + kw] =
                    (row * width.stride + phase) * phase_len + column / width.stride;
            }
        }
        Some(Band {
            height,
            width,
            tile_rows,
            phase_len,
            out_rows,
            in_rows: in_rows(out_rows),
            tap_offsets,
        })
    }

    /// `y = conv(x, w) + bias` for one plane, through `band`'s first values.
    #[inline(always)]
    fn convolve<const FMA: bool>(
        &self,
        x: &[f32],
        w: &[f32],
        bias: f32,
        band: &mut [f32; BAND_CAPACITY],
        y: &mut [f32],
    ) {
        let band = &mut band[..self.in_rows * self.width.stride * self.phase_len];
        for first in (0..self.height.output).step_by(self.out_rows) {
            self.fill(x, first, band);
            let rows = self.out_rows.min(self.height.output - first);
            let y_band = &mut y[first * self.width.output..][..rows * self.width.output];
            match self.tile_rows {
                1 => self.tiles_of::<FMA, 1, { 4 * LANES }>(band, first, w, bias, y_band),
                2 => self.tiles_of::<FMA, 2, { 2 * LANES }>(band, first, w, bias, y_band),
                3 => self.tiles_of::<FMA, 3, LANES>(band, first, w, bias, y_band),
                _ => self.tiles_of::<FMA, 4, LANES>(band, first, w, bias, y_band),
            }
        }
    }

    /// The band's output rows (from output row `first`) in tiles of `ROWS x COLS`: by
    /// [`Band::square_tiles`] for the kernels it is made for, else by [`Band::tiles`].
    #[inline(always)]
    fn tiles_of<const FMA: bool, const ROWS: usize, const COLS: usize>(
        &self,
        band: &[f32],
        first: usize,
        w: &[f32],
        bias: f32,
        y: &mut [f32],
    ) {
        let (height, width) = (&self.height, &self.width);
        let square = height.kernel == width.kernel
            && height.stride == width.stride
            && height.dilation == 1
            && width.dilation == 1;
        match (square, width.kernel, width.stride) {
            (true, 3, 1) => self.square_tiles::<FMA, 3, 1, ROWS, COLS>(band, first, w, bias, y),
            (true, 3, 2) => self.square_tiles::<FMA, 3, 2, ROWS, COLS>(band, first, w, bias, y),
            (true, 5, 1) => self.square_tiles::<FMA, 5, 1, ROWS, COLS>(band, first, w, bias, y),
            (true, 5, 2) => self.square_tiles::<FMA, 5, 2, ROWS, COLS>(band, first, w, bias, y),
            _ => self.tiles::<FMA, ROWS, COLS>(band, first, w, bias, y),
        }
    }

    /// The kernel rows that read inside the input for some of the `rows` output rows from
    /// output row `first`: the others read only padding, and tiles skip them.
    #[inline(always)]
    fn kernel_rows(&self, first: usize, rows: usize) -> Range<usize> {
        let height = &self.height;
        // Output row `o`'s kernel row `k` reads input row `o * stride + k * dilation - pad`.
        let last = first + rows - 1;
        let start = height
            .pad_begin
            .saturating_sub(last * height.stride)
            .div_ceil(height.dilation);
        let end = (height.input + height.pad_begin)
            .saturating_sub(first * height.stride)
            .div_ceil(height.dilation)
            .min(height.kernel);
        start.min(end)..end
    }

    /// Copies the input rows under output rows `first..` into the band, padded and split by
    /// phase.
    #[inline(always)]
    fn fill(&self, x: &[f32], first: usize, band: &mut [f32]) {
        let (height, width) = (&self.height, &self.width);
        let (input_w, stride) = (width.input, width.stride);
        let row_len = stride * self.phase_len;
        for (r, band_row) in band.chunks_exact_mut(row_len).enumerate() {
            band_row.fill(0.0);
            let Some(ih) = (first * height.stride + r)
                .checked_sub(height.pad_begin)
                .filter(|&ih| ih < height.input)
            else {
                continue;
            };
            let x_row = &x[ih * input_w..][..input_w];
            // Input column `i` is padded column `i + pad`: value `(i + pad) / s` of phase
            // `(i + pad) % s`. Columns past the band feed no output.
            let columns = input_w.min((self.phase_len * stride).saturating_sub(width.pad_begin));
            match stride {
                1 => band_row[width.pad_begin..][..columns].copy_from_slice(&x_row[..columns]),
                2 => {
                    let (even, odd) = band_row.split_at_mut(self.phase_len);
                    let phases = if width.pad_begin % 2 == 0 {
                        [even, odd]
                    } else {
                        [odd, even]
                    };
                    let [first_phase, second_phase] = phases;
                    let start = width.pad_begin / 2;
                    // Input columns 0, 2, 4, … go to the first phase from `start`; 1, 3, 5, …
                    // to the second from `start` or `start + 1`.
                    let second_start = width.pad_begin.div_ceil(2);
                    let pairs = columns / 2;
                    for (j, pair) in x_row[..2 * pairs].chunks_exact(2).enumerate() {
                        first_phase[start + j] = pair[0];
                        second_phase[second_start + j] = pair[1];
                    }
                    if columns % 2 == 1 {
                        first_phase[start + pairs] = x_row[columns - 1];
                    }
                }
                _ => {
                    for (i, &v) in x_row[..columns].iter().enumerate() {
                        let column = i + width.pad_begin;
                        band_row[column % stride * self.phase_len + column / stride] = v;
                    }
                }
            }
        }
    }

    /// The band's output rows for a `K x K` kernel at stride `S` on both axes, without
    /// dilation, `ROWS x COLS` outputs at a time: a tile's band rows are taken once as windows
    /// of a length known at compile time, so its taps load without bounds checks, and a value
    /// loaded once serves every output row of the tile that reads it.
    #[inline(always)]
    fn square_tiles<
        const FMA: bool,
        const K: usize,
        const S: usize,
        const ROWS: usize,
        const COLS: usize,
    >(
        &self,
        band: &[f32],
        first: usize,
        w: &[f32],
        bias: f32,
        y: &mut [f32],
    ) {
        let w = &w[..K * K];
        self.for_each_tile(
            first,
            bias,
            y,
            #[inline(always)]
            |origin, kernel_rows, tile: &mut [[f32; COLS]; ROWS]| {
                if kernel_rows == (0..K) {
                    // A loop of constant length, unrolled: loads of the same value merge.
                    for kh in 0..K {
                        self.add_kernel_row::<FMA, K, S, ROWS, COLS>(band, origin, w, kh, tile);
                    }
                } else {
                    for kh in kernel_rows {
                        self.add_kernel_row::<FMA, K, S, ROWS, COLS>(band, origin, w, kh, tile);
                    }
                }
            },
        );
    }

    /// Adds kernel row `kh` of a `K x K` kernel at stride `S` into a tile whose first value is
    /// at `origin` of the band (see [`Band::square_tiles`]).
    #[inline(always)]
    fn add_kernel_row<
        const FMA: bool,
        const K: usize,
        const S: usize,
        const ROWS: usize,
        const COLS: usize,
    >(
        &self,
        band: &[f32],
        origin: usize,
        w: &[f32],
        kh: usize,
        tile: &mut [[f32; COLS]; ROWS],
    ) {
        let (phase_len, row_len) = (self.phase_len, S * self.phase_len);
        for kw in 0..K {
            let weight = w[kh * K + kw];
            let (phase, skip) = (kw % S, kw / S);
            for (r, tile_row) in tile.iter_mut().enumerate() {
                // Band row `r * S + kh` of the tile, phase `phase`, from its first column: a
                // window of constant length, so the load below needs no bounds check.
                let start = origin + (r * S + kh) * row_len + phase * phase_len;
                let window = &band[start..][..COLS + WINDOW_EXTRA];
                for (acc, &v) in tile_row.iter_mut().zip(&window[skip..][..COLS]) {
                    *acc = mul_add::<FMA>(weight, v, *acc);
                }
            }
        }
    }

    /// Computes the band's output rows, `ROWS x COLS` outputs at a time: each tap adds
    /// `weight * band` into the tile, and the tile is written once.
    #[inline(always)]
    fn tiles<const FMA: bool, const ROWS: usize, const COLS: usize>(
        &self,
        band: &[f32],
        first: usize,
        w: &[f32],
        bias: f32,
        y: &mut [f32],
    ) {
        let taps = &self.tap_offsets[..w.len()];
        let kernel_w = self.width.kernel;
        let row_step = self.row_step();
        let reach = (ROWS - 1) * row_step + COLS;
        self.for_each_tile(
            first,
            bias,
            y,
            #[inline(always)]
            |origin, kernel_rows, tile: &mut [[f32; COLS]; ROWS]| {
                let row_taps = kernel_rows.start * kernel_w..kernel_rows.end * kernel_w;
                for (&weight, &offset) in w[row_taps.clone()].iter().zip(&taps[row_taps]) {
                    // One bounds check per tap: the rows' values are within `reach` of it.
                    let span = &band[origin + offset..][..reach];
                    for (r, tile_row) in tile.iter_mut().enumerate() {
                        let values: &[f32; COLS] = span[r * row_step..][..COLS].try_into().unwrap();
                        for (acc, &v) in tile_row.iter_mut().zip(values) {
                            *acc = mul_add::<FMA>(weight, v, *acc);
                        }
                    }
                }
            },
        );
    }

    /// Band values between the starts of consecutive output rows.
    fn row_step(&self) -> usize {
        self.height.stride * self.width.stride * self.phase_len
    }

    /// Computes the band's output rows (`y`, from output row `first`) `ROWS x COLS` at a time:
    /// each tile starts at `bias`, `add(origin, kernel_rows, tile)` adds the taps of the kernel
    /// rows that read inside the input, with the tile's first value at `origin` of the band,
    /// and the tile is written once.
    #[inline(always)]
    fn for_each_tile<const ROWS: usize, const COLS: usize>(
        &self,
        first: usize,
        bias: f32,
        y: &mut [f32],
        add: impl Fn(usize, Range<usize>, &mut [[f32; COLS]; ROWS]),
    ) {
        let out_w = self.width.output;
        let rows = y.len() / out_w;
        let row_step = self.row_step();
        for first_row in (0..rows).step_by(ROWS) {
            for column in (0..out_w).step_by(COLS) {
                let mut tile = [[bias; COLS]; ROWS];
                let kernel_rows = self.kernel_rows(first + first_row, ROWS);
                add(first_row * row_step + column, kernel_rows, &mut tile);
                store_tile(&tile, y, first_row, column, out_w);
            }
        }
    }
}

/// Writes the rows of `tile` that are outputs (rows `first_row..` of `y`, `out_w` wide) from
/// `column`, as far as the row goes.
#[inline(always)]
fn store_tile<const ROWS: usize, const COLS: usize>(
    tile: &[[f32; COLS]; ROWS],
    y: &mut [f32],
    first_row: usize,
    column: usize,
    out_w: usize,
) {
    let (rows, width) = (y.len() / out_w, COLS.min(out_w - column));
    for (r, values) in tile.iter().enumerate().take(rows - first_row) {
        let y_tile = &mut y[(first_row + r) * out_w + column..][..width];
        // Whole tiles as fixed-size copies: a copy of a length known only at run time is a
        // call to `memcpy`.
        match <&mut [f32; COLS]>::try_from(&mut *y_tile) {
            Ok(whole) => *whole = *values,
            Err(_) => y_tile.copy_from_slice(&values[..width]),
        }
    }
}

/// Adds the convolution of one input plane with one kernel into `y`, tap by tap over whole
/// output rows: any window, any stride.
#[inline(always)]
fn plane_conv(window: &Window, x: &[f32], w: &[f32], y: &mut [f32]) {
    let [ad, ah, aw] = window.axes;
    for od in 0..ad.output {
        let start_d = (od * ad.stride) as isize - ad.pad_begin as isize;
        for oh in 0..ah.output {
            let start_h = (oh * ah.stride) as isize - ah.pad_begin as isize;
            let y_row = &mut y[(od * ah.output + oh) * aw.output..][..aw.output];
            for kd in valid_taps(ad.kernel, ad.dilation, start_d, 0, ad.input as isize) {
                let id = (start_d + (kd * ad.dilation) as isize) as usize;
                for kh in valid_taps(ah.kernel, ah.dilation, start_h, 0, ah.input as isize) {
                    let ih = (start_h + (kh * ah.dilation) as isize) as usize;
                    let x_row = &x[(id * ah.input + ih) * aw.input..][..aw.input];
                    let w_row = &w[(kd * ah.kernel + kh) * aw.kernel..][..aw.kernel];
                    for (kw, &weight) in w_row.iter().enumerate() {
                        let offset = aw.tap_offset(kw);
                        let valid = valid_outputs(aw.output, aw.stride, offset, aw.input);
                        if valid.is_empty() {
                            continue;
                        }
                        let first = ((valid.start * aw.stride) as isize + offset) as usize;
                        let y_valid = &mut y_row[valid.clone()];
                        if aw.stride == 1 {
                            for (y, &x) in y_valid.iter_mut().zip(&x_row[first..]) {
                                *y += weight * x;
                            }
                        } else {
                            for (y, &x) in y_valid
                                .iter_mut()
                                .zip(x_row[first..].iter().step_by(aw.stride))
                            {
                                *y += weight * x;
                            }
                        }
                    }
                }
            }
        }
    }
}
