//! Slice: a strided window of the input along some axes, with numpy's clamping and negative
//! steps. Opsets 1-9 take `starts`/`ends`/`axes` as attributes; from 10 they (and `steps`) are
//! inputs.

use crate::{
    broadcast::MAX_RANK,
    check::{check_rank, error},
    layout::{element_size, expect_output_shape, row_major_strides, StridedRead},
    params::{known_ints, known_length, AxisSet, Ints},
};
use opal_plugin_api::prelude::*;

/// What one axis of a Slice asks for, before clamping to the dim.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct AxisRequest {
    start: i64,
    end: i64,
    step: i64,
}

impl AxisRequest {
    /// The first index, the step and the number of elements taken from a dim of size `dim`.
    fn resolve(self, dim: usize) -> (i64, i64, usize) {
        let dim = dim as i64;
        let wrap = |v: i64| if v < 0 { v.saturating_add(dim) } else { v };
        let (start, end) = (wrap(self.start), wrap(self.end));
        let (start, end) = if self.step > 0 {
            (start.clamp(0, dim), end.clamp(0, dim))
        } else {
            (start.max(0).min(dim - 1), end.max(-1).min(dim - 1))
        };
        let span = end - start;
        let len = if (span > 0) == (self.step > 0) && span != 0 {
            (span.unsigned_abs()).div_ceil(self.step.unsigned_abs()) as usize
        } else {
            0
        };
        (start, self.step, len)
    }
}

/// The slice arguments: starts, ends, and the optional axes and steps.
struct SliceArgs<'a> {
    starts: Ints<'a>,
    ends: Ints<'a>,
    axes: Option<Ints<'a>>,
    steps: Option<Ints<'a>>,
}

impl SliceArgs<'_> {
    /// The request of each axis of a tensor of `rank` (`None`: taken whole).
    fn requests(&self, op: &str, rank: usize) -> KernelResult<[Option<AxisRequest>; MAX_RANK]> {
        check_rank(op, rank)?;
        let n = self.starts.len();
        let lengths_match = self.ends.len() == n
            && self.axes.is_none_or(|a| a.len() == n)
            && self.steps.is_none_or(|s| s.len() == n);
        if !lengths_match {
            return Err(error(
                op,
                "starts, ends, axes and steps must have the same length",
            ));
        }
        if self.axes.is_none() && n > rank {
            return Err(error(
                op,
                format_args!("{n} starts for a tensor of rank {rank}"),
            ));
        }
        let axis_of = |i: usize| self.axes.map_or(i as i64, |a| a.get(i));
        AxisSet::new(op, (0..n).map(axis_of), rank)?;
        let mut requests = [None; MAX_RANK];
        for i in 0..n {
            let axis = crate::check::normalize_axis(op, axis_of(i), rank)?;
            let step = self.steps.map_or(1, |s| s.get(i));
            if step == 0 {
                return Err(error(op, "steps must not be 0"));
            }
            requests[axis] = Some(AxisRequest {
                start: self.starts.get(i),
                end: self.ends.get(i),
                step,
            });
        }
        Ok(requests)
    }
}

/// The output shape for an input of `shape` (dims of -1 unknown).
fn sliced_shape(op: &str, shape: &[i64], args: &SliceArgs<'_>) -> KernelResult<Vec<i64>> {
    let requests = args.requests(op, shape.len())?;
    Ok(shape
        .iter()
        .zip(requests)
        .map(|(&dim, request)| match (request, usize::try_from(dim)) {
            (None, _) => dim,
            (Some(r), Ok(dim)) => r.resolve(dim).2 as i64,
            (Some(_), Err(_)) => -1,
        })
        .collect())
}

/// Copies the slice of input 0 that `args` describes into output 0.
fn compute_slice(op: &str, cx: &mut KernelContext<'_>, args: &SliceArgs<'_>) -> KernelResult<()> {
    let x = cx.input(0)?;
    let shape = x.shape();
    let rank = shape.len();
    let requests = args.requests(op, rank)?;
    let input_strides = row_major_strides(shape);
    let mut dims = [0usize; MAX_RANK];
    let mut strides = [0isize; MAX_RANK];
    let mut offset = 0usize;
    for d in 0..rank {
        let (start, step, len) = match requests[d] {
            Some(r) => r.resolve(shape[d]),
            None => (0, 1, shape[d]),
        };
        dims[d] = len;
        strides[d] = step as isize * input_strides[d] as isize;
        if len > 0 {
            offset += start as usize * input_strides[d];
        }
    }
    let out = cx.output(0)?;
    expect_output_shape(op, out.shape(), &dims[..rank])?;
    let size = element_size(op, x.dtype())?;
    let y = out.bytes_mut();
    if y.is_empty() {
        return Ok(());
    }
    StridedRead::new(op, &dims[..rank], &strides[..rank], offset)?.copy(cx, op, size, x.bytes(), y)
}

/// Slice from opset 10: `starts`, `ends`, optional `axes` and `steps` are inputs 1-4.
pub struct Slice;

impl Operator for Slice {
    const OP_TYPE: &'static str = "Slice";
    const SINCE_VERSION: i64 = 10;
    const VALUE_INPUTS: &'static [usize] = &[1, 2, 3, 4];

    fn infer(cx: &InferContext<'_>) -> KernelResult<Vec<OutputType>> {
        let op = Self::OP_TYPE;
        let x = cx.input(0)?;
        element_size(op, x.dtype)?;
        let (starts, ends) = (cx.input(1)?, cx.input(2)?);
        let axes = cx.optional_input(3)?;
        let steps = cx.optional_input(4)?;
        let starts_value = known_ints(op, "starts", &starts)?;
        let ends_value = known_ints(op, "ends", &ends)?;
        let axes_value = axes.map(|a| known_ints(op, "axes", &a)).transpose()?;
        let steps_value = steps.map(|s| known_ints(op, "steps", &s)).transpose()?;
        let shape = match (&starts_value, &ends_value, &axes_value, &steps_value) {
            (Some(starts), Some(ends), None | Some(Some(_)), None | Some(Some(_))) => {
                let args = SliceArgs {
                    starts: Ints::I64(starts),
                    ends: Ints::I64(ends),
                    axes: axes_value
                        .as_ref()
                        .and_then(|a| a.as_deref())
                        .map(Ints::I64),
                    steps: steps_value
                        .as_ref()
                        .and_then(|s| s.as_deref())
                        .map(Ints::I64),
                };
                sliced_shape(op, x.shape, &args)?
            }
            // Some value is missing: the sliced axes are unknown, when they are known.
            _ => {
                let rank = x.shape.len();
                let sliced = match &axes_value {
                    Some(Some(axes)) => Some(AxisSet::new(op, axes.iter().copied(), rank)?),
                    Some(None) => None,
                    None => known_length(&starts)
                        .map(|n| AxisSet::new(op, 0..n.min(rank) as i64, rank))
                        .transpose()?,
                };
                match sliced {
                    Some(set) => (0..rank)
                        .map(|d| if set.contains(d) { -1 } else { x.shape[d] })
                        .collect(),
                    None => vec![-1; rank],
                }
            }
        };
        Ok(vec![OutputType::new(x.dtype, shape)])
    }

    fn compute(cx: &mut KernelContext<'_>) -> KernelResult<()> {
        let op = Self::OP_TYPE;
        let args = SliceArgs {
            starts: Ints::from_tensor(op, "starts", cx.input(1)?)?,
            ends: Ints::from_tensor(op, "ends", cx.input(2)?)?,
            axes: cx
                .optional_input(3)
                .map(|a| Ints::from_tensor(op, "axes", a))
                .transpose()?,
            steps: cx
                .optional_input(4)
                .map(|s| Ints::from_tensor(op, "steps", s))
                .transpose()?,
        };
        compute_slice(op, cx, &args)
    }
}

/// Slice of opsets 1-9: `starts`, `ends` and optional `axes` are attributes; steps are 1.
pub struct SliceV1;

impl SliceV1 {
    fn args<'a>(attributes: &Attributes<'a>) -> KernelResult<SliceArgs<'a>> {
        let op = "Slice";
        let required = |name: &str| {
            attributes
                .ints(name)?
                .ok_or_else(|| error(op, format_args!("attribute '{name}' is required")))
        };
        Ok(SliceArgs {
            starts: Ints::I64(required("starts")?),
            ends: Ints::I64(required("ends")?),
            axes: attributes.ints("axes")?.map(Ints::I64),
            steps: None,
        })
    }
}

impl Operator for SliceV1 {
    const OP_TYPE: &'static str = "Slice";
    const UNTIL_VERSION: i64 = 9;

    fn infer(cx: &InferContext<'_>) -> KernelResult<Vec<OutputType>> {
        let x = cx.input(0)?;
        element_size(Self::OP_TYPE, x.dtype)?;
        let shape = sliced_shape(Self::OP_TYPE, x.shape, &Self::args(&cx.attributes())?)?;
        Ok(vec![OutputType::new(x.dtype, shape)])
    }

    fn compute(cx: &mut KernelContext<'_>) -> KernelResult<()> {
        let args = Self::args(&cx.attributes())?;
        compute_slice(Self::OP_TYPE, cx, &args)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opal_plugin_api::testing::{ints_attr, run_operator, OwnedTensor, TestHost};

    #[test]
    fn requests_clamp_like_numpy() {
        let r = |start, end, step| AxisRequest { start, end, step };
        assert_eq!(r(0, 3, 1).resolve(10), (0, 1, 3));
        assert_eq!(r(-1, i64::MIN, -1).resolve(10), (9, -1, 10));
        assert_eq!(r(20, 1000, 1).resolve(10), (10, 1, 0));
        assert_eq!(r(1, 1000, 2).resolve(10), (1, 2, 5));
        assert_eq!(r(i64::MAX, -8, -3).resolve(10), (9, -3, 3));
        assert_eq!(r(0, -1, -1).resolve(0).2, 0);
        assert_eq!(r(0, i64::MAX, 1).resolve(0).2, 0);
    }

    #[test]
    fn slices_with_negative_steps() {
        let values: Vec<i32> = (0..24).collect();
        let x = OwnedTensor::new(&[2, 3, 4], &values);
        let inputs = [
            x,
            OwnedTensor::i64(&[2], &[-1, 1]),
            OwnedTensor::i64(&[2], &[i64::MIN, 3]),
            OwnedTensor::i64(&[2], &[2, 1]),
            OwnedTensor::i64(&[2], &[-2, 1]),
        ];
        for threads in [1, 2] {
            let y = TestHost::new()
                .threads(threads)
                .run::<Slice>(&inputs, &[], 1)
                .unwrap();
            assert_eq!(y[0].shape(), [2, 2, 2]);
            assert_eq!(y[0].to_vec::<i32>(), [7, 5, 11, 9, 19, 17, 23, 21]);
        }
    }

    #[test]
    fn opset_one_slices_with_attributes() {
        let values: Vec<f64> = (0..12).map(f64::from).collect();
        let x = OwnedTensor::new(&[3, 4], &values);
        let attributes = [
            ints_attr("starts", &[1]),
            ints_attr("ends", &[100]),
            ints_attr("axes", &[0]),
        ];
        let y = run_operator::<SliceV1>(&[x], &attributes, 1).unwrap();
        assert_eq!(y[0].shape(), [2, 4]);
        assert_eq!(y[0].to_vec::<f64>(), values[4..]);
    }
}
