//! Resize (opsets 10, and 11 on with roi, scales or sizes, axes and keep_aspect_ratio_policy)
//! and Upsample (opsets 7 to 9): the output sizes and per-axis scales. The interpolation itself
//! is in [`crate::interpolate`].

use crate::{
    float::{as_f32, expect_float, output_f32},
    interpolate::{interpolate, CoordinateMode, Mode, NearestMode, Settings},
};
use opal_kernel_support::{
    broadcast::MAX_RANK,
    check::{check_rank, error, normalize_axis, Shape},
};
use opal_plugin_api::prelude::*;

/// Resize of opset 11 on: inputs X, roi, scales, sizes.
pub struct Resize;
/// Resize of opset 10: inputs X and scales, asymmetric coordinates.
pub struct ResizeV10;
/// Upsample of opsets 7 to 9: scales as an attribute (7, 8) or input 1 (9).
pub struct Upsample;

/// Output dims and per-axis scales (f64, as the reference computes them) of a resize.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Geometry {
    pub(crate) rank: usize,
    pub(crate) input: [i64; MAX_RANK],
    pub(crate) output: [i64; MAX_RANK],
    pub(crate) scales: [f64; MAX_RANK],
    /// Region of interest per axis, in normalised input coordinates (tf_crop_and_resize).
    pub(crate) roi: [(f64, f64); MAX_RANK],
}

/// What a node gives to size its output.
enum Target<'a> {
    Scales(&'a [f32]),
    Sizes(&'a [i64]),
    Unknown,
}

/// The `axes` attribute (opset 18) as a list of axes of a tensor of `rank`, in a fixed array.
fn axes_list(
    op: &str,
    attributes: &Attributes<'_>,
    rank: usize,
) -> KernelResult<([usize; MAX_RANK], usize)> {
    let mut axes = [0usize; MAX_RANK];
    match attributes.ints("axes")? {
        None => {
            for (i, a) in axes.iter_mut().enumerate().take(rank) {
                *a = i;
            }
            Ok((axes, rank))
        }
        Some(list) => {
            if list.len() > rank {
                return Err(error(
                    op,
                    format_args!("axes {} exceed rank {rank}", Shape(list)),
                ));
            }
            for (slot, &axis) in axes.iter_mut().zip(list) {
                *slot = normalize_axis(op, axis, rank)?;
            }
            Ok((axes, list.len()))
        }
    }
}

/// Output dims (-1 where unknown) and scales of a resize of `input` (dims of -1 unknown).
fn geometry(
    op: &str,
    attributes: &Attributes<'_>,
    input: &[i64],
    target: Target<'_>,
    roi: Option<&[f32]>,
) -> KernelResult<Geometry> {
    let rank = input.len();
    check_rank(op, rank)?;
    let mut g = Geometry {
        rank,
        input: [1; MAX_RANK],
        output: [1; MAX_RANK],
        scales: [1.0; MAX_RANK],
        roi: [(0.0, 1.0); MAX_RANK],
    };
    g.input[..rank].copy_from_slice(input);
    g.output[..rank].copy_from_slice(input);
    let (axes, count) = axes_list(op, attributes, rank)?;
    let axes = &axes[..count];
    if let Some(roi) = roi.filter(|r| !r.is_empty()) {
        if roi.len() != 2 * count {
            return Err(error(
                op,
                format_args!("roi holds {} values, {} expected", roi.len(), 2 * count),
            ));
        }
        for (i, &axis) in axes.iter().enumerate() {
            g.roi[axis] = (roi[i] as f64, roi[count + i] as f64);
        }
    }
    match target {
        Target::Unknown => {
            for &axis in axes {
                g.output[axis] = -1;
            }
        }
        Target::Scales(scales) => {
            if scales.len() != count {
                return Err(error(
                    op,
                    format_args!("scales hold {} values for {count} axes", scales.len()),
                ));
            }
            for (&axis, &scale) in axes.iter().zip(scales) {
                if scale <= 0.0 || !scale.is_finite() {
                    return Err(error(op, format_args!("scale {scale} is not positive")));
                }
                g.scales[axis] = scale as f64;
                if input[axis] >= 0 {
                    g.output[axis] = (scale as f64 * input[axis] as f64) as i64;
                } else {
                    g.output[axis] = -1;
                }
            }
        }
        Target::Sizes(sizes) => {
            if sizes.len() != count || sizes.iter().any(|&s| s < 0) {
                return Err(error(
                    op,
                    format_args!("sizes {} do not give {count} sizes", Shape(sizes)),
                ));
            }
            let policy = attributes.string("keep_aspect_ratio_policy", "stretch")?;
            let ratio = |axis: usize, size: i64| size as f64 / input[axis] as f64;
            let known = axes.iter().all(|&a| input[a] > 0);
            let uniform = match policy {
                "stretch" => None,
                "not_larger" | "not_smaller" if !known => Some(f64::NAN),
                "not_larger" => axes
                    .iter()
                    .zip(sizes)
                    .map(|(&a, &s)| ratio(a, s))
                    .reduce(f64::min),
                "not_smaller" => axes
                    .iter()
                    .zip(sizes)
                    .map(|(&a, &s)| ratio(a, s))
                    .reduce(f64::max),
                other => {
                    return Err(error(
                        op,
                        format_args!("unknown keep_aspect_ratio_policy '{other}'"),
                    ))
                }
            };
            for (&axis, &size) in axes.iter().zip(sizes) {
                match uniform {
                    None => {
                        g.output[axis] = size;
                        g.scales[axis] = ratio(axis, size);
                    }
                    Some(scale) if scale.is_nan() => g.output[axis] = -1,
                    Some(scale) => {
                        g.scales[axis] = scale;
                        g.output[axis] = (scale * input[axis] as f64 + 0.5) as i64;
                    }
                }
                if input[axis] < 0 {
                    g.output[axis] = if uniform.is_none() { size } else { -1 };
                }
            }
        }
    }
    Ok(g)
}

/// The interpolation settings of a Resize node of opset 11 on.
fn settings(op: &str, attributes: &Attributes<'_>) -> KernelResult<Settings> {
    let mode = match attributes.string("mode", "nearest")? {
        "nearest" => Mode::Nearest(
            match attributes.string("nearest_mode", "round_prefer_floor")? {
                "round_prefer_floor" => NearestMode::RoundPreferFloor,
                "round_prefer_ceil" => NearestMode::RoundPreferCeil,
                "floor" => NearestMode::Floor,
                "ceil" => NearestMode::Ceil,
                other => return Err(error(op, format_args!("unknown nearest_mode '{other}'"))),
            },
        ),
        "linear" => Mode::Linear,
        "cubic" => Mode::Cubic,
        other => return Err(error(op, format_args!("unknown mode '{other}'"))),
    };
    let coordinates = match attributes.string("coordinate_transformation_mode", "half_pixel")? {
        "half_pixel" => CoordinateMode::HalfPixel,
        "half_pixel_symmetric" => CoordinateMode::HalfPixelSymmetric,
        "pytorch_half_pixel" => CoordinateMode::PytorchHalfPixel,
        "align_corners" => CoordinateMode::AlignCorners,
        "asymmetric" => CoordinateMode::Asymmetric,
        "tf_crop_and_resize" => CoordinateMode::TfCropAndResize,
        "tf_half_pixel_for_nn" => CoordinateMode::TfHalfPixelForNn,
        other => {
            return Err(error(
                op,
                format_args!("unknown coordinate_transformation_mode '{other}'"),
            ))
        }
    };
    Ok(Settings {
        mode,
        coordinates,
        cubic_a: attributes.float("cubic_coeff_a", -0.75)? as f64,
        exclude_outside: attributes.int("exclude_outside", 0)? != 0,
        extrapolation: attributes.float("extrapolation_value", 0.0)?,
        antialias: attributes.int("antialias", 0)? != 0,
    })
}

/// The settings of Resize-10 and Upsample: asymmetric coordinates, nearest rounding as
/// onnxruntime's "simple" mode.
fn legacy_settings(op: &str, attributes: &Attributes<'_>) -> KernelResult<Settings> {
    let mode = match attributes.string("mode", "nearest")? {
        "nearest" => Mode::Nearest(NearestMode::Simple),
        "linear" | "bilinear" => Mode::Linear,
        other => return Err(error(op, format_args!("unknown mode '{other}'"))),
    };
    Ok(Settings {
        mode,
        coordinates: CoordinateMode::Asymmetric,
        cubic_a: -0.75,
        exclude_outside: false,
        extrapolation: 0.0,
        antialias: false,
    })
}

/// The output type from a geometry.
fn output_type(dtype: DType, g: &Geometry) -> Vec<OutputType> {
    vec![OutputType::new(dtype, g.output[..g.rank].to_vec())]
}

/// The target of a node at inference: scales at `scales_index`, sizes at `sizes_index`.
fn infer_target<'a>(
    cx: &InferContext<'a>,
    scales_index: usize,
    sizes_index: Option<usize>,
) -> KernelResult<Target<'a>> {
    if let Some(scales) = cx.optional_input(scales_index)? {
        if scales.shape != [0] {
            return Ok(scales
                .value_as::<f32>()?
                .map_or(Target::Unknown, Target::Scales));
        }
    }
    if let Some(index) = sizes_index {
        if let Some(sizes) = cx.optional_input(index)? {
            return Ok(sizes
                .value_as::<i64>()?
                .map_or(Target::Unknown, Target::Sizes));
        }
    }
    Err(error("Resize", "neither scales nor sizes is given"))
}

/// Resizes input 0 into output 0 with the geometry and settings.
fn run(
    cx: &mut KernelContext<'_>,
    op: &str,
    g: &Geometry,
    settings: &Settings,
) -> KernelResult<()> {
    let x = as_f32(cx, op, cx.input(0)?)?;
    let (y, sink) = output_f32(cx, 0)?;
    let mut input = [0usize; MAX_RANK];
    let mut output = [0usize; MAX_RANK];
    for axis in 0..g.rank {
        input[axis] = g.input[axis] as usize;
        output[axis] = usize::try_from(g.output[axis])
            .map_err(|_| error(op, "the output size is not known"))?;
    }
    interpolate(cx, settings, g, &input[..g.rank], &output[..g.rank], x, y)?;
    sink.finish(op, y)
}

/// The roi (input 1) as f32 values, when given.
fn roi<'a>(cx: &KernelContext<'a>, op: &str) -> KernelResult<Option<&'a [f32]>> {
    cx.optional_input(1).map(|r| as_f32(cx, op, r)).transpose()
}

impl Operator for Resize {
    const OP_TYPE: &'static str = "Resize";
    const SINCE_VERSION: i64 = 11;
    const VALUE_INPUTS: &'static [usize] = &[2, 3];

    fn infer(cx: &InferContext<'_>) -> KernelResult<Vec<OutputType>> {
        let op = Self::OP_TYPE;
        let x = cx.input(0)?;
        expect_float(op, 0, &x)?;
        settings(op, &cx.attributes())?;
        let target = infer_target(cx, 2, Some(3))?;
        let g = geometry(op, &cx.attributes(), x.shape, target, None)?;
        Ok(output_type(x.dtype, &g))
    }

    fn compute(cx: &mut KernelContext<'_>) -> KernelResult<()> {
        let op = Self::OP_TYPE;
        let settings = settings(op, &cx.attributes())?;
        let shape = cx.input(0)?.shape();
        let mut input = [0i64; MAX_RANK];
        for (i, &d) in input.iter_mut().zip(shape) {
            *i = d as i64;
        }
        let scales = cx.optional_input(2).filter(|s| !s.is_empty());
        let target = match (scales, cx.optional_input(3)) {
            (Some(scales), _) => Target::Scales(scales.f32()?),
            (None, Some(sizes)) => Target::Sizes(sizes.as_slice::<i64>()?),
            (None, None) => return Err(error(op, "neither scales nor sizes is given")),
        };
        let roi = roi(cx, op)?;
        let g = geometry(op, &cx.attributes(), &input[..shape.len()], target, roi)?;
        run(cx, op, &g, &settings)
    }
}

/// Inference of Resize-10 and Upsample-9, whose scales are input 1.
fn infer_scales_input(cx: &InferContext<'_>, op: &str) -> KernelResult<Vec<OutputType>> {
    let x = cx.input(0)?;
    expect_float(op, 0, &x)?;
    legacy_settings(op, &cx.attributes())?;
    let target = infer_target(cx, 1, None)?;
    let g = geometry(op, &cx.attributes(), x.shape, target, None)?;
    Ok(output_type(x.dtype, &g))
}

/// Compute of Resize-10 and Upsample: scales from input 1, or the attribute (Upsample-7).
fn compute_legacy(cx: &mut KernelContext<'_>, op: &str) -> KernelResult<()> {
    let settings = legacy_settings(op, &cx.attributes())?;
    let shape = cx.input(0)?.shape();
    let mut input = [0i64; MAX_RANK];
    for (i, &d) in input.iter_mut().zip(shape) {
        *i = d as i64;
    }
    let scales = match cx.optional_input(1) {
        Some(scales) => scales.f32()?,
        None => cx
            .attributes()
            .floats("scales")?
            .ok_or_else(|| error(op, "the scales are missing"))?,
    };
    let g = geometry(
        op,
        &cx.attributes(),
        &input[..shape.len()],
        Target::Scales(scales),
        None,
    )?;
    run(cx, op, &g, &settings)
}

impl Operator for ResizeV10 {
    const OP_TYPE: &'static str = "Resize";
    const SINCE_VERSION: i64 = 10;
    const UNTIL_VERSION: i64 = 10;
    const VALUE_INPUTS: &'static [usize] = &[1];

    fn infer(cx: &InferContext<'_>) -> KernelResult<Vec<OutputType>> {
        infer_scales_input(cx, Self::OP_TYPE)
    }

    fn compute(cx: &mut KernelContext<'_>) -> KernelResult<()> {
        compute_legacy(cx, Self::OP_TYPE)
    }
}

impl Operator for Upsample {
    const OP_TYPE: &'static str = "Upsample";
    const SINCE_VERSION: i64 = 7;
    const UNTIL_VERSION: i64 = 9;
    const VALUE_INPUTS: &'static [usize] = &[1];

    fn infer(cx: &InferContext<'_>) -> KernelResult<Vec<OutputType>> {
        let op = Self::OP_TYPE;
        if cx.optional_input(1)?.is_some() {
            return infer_scales_input(cx, op);
        }
        let x = cx.input(0)?;
        expect_float(op, 0, &x)?;
        legacy_settings(op, &cx.attributes())?;
        let scales = cx
            .attributes()
            .floats("scales")?
            .ok_or_else(|| error(op, "the scales are missing"))?;
        let g = geometry(op, &cx.attributes(), x.shape, Target::Scales(scales), None)?;
        Ok(output_type(x.dtype, &g))
    }

    fn compute(cx: &mut KernelContext<'_>) -> KernelResult<()> {
        compute_legacy(cx, Self::OP_TYPE)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opal_plugin_api::testing::{assert_close, string_attr, OwnedTensor, TestHost};

    fn x() -> OwnedTensor {
        OwnedTensor::f32(&[1, 1, 2, 2], &[1.0, 2.0, 3.0, 4.0])
    }

    #[test]
    fn nearest_upsampling_repeats_pixels() {
        let scales = OwnedTensor::f32(&[4], &[1.0, 1.0, 2.0, 1.5]);
        let y = TestHost::new()
            .run::<Resize>(&[x(), OwnedTensor::absent(), scales], &[], 1)
            .unwrap();
        assert_eq!(y[0].shape(), [1, 1, 4, 3]);
        assert_close(
            y[0].as_slice(),
            &[1.0, 1.0, 2.0, 1.0, 1.0, 2.0, 3.0, 3.0, 4.0, 3.0, 3.0, 4.0],
            0.0,
        );
    }

    #[test]
    fn linear_align_corners_hits_the_corners() {
        let sizes = OwnedTensor::i64(&[4], &[1, 1, 3, 3]);
        let attributes = [
            string_attr("mode", "linear"),
            string_attr("coordinate_transformation_mode", "align_corners"),
        ];
        let inputs = [
            x(),
            OwnedTensor::absent(),
            OwnedTensor::f32(&[0], &[]),
            sizes,
        ];
        let y = TestHost::new()
            .run::<Resize>(&inputs, &attributes, 1)
            .unwrap();
        assert_close(
            y[0].as_slice(),
            &[1.0, 1.5, 2.0, 2.0, 2.5, 3.0, 3.0, 3.5, 4.0],
            1e-6,
        );
    }

    #[test]
    fn unknown_scales_leave_the_resized_dims_unknown() {
        use opal_plugin_api::testing::{infer_input, infer_operator};
        let types = infer_operator::<Resize>(
            &[
                infer_input(DType::F32, &[1, 3, 8, 8]),
                infer_input(DType::F32, &[0]),
                infer_input(DType::F32, &[4]),
            ],
            &[],
            1,
        )
        .unwrap();
        assert_eq!(types[0].shape.as_slice(), [-1, -1, -1, -1]);
    }
}
