//! Separable interpolation for Resize and Upsample: one axis at a time, each output position
//! along the axis takes a weighted sum of a few input positions (nearest: 1, linear: 2, cubic: 4,
//! antialiased: a footprint widened by the downscale), following the ONNX reference's choice of
//! source coordinates, neighbours, edge clamping and exclude_outside. Intermediate results go
//! through two host scratch buffers.

use crate::resize::Geometry;
use opal_kernel_support::{check::error, parallel::for_each_chunk};
use opal_plugin_api::prelude::*;

/// Output values below which an axis is interpolated on one thread.
const GRAIN: usize = 1 << 14;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum NearestMode {
    RoundPreferFloor,
    RoundPreferCeil,
    Floor,
    Ceil,
    /// Floor when upsampling, ceil when downsampling (Resize-10, Upsample).
    Simple,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    Nearest(NearestMode),
    Linear,
    Cubic,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CoordinateMode {
    HalfPixel,
    HalfPixelSymmetric,
    PytorchHalfPixel,
    AlignCorners,
    Asymmetric,
    TfCropAndResize,
    TfHalfPixelForNn,
}

#[derive(Clone, Copy, Debug)]
pub(crate) struct Settings {
    pub(crate) mode: Mode,
    pub(crate) coordinates: CoordinateMode,
    pub(crate) cubic_a: f64,
    pub(crate) exclude_outside: bool,
    pub(crate) extrapolation: f32,
    pub(crate) antialias: bool,
}

/// One axis to resize.
struct AxisResize {
    input: usize,
    output: usize,
    scale: f64,
    roi: (f64, f64),
}

impl Settings {
    /// Taps per output position on an axis.
    fn taps(&self, scale: f64) -> usize {
        let shrink = scale.min(1.0);
        match self.mode {
            Mode::Nearest(_) => 1,
            Mode::Linear if self.antialias => {
                (2 - 2 * ((-1.0 / shrink).floor() as i64 + 1)) as usize
            }
            Mode::Linear => 2,
            Mode::Cubic if self.antialias => {
                (2 - 2 * ((-2.0 / shrink).floor() as i64 + 1)) as usize
            }
            Mode::Cubic => 4,
        }
    }

    /// The source coordinate of output position `o`, or `None` when it falls outside the roi
    /// (tf_crop_and_resize extrapolates).
    fn source(&self, axis: &AxisResize, o: usize) -> Option<f64> {
        let (o, input, scale) = (o as f64, axis.input as f64, axis.scale);
        let width = scale * input;
        let x = match self.coordinates {
            CoordinateMode::AlignCorners if width == 1.0 => 0.0,
            CoordinateMode::AlignCorners => o * (input - 1.0) / (width - 1.0),
            CoordinateMode::Asymmetric => o / scale,
            CoordinateMode::TfHalfPixelForNn => (o + 0.5) / scale,
            CoordinateMode::TfCropAndResize => {
                let (start, end) = axis.roi;
                let x = if width == 1.0 {
                    (end - start) * (input - 1.0) / 2.0
                } else {
                    o * (end - start) * (input - 1.0) / (width - 1.0)
                } + start * (input - 1.0);
                if x < 0.0 || x > input - 1.0 {
                    return None;
                }
                x
            }
            CoordinateMode::PytorchHalfPixel if width == 1.0 => -0.5,
            CoordinateMode::PytorchHalfPixel | CoordinateMode::HalfPixel => (o + 0.5) / scale - 0.5,
            CoordinateMode::HalfPixelSymmetric => {
                let adjustment = axis.output as f64 / width;
                let offset = input / 2.0 * (1.0 - adjustment);
                offset + (o + 0.5) / scale - 0.5
            }
        };
        Some(x)
    }

    /// Fills the first tap index and the weights of output position `o` (weights of edge-clamped
    /// taps stay on the clamped index); returns `false` when the position is extrapolated.
    fn weights(&self, axis: &AxisResize, o: usize, index: &mut [u32], weight: &mut [f32]) -> bool {
        let Some(x) = self.source(axis, o) else {
            return false;
        };
        let floor = x.floor();
        let ratio = if x == floor { 1.0 } else { x - floor };
        let n = weight.len();
        let last = axis.input as i64 - 1;
        if let Mode::Nearest(mode) = self.mode {
            let up = match mode {
                _ if ratio == 1.0 => false,
                NearestMode::RoundPreferFloor => ratio > 0.5,
                NearestMode::RoundPreferCeil => ratio >= 0.5,
                NearestMode::Floor => false,
                NearestMode::Ceil => true,
                NearestMode::Simple => axis.scale < 1.0,
            };
            let at = if ratio == 1.0 {
                x as i64
            } else {
                floor as i64 + up as i64
            };
            index[0] = at.clamp(0, last.max(0)) as u32;
            weight[0] = 1.0;
            return true;
        }
        // The n neighbours nearest to x, ties to the smaller index.
        let start = if ratio == 1.0 {
            x as i64 - (n / 2) as i64
        } else {
            floor as i64 - (n / 2) as i64 + 1
        };
        let shrink = axis.scale.min(1.0);
        let a = self.cubic_a;
        let mut total = 0.0f64;
        for (i, (idx, w)) in index.iter_mut().zip(weight.iter_mut()).enumerate() {
            let tap = start + i as i64;
            // Distance from x to this tap, in input pixels.
            let distance = tap as f64 - x;
            let value = match self.mode {
                Mode::Linear if self.antialias => (1.0 - (distance * shrink).abs()).clamp(0.0, 1.0),
                Mode::Linear => (1.0 - distance.abs()).max(0.0),
                Mode::Cubic if self.antialias => cubic(distance * shrink, a),
                _ => cubic(distance, a),
            };
            let outside = tap < 0 || tap > last;
            let value = if self.exclude_outside && outside {
                0.0
            } else {
                value
            };
            total += value;
            *idx = tap.clamp(0, last.max(0)) as u32;
            *w = value as f32;
        }
        let normalise = self.antialias || self.exclude_outside;
        if normalise && total != 0.0 {
            for w in weight.iter_mut() {
                *w = (*w as f64 / total) as f32;
            }
        }
        true
    }
}

/// The cubic convolution kernel with coefficient `a` at distance `x`.
fn cubic(x: f64, a: f64) -> f64 {
    let x = x.abs();
    if x <= 1.0 {
        ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        ((a * x - 5.0 * a) * x + 8.0 * a) * x - 4.0 * a
    } else {
        0.0
    }
}

/// Resizes `x` (dims `input`) into `y` (dims `output`).
pub(crate) fn interpolate(
    cx: &KernelContext<'_>,
    settings: &Settings,
    g: &Geometry,
    input: &[usize],
    output: &[usize],
    x: &[f32],
    y: &mut [f32],
) -> KernelResult<()> {
    let rank = input.len();
    let changes = |axis: usize| {
        let (start, end) = g.roi[axis];
        let identity = (g.scales[axis] - 1.0).abs() < 1e-9
            && input[axis] == output[axis]
            && (settings.coordinates != CoordinateMode::TfCropAndResize
                || (start.abs() < 1e-9 && (end - 1.0).abs() < 1e-9));
        !identity
    };
    let steps = (0..rank).filter(|&a| changes(a)).count();
    if y.len() != output.iter().product::<usize>() || x.len() != input.iter().product::<usize>() {
        return Err(error("Resize", "input or output sizes do not match"));
    }
    if steps == 0 || y.is_empty() {
        if !y.is_empty() {
            y.copy_from_slice(x);
        }
        return Ok(());
    }
    // Intermediate sizes: the dims resized so far.
    let mut dims = [0usize; 8];
    dims[..rank].copy_from_slice(input);
    let mut largest = 0;
    let mut done = 0;
    for axis in (0..rank).filter(|&a| changes(a)) {
        dims[axis] = output[axis];
        done += 1;
        if done < steps {
            largest = largest.max(dims[..rank].iter().product::<usize>());
        }
    }
    let buffers = [cx.scratch::<f32>(largest)?, cx.scratch::<f32>(largest)?];
    let [ping, pong] = buffers;
    dims[..rank].copy_from_slice(input);
    let mut source: &[f32] = x;
    let mut step = 0;
    let (mut ping, mut pong) = (ping, pong);
    for axis in (0..rank).filter(|&a| changes(a)) {
        let resize = AxisResize {
            input: input[axis],
            output: output[axis],
            scale: g.scales[axis],
            roi: g.roi[axis],
        };
        let outer: usize = dims[..axis].iter().product();
        let inner: usize = dims[axis + 1..rank].iter().product();
        dims[axis] = output[axis];
        step += 1;
        let size = outer * resize.output * inner;
        let taps = settings.taps(resize.scale);
        let index = cx.scratch::<u32>(resize.output * taps)?;
        let weight = cx.scratch::<f32>(resize.output * taps)?;
        let inside = cx.scratch::<bool>(resize.output)?;
        for o in 0..resize.output {
            inside[o] = settings.weights(
                &resize,
                o,
                &mut index[o * taps..][..taps],
                &mut weight[o * taps..][..taps],
            );
        }
        let table = Table {
            taps,
            index,
            weight,
            inside,
            extrapolation: settings.extrapolation,
        };
        if step == steps {
            apply(
                cx,
                &table,
                source,
                &mut y[..size],
                resize.input,
                resize.output,
                inner,
            );
            break;
        }
        let target = &mut ping[..size];
        apply(
            cx,
            &table,
            source,
            target,
            resize.input,
            resize.output,
            inner,
        );
        std::mem::swap(&mut ping, &mut pong);
        source = &pong[..size];
    }
    Ok(())
}

/// The taps of every output position along one axis.
struct Table<'a> {
    taps: usize,
    index: &'a [u32],
    weight: &'a [f32],
    inside: &'a [bool],
    extrapolation: f32,
}

/// Interpolates `src` (`[outer, input, inner]`) along its middle axis into `dst`
/// (`[outer, output, inner]`).
fn apply(
    cx: &KernelContext<'_>,
    table: &Table<'_>,
    src: &[f32],
    dst: &mut [f32],
    input: usize,
    output: usize,
    inner: usize,
) {
    let row = output * inner;
    if row == 0 {
        return;
    }
    for_each_chunk(
        cx,
        dst,
        row,
        GRAIN,
        #[inline(always)]
        |start, chunk| {
            for (b, dst) in chunk.chunks_exact_mut(row).enumerate() {
                let block = start / row + b;
                let src = &src[block * input * inner..][..input * inner];
                if inner == 1 && table.taps == 1 && input > 0 {
                    // One source value per output along the last axis (nearest): a plain gather.
                    let taps = table.index.iter().zip(table.weight).zip(table.inside);
                    for (out, ((&i, &w), &inside)) in dst.iter_mut().zip(taps) {
                        let value = w * src[(i as usize).min(input - 1)];
                        *out = if inside { value } else { table.extrapolation };
                    }
                    continue;
                }
                for (o, out) in dst.chunks_exact_mut(inner).enumerate() {
                    if !table.inside[o] {
                        out.fill(table.extrapolation);
                        continue;
                    }
                    let index = &table.index[o * table.taps..][..table.taps];
                    let weight = &table.weight[o * table.taps..][..table.taps];
                    if inner == 1 {
                        out[0] = index
                            .iter()
                            .zip(weight)
                            .map(|(&i, &w)| w * src[i as usize])
                            .sum();
                        continue;
                    }
                    let first = index[0] as usize * inner;
                    out.copy_from_slice(&src[first..first + inner]);
                    if table.taps == 1 {
                        continue;
                    }
                    out.iter_mut().for_each(|v| *v *= weight[0]);
                    for (&i, &w) in index.iter().zip(weight).skip(1) {
                        let line = &src[i as usize * inner..][..inner];
                        for (v, &s) in out.iter_mut().zip(line) {
                            *v += w * s;
                        }
                    }
                }
            }
        },
    );
}
