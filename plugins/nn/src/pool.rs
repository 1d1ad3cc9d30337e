//! MaxPool (with the optional Indices output and storage_order), AveragePool
//! (count_include_pad) and LpPool over 1 to 3 spatial axes, with auto_pad, pads, strides,
//! dilations and ceil_mode. Planes (one per image and channel) are pooled in parallel.
//! MaxPool without Indices and AveragePool over 1-D and 2-D windows (or 3-D ones with a depth
//! kernel of 1) without dilation take the row-wise path of [`crate::pool_2d`].

use crate::{
    float::{as_f32, expect_float, output_f32},
    pool_2d::{average_pool_2d, max_pool_2d, Ordered, Plane2d},
    window::{output_dims, valid_taps, window, Axis, Window, WindowAttributes},
};
use opal_kernel_support::{
    check::{error, Shape},
    parallel::for_each_chunk,
};
use opal_plugin_api::{prelude::*, AttrValue};

/// Output elements below which planes are pooled on one thread.
const GRAIN: usize = 1 << 14;

/// MaxPool of every opset; Indices (output 1) from opset 8.
pub struct MaxPool;
/// AveragePool of every opset.
pub struct AveragePool;
/// LpPool of every opset (`p` an int, or a float in opset 1).
pub struct LpPool;

/// The kernel of a pooling node (`kernel_shape`, required) and the input's spatial dims.
fn kernel_shape<'a>(op: &str, attributes: &Attributes<'a>) -> KernelResult<&'a [i64]> {
    attributes
        .ints("kernel_shape")?
        .ok_or_else(|| error(op, "the 'kernel_shape' attribute is required"))
}

/// Output types of a pooling node: Y of X's dtype, and Indices (i64) when there are 2 outputs.
fn infer_pool(cx: &InferContext<'_>, op: &str) -> KernelResult<Vec<OutputType>> {
    let x = cx.input(0)?;
    if x.shape.len() < 3 {
        return Err(error(
            op,
            format_args!(
                "X {} needs a batch, a channel and spatial axes",
                Shape(x.shape)
            ),
        ));
    }
    let kernel = kernel_shape(op, &cx.attributes())?;
    if kernel.len() != x.shape.len() - 2 {
        return Err(error(
            op,
            format_args!(
                "kernel_shape {} does not match X {}",
                Shape(kernel),
                Shape(x.shape)
            ),
        ));
    }
    let attributes = WindowAttributes::read(op, &cx.attributes())?;
    let mut shape = x.shape[..2].to_vec();
    shape.extend(output_dims(op, &attributes, &x.shape[2..], kernel)?);
    let mut outputs = vec![OutputType::new(x.dtype, shape.clone())];
    if cx.output_count() > 1 {
        outputs.push(OutputType::new(DType::I64, shape));
    }
    Ok(outputs)
}

/// The window of a pooling node at compute time.
fn pool_window(cx: &KernelContext<'_>, op: &str) -> KernelResult<Window> {
    let attributes = cx.attributes();
    let kernel = kernel_shape(op, &attributes)?;
    let mut taps = [0usize; 3];
    if kernel.len() > taps.len() || kernel.iter().any(|&k| k < 1) {
        return Err(error(
            op,
            format_args!("kernel_shape {} is not supported", Shape(kernel)),
        ));
    }
    for (t, &k) in taps.iter_mut().zip(kernel) {
        *t = k as usize;
    }
    let x = cx.input(0)?;
    window(
        op,
        &WindowAttributes::read(op, &attributes)?,
        &x.shape()[2..],
        &taps[..kernel.len()],
    )
}

/// Where one output's window starts on an axis.
fn start(axis: &Axis, output: usize) -> isize {
    (output * axis.stride) as isize - axis.pad_begin as isize
}

/// Taps of an axis inside the input.
fn inside(axis: &Axis, start: isize) -> std::ops::Range<usize> {
    valid_taps(axis.kernel, axis.dilation, start, 0, axis.input as isize)
}

/// Calls `f(output_index, taps_d, taps_h, taps_w, starts)` for every output of a window.
fn for_each_output(
    window: &Window,
    mut f: impl FnMut(usize, [std::ops::Range<usize>; 3], [isize; 3]),
) {
    let [ad, ah, aw] = window.axes;
    let mut index = 0;
    for od in 0..ad.output {
        let sd = start(&ad, od);
        for oh in 0..ah.output {
            let sh = start(&ah, oh);
            for ow in 0..aw.output {
                let sw = start(&aw, ow);
                f(
                    index,
                    [inside(&ad, sd), inside(&ah, sh), inside(&aw, sw)],
                    [sd, sh, sw],
                );
                index += 1;
            }
        }
    }
}

/// The input offset (within a plane) of tap `(kd, kh, kw)` of the window starting at `starts`.
fn input_offset(window: &Window, starts: [isize; 3], taps: [usize; 3]) -> usize {
    let [ad, ah, aw] = window.axes;
    let d = (starts[0] + (taps[0] * ad.dilation) as isize) as usize;
    let h = (starts[1] + (taps[1] * ah.dilation) as isize) as usize;
    let w = (starts[2] + (taps[2] * aw.dilation) as isize) as usize;
    (d * ah.input + h) * aw.input + w
}

/// The maximum of one plane's windows into `y`, and the flat input index of each maximum into
/// `indices` when given (`plane_base` is the plane's first flat index).
#[inline(always)]
fn max_plane<T: Ordered>(
    window: &Window,
    x: &[T],
    y: &mut [T],
    mut indices: Option<&mut [i64]>,
    plane_base: usize,
    column_major: bool,
) {
    let [ad, ah, _] = window.axes;
    for_each_output(window, |o, [td, th, tw], starts| {
        let mut best: Option<(T, usize)> = None;
        for kd in td.clone() {
            for kh in th.clone() {
                for kw in tw.clone() {
                    let at = input_offset(window, starts, [kd, kh, kw]);
                    let v = x[at];
                    if best.is_none_or(|(b, _)| v > b) {
                        best = Some((v, at));
                    }
                }
            }
        }
        let (value, at) = best.map_or((T::default(), None), |(v, at)| (v, Some(at)));
        y[o] = value;
        if let Some(indices) = indices.as_deref_mut() {
            indices[o] = at.map_or(-1, |at| {
                let at = if column_major {
                    // (d, h, w) row-major -> d + h * D + w * D * H.
                    let (w, rest) = (at % window.axes[2].input, at / window.axes[2].input);
                    let (h, d) = (rest % ah.input, rest / ah.input);
                    d + h * ad.input + w * ad.input * ah.input
                } else {
                    at
                };
                (plane_base + at) as i64
            });
        }
    });
}

/// MaxPool of planes of element type `T` into `y` (and `indices` when the node has them).
fn max_pool<T: Ordered>(
    cx: &KernelContext<'_>,
    window: &Window,
    x: &[T],
    y: &mut [T],
    indices: Option<&mut [i64]>,
    column_major: bool,
) {
    let (in_size, out_size) = (window.input_size(), window.output_size());
    if out_size == 0 {
        return;
    }
    match indices {
        Some(indices) => {
            for (plane, (y, i)) in y
                .chunks_exact_mut(out_size)
                .zip(indices.chunks_exact_mut(out_size))
                .enumerate()
            {
                let x = &x[plane * in_size..][..in_size];
                max_plane(window, x, y, Some(i), plane * in_size, column_major);
            }
        }
        None => {
            let plane_2d = Plane2d::of(window);
            for_each_chunk(
                cx,
                y,
                out_size,
                GRAIN,
                #[inline(always)]
                |start, chunk| {
                    for (p, y) in chunk.chunks_exact_mut(out_size).enumerate() {
                        let plane = start / out_size + p;
                        let x = &x[plane * in_size..][..in_size];
                        match &plane_2d {
                            Some(plane_2d) => max_pool_2d(plane_2d, x, y),
                            None => max_plane(window, x, y, None, 0, false),
                        }
                    }
                },
            )
        }
    }
}

/// MaxPool of a tensor whose elements MaxPool compares directly.
fn max_pool_typed<T: Ordered>(cx: &mut KernelContext<'_>, window: &Window) -> KernelResult<()> {
    let x = cx.input(0)?.as_slice::<T>()?;
    let column_major = cx.attributes().int("storage_order", 0)? == 1;
    let indices = optional_indices(cx)?;
    let y = cx.output(0)?.as_slice_mut::<T>()?;
    max_pool(cx, window, x, y, indices, column_major);
    Ok(())
}

/// Output 1 (Indices) when the node has it.
fn optional_indices<'a>(cx: &mut KernelContext<'a>) -> KernelResult<Option<&'a mut [i64]>> {
    if cx.output_count() > 1 {
        Ok(Some(cx.output(1)?.as_slice_mut::<i64>()?))
    } else {
        Ok(None)
    }
}

impl Operator for MaxPool {
    const OP_TYPE: &'static str = "MaxPool";

    fn infer(cx: &InferContext<'_>) -> KernelResult<Vec<OutputType>> {
        let x = cx.input(0)?;
        let supported = matches!(
            x.dtype,
            DType::F32 | DType::F64 | DType::F16 | DType::BF16 | DType::I8 | DType::U8
        );
        if !supported {
            return Err(error(
                Self::OP_TYPE,
                format_args!("X has dtype {}, which MaxPool does not support", x.dtype),
            ));
        }
        infer_pool(cx, Self::OP_TYPE)
    }

    fn compute(cx: &mut KernelContext<'_>) -> KernelResult<()> {
        let op = Self::OP_TYPE;
        let window = pool_window(cx, op)?;
        match cx.input(0)?.dtype() {
            DType::F32 => max_pool_typed::<f32>(cx, &window),
            DType::F64 => max_pool_typed::<f64>(cx, &window),
            DType::I8 => max_pool_typed::<i8>(cx, &window),
            DType::U8 => max_pool_typed::<u8>(cx, &window),
            _ => {
                // f16 and bf16: every value converts to f32 and back exactly.
                let x = as_f32(cx, op, cx.input(0)?)?;
                let column_major = cx.attributes().int("storage_order", 0)? == 1;
                let indices = optional_indices(cx)?;
                let (y, sink) = output_f32(cx, 0)?;
                max_pool(cx, &window, x, y, indices, column_major);
                sink.finish(op, y)
            }
        }
    }
}

/// How AveragePool and LpPool reduce a window.
#[derive(Clone, Copy)]
enum Reduce {
    /// The mean; with `include_pad`, the divisor counts the explicit padding too.
    Mean { include_pad: bool },
    /// `(sum |x|^p)^(1/p)`.
    Lp { p: f32 },
}

/// Average or Lp pooling of f32 planes.
fn reduce_pool(cx: &mut KernelContext<'_>, op: &str, reduce: Reduce) -> KernelResult<()> {
    let window = pool_window(cx, op)?;
    let x = as_f32(cx, op, cx.input(0)?)?;
    let (y, sink) = output_f32(cx, 0)?;
    let (in_size, out_size) = (window.input_size(), window.output_size());
    let plane_2d = match reduce {
        Reduce::Mean { include_pad } => Plane2d::of(&window).map(|p| (p, include_pad)),
        Reduce::Lp { .. } => None,
    };
    if out_size > 0 {
        for_each_chunk(
            cx,
            y,
            out_size,
            GRAIN,
            #[inline(always)]
            |start, chunk| {
                for (p, y) in chunk.chunks_exact_mut(out_size).enumerate() {
                    let plane = start / out_size + p;
                    let x = &x[plane * in_size..][..in_size];
                    match &plane_2d {
                        Some((plane_2d, include_pad)) => {
                            average_pool_2d(plane_2d, *include_pad, x, y)
                        }
                        None => reduce_plane(&window, x, y, reduce),
                    }
                }
            },
        );
    }
    sink.finish(op, y)
}

#[inline(always)]
fn reduce_plane(window: &Window, x: &[f32], y: &mut [f32], reduce: Reduce) {
    let axes = window.axes;
    for_each_output(window, |o, [td, th, tw], starts| {
        let mut sum = 0.0f32;
        for kd in td.clone() {
            for kh in th.clone() {
                for kw in tw.clone() {
                    let v = x[input_offset(window, starts, [kd, kh, kw])];
                    sum += match reduce {
                        Reduce::Mean { .. } => v,
                        Reduce::Lp { p: 2.0 } => v * v,
                        Reduce::Lp { p: 1.0 } => v.abs(),
                        Reduce::Lp { p } => v.abs().powf(p),
                    };
                }
            }
        }
        y[o] = match reduce {
            Reduce::Mean { include_pad } => {
                let count: usize = if include_pad {
                    (0..3)
                        .map(|a| {
                            let axis = &axes[a];
                            valid_taps(
                                axis.kernel,
                                axis.dilation,
                                starts[a],
                                -(axis.pad_begin as isize),
                                (axis.input + axis.pad_end) as isize,
                            )
                            .len()
                        })
                        .product()
                } else {
                    td.len() * th.len() * tw.len()
                };
                if count == 0 {
                    f32::NAN
                } else {
                    sum / count as f32
                }
            }
            Reduce::Lp { p: 2.0 } => sum.sqrt(),
            Reduce::Lp { p: 1.0 } => sum,
            Reduce::Lp { p } => sum.powf(1.0 / p),
        };
    });
}

impl Operator for AveragePool {
    const OP_TYPE: &'static str = "AveragePool";

    fn infer(cx: &InferContext<'_>) -> KernelResult<Vec<OutputType>> {
        expect_float(Self::OP_TYPE, 0, &cx.input(0)?)?;
        infer_pool(cx, Self::OP_TYPE)
    }

    fn compute(cx: &mut KernelContext<'_>) -> KernelResult<()> {
        let include_pad = cx.attributes().int("count_include_pad", 0)? != 0;
        reduce_pool(cx, Self::OP_TYPE, Reduce::Mean { include_pad })
    }
}

/// LpPool's `p`: an int from opset 2, a float in opset 1; default 2.
pub(crate) fn lp_exponent(op: &str, attributes: &Attributes<'_>) -> KernelResult<f32> {
    match attributes.get("p") {
        None => Ok(2.0),
        Some(AttrValue::Int(p)) => Ok(p as f32),
        Some(AttrValue::Float(p)) => Ok(p),
        Some(_) => Err(error(op, "attribute 'p' must be a number")),
    }
}

impl Operator for LpPool {
    const OP_TYPE: &'static str = "LpPool";

    fn infer(cx: &InferContext<'_>) -> KernelResult<Vec<OutputType>> {
        expect_float(Self::OP_TYPE, 0, &cx.input(0)?)?;
        infer_pool(cx, Self::OP_TYPE)
    }

    fn compute(cx: &mut KernelContext<'_>) -> KernelResult<()> {
        let p = lp_exponent(Self::OP_TYPE, &cx.attributes())?;
        reduce_pool(cx, Self::OP_TYPE, Reduce::Lp { p })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::window::{AutoPad, WindowAttributes};
    use opal_kernel_support::testutil::values;
    use opal_plugin_api::testing::{assert_close, int_attr, ints_attr, OwnedTensor, TestHost};

    fn grid() -> OwnedTensor {
        OwnedTensor::f32(
            &[1, 1, 3, 4],
            &[1.0, 5.0, 2.0, 0.0, 4.0, 3.0, 8.0, 6.0, 7.0, 9.0, 1.0, 2.0],
        )
    }

    #[test]
    fn max_pool_returns_indices_in_both_storage_orders() {
        let attributes = [
            ints_attr("kernel_shape", &[2, 2]),
            ints_attr("strides", &[1, 2]),
        ];
        let y = TestHost::new()
            .run::<MaxPool>(&[grid()], &attributes, 2)
            .unwrap();
        assert_close(y[0].as_slice(), &[5.0, 8.0, 9.0, 8.0], 0.0);
        assert_eq!(y[1].to_vec::<i64>(), [1, 6, 9, 6]);
        let mut column_major = attributes.to_vec();
        column_major.push(int_attr("storage_order", 1));
        let y = TestHost::new()
            .run::<MaxPool>(&[grid()], &column_major, 2)
            .unwrap();
        // (h, w) -> h + w * 3.
        assert_eq!(y[1].to_vec::<i64>(), [3, 7, 5, 7]);
    }

    #[test]
    fn average_pool_divides_by_the_counted_window() {
        let base = [
            ints_attr("kernel_shape", &[2, 2]),
            ints_attr("pads", &[1, 1, 0, 0]),
            ints_attr("strides", &[2, 2]),
        ];
        let y = TestHost::new()
            .run::<AveragePool>(&[grid()], &base, 1)
            .unwrap();
        assert_close(y[0].as_slice(), &[1.0, 3.5, 5.5, 5.25], 1e-6);
        let mut include = base.to_vec();
        include.push(int_attr("count_include_pad", 1));
        let y = TestHost::new()
            .run::<AveragePool>(&[grid()], &include, 1)
            .unwrap();
        assert_close(y[0].as_slice(), &[0.25, 1.75, 2.75, 5.25], 1e-6);
    }

    #[test]
    fn ceil_mode_adds_a_partial_window() {
        let attributes = [
            ints_attr("kernel_shape", &[2, 2]),
            ints_attr("strides", &[2, 3]),
            int_attr("ceil_mode", 1),
        ];
        let y = TestHost::new()
            .run::<LpPool>(&[grid()], &attributes, 1)
            .unwrap();
        assert_eq!(y[0].shape(), [1, 1, 2, 2]);
        let expected = [
            (1.0f32 + 25.0 + 16.0 + 9.0).sqrt(),
            (0.0f32 + 36.0).sqrt(),
            (49.0f32 + 81.0).sqrt(),
            2.0,
        ];
        assert_close(y[0].as_slice(), &expected, 1e-6);
    }

    /// Every 2-D window of `input` spatial dims and `kernel` the 2-D path takes, over strides,
    /// paddings (each side below the kernel) and both ceil modes.
    fn windows_2d(input: [usize; 2], kernel: [usize; 2]) -> Vec<Window> {
        let mut windows = Vec::new();
        let [kh, kw] = kernel.map(|k| k as i64);
        for strides in [[1, 1], [2, 2], [1, 2], [3, 1], [2, 3], [4, 4]] {
            for pads in [[0, 0, 0, 0], [1, 1, 1, 1], [0, 1, 1, 0], [2, 0, 0, 2]]
                .into_iter()
                .chain([[kh - 1, kw - 1, kh - 1, kw - 1]])
            {
                if pads[0].max(pads[2]) >= kh || pads[1].max(pads[3]) >= kw {
                    continue;
                }
                for ceil_mode in [false, true] {
                    let attributes = WindowAttributes {
                        auto_pad: AutoPad::NotSet,
                        pads: Some(&pads),
                        strides: Some(&strides),
                        dilations: None,
                        ceil_mode,
                    };
                    if let Ok(w) = window("T", &attributes, &input, &kernel) {
                        windows.push(w);
                    }
                }
            }
        }
        windows
    }

    #[test]
    fn the_2d_path_matches_the_generic_path() {
        let mut checked = 0;
        let inputs = [[1, 1], [1, 7], [5, 1], [4, 6], [7, 9], [13, 11], [3, 1100]];
        let kernels = [[1, 1], [1, 3], [2, 2], [3, 3], [3, 2], [5, 5], [4, 1]];
        for (i, input) in inputs.into_iter().enumerate() {
            for kernel in kernels {
                for window in windows_2d(input, kernel) {
                    let plane = Plane2d::of(&window).expect("the 2-D path takes the window");
                    let (in_size, out_size) = (window.input_size(), window.output_size());
                    // Values on a coarse grid, so that maxima tie and sums are exact.
                    let x: Vec<f32> = values(in_size, i as u64 + 1)
                        .iter()
                        .map(|v| (v * 8.0).round())
                        .collect();
                    let mut expected = vec![0.0f32; out_size];
                    let mut actual = vec![f32::NAN; out_size];
                    max_plane(&window, &x, &mut expected, None, 0, false);
                    max_pool_2d(&plane, &x, &mut actual);
                    assert_eq!(actual, expected, "MaxPool {window:?}");
                    let bytes: Vec<u8> = x.iter().map(|&v| (v + 8.0) as u8).collect();
                    let mut expected_bytes = vec![0u8; out_size];
                    let mut actual_bytes = vec![0u8; out_size];
                    max_plane(&window, &bytes, &mut expected_bytes, None, 0, false);
                    max_pool_2d(&plane, &bytes, &mut actual_bytes);
                    assert_eq!(actual_bytes, expected_bytes, "u8 MaxPool {window:?}");
                    for include_pad in [false, true] {
                        reduce_plane(&window, &x, &mut expected, Reduce::Mean { include_pad });
                        average_pool_2d(&plane, include_pad, &x, &mut actual);
                        assert_close(&actual, &expected, 1e-6);
                    }
                    checked += 1;
                }
            }
        }
        assert!(checked > 500, "only {checked} windows checked");
    }

    #[test]
    fn the_2d_path_pools_stacked_depth_planes_and_leaves_the_rest_to_the_generic_path() {
        let x = OwnedTensor::f32(&[1, 2, 3, 4, 5], &values(120, 7));
        let stacked = [
            ints_attr("kernel_shape", &[1, 3, 2]),
            ints_attr("pads", &[0, 1, 0, 0, 2, 1]),
            ints_attr("strides", &[1, 2, 1]),
        ];
        let dilated = [
            ints_attr("kernel_shape", &[1, 2, 2]),
            ints_attr("dilations", &[1, 2, 1]),
        ];
        for attributes in [&stacked[..], &dilated[..]] {
            let max = TestHost::new()
                .run::<MaxPool>(std::slice::from_ref(&x), attributes, 1)
                .unwrap();
            let with_indices = TestHost::new()
                .run::<MaxPool>(std::slice::from_ref(&x), attributes, 2)
                .unwrap();
            assert_eq!(max[0].shape(), with_indices[0].shape());
            assert_close(max[0].as_slice(), with_indices[0].as_slice(), 0.0);
        }
        let window = |attributes: &[opal_plugin_api::Attribute<'_>], kernel: &[usize]| {
            let attributes = opal_plugin_api::Attributes::new(attributes);
            let attributes = WindowAttributes::read("T", &attributes).unwrap();
            super::window("T", &attributes, &[3, 4, 5], kernel).unwrap()
        };
        assert!(Plane2d::of(&window(&stacked, &[1, 3, 2])).is_some());
        assert!(Plane2d::of(&window(&dilated, &[1, 2, 2])).is_none());
    }
}
