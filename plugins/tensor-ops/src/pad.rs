//! Padding: Pad (modes constant, reflect, edge and wrap; pads as attributes in opsets 1-10 and
//! as input 1 from 11, axes as input 3 from 18; negative pads crop) and CenterCropPad, which
//! crops or zero-pads each axis symmetrically to a target size.

use crate::{
    broadcast::MAX_RANK,
    check::{check_rank, error, Shape},
    layout::{
        element_size, elements, elements_mut, expect_output_shape, row_major_strides,
        with_element_size, COPY_GRAIN,
    },
    number::{with_number_type, Number},
    parallel::for_each_chunk,
    params::{known_ints, AxisSet, Ints},
};
use opal_plugin_api::prelude::*;

/// How positions outside the input get their values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PadMode {
    Constant,
    Reflect,
    Edge,
    Wrap,
}

impl PadMode {
    fn from_attributes(op: &str, attributes: &Attributes<'_>) -> KernelResult<Self> {
        Ok(match attributes.string("mode", "constant")? {
            "constant" => PadMode::Constant,
            "reflect" => PadMode::Reflect,
            "edge" => PadMode::Edge,
            "wrap" => PadMode::Wrap,
            other => return Err(error(op, format_args!("unknown mode '{other}'"))),
        })
    }

    /// The input index for position `j` (relative to the input's start) along a dim of `n`;
    /// `None` for the constant value.
    fn source(self, j: i64, n: usize) -> Option<usize> {
        let n = n as i64;
        if (0..n).contains(&j) {
            return Some(j as usize);
        }
        if n == 0 {
            return None;
        }
        let i = match self {
            PadMode::Constant => return None,
            PadMode::Edge => j.clamp(0, n - 1),
            PadMode::Wrap => j.rem_euclid(n),
            PadMode::Reflect if n == 1 => 0,
            PadMode::Reflect => {
                let period = 2 * (n - 1);
                let m = j.rem_euclid(period);
                if m >= n {
                    period - m
                } else {
                    m
                }
            }
        };
        Some(i as usize)
    }
}

/// A padding of an input of rank ≤ `MAX_RANK`: the elements added before each dim (negative:
/// removed) and the resulting output dims.
#[derive(Clone, Copy, Debug)]
struct PadPlan {
    rank: usize,
    in_dims: [usize; MAX_RANK],
    out_dims: [usize; MAX_RANK],
    begin: [i64; MAX_RANK],
}

impl PadPlan {
    /// A plan from the per-dim amounts added before and after.
    fn new(
        op: &str,
        shape: &[usize],
        begin: &[i64; MAX_RANK],
        end: &[i64; MAX_RANK],
    ) -> KernelResult<Self> {
        let rank = shape.len();
        check_rank(op, rank)?;
        let mut plan = PadPlan {
            rank,
            in_dims: [1; MAX_RANK],
            out_dims: [1; MAX_RANK],
            begin: *begin,
        };
        for d in 0..rank {
            let out = shape[d] as i64 + begin[d] + end[d];
            if out < 0 {
                return Err(error(
                    op,
                    format_args!(
                        "pads {} and {} remove more than the {} elements of dim {d}",
                        begin[d], end[d], shape[d]
                    ),
                ));
            }
            plan.in_dims[d] = shape[d];
            plan.out_dims[d] = out as usize;
        }
        Ok(plan)
    }

    /// Fills output elements `first..first + chunk.len()` (whole rows) from `from`.
    fn fill_rows<const N: usize>(
        &self,
        mode: PadMode,
        value: [u8; N],
        from: &[[u8; N]],
        first: usize,
        chunk: &mut [[u8; N]],
    ) {
        let last = self.rank.max(1) - 1;
        let width = self.out_dims[last];
        let in_width = self.in_dims[last];
        let in_strides = row_major_strides(&self.in_dims[..self.rank.max(1)]);
        let begin = self.begin[last];
        // The output columns that copy the input row as it is.
        let inside_start = begin.clamp(0, width as i64) as usize;
        let inside_end =
            (begin + in_width as i64).clamp(inside_start as i64, width as i64) as usize;
        for (r, row) in chunk.chunks_exact_mut(width).enumerate() {
            // The input row under this output row, if any.
            let mut rest = first / width + r;
            let mut base = Some(0usize);
            for d in (0..last).rev() {
                let o = rest % self.out_dims[d];
                rest /= self.out_dims[d];
                base = match (base, mode.source(o as i64 - self.begin[d], self.in_dims[d])) {
                    (Some(b), Some(i)) => Some(b + i * in_strides[d]),
                    _ => None,
                };
            }
            let Some(base) = base else {
                row.fill(value);
                continue;
            };
            if inside_end > inside_start {
                let skipped = (inside_start as i64 - begin) as usize;
                row[inside_start..inside_end].copy_from_slice(
                    &from[base + skipped..base + skipped + inside_end - inside_start],
                );
            }
            for o in (0..inside_start).chain(inside_end..width) {
                row[o] = match mode.source(o as i64 - begin, in_width) {
                    Some(i) => from[base + i],
                    None => value,
                };
            }
        }
    }

    /// Writes the whole padded output.
    fn run(
        &self,
        cx: &KernelContext<'_>,
        op: &str,
        mode: PadMode,
        value: &[u8],
        from: &[u8],
        to: &mut [u8],
    ) -> KernelResult<()> {
        let width = self.out_dims[self.rank.max(1) - 1];
        if to.is_empty() {
            return Ok(());
        }
        if mode != PadMode::Constant
            && (0..self.rank).any(|d| self.in_dims[d] == 0 && self.out_dims[d] > 0)
        {
            return Err(error(op, "cannot pad an empty dim in this mode"));
        }
        with_element_size!(op, value.len(), N => {
            let mut element = [0u8; N];
            element.copy_from_slice(value);
            let from = elements::<N>(from);
            for_each_chunk(cx, elements_mut::<N>(to), width, COPY_GRAIN / N, #[inline(always)] |first, chunk| {
                self.fill_rows(mode, element, from, first, chunk)
            });
        });
        Ok(())
    }
}

/// The amounts added before and after each dim, from the pads (`[begin..., end...]` over the
/// axes, all dims by default).
fn pad_amounts(
    op: &str,
    rank: usize,
    pads: Ints<'_>,
    axes: Option<Ints<'_>>,
) -> KernelResult<([i64; MAX_RANK], [i64; MAX_RANK])> {
    check_rank(op, rank)?;
    let count = axes.map_or(rank, |a| a.len());
    if pads.len() != 2 * count {
        return Err(error(
            op,
            format_args!(
                "{} pads for {count} axes; there must be two per axis",
                pads.len()
            ),
        ));
    }
    let axis_of = |i: usize| axes.map_or(i as i64, |a| a.get(i));
    AxisSet::new(op, (0..count).map(axis_of), rank)?;
    let (mut begin, mut end) = ([0; MAX_RANK], [0; MAX_RANK]);
    for i in 0..count {
        let d = crate::check::normalize_axis(op, axis_of(i), rank)?;
        begin[d] = pads.get(i);
        end[d] = pads.get(count + i);
    }
    Ok((begin, end))
}

/// The pads attribute of opsets 1-10 (`paddings` in opset 1).
fn pads_attribute<'a>(op: &str, attributes: &Attributes<'a>) -> KernelResult<&'a [i64]> {
    match attributes.ints("pads")? {
        Some(pads) => Ok(pads),
        None => attributes
            .ints("paddings")?
            .ok_or_else(|| error(op, "the pads are required")),
    }
}

/// The pads of a kernel call: input 1, or the attribute.
fn pads_of<'a>(op: &str, cx: &KernelContext<'a>) -> KernelResult<Ints<'a>> {
    match cx.optional_input(1) {
        Some(pads) => Ints::from_tensor(op, "the pads", pads),
        None => pads_attribute(op, &cx.attributes()).map(Ints::I64),
    }
}

/// The input with elements added (or removed) at the start and end of each dim.
pub struct Pad;

impl Operator for Pad {
    const OP_TYPE: &'static str = "Pad";
    const VALUE_INPUTS: &'static [usize] = &[1, 3];

    fn infer(cx: &InferContext<'_>) -> KernelResult<Vec<OutputType>> {
        let op = Self::OP_TYPE;
        let x = cx.input(0)?;
        element_size(op, x.dtype)?;
        PadMode::from_attributes(op, &cx.attributes())?;
        let rank = x.shape.len();
        let pads = match cx.optional_input(1)? {
            Some(input) => known_ints(op, "the pads", &input)?,
            None => Some(pads_attribute(op, &cx.attributes())?.to_vec()),
        };
        let axes = match cx.optional_input(3)? {
            Some(input) => match known_ints(op, "the axes", &input)? {
                Some(axes) => Some(axes),
                None => return Ok(vec![OutputType::new(x.dtype, vec![-1; rank])]),
            },
            None => None,
        };
        let Some(pads) = pads else {
            return Ok(vec![OutputType::new(x.dtype, vec![-1; rank])]);
        };
        let (begin, end) = pad_amounts(op, rank, Ints::I64(&pads), axes.as_deref().map(Ints::I64))?;
        let mut shape = Vec::with_capacity(rank);
        for (d, &dim) in x.shape.iter().enumerate() {
            shape.push(if dim < 0 {
                -1
            } else {
                let out = dim + begin[d] + end[d];
                if out < 0 {
                    return Err(error(
                        op,
                        format_args!(
                            "the pads remove more than dim {d} of {} holds",
                            Shape(x.shape)
                        ),
                    ));
                }
                out
            });
        }
        Ok(vec![OutputType::new(x.dtype, shape)])
    }

    fn compute(cx: &mut KernelContext<'_>) -> KernelResult<()> {
        let op = Self::OP_TYPE;
        let x = cx.input(0)?;
        let mode = PadMode::from_attributes(op, &cx.attributes())?;
        let pads = pads_of(op, cx)?;
        let axes = cx
            .optional_input(3)
            .map(|a| Ints::from_tensor(op, "the axes", a))
            .transpose()?;
        let (begin, end) = pad_amounts(op, x.shape().len(), pads, axes)?;
        let plan = PadPlan::new(op, x.shape(), &begin, &end)?;
        let size = element_size(op, x.dtype())?;
        // The constant: input 2 (same dtype), or the float `value` attribute (opsets 1-10).
        let mut value = [0u8; 8];
        match cx.optional_input(2) {
            Some(v) if v.dtype() != x.dtype() || v.len() != 1 => {
                return Err(error(
                    op,
                    "the constant value must be one element of the input's dtype",
                ))
            }
            Some(v) => value[..size].copy_from_slice(v.bytes()),
            None => {
                let attribute = f64::from(cx.attributes().float("value", 0.0)?);
                with_number_type!(op, x.dtype(), T => {
                    let bytes = T::from_f64(attribute).to_bytes();
                    value[..size].copy_from_slice(bytes.as_ref());
                })
            }
        }
        let out = cx.output(0)?;
        expect_output_shape(op, out.shape(), &plan.out_dims[..plan.rank])?;
        plan.run(cx, op, mode, &value[..size], x.bytes(), out.bytes_mut())
    }
}

/// Each axis in `axes` (all by default) cropped or zero-padded, centred, to the size input 1
/// gives.
pub struct CenterCropPad;

/// The target sizes from input 1 (`None` when unknown) and the amounts to add before/after.
fn crop_pad_amounts(
    op: &str,
    shape: &[i64],
    sizes: &[i64],
    axes: Option<&[i64]>,
) -> KernelResult<([i64; MAX_RANK], [i64; MAX_RANK])> {
    let rank = shape.len();
    check_rank(op, rank)?;
    let count = axes.map_or(rank, <[i64]>::len);
    if sizes.len() != count {
        return Err(error(
            op,
            format_args!("{} sizes for {count} axes", sizes.len()),
        ));
    }
    let axis_of = |i: usize| axes.map_or(i as i64, |a| a[i]);
    AxisSet::new(op, (0..count).map(axis_of), rank)?;
    let (mut begin, mut end) = ([0; MAX_RANK], [0; MAX_RANK]);
    for (i, &target) in sizes.iter().enumerate() {
        let d = crate::check::normalize_axis(op, axis_of(i), rank)?;
        if target < 0 {
            return Err(error(op, format_args!("size {target} is negative")));
        }
        let dim = shape[d];
        if dim < 0 {
            continue;
        }
        let difference = target - dim;
        // Crops remove the extra element at the end, pads add it at the end.
        let before = if difference >= 0 {
            difference / 2
        } else {
            -((-difference) / 2)
        };
        begin[d] = before;
        end[d] = difference - before;
    }
    Ok((begin, end))
}

impl Operator for CenterCropPad {
    const OP_TYPE: &'static str = "CenterCropPad";
    const SINCE_VERSION: i64 = 18;
    const VALUE_INPUTS: &'static [usize] = &[1];

    fn infer(cx: &InferContext<'_>) -> KernelResult<Vec<OutputType>> {
        let op = Self::OP_TYPE;
        let x = cx.input(0)?;
        element_size(op, x.dtype)?;
        let axes = cx.attributes().ints("axes")?;
        let Some(sizes) = known_ints(op, "the shape input", &cx.input(1)?)? else {
            return Ok(vec![OutputType::new(x.dtype, vec![-1; x.shape.len()])]);
        };
        let (begin, end) = crop_pad_amounts(op, x.shape, &sizes, axes)?;
        let shape = x
            .shape
            .iter()
            .enumerate()
            .map(|(d, &dim)| if dim < 0 { -1 } else { dim + begin[d] + end[d] })
            .collect();
        Ok(vec![OutputType::new(x.dtype, shape)])
    }

    fn compute(cx: &mut KernelContext<'_>) -> KernelResult<()> {
        let op = Self::OP_TYPE;
        let x = cx.input(0)?;
        let rank = x.shape().len();
        check_rank(op, rank)?;
        let sizes = Ints::from_tensor(op, "the shape input", cx.input(1)?)?;
        let mut shape = [0i64; MAX_RANK];
        let mut targets = [0i64; MAX_RANK];
        for (s, &d) in shape.iter_mut().zip(x.shape()) {
            *s = d as i64;
        }
        if sizes.len() > MAX_RANK {
            return Err(error(
                op,
                format_args!("{} sizes for rank {rank}", sizes.len()),
            ));
        }
        for (t, v) in targets.iter_mut().zip(sizes.iter()) {
            *t = v;
        }
        let axes = cx.attributes().ints("axes")?;
        let (begin, end) = crop_pad_amounts(op, &shape[..rank], &targets[..sizes.len()], axes)?;
        let plan = PadPlan::new(op, x.shape(), &begin, &end)?;
        let size = element_size(op, x.dtype())?;
        let out = cx.output(0)?;
        expect_output_shape(op, out.shape(), &plan.out_dims[..rank])?;
        plan.run(
            cx,
            op,
            PadMode::Constant,
            &[0u8; 8][..size],
            x.bytes(),
            out.bytes_mut(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opal_plugin_api::testing::{
        float_attr, ints_attr, run_operator, string_attr, OwnedTensor, TestHost,
    };

    fn pad(mode: &str, values: &[i32], shape: &[usize], pads: &[i64]) -> (Vec<usize>, Vec<i32>) {
        let inputs = [
            OwnedTensor::new(shape, values),
            OwnedTensor::i64(&[pads.len()], pads),
        ];
        let y = TestHost::new()
            .threads(2)
            .run::<Pad>(&inputs, &[string_attr("mode", mode)], 1)
            .unwrap();
        (y[0].shape().to_vec(), y[0].to_vec::<i32>())
    }

    #[test]
    fn pad_modes_match_numpy() {
        let x = [1, 2, 3];
        assert_eq!(pad("constant", &x, &[3], &[2, 1]).1, [0, 0, 1, 2, 3, 0]);
        assert_eq!(
            pad("reflect", &x, &[3], &[2, 3]).1,
            [3, 2, 1, 2, 3, 2, 1, 2]
        );
        assert_eq!(pad("edge", &x, &[3], &[2, 1]).1, [1, 1, 1, 2, 3, 3]);
        assert_eq!(pad("wrap", &x, &[3], &[4, 1]).1, [3, 1, 2, 3, 1, 2, 3, 1]);
        assert_eq!(pad("constant", &x, &[3], &[-1, 1]).1, [2, 3, 0]);
        let (shape, values) = pad("edge", &[1, 2, 3, 4], &[2, 2], &[1, 0, 0, 1]);
        assert_eq!(shape, [3, 3]);
        assert_eq!(values, [1, 2, 2, 1, 2, 2, 3, 4, 4]);
    }

    #[test]
    fn pad_takes_a_value_and_axes() {
        let x = OwnedTensor::f32(&[1, 2], &[1.0, 2.0]);
        let inputs = [
            x,
            OwnedTensor::i64(&[2], &[1, 1]),
            OwnedTensor::f32(&[], &[9.0]),
            OwnedTensor::i64(&[1], &[-1]),
        ];
        let y = run_operator::<Pad>(&inputs, &[], 1).unwrap();
        assert_eq!(y[0].to_vec::<f32>(), [9.0, 1.0, 2.0, 9.0]);
    }

    #[test]
    fn opset_two_pads_with_attributes() {
        let x = OwnedTensor::new(&[2], &[1i32, 2]);
        let attributes = [ints_attr("pads", &[1, 1]), float_attr("value", 7.0)];
        let y = run_operator::<Pad>(&[x], &attributes, 1).unwrap();
        assert_eq!(y[0].to_vec::<i32>(), [7, 1, 2, 7]);
    }

    #[test]
    fn center_crop_pad_centres() {
        let values: Vec<u8> = (0..10).collect();
        let x = OwnedTensor::new(&[2, 5], &values);
        let y =
            run_operator::<CenterCropPad>(&[x, OwnedTensor::i64(&[2], &[4, 2])], &[], 1).unwrap();
        assert_eq!(y[0].shape(), [4, 2]);
        assert_eq!(y[0].to_vec::<u8>(), [0, 0, 1, 2, 6, 7, 0, 0]);
        let x = OwnedTensor::new(&[2, 5], &values);
        let y = run_operator::<CenterCropPad>(
            &[x, OwnedTensor::i64(&[1], &[3])],
            &[ints_attr("axes", &[-1])],
            1,
        )
        .unwrap();
        assert_eq!(y[0].to_vec::<u8>(), [1, 2, 3, 6, 7, 8]);
    }
}
