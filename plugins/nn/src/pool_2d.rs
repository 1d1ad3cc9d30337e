//! MaxPool and AveragePool over 2-D planes without dilation: every output row is reduced
//! first down the kernel's rows into a padded row buffer, then across the kernel's columns,
//! in contiguous branch-free loops; padding contributes the reduction's neutral value.

use crate::window::{Axis, Window};
use opal_plugin_api::prelude::*;
use std::ops::Range;

/// Padded input columns one pass holds; wider rows are pooled in tiles of output columns.
const SPAN: usize = 512;

/// Element types MaxPool compares directly, with the value below all others.
pub(crate) trait Ordered: Element + PartialOrd + Default + Copy {
    /// The value padding takes in a maximum.
    const LOWEST: Self;

    /// The larger of two values, as one vector instruction (`max` of floats ignores NaN).
    fn maximum(self, other: Self) -> Self;
}

/// Implements [`Ordered`] for integer types.
macro_rules! ordered_integers {
    ($($t:ty),*) => {
        $(impl Ordered for $t {
            const LOWEST: Self = <$t>::MIN;

            #[inline(always)]
            fn maximum(self, other: Self) -> Self {
                Ord::max(self, other)
            }
        })*
    };
}
ordered_integers!(i8, u8, i16, u16, i32, u32, i64, u64);

impl Ordered for f32 {
    const LOWEST: Self = f32::NEG_INFINITY;

    #[inline(always)]
    fn maximum(self, other: Self) -> Self {
        self.max(other)
    }
}

impl Ordered for f64 {
    const LOWEST: Self = f64::NEG_INFINITY;

    #[inline(always)]
    fn maximum(self, other: Self) -> Self {
        self.max(other)
    }
}

/// How a pass combines two values, and what padding contributes.
trait Combine<T: Copy> {
    const NEUTRAL: T;
    fn combine(a: T, b: T) -> T;
}

/// The larger value.
struct Maximum;

impl<T: Ordered> Combine<T> for Maximum {
    const NEUTRAL: T = T::LOWEST;

    #[inline(always)]
    fn combine(a: T, b: T) -> T {
        a.maximum(b)
    }
}

/// The sum.
struct Sum;

impl Combine<f32> for Sum {
    const NEUTRAL: f32 = 0.0;

    #[inline(always)]
    fn combine(a: f32, b: f32) -> f32 {
        a + b
    }
}

/// The height and width axes of a window the 2-D path handles.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Plane2d {
    rows: Axis,
    cols: Axis,
}

impl Plane2d {
    /// The 2-D geometry of `window` when the 2-D path handles it: no dilation, a depth axis
    /// that only stacks planes (kernel 1, stride 1, no padding), padding smaller than the
    /// kernel (so no window lies wholly in padding), and kernel columns that fit a tile.
    pub(crate) fn of(window: &Window) -> Option<Self> {
        let [depth, rows, cols] = window.axes;
        let stacks = depth.kernel == 1
            && depth.stride == 1
            && depth.dilation == 1
            && depth.pad_begin == 0
            && depth.pad_end == 0;
        let plain = |a: &Axis| a.dilation == 1 && a.pad_begin < a.kernel && a.pad_end < a.kernel;
        let fits = (cols.kernel + cols.stride) * 4 <= SPAN;
        (stacks && plain(&rows) && plain(&cols) && fits).then_some(Plane2d { rows, cols })
    }

    fn input_size(&self) -> usize {
        self.rows.input * self.cols.input
    }

    fn output_size(&self) -> usize {
        self.rows.output * self.cols.output
    }
}

/// MaxPool of the stacked 2-D planes in `x` into `y`.
#[inline(always)]
pub(crate) fn max_pool_2d<T: Ordered>(plane: &Plane2d, x: &[T], y: &mut [T]) {
    for (x, y) in x
        .chunks_exact(plane.input_size())
        .zip(y.chunks_exact_mut(plane.output_size()))
    {
        pool_plane::<T, Maximum>(plane, x, y, |_, _, _| {});
    }
}

/// AveragePool of the stacked 2-D planes in `x` into `y`; with `include_pad` the divisor
/// counts the explicit padding too (but not what ceil_mode adds beyond it).
#[inline(always)]
pub(crate) fn average_pool_2d(plane: &Plane2d, include_pad: bool, x: &[f32], y: &mut [f32]) {
    let [rows, cols] = [plane.rows, plane.cols].map(|a| {
        if include_pad {
            (-(a.pad_begin as isize), (a.input + a.pad_end) as isize)
        } else {
            (0, a.input as isize)
        }
    });
    for (x, y) in x
        .chunks_exact(plane.input_size())
        .zip(y.chunks_exact_mut(plane.output_size()))
    {
        pool_plane::<f32, Sum>(plane, x, y, |row, first, tile| {
            let height = counted(&plane.rows, row, rows) as f32;
            for (column, v) in (first..).zip(tile.iter_mut()) {
                *v /= height * counted(&plane.cols, column, cols) as f32;
            }
        });
    }
}

/// How many taps of output `index`'s window on `axis` lie in `low..high`.
#[inline(always)]
fn counted(axis: &Axis, index: usize, (low, high): (isize, isize)) -> isize {
    let start = window_start(axis, index);
    (start + axis.kernel as isize).min(high) - start.max(low)
}

/// Where output `index`'s window starts on `axis` (negative in the leading padding).
#[inline(always)]
fn window_start(axis: &Axis, index: usize) -> isize {
    (index * axis.stride) as isize - axis.pad_begin as isize
}

/// The input rows or columns of output `index`'s window on `axis`.
#[inline(always)]
fn inside(axis: &Axis, index: usize) -> Range<usize> {
    let start = window_start(axis, index);
    let end = (start + axis.kernel as isize).min(axis.input as isize);
    start.max(0) as usize..end.max(0) as usize
}

/// Reduces one plane `x` into `y` with `C`, calling `finish(row, first_column, tile)` on
/// each tile of an output row once its values are reduced.
#[inline(always)]
fn pool_plane<T: Copy, C: Combine<T>>(
    plane: &Plane2d,
    x: &[T],
    y: &mut [T],
    mut finish: impl FnMut(usize, usize, &mut [T]),
) {
    let (rows, cols) = (plane.rows, plane.cols);
    let per_tile = (SPAN - cols.kernel) / cols.stride;
    let mut buffer = [C::NEUTRAL; SPAN];
    for (row, y_row) in y.chunks_exact_mut(cols.output).enumerate() {
        let taps = inside(&rows, row);
        for first in (0..cols.output).step_by(per_tile) {
            let tile = &mut y_row[first..(first + per_tile).min(cols.output)];
            let start = window_start(&cols, first);
            let buffer = &mut buffer[..tile.len() * cols.stride + cols.kernel];
            down::<T, C>(x, cols.input, taps.clone(), start, buffer);
            match cols.stride {
                1 => across::<T, C>(buffer, cols.kernel, 1, tile),
                2 => across::<T, C>(buffer, cols.kernel, 2, tile),
                3 => across::<T, C>(buffer, cols.kernel, 3, tile),
                stride => across::<T, C>(buffer, cols.kernel, stride, tile),
            }
            finish(row, first, tile);
        }
    }
}

/// Reduces input `rows` (of `width` values) into `buffer`, whose first value is input column
/// `start`; columns outside the input get the neutral value.
#[inline(always)]
fn down<T: Copy, C: Combine<T>>(
    x: &[T],
    width: usize,
    rows: Range<usize>,
    start: isize,
    buffer: &mut [T],
) {
    let len = buffer.len() as isize;
    let lo = (-start).clamp(0, len) as usize;
    let hi = (width as isize - start).clamp(lo as isize, len) as usize;
    buffer[..lo].fill(C::NEUTRAL);
    buffer[hi..].fill(C::NEUTRAL);
    let inside = &mut buffer[lo..hi];
    let first_column = (start + lo as isize).max(0) as usize;
    let count = inside.len();
    let mut rows = rows.map(|r| &x[r * width + first_column..][..count]);
    match rows.next() {
        Some(first) => inside.copy_from_slice(first),
        None => inside.fill(C::NEUTRAL),
    }
    loop {
        match (rows.next(), rows.next()) {
            (Some(a), Some(b)) => {
                for ((v, &a), &b) in inside.iter_mut().zip(a).zip(b) {
                    *v = C::combine(*v, C::combine(a, b));
                }
            }
            (Some(a), None) => {
                for (v, &a) in inside.iter_mut().zip(a) {
                    *v = C::combine(*v, a);
                }
                break;
            }
            _ => break,
        }
    }
}

/// `out[o] = C(buffer[o * stride + k] for k in 0..kernel)`; `buffer` holds at least
/// `out.len() * stride + kernel` values. Inlined so that a constant `stride` becomes fixed-step
/// (vectorizable) loads.
#[inline(always)]
fn across<T: Copy, C: Combine<T>>(buffer: &[T], kernel: usize, stride: usize, out: &mut [T]) {
    for (o, c) in out.iter_mut().zip(buffer.chunks_exact(stride)) {
        *o = c[0];
    }
    for k in 1..kernel {
        for (o, c) in out.iter_mut().zip(buffer[k..].chunks_exact(stride)) {
            *o = C::combine(*o, c[0]);
        }
    }
}
