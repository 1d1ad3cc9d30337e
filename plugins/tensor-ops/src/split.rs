//! Split: the input cut into consecutive parts along an axis. The sizes come from input 1
//! (opset 1, and 13 on), the `split` attribute (opsets 1-12), `num_outputs` (18 on; the last
//! part may be smaller), or else equal parts, one per output.

use crate::{
    check::{check_rank, error, normalize_axis},
    layout::{around_axis, element_size, expect_output_shape, StridedRead},
    params::{known_ints, Ints},
};
use opal_plugin_api::prelude::*;

/// How the axis is cut.
enum Parts<'a> {
    /// Explicit sizes, one per output.
    Sizes(Ints<'a>),
    /// `count` parts of `chunk` each, except a smaller last one covering the rest of `dim`.
    Chunks {
        chunk: usize,
        count: usize,
        dim: usize,
    },
}

impl Parts<'_> {
    /// The cut of a dim of size `dim` into `outputs` parts, as the attributes and `sizes` (input
    /// 1's values) say.
    fn new<'a>(
        op: &str,
        attributes: &Attributes<'a>,
        sizes: Option<Ints<'a>>,
        dim: usize,
        outputs: usize,
    ) -> KernelResult<Parts<'a>> {
        let sizes = match sizes {
            Some(sizes) => Some(sizes),
            None => attributes.ints("split")?.map(Ints::I64),
        };
        let parts = match sizes {
            Some(sizes) => {
                if sizes.len() != outputs {
                    return Err(error(
                        op,
                        format_args!("{} split sizes for {outputs} outputs", sizes.len()),
                    ));
                }
                if sizes.iter().any(|s| s < 0) {
                    return Err(error(op, "split sizes must not be negative"));
                }
                let total: i64 = sizes.iter().sum();
                if total != dim as i64 {
                    return Err(error(
                        op,
                        format_args!("split sizes add up to {total}, the axis has {dim}"),
                    ));
                }
                Parts::Sizes(sizes)
            }
            None => {
                let count = match attributes.get("num_outputs") {
                    Some(_) => {
                        let n = attributes.int("num_outputs", 0)?;
                        if n as usize != outputs || n < 1 {
                            return Err(error(
                                op,
                                format_args!("num_outputs is {n}, the node has {outputs} outputs"),
                            ));
                        }
                        outputs
                    }
                    None => {
                        if outputs == 0 || !dim.is_multiple_of(outputs) {
                            return Err(error(
                                op,
                                format_args!(
                                    "an axis of {dim} does not split into {outputs} equal parts"
                                ),
                            ));
                        }
                        outputs
                    }
                };
                Parts::Chunks {
                    chunk: dim.div_ceil(count),
                    count,
                    dim,
                }
            }
        };
        Ok(parts)
    }

    /// The first index and length of part `i`.
    fn part(&self, i: usize) -> (usize, usize) {
        match self {
            Parts::Sizes(sizes) => {
                let start: i64 = (0..i).map(|j| sizes.get(j)).sum();
                (start as usize, sizes.get(i) as usize)
            }
            Parts::Chunks { chunk, count, dim } => {
                let start = (chunk * i).min(*dim);
                let len = if i + 1 == *count {
                    dim - start
                } else {
                    (*chunk).min(dim - start)
                };
                (start, len)
            }
        }
    }
}

/// The input cut into parts along `axis` (default 0), one per output.
pub struct Split;

impl Operator for Split {
    const OP_TYPE: &'static str = "Split";
    const VALUE_INPUTS: &'static [usize] = &[1];

    fn infer(cx: &InferContext<'_>) -> KernelResult<Vec<OutputType>> {
        let op = Self::OP_TYPE;
        let x = cx.input(0)?;
        element_size(op, x.dtype)?;
        let rank = x.shape.len();
        check_rank(op, rank)?;
        let axis = normalize_axis(op, cx.attributes().int("axis", 0)?, rank)?;
        let outputs = cx.output_count();
        let sizes = match cx.optional_input(1)? {
            Some(input) => match known_ints(op, "the split input", &input)? {
                Some(sizes) => Some(sizes),
                None => {
                    let mut shape = x.shape.to_vec();
                    shape[axis] = -1;
                    return Ok(vec![OutputType::new(x.dtype, shape); outputs]);
                }
            },
            None => None,
        };
        let Ok(dim) = usize::try_from(x.shape[axis]) else {
            let mut shape = x.shape.to_vec();
            return Ok((0..outputs)
                .map(|i| {
                    shape[axis] = sizes.as_ref().and_then(|s| s.get(i).copied()).unwrap_or(-1);
                    OutputType::new(x.dtype, shape.clone())
                })
                .collect());
        };
        let parts = Parts::new(
            op,
            &cx.attributes(),
            sizes.as_deref().map(Ints::I64),
            dim,
            outputs,
        )?;
        Ok((0..outputs)
            .map(|i| {
                let mut shape = x.shape.to_vec();
                shape[axis] = parts.part(i).1 as i64;
                OutputType::new(x.dtype, shape)
            })
            .collect())
    }

    fn compute(cx: &mut KernelContext<'_>) -> KernelResult<()> {
        let op = Self::OP_TYPE;
        let x = cx.input(0)?;
        let shape = x.shape();
        let rank = shape.len();
        check_rank(op, rank)?;
        let axis = normalize_axis(op, cx.attributes().int("axis", 0)?, rank)?;
        let size = element_size(op, x.dtype())?;
        let sizes = cx
            .optional_input(1)
            .map(|s| Ints::from_tensor(op, "the split input", s))
            .transpose()?;
        let (outer, dim, inner) = around_axis(shape, axis);
        let outputs = cx.output_count();
        let parts = Parts::new(op, &cx.attributes(), sizes, dim, outputs)?;
        for i in 0..outputs {
            let (start, len) = parts.part(i);
            let out = cx.output(i)?;
            let mut expected = [0usize; crate::broadcast::MAX_RANK];
            expected[..rank].copy_from_slice(shape);
            expected[axis] = len;
            expect_output_shape(op, out.shape(), &expected[..rank])?;
            let y = out.bytes_mut();
            if y.is_empty() {
                continue;
            }
            let read = StridedRead::new(
                op,
                &[outer, len, inner],
                &[(dim * inner) as isize, inner as isize, 1],
                start * inner,
            )?;
            read.copy(cx, op, size, x.bytes(), y)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opal_plugin_api::testing::{int_attr, ints_attr, run_operator, OwnedTensor};

    fn split(
        values: usize,
        inputs_extra: Option<&[i64]>,
        attributes: &[opal_plugin_api::Attribute<'_>],
        outputs: usize,
    ) -> Vec<Vec<i16>> {
        let data: Vec<i16> = (0..values as i16).collect();
        let mut inputs = vec![OwnedTensor::new(&[2, values / 2], &data)];
        if let Some(sizes) = inputs_extra {
            inputs.push(OwnedTensor::i64(&[sizes.len()], sizes));
        }
        run_operator::<Split>(&inputs, attributes, outputs)
            .unwrap()
            .iter()
            .map(|t| t.to_vec::<i16>())
            .collect()
    }

    #[test]
    fn split_sizes_come_from_any_source() {
        let axis = int_attr("axis", 1);
        assert_eq!(
            split(8, Some(&[1, 3]), &[axis], 2),
            [vec![0, 4], vec![1, 2, 3, 5, 6, 7]]
        );
        assert_eq!(
            split(8, None, &[axis, ints_attr("split", &[3, 1])], 2),
            [vec![0, 1, 2, 4, 5, 6], vec![3, 7]]
        );
        assert_eq!(
            split(8, None, &[axis], 2),
            [vec![0, 1, 4, 5], vec![2, 3, 6, 7]]
        );
        assert_eq!(
            split(10, None, &[axis, int_attr("num_outputs", 2)], 2),
            [vec![0, 1, 2, 5, 6, 7], vec![3, 4, 8, 9]]
        );
        assert_eq!(split(8, None, &[], 2), [vec![0, 1, 2, 3], vec![4, 5, 6, 7]]);
    }
}
