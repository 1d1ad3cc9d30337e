//! NonMaxSuppression: per batch and class, the boxes taken greedily by descending score, each
//! kept unless it overlaps an already kept box by more than the IoU threshold. The output,
//! `[num_selected, 3]` i64 rows of (batch, class, box), depends on the input values.

use crate::float::{as_f32, expect_float, to_f32_vec};
use opal_kernel_support::check::{error, Shape};
use opal_plugin_api::prelude::*;
use std::cmp::Ordering;

/// NonMaxSuppression (opsets 10 and 11 on).
pub struct NonMaxSuppression;

const OP: &str = "NonMaxSuppression";

/// The problem's sizes, from boxes `[batches, boxes, 4]` and scores `[batches, classes, boxes]`.
#[derive(Clone, Copy)]
struct Dims {
    batches: usize,
    classes: usize,
    boxes: usize,
}

impl Dims {
    /// Checks the boxes and scores shapes (dims of -1 unknown) against each other.
    fn check(boxes: &[i64], scores: &[i64]) -> KernelResult<()> {
        let agree = |a: i64, b: i64| a < 0 || b < 0 || a == b;
        if boxes.len() != 3
            || scores.len() != 3
            || !agree(boxes[2], 4)
            || !agree(boxes[0], scores[0])
            || !agree(boxes[1], scores[2])
        {
            return Err(error(
                OP,
                format_args!(
                    "boxes {} must be [batches, boxes, 4] and scores {} [batches, classes, boxes]",
                    Shape(boxes),
                    Shape(scores)
                ),
            ));
        }
        Ok(())
    }

    fn from_shapes(boxes: &[usize], scores: &[usize]) -> KernelResult<Self> {
        if boxes.len() != 3 || scores.len() != 3 {
            return Err(error(
                OP,
                format_args!(
                    "boxes {} and scores {} must be 3-D",
                    Shape(boxes),
                    Shape(scores)
                ),
            ));
        }
        let as_i64 = |s: &[usize]| [s[0] as i64, s[1] as i64, s[2] as i64];
        Dims::check(&as_i64(boxes), &as_i64(scores))?;
        Ok(Dims {
            batches: boxes[0],
            classes: scores[1],
            boxes: boxes[1],
        })
    }
}

/// The scalar inputs and the box format.
#[derive(Clone, Copy)]
struct Limits {
    max_per_class: usize,
    iou_threshold: f32,
    /// Boxes scoring at most this are never candidates; `None` when the input is absent.
    score_threshold: Option<f32>,
    center_point_box: bool,
}

impl Limits {
    fn new(
        center_point_box: i64,
        max_per_class: Option<i64>,
        iou_threshold: Option<f32>,
        score_threshold: Option<f32>,
    ) -> KernelResult<Self> {
        let center_point_box = match center_point_box {
            0 => false,
            1 => true,
            other => {
                return Err(error(
                    OP,
                    format_args!("center_point_box must be 0 or 1, got {other}"),
                ))
            }
        };
        Ok(Limits {
            max_per_class: max_per_class.unwrap_or(0).max(0) as usize,
            iou_threshold: iou_threshold.unwrap_or(0.0),
            score_threshold,
            center_point_box,
        })
    }
}

/// A box's extent as (y_min, x_min, y_max, x_max), whatever corner order or format it came in.
fn extent(corners: &[f32], center_point_box: bool) -> [f32; 4] {
    if center_point_box {
        let [x, y, width, height] = [corners[0], corners[1], corners[2], corners[3]];
        let (half_w, half_h) = (width / 2.0, height / 2.0);
        [y - half_h, x - half_w, y + half_h, x + half_w]
    } else {
        let [y1, x1, y2, x2] = [corners[0], corners[1], corners[2], corners[3]];
        [y1.min(y2), x1.min(x2), y1.max(y2), x1.max(x2)]
    }
}

/// Whether boxes `a` and `b` (as [`extent`]s) overlap by more than `threshold` IoU.
fn overlaps(a: [f32; 4], b: [f32; 4], threshold: f32) -> bool {
    let (y_min, x_min) = (a[0].max(b[0]), a[1].max(b[1]));
    let (y_max, x_max) = (a[2].min(b[2]), a[3].min(b[3]));
    if x_max <= x_min || y_max <= y_min {
        return false;
    }
    let intersection = (x_max - x_min) * (y_max - y_min);
    let area_a = (a[3] - a[1]) * (a[2] - a[0]);
    let area_b = (b[3] - b[1]) * (b[2] - b[0]);
    let union = area_a + area_b - intersection;
    if intersection <= 0.0 || area_a <= 0.0 || area_b <= 0.0 || union <= 0.0 {
        return false;
    }
    intersection / union > threshold
}

/// Runs the selection, calling `emit(batch, class, box)` for each kept box in output order, and
/// returns how many were kept. `candidates` and `kept` each hold `dims.boxes` elements.
fn select(
    boxes: &[f32],
    scores: &[f32],
    dims: Dims,
    limits: Limits,
    candidates: &mut [u32],
    kept: &mut [u32],
    mut emit: impl FnMut(usize, usize, usize) -> KernelResult<()>,
) -> KernelResult<usize> {
    let mut total = 0;
    for batch in 0..dims.batches {
        let batch_boxes = &boxes[batch * dims.boxes * 4..][..dims.boxes * 4];
        let corners = |b: u32| extent(&batch_boxes[b as usize * 4..][..4], limits.center_point_box);
        for class in 0..dims.classes {
            let class_scores = &scores[(batch * dims.classes + class) * dims.boxes..][..dims.boxes];
            let mut candidate_count = 0;
            for (b, &score) in class_scores.iter().enumerate() {
                if limits.score_threshold.is_none_or(|t| score > t) {
                    candidates[candidate_count] = b as u32;
                    candidate_count += 1;
                }
            }
            let candidates = &mut candidates[..candidate_count];
            // Highest score first; among equal scores the lower box index first.
            candidates.sort_unstable_by(|&a, &b| {
                class_scores[b as usize]
                    .partial_cmp(&class_scores[a as usize])
                    .unwrap_or(Ordering::Equal)
                    .then(a.cmp(&b))
            });
            let mut kept_count = 0;
            for &candidate in candidates.iter() {
                if kept_count >= limits.max_per_class {
                    break;
                }
                let suppressed = kept[..kept_count]
                    .iter()
                    .any(|&k| overlaps(corners(candidate), corners(k), limits.iou_threshold));
                if !suppressed {
                    kept[kept_count] = candidate;
                    kept_count += 1;
                    emit(batch, class, candidate as usize)?;
                }
            }
            total += kept_count;
        }
    }
    Ok(total)
}

/// The selection's size from the input values, `None` when a value is not known.
fn infer_count(
    cx: &InferContext<'_>,
    dims: Dims,
    center_point_box: i64,
) -> KernelResult<Option<usize>> {
    let (Some(boxes), Some(scores)) = (cx.input(0)?.value(), cx.input(1)?.value()) else {
        return Ok(None);
    };
    let mut scalars = [None, None, None];
    for (slot, index) in scalars.iter_mut().zip(2..5) {
        if let Some(input) = cx.optional_input(index)? {
            match input.value() {
                Some(value) => *slot = Some(value),
                None => return Ok(None),
            }
        }
    }
    let max_per_class = match scalars[0] {
        Some(value) => value.as_slice::<i64>()?.first().copied(),
        None => None,
    };
    let float_scalar = |value: Option<TensorRef<'_>>| -> KernelResult<Option<f32>> {
        Ok(match value {
            Some(value) => to_f32_vec(OP, value)?.first().copied(),
            None => None,
        })
    };
    let limits = Limits::new(
        center_point_box,
        max_per_class,
        float_scalar(scalars[1])?,
        float_scalar(scalars[2])?,
    )?;
    let (boxes, scores) = (to_f32_vec(OP, boxes)?, to_f32_vec(OP, scores)?);
    let mut candidates = vec![0; dims.boxes];
    let mut kept = vec![0; dims.boxes];
    let count = select(
        &boxes,
        &scores,
        dims,
        limits,
        &mut candidates,
        &mut kept,
        |_, _, _| Ok(()),
    )?;
    Ok(Some(count))
}

impl Operator for NonMaxSuppression {
    const OP_TYPE: &'static str = OP;
    const SINCE_VERSION: i64 = 10;
    const VALUE_INPUTS: &'static [usize] = &[0, 1, 2, 3, 4];

    fn infer(cx: &InferContext<'_>) -> KernelResult<Vec<OutputType>> {
        let (boxes, scores) = (cx.input(0)?, cx.input(1)?);
        expect_float(OP, 0, &boxes)?;
        expect_float(OP, 1, &scores)?;
        Dims::check(boxes.shape, scores.shape)?;
        if let Some(max) = cx.optional_input(2)? {
            if max.dtype != DType::I64 {
                return Err(error(
                    OP,
                    format_args!(
                        "max_output_boxes_per_class has dtype {}, expected i64",
                        max.dtype
                    ),
                ));
            }
        }
        let center_point_box = cx.attributes().int("center_point_box", 0)?;
        let known = boxes.shape.iter().chain(scores.shape).all(|&d| d >= 0);
        let count = if known {
            let dims = Dims {
                batches: boxes.shape[0] as usize,
                classes: scores.shape[1] as usize,
                boxes: boxes.shape[1] as usize,
            };
            infer_count(cx, dims, center_point_box)?
        } else {
            None
        };
        Ok(vec![OutputType::new(
            DType::I64,
            vec![count.map_or(-1, |c| c as i64), 3],
        )])
    }

    fn compute(cx: &mut KernelContext<'_>) -> KernelResult<()> {
        let (boxes, scores) = (cx.input(0)?, cx.input(1)?);
        let dims = Dims::from_shapes(boxes.shape(), scores.shape())?;
        let max_per_class = match cx.optional_input(2) {
            Some(max) => max.as_slice::<i64>()?.first().copied(),
            None => None,
        };
        let float_scalar = |index: usize| -> KernelResult<Option<f32>> {
            match cx.optional_input(index) {
                Some(value) => Ok(as_f32(cx, OP, value)?.first().copied()),
                None => Ok(None),
            }
        };
        let limits = Limits::new(
            cx.attributes().int("center_point_box", 0)?,
            max_per_class,
            float_scalar(3)?,
            float_scalar(4)?,
        )?;
        let boxes = as_f32(cx, OP, boxes)?;
        let scores = as_f32(cx, OP, scores)?;
        let candidates = cx.scratch::<u32>(dims.boxes)?;
        let kept = cx.scratch::<u32>(dims.boxes)?;
        let out = cx.output(0)?;
        let rows = out.shape().first().copied().unwrap_or(0);
        if out.shape() != [rows, 3] {
            return Err(error(
                OP,
                format_args!(
                    "the output {} must be [num_selected, 3]",
                    Shape(out.shape())
                ),
            ));
        }
        let selected = out.as_slice_mut::<i64>()?;
        let mut row = 0;
        let count = select(
            boxes,
            scores,
            dims,
            limits,
            candidates,
            kept,
            |batch, class, b| {
                let Some(slot) = selected.get_mut(row * 3..row * 3 + 3) else {
                    return Err(error(
                        OP,
                        format_args!("more boxes were selected than the {rows} rows inferred"),
                    ));
                };
                slot.copy_from_slice(&[batch as i64, class as i64, b as i64]);
                row += 1;
                Ok(())
            },
        )?;
        if count != rows {
            return Err(error(
                OP,
                format_args!("{count} boxes were selected, the output has {rows} rows"),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opal_plugin_api::testing::{int_attr, run_operator, OwnedTensor};

    /// The ONNX suppress_by_IOU boxes: three overlapping near 0, two near 10, one at 100.
    const BOXES: [f32; 24] = [
        0.0, 0.0, 1.0, 1.0, 0.0, 0.1, 1.0, 1.1, 0.0, -0.1, 1.0, 0.9, 0.0, 10.0, 1.0, 11.0, 0.0,
        10.1, 1.0, 11.1, 0.0, 100.0, 1.0, 101.0,
    ];
    const SCORES: [f32; 6] = [0.9, 0.75, 0.6, 0.95, 0.5, 0.3];

    fn run(boxes: &[f32], scores: &[f32], max: i64, iou: f32, score: Option<f32>) -> Vec<i64> {
        let n = scores.len();
        let mut inputs = vec![
            OwnedTensor::f32(&[1, n, 4], boxes),
            OwnedTensor::f32(&[1, 1, n], scores),
            OwnedTensor::i64(&[1], &[max]),
            OwnedTensor::f32(&[1], &[iou]),
        ];
        if let Some(score) = score {
            inputs.push(OwnedTensor::f32(&[1], &[score]));
        }
        let y = run_operator::<NonMaxSuppression>(&inputs, &[], 1).unwrap();
        assert_eq!(y[0].shape()[1], 3);
        y[0].to_vec::<i64>()
    }

    #[test]
    fn suppresses_overlapping_boxes_by_score() {
        assert_eq!(
            run(&BOXES, &SCORES, 3, 0.5, Some(0.0)),
            [0, 0, 3, 0, 0, 0, 0, 0, 5]
        );
    }

    #[test]
    fn score_threshold_and_output_limit_drop_boxes() {
        assert_eq!(run(&BOXES, &SCORES, 3, 0.5, Some(0.4)), [0, 0, 3, 0, 0, 0]);
        assert_eq!(run(&BOXES, &SCORES, 2, 0.5, None), [0, 0, 3, 0, 0, 0]);
    }

    #[test]
    fn iou_equal_to_threshold_is_kept() {
        // The second box is half the first: IoU 0.5, which is not above 0.5.
        let boxes = [0.0, 0.0, 2.0, 2.0, 0.0, 0.0, 2.0, 1.0];
        assert_eq!(run(&boxes, &[0.9, 0.8], 2, 0.5, None), [0, 0, 0, 0, 0, 1]);
        assert_eq!(run(&boxes, &[0.9, 0.8], 2, 0.49, None), [0, 0, 0]);
    }

    #[test]
    fn center_point_format_matches_corners() {
        let centers = [0.5, 0.5, 1.0, 1.0, 0.5, 0.6, 1.0, 1.0, 0.5, 10.5, 1.0, 1.0];
        let inputs = [
            OwnedTensor::f32(&[1, 3, 4], &centers),
            OwnedTensor::f32(&[1, 1, 3], &[0.9, 0.8, 0.7]),
            OwnedTensor::i64(&[1], &[3]),
            OwnedTensor::f32(&[1], &[0.5]),
        ];
        let y = run_operator::<NonMaxSuppression>(&inputs, &[int_attr("center_point_box", 1)], 1)
            .unwrap();
        assert_eq!(y[0].to_vec::<i64>(), [0, 0, 0, 0, 0, 2]);
    }

    #[test]
    fn without_max_output_nothing_is_selected() {
        let inputs = [
            OwnedTensor::f32(&[1, 6, 4], &BOXES),
            OwnedTensor::f32(&[1, 1, 6], &SCORES),
        ];
        let y = run_operator::<NonMaxSuppression>(&inputs, &[], 1).unwrap();
        assert_eq!(y[0].shape(), [0, 3]);
    }

    #[test]
    fn mismatched_shapes_are_refused() {
        let inputs = [
            OwnedTensor::f32(&[1, 6, 4], &BOXES),
            OwnedTensor::f32(&[1, 1, 5], &SCORES[..5]),
        ];
        let message = run_operator::<NonMaxSuppression>(&inputs, &[], 1).unwrap_err();
        assert!(message.contains("NonMaxSuppression"), "{message}");
    }
}
