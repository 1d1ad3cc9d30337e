//! GridSample over 1 to 3 spatial axes: each output position reads the input at the grid's
//! normalised coordinates (last grid axis, in x, y, z order) with nearest, linear or cubic
//! interpolation and zeros, border or reflection padding, as the ONNX reference computes it.

use crate::float::{expect_float, input_f32, output_f32};
use opal_kernel_support::check::{error, Shape};
use opal_plugin_api::prelude::*;

/// GridSample (opset 16: bilinear, nearest, bicubic on 4-D; opset 20 on: any rank).
pub struct GridSample;

const OP: &str = "GridSample";

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Nearest,
    Linear,
    Cubic,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Padding {
    Zeros,
    Border,
    Reflection,
}

struct Settings {
    mode: Mode,
    padding: Padding,
    align_corners: bool,
}

fn settings(attributes: &Attributes<'_>) -> KernelResult<Settings> {
    let mode = match attributes.string("mode", "linear")? {
        "nearest" => Mode::Nearest,
        "linear" | "bilinear" => Mode::Linear,
        "cubic" | "bicubic" => Mode::Cubic,
        other => return Err(error(OP, format_args!("unknown mode '{other}'"))),
    };
    let padding = match attributes.string("padding_mode", "zeros")? {
        "zeros" => Padding::Zeros,
        "border" => Padding::Border,
        "reflection" => Padding::Reflection,
        other => return Err(error(OP, format_args!("unknown padding_mode '{other}'"))),
    };
    Ok(Settings {
        mode,
        padding,
        align_corners: attributes.int("align_corners", 0)? != 0,
    })
}

/// Reflects `x` into `[low, high]` by its nearest border, repeatedly.
fn reflect(x: f32, low: f32, high: f32) -> f32 {
    let range = high - low;
    if range <= 0.0 {
        return low;
    }
    let fold = |distance: f32, near: f32, far: f32, toward: f32| {
        let n = (distance / range) as i64;
        let r = distance - n as f32 * range;
        if n % 2 == 0 {
            near + toward * r
        } else {
            far - toward * r
        }
    };
    if x < low {
        fold(low - x, low, high, 1.0)
    } else if x > high {
        fold(x - high, high, low, -1.0)
    } else {
        x
    }
}

/// One spatial axis of the input as the sampler sees it.
#[derive(Clone, Copy)]
struct Axis {
    size: usize,
    low: f32,
    high: f32,
}

impl Settings {
    fn axis(&self, size: usize) -> Axis {
        let (low, high) = if self.align_corners {
            (0.0, size as f32 - 1.0)
        } else {
            (-0.5, size as f32 - 0.5)
        };
        Axis { size, low, high }
    }

    /// The input coordinate of normalised `n`, padded as the mode asks.
    fn source(&self, axis: &Axis, n: f32) -> f32 {
        let size = axis.size as f32;
        let mut x = if self.align_corners {
            (n + 1.0) / 2.0 * (size - 1.0)
        } else {
            ((n + 1.0) * size - 1.0) / 2.0
        };
        if self.mode == Mode::Nearest {
            x = x.round_ties_even();
        }
        if x < axis.low || x > axis.high {
            x = match self.padding {
                Padding::Border => x.clamp(0.0, size - 1.0),
                Padding::Reflection => reflect(x, axis.low, axis.high),
                Padding::Zeros => x,
            };
        }
        x
    }

    /// The input index of integer position `i`, or `None` for a zero.
    fn pixel(&self, axis: &Axis, i: i64) -> Option<usize> {
        let last = axis.size as i64 - 1;
        match self.padding {
            Padding::Zeros => (0..=last).contains(&i).then_some(i as usize),
            Padding::Border => Some(i.clamp(0, last.max(0)) as usize),
            Padding::Reflection => {
                Some((reflect(i as f32, axis.low, axis.high) as i64).clamp(0, last.max(0)) as usize)
            }
        }
    }

    /// Up to 4 taps `(index, weight)` on one axis for coordinate `x`; returns how many.
    fn taps(&self, axis: &Axis, x: f32, taps: &mut [(Option<usize>, f32); 4]) -> usize {
        match self.mode {
            Mode::Nearest => {
                taps[0] = (self.pixel(axis, x as i64), 1.0);
                1
            }
            Mode::Linear => {
                let x0 = x.floor();
                let t = x - x0;
                taps[0] = (self.pixel(axis, x0 as i64), 1.0 - t);
                taps[1] = (self.pixel(axis, x0 as i64 + 1), t);
                2
            }
            Mode::Cubic => {
                let x0 = x.floor();
                let t = x - x0;
                let a = -0.75f32;
                let near = |d: f32| ((a + 2.0) * d - (a + 3.0)) * d * d + 1.0;
                let far = |d: f32| ((a * d - 5.0 * a) * d + 8.0 * a) * d - 4.0 * a;
                let weights = [far(t + 1.0), near(t), near(1.0 - t), far(2.0 - t)];
                for (k, (tap, w)) in taps.iter_mut().zip(weights).enumerate() {
                    *tap = (self.pixel(axis, x0 as i64 - 1 + k as i64), w);
                }
                4
            }
        }
    }
}

impl Operator for GridSample {
    const OP_TYPE: &'static str = OP;
    const SINCE_VERSION: i64 = 16;

    fn infer(cx: &InferContext<'_>) -> KernelResult<Vec<OutputType>> {
        let (x, grid) = (cx.input(0)?, cx.input(1)?);
        expect_float(OP, 0, &x)?;
        expect_float(OP, 1, &grid)?;
        settings(&cx.attributes())?;
        let dims = x.shape.len().saturating_sub(2);
        let fits = (1..=3).contains(&dims)
            && grid.shape.len() == x.shape.len()
            && (x.shape[0] < 0 || grid.shape[0] < 0 || x.shape[0] == grid.shape[0])
            && (grid.shape[grid.shape.len() - 1] < 0
                || grid.shape[grid.shape.len() - 1] == dims as i64);
        if !fits {
            return Err(error(
                OP,
                format_args!(
                    "X {} and grid {} do not fit (1 to 3 spatial axes)",
                    Shape(x.shape),
                    Shape(grid.shape)
                ),
            ));
        }
        let mut shape = x.shape[..2].to_vec();
        shape.extend(&grid.shape[1..grid.shape.len() - 1]);
        Ok(vec![OutputType::new(x.dtype, shape)])
    }

    fn compute(cx: &mut KernelContext<'_>) -> KernelResult<()> {
        let settings = settings(&cx.attributes())?;
        let x_shape = cx.input(0)?.shape();
        let grid_shape = cx.input(1)?.shape();
        let dims = x_shape.len() - 2;
        let (batch, channels) = (x_shape[0], x_shape[1]);
        // Canonical depth, height, width: leading axes of size 1 sample index 0 only.
        let mut sizes = [1usize; 3];
        sizes[3 - dims..].copy_from_slice(&x_shape[2..]);
        let axes = sizes.map(|s| settings.axis(s));
        let plane: usize = sizes.iter().product();
        let positions: usize = grid_shape[1..grid_shape.len() - 1].iter().product();
        let x = input_f32(cx, OP, 0)?;
        let grid = input_f32(cx, OP, 1)?;
        let (y, sink) = output_f32(cx, 0)?;
        let unit = [(Some(0), 1.0f32), (None, 0.0), (None, 0.0), (None, 0.0)];
        for n in 0..batch {
            for p in 0..positions {
                let point = &grid[(n * positions + p) * dims..][..dims];
                let mut taps = [unit; 3];
                let mut counts = [1usize; 3];
                for (axis, &normalised) in point.iter().rev().enumerate() {
                    let slot = 3 - dims + axis;
                    let coordinate = settings.source(&axes[slot], normalised);
                    counts[slot] = settings.taps(&axes[slot], coordinate, &mut taps[slot]);
                }
                for c in 0..channels {
                    let x = &x[(n * channels + c) * plane..][..plane];
                    let mut value = 0.0f32;
                    for &(d, wd) in &taps[0][..counts[0]] {
                        for &(h, wh) in &taps[1][..counts[1]] {
                            for &(w, ww) in &taps[2][..counts[2]] {
                                if let (Some(d), Some(h), Some(w)) = (d, h, w) {
                                    value += wd * wh * ww * x[(d * sizes[1] + h) * sizes[2] + w];
                                }
                            }
                        }
                    }
                    y[(n * channels + c) * positions + p] = value;
                }
            }
        }
        sink.finish(OP, y)
    }
}
