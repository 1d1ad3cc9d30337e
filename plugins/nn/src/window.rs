//! Sliding-window geometry shared by convolutions and pooling: the `auto_pad`, `pads`,
//! `strides`, `dilations` and `ceil_mode` attributes, output sizes, and a fixed-size
//! [`Window`] in a canonical 3-D form (1-D and 2-D windows get leading axes of size 1), so
//! every kernel walks depth, height and width.

use opal_kernel_support::check::{error, Shape};
use opal_plugin_api::prelude::*;

/// Spatial axes of the canonical form: depth, height, width.
pub(crate) const SPATIAL: usize = 3;

/// The `auto_pad` attribute.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum AutoPad {
    NotSet,
    SameUpper,
    SameLower,
    Valid,
}

impl AutoPad {
    pub(crate) fn read(op: &str, attributes: &Attributes<'_>) -> KernelResult<Self> {
        Ok(match attributes.string("auto_pad", "NOTSET")? {
            "NOTSET" | "" => AutoPad::NotSet,
            "SAME_UPPER" => AutoPad::SameUpper,
            "SAME_LOWER" => AutoPad::SameLower,
            "VALID" => AutoPad::Valid,
            other => return Err(error(op, format_args!("unknown auto_pad '{other}'"))),
        })
    }
}

/// The window attributes of a node, read once.
#[derive(Clone, Copy)]
pub(crate) struct WindowAttributes<'a> {
    pub(crate) auto_pad: AutoPad,
    pub(crate) pads: Option<&'a [i64]>,
    pub(crate) strides: Option<&'a [i64]>,
    pub(crate) dilations: Option<&'a [i64]>,
    pub(crate) ceil_mode: bool,
}

impl<'a> WindowAttributes<'a> {
    pub(crate) fn read(op: &str, attributes: &Attributes<'a>) -> KernelResult<Self> {
        Ok(WindowAttributes {
            auto_pad: AutoPad::read(op, attributes)?,
            pads: attributes.ints("pads")?,
            strides: attributes.ints("strides")?,
            dilations: attributes.ints("dilations")?,
            ceil_mode: attributes.int("ceil_mode", 0)? != 0,
        })
    }

    /// Checks the attribute lengths against `dims` spatial axes.
    fn check(&self, op: &str, dims: usize) -> KernelResult<()> {
        if dims == 0 || dims > SPATIAL {
            return Err(error(
                op,
                format_args!("{dims} spatial axes; 1 to {SPATIAL} are supported"),
            ));
        }
        let lists = [
            ("strides", self.strides, dims),
            ("dilations", self.dilations, dims),
            ("pads", self.pads, 2 * dims),
        ];
        for (name, list, expected) in lists {
            if let Some(list) = list {
                if list.len() != expected {
                    return Err(error(
                        op,
                        format_args!(
                            "'{name}' has {} values, {expected} expected for {dims} spatial axes",
                            list.len()
                        ),
                    ));
                }
                let minimum = if name == "pads" { 0 } else { 1 };
                if list.iter().any(|&v| v < minimum) {
                    return Err(error(
                        op,
                        format_args!("'{name}' {} has a value below {minimum}", Shape(list)),
                    ));
                }
            }
        }
        Ok(())
    }

    fn stride(&self, axis: usize) -> i64 {
        self.strides.map_or(1, |s| s[axis])
    }

    fn dilation(&self, axis: usize) -> i64 {
        self.dilations.map_or(1, |d| d[axis])
    }

    fn explicit_pads(&self, axis: usize, dims: usize) -> (i64, i64) {
        self.pads.map_or((0, 0), |p| (p[axis], p[axis + dims]))
    }
}

/// One spatial axis of a window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Axis {
    pub(crate) input: usize,
    pub(crate) output: usize,
    pub(crate) kernel: usize,
    pub(crate) stride: usize,
    pub(crate) dilation: usize,
    pub(crate) pad_begin: usize,
    pub(crate) pad_end: usize,
}

impl Axis {
    const UNIT: Axis = Axis {
        input: 1,
        output: 1,
        kernel: 1,
        stride: 1,
        dilation: 1,
        pad_begin: 0,
        pad_end: 0,
    };

    /// The offset of kernel tap `k` from `output_index * stride`: `k * dilation - pad_begin`.
    pub(crate) fn tap_offset(&self, k: usize) -> isize {
        (k * self.dilation) as isize - self.pad_begin as isize
    }
}

/// A window over up to three spatial axes, in canonical depth-height-width form.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Window {
    /// The node's own number of spatial axes (1 to 3).
    pub(crate) dims: usize,
    pub(crate) axes: [Axis; SPATIAL],
}

impl Window {
    pub(crate) fn input_size(&self) -> usize {
        self.axes.iter().map(|a| a.input).product()
    }

    pub(crate) fn output_size(&self) -> usize {
        self.axes.iter().map(|a| a.output).product()
    }

    pub(crate) fn kernel_size(&self) -> usize {
        self.axes.iter().map(|a| a.kernel).product()
    }

    /// Whether every axis has stride 1 and no padding.
    pub(crate) fn is_unit_stride_unpadded(&self) -> bool {
        self.axes
            .iter()
            .all(|a| a.stride == 1 && a.pad_begin == 0 && a.pad_end == 0)
    }
}

/// Output size and padding of one axis: `(output, pad_begin, pad_end)`; output -1 when the
/// input size is unknown (negative).
fn resolve_axis(
    op: &str,
    attributes: &WindowAttributes<'_>,
    axis: usize,
    dims: usize,
    input: i64,
    kernel: i64,
) -> KernelResult<(i64, i64, i64)> {
    let stride = attributes.stride(axis);
    let dilation = attributes.dilation(axis);
    if kernel < 1 {
        return Err(error(
            op,
            format_args!("kernel size {kernel} on spatial axis {axis}"),
        ));
    }
    if input < 0 {
        return Ok((-1, 0, 0));
    }
    let span = (kernel - 1) * dilation + 1;
    let (output, begin, end) = match attributes.auto_pad {
        AutoPad::NotSet => {
            let (begin, end) = attributes.explicit_pads(axis, dims);
            let room = input + begin + end - span;
            if room < 0 {
                (-1, begin, end)
            } else if attributes.ceil_mode {
                let mut output = (room + stride - 1) / stride + 1;
                // The last window must start inside the input or its leading padding.
                if (output - 1) * stride >= input + begin {
                    output -= 1;
                }
                (output, begin, end)
            } else {
                (room / stride + 1, begin, end)
            }
        }
        AutoPad::Valid => {
            let room = input - span;
            (if room < 0 { -1 } else { room / stride + 1 }, 0, 0)
        }
        AutoPad::SameUpper | AutoPad::SameLower => {
            let output = (input + stride - 1) / stride;
            let total = ((output - 1) * stride + span - input).max(0);
            let small = total / 2;
            if attributes.auto_pad == AutoPad::SameUpper {
                (output, small, total - small)
            } else {
                (output, total - small, small)
            }
        }
    };
    if output < 0 {
        return Err(error(
            op,
            format_args!(
                "spatial axis {axis} of size {input} is smaller than the kernel's span {span}"
            ),
        ));
    }
    Ok((output, begin, end))
}

/// The output's spatial dims for inference (-1 where the input's are unknown).
pub(crate) fn output_dims(
    op: &str,
    attributes: &WindowAttributes<'_>,
    input: &[i64],
    kernel: &[i64],
) -> KernelResult<Vec<i64>> {
    attributes.check(op, input.len())?;
    input
        .iter()
        .zip(kernel)
        .enumerate()
        .map(|(axis, (&i, &k))| resolve_axis(op, attributes, axis, input.len(), i, k).map(|r| r.0))
        .collect()
}

/// The window of a node over known `input` spatial dims with a `kernel` of the same rank.
pub(crate) fn window(
    op: &str,
    attributes: &WindowAttributes<'_>,
    input: &[usize],
    kernel: &[usize],
) -> KernelResult<Window> {
    let dims = input.len();
    attributes.check(op, dims)?;
    if kernel.len() != dims {
        return Err(error(
            op,
            format_args!(
                "kernel {} does not match {dims} spatial axes",
                Shape(kernel)
            ),
        ));
    }
    let mut axes = [Axis::UNIT; SPATIAL];
    for axis in 0..dims {
        let (output, begin, end) = resolve_axis(
            op,
            attributes,
            axis,
            dims,
            input[axis] as i64,
            kernel[axis] as i64,
        )?;
        axes[SPATIAL - dims + axis] = Axis {
            input: input[axis],
            output: output as usize,
            kernel: kernel[axis],
            stride: attributes.stride(axis) as usize,
            dilation: attributes.dilation(axis) as usize,
            pad_begin: begin as usize,
            pad_end: end as usize,
        };
    }
    Ok(Window { dims, axes })
}

/// The outputs `lo..hi` of `0..outputs` whose input position `o * stride + offset` lies in
/// `0..input`.
pub(crate) fn valid_outputs(
    outputs: usize,
    stride: usize,
    offset: isize,
    input: usize,
) -> std::ops::Range<usize> {
    let stride_i = stride as isize;
    let lo = if offset >= 0 {
        0
    } else {
        ((-offset) + stride_i - 1) / stride_i
    };
    let room = input as isize - offset;
    let hi = if room <= 0 {
        0
    } else {
        (room + stride_i - 1) / stride_i
    };
    let lo = (lo as usize).min(outputs);
    let hi = (hi as usize).clamp(lo, outputs);
    lo..hi
}

/// The kernel taps `lo..hi` of `0..kernel` whose input position `start + k * dilation` lies in
/// `low..high`.
pub(crate) fn valid_taps(
    kernel: usize,
    dilation: usize,
    start: isize,
    low: isize,
    high: isize,
) -> std::ops::Range<usize> {
    let d = dilation as isize;
    let lo = if start >= low {
        0
    } else {
        (low - start + d - 1) / d
    };
    let hi = if high <= start {
        0
    } else {
        (high - start + d - 1) / d
    };
    let lo = (lo as usize).min(kernel);
    let hi = (hi as usize).clamp(lo, kernel);
    lo..hi
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attrs(
        auto_pad: AutoPad,
        pads: Option<&'static [i64]>,
        strides: Option<&'static [i64]>,
    ) -> WindowAttributes<'static> {
        WindowAttributes {
            auto_pad,
            pads,
            strides,
            dilations: None,
            ceil_mode: false,
        }
    }

    #[test]
    fn same_padding_splits_the_odd_pad() {
        let upper = window(
            "T",
            &attrs(AutoPad::SameUpper, None, Some(&[2, 2])),
            &[5, 6],
            &[3, 3],
        )
        .unwrap();
        assert_eq!(
            (
                upper.axes[1].output,
                upper.axes[1].pad_begin,
                upper.axes[1].pad_end
            ),
            (3, 1, 1)
        );
        assert_eq!(
            (
                upper.axes[2].output,
                upper.axes[2].pad_begin,
                upper.axes[2].pad_end
            ),
            (3, 0, 1)
        );
        let lower = window(
            "T",
            &attrs(AutoPad::SameLower, None, Some(&[2, 2])),
            &[5, 6],
            &[3, 3],
        )
        .unwrap();
        assert_eq!((lower.axes[2].pad_begin, lower.axes[2].pad_end), (1, 0));
        assert_eq!(lower.axes[0], Axis::UNIT);
    }

    #[test]
    fn ceil_mode_drops_windows_starting_in_the_end_padding() {
        let mut a = attrs(AutoPad::NotSet, None, Some(&[2]));
        a.ceil_mode = true;
        assert_eq!(output_dims("T", &a, &[4], &[2]).unwrap(), [2]);
        assert_eq!(output_dims("T", &a, &[5], &[2]).unwrap(), [3]);
        assert_eq!(output_dims("T", &a, &[-1], &[2]).unwrap(), [-1]);
    }

    #[test]
    fn valid_ranges_clip_to_the_input() {
        assert_eq!(valid_outputs(5, 1, -1, 5), 1..5);
        assert_eq!(valid_outputs(5, 2, 1, 6), 0..3);
        assert_eq!(valid_outputs(3, 1, 7, 5), 0..0);
        assert_eq!(valid_taps(3, 1, -1, 0, 4), 1..3);
        assert_eq!(valid_taps(3, 2, 1, 0, 4), 0..2);
        assert_eq!(valid_taps(3, 1, 5, 0, 4), 0..0);
    }
}
