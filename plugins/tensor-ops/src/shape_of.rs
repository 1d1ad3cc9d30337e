//! Operators that read only their input's shape: Shape (with `start`/`end`) and Size. The host
//! folds them into constants whenever the shape is known.

use crate::{check::error, layout::expect_output_shape};
use opal_plugin_api::prelude::*;

/// The range of dims `start..end` that Shape reports for a tensor of `rank` (both attributes
/// count from the end when negative and are clamped).
fn shape_range(attributes: &Attributes<'_>, rank: usize) -> KernelResult<(usize, usize)> {
    let clamp = |v: i64| -> usize {
        let rank = rank as i64;
        let v = if v < 0 { v.saturating_add(rank) } else { v };
        v.clamp(0, rank) as usize
    };
    let start = clamp(attributes.int("start", 0)?);
    let end = match attributes.get("end") {
        None => rank,
        Some(_) => clamp(attributes.int("end", rank as i64)?),
    };
    Ok((start, end.max(start)))
}

/// The input's dims as a 1-D i64 tensor.
pub struct Shape;

impl Operator for Shape {
    const OP_TYPE: &'static str = "Shape";
    const SHAPE_INPUTS: &'static [usize] = &[0];

    fn infer(cx: &InferContext<'_>) -> KernelResult<Vec<OutputType>> {
        let x = cx.input(0)?;
        let (start, end) = shape_range(&cx.attributes(), x.shape.len())?;
        Ok(vec![OutputType::fixed(DType::I64, &[end - start])])
    }

    fn compute(cx: &mut KernelContext<'_>) -> KernelResult<()> {
        let op = Self::OP_TYPE;
        let shape = cx.input(0)?.shape();
        let (start, end) = shape_range(&cx.attributes(), shape.len())?;
        let out = cx.output(0)?;
        expect_output_shape(op, out.shape(), &[end - start])?;
        let out = out.as_slice_mut::<i64>()?;
        for (o, &d) in out.iter_mut().zip(&shape[start..end]) {
            *o = i64::try_from(d).map_err(|_| error(op, "a dim does not fit in i64"))?;
        }
        Ok(())
    }
}

/// The input's number of elements, as an i64 scalar.
pub struct Size;

impl Operator for Size {
    const OP_TYPE: &'static str = "Size";
    const SHAPE_INPUTS: &'static [usize] = &[0];

    fn infer(cx: &InferContext<'_>) -> KernelResult<Vec<OutputType>> {
        cx.input(0)?;
        Ok(vec![OutputType::fixed(DType::I64, &[])])
    }

    fn compute(cx: &mut KernelContext<'_>) -> KernelResult<()> {
        let count = cx.input(0)?.len();
        let out = cx.output(0)?.as_slice_mut::<i64>()?;
        let count = i64::try_from(count)
            .map_err(|_| error(Self::OP_TYPE, "the size does not fit in i64"))?;
        out.fill(count);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opal_plugin_api::testing::{int_attr, run_operator, OwnedTensor};

    #[test]
    fn shape_slices_and_clamps() {
        let x = OwnedTensor::f32(&[3, 4, 5], &[0.0; 60]);
        type Case<'a> = (&'a [(&'a str, i64)], &'a [i64]);
        let cases: &[Case<'_>] = &[
            (&[], &[3, 4, 5]),
            (&[("start", 1)], &[4, 5]),
            (&[("end", -1)], &[3, 4]),
            (&[("start", -10)], &[3, 4, 5]),
            (&[("start", 2), ("end", 1)], &[]),
        ];
        for &(attrs, expected) in cases {
            let attrs: Vec<_> = attrs.iter().map(|&(n, v)| int_attr(n, v)).collect();
            let y = run_operator::<Shape>(std::slice::from_ref(&x), &attrs, 1).unwrap();
            assert_eq!(y[0].to_vec::<i64>(), expected);
        }
        let y = run_operator::<Size>(&[x], &[], 1).unwrap();
        assert_eq!(y[0].to_vec::<i64>(), [60]);
    }
}
