//! ReverseSequence: for each batch entry, the first `sequence_lens[b]` steps along the time axis
//! reversed, the rest copied. The batch and time axes are dims 0 and 1, in either order.

use crate::{
    check::{error, Shape},
    layout::{element_size, row_major_strides},
    params::{expect_int_dtype, Ints},
};
use opal_plugin_api::prelude::*;

/// The `(batch_axis, time_axis)` attributes, checked to be 0 and 1 in some order.
fn axes(op: &str, attributes: &Attributes<'_>) -> KernelResult<(usize, usize)> {
    match (
        attributes.int("batch_axis", 1)?,
        attributes.int("time_axis", 0)?,
    ) {
        (0, 1) => Ok((0, 1)),
        (1, 0) => Ok((1, 0)),
        (b, t) => Err(error(
            op,
            format_args!("batch_axis {b} and time_axis {t} must be 0 and 1"),
        )),
    }
}

/// Each batch entry's leading steps reversed along the time axis.
pub struct ReverseSequence;

impl Operator for ReverseSequence {
    const OP_TYPE: &'static str = "ReverseSequence";
    const SINCE_VERSION: i64 = 10;

    fn infer(cx: &InferContext<'_>) -> KernelResult<Vec<OutputType>> {
        let op = Self::OP_TYPE;
        let (x, lens) = (cx.input(0)?, cx.input(1)?);
        element_size(op, x.dtype)?;
        expect_int_dtype(op, "sequence_lens", &lens)?;
        axes(op, &cx.attributes())?;
        if x.shape.len() < 2 {
            return Err(error(
                op,
                format_args!("the input {} must have rank 2 or more", Shape(x.shape)),
            ));
        }
        Ok(vec![OutputType::new(x.dtype, x.shape.to_vec())])
    }

    fn compute(cx: &mut KernelContext<'_>) -> KernelResult<()> {
        let op = Self::OP_TYPE;
        let x = cx.input(0)?;
        let lens = Ints::from_tensor(op, "sequence_lens", cx.input(1)?)?;
        let (batch_axis, time_axis) = axes(op, &cx.attributes())?;
        let shape = x.shape();
        if shape.len() < 2 || shape.len() > crate::broadcast::MAX_RANK {
            return Err(error(
                op,
                format_args!("the input {} must have rank 2 to 8", Shape(shape)),
            ));
        }
        let (batches, steps) = (shape[batch_axis], shape[time_axis]);
        if lens.len() != batches {
            return Err(error(
                op,
                format_args!("{} sequence_lens for {batches} batch entries", lens.len()),
            ));
        }
        let size = element_size(op, x.dtype())?;
        let strides = row_major_strides(shape);
        let block = strides[1] * size;
        let out = cx.output(0)?;
        if out.shape() != shape || out.dtype() != x.dtype() {
            return Err(error(op, "the output must match the input"));
        }
        let (from, to) = (x.bytes(), out.bytes_mut());
        for b in 0..batches {
            let len = lens.get(b);
            let len = usize::try_from(len)
                .ok()
                .filter(|&l| l <= steps)
                .ok_or_else(|| {
                    error(
                        op,
                        format_args!("sequence length {len} is out of range for {steps} steps"),
                    )
                })?;
            for t in 0..steps {
                let source = if t < len { len - 1 - t } else { t };
                let at = |step: usize| (step * strides[time_axis] + b * strides[batch_axis]) * size;
                let (target, source) = (at(t), at(source));
                to[target..target + block].copy_from_slice(&from[source..source + block]);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opal_plugin_api::testing::{int_attr, run_operator, OwnedTensor};

    #[test]
    fn reverses_leading_steps() {
        let values: Vec<f32> = (0..8).map(|v| v as f32).collect();
        let x = OwnedTensor::f32(&[2, 4], &values);
        let lens = OwnedTensor::i64(&[2], &[1, 3]);
        let attributes = [int_attr("batch_axis", 0), int_attr("time_axis", 1)];
        let y = run_operator::<ReverseSequence>(&[x, lens], &attributes, 1).unwrap();
        assert_eq!(
            y[0].to_vec::<f32>(),
            [0.0, 1.0, 2.0, 3.0, 6.0, 5.0, 4.0, 7.0]
        );
    }
}
