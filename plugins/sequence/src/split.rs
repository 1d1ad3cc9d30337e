//! SplitToSequence: a tensor split along `axis` into a sequence: into pieces of the lengths
//! `split` lists, into pieces of `split`'s one length (the last may be shorter), or into pieces
//! of length 1 (without the axis unless `keepdims`) when `split` is omitted.

use crate::common::sequence_output;
use opal_kernel_support::check::{error, normalize_axis};
use opal_plugin_api::prelude::*;
use smallvec::SmallVec;

pub struct SplitToSequence;

/// How the axis is cut.
enum Lengths<'a> {
    /// Pieces of length 1; the axis stays when the flag is set.
    Ones(bool),
    /// Pieces of this length, the last possibly shorter.
    Each(usize),
    Listed(Ints<'a>),
}

/// The lengths a split tensor lists, in its own integer type.
#[derive(Clone, Copy)]
enum Ints<'a> {
    I32(&'a [i32]),
    I64(&'a [i64]),
}

impl<'a> Ints<'a> {
    fn get(self, index: usize) -> Option<i64> {
        match self {
            Ints::I32(values) => values.get(index).map(|&n| i64::from(n)),
            Ints::I64(values) => values.get(index).copied(),
        }
    }

    fn iter(self) -> impl Iterator<Item = i64> + 'a {
        (0..).map_while(move |i| self.get(i))
    }
}

impl std::fmt::Debug for Ints<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl<'a> Lengths<'a> {
    fn of(split: Option<TensorRef<'a>>, keepdims: bool) -> KernelResult<Self> {
        const OP: &str = SplitToSequence::OP_TYPE;
        let Some(split) = split else {
            return Ok(Lengths::Ones(keepdims));
        };
        let values = match split.dtype() {
            DType::I32 => Ints::I32(split.as_slice::<i32>()?),
            DType::I64 => Ints::I64(split.as_slice::<i64>()?),
            dtype => {
                return Err(error(
                    OP,
                    format_args!("split has dtype {dtype}, expected i32 or i64"),
                ))
            }
        };
        if split.shape().is_empty() {
            return match values.get(0) {
                Some(n) if n > 0 => Ok(Lengths::Each(n as usize)),
                _ => Err(error(OP, "a scalar split must be a positive length")),
            };
        }
        if values.iter().any(|n| n < 0) {
            return Err(error(
                OP,
                format_args!("split {values:?} holds a negative length"),
            ));
        }
        Ok(Lengths::Listed(values))
    }

    /// Fails unless listed lengths cover an axis of `dim`.
    fn check(&self, dim: usize) -> KernelResult<()> {
        let Lengths::Listed(lengths) = self else {
            return Ok(());
        };
        let total: i64 = lengths.iter().sum();
        if total != dim as i64 {
            return Err(error(
                SplitToSequence::OP_TYPE,
                format_args!("split {lengths:?} sums to {total}, but the axis has {dim}"),
            ));
        }
        Ok(())
    }

    /// The length of piece `index`, which starts at `start` of an axis of `dim`; `None` past
    /// the last piece.
    fn length(&self, index: usize, start: usize, dim: usize) -> Option<usize> {
        match *self {
            Lengths::Ones(_) => (start < dim).then_some(1),
            Lengths::Each(n) => (start < dim).then(|| n.min(dim - start)),
            Lengths::Listed(lengths) => lengths.get(index).map(|n| n as usize),
        }
    }

    /// The shape of a piece of `length` cut from `shape`.
    fn piece_shape(&self, shape: &[usize], axis: usize, length: usize) -> SmallVec<[usize; 8]> {
        let mut piece = SmallVec::from_slice(shape);
        if let Lengths::Ones(false) = self {
            piece.remove(axis);
        } else {
            piece[axis] = length;
        }
        piece
    }
}

impl Operator for SplitToSequence {
    const OP_TYPE: &'static str = "SplitToSequence";
    const SINCE_VERSION: i64 = 11;
    const READS_VALUE_KINDS: bool = true;
    const VALUE_INPUTS: &'static [usize] = &[1];

    fn infer(cx: &InferContext<'_>) -> KernelResult<Vec<OutputType>> {
        cx.expect_kind(0, ValueKind::TENSOR)?;
        let x = cx.input(0)?;
        let axis = normalize_axis(
            Self::OP_TYPE,
            cx.attributes().int("axis", 0)?,
            x.shape.len(),
        )?;
        let keepdims = cx.attributes().int("keepdims", 1)? != 0;
        let split = cx.optional_input(1)?;
        let mut shape = x.shape.to_vec();
        match split {
            None if !keepdims => {
                shape.remove(axis);
            }
            None => shape[axis] = 1,
            Some(split) => {
                // The pieces share a length only when a scalar divides the axis.
                let scalar = |first: Option<i64>| first.filter(|_| split.shape.is_empty());
                let each = match split.dtype {
                    DType::I32 => scalar(
                        split
                            .value_as::<i32>()?
                            .and_then(|v| v.first().map(|&n| i64::from(n))),
                    ),
                    _ => scalar(split.value_as::<i64>()?.and_then(|v| v.first().copied())),
                };
                shape[axis] = match each {
                    Some(n) if n > 0 && shape[axis] >= 0 && shape[axis] % n == 0 => n,
                    _ => -1,
                };
            }
        }
        Ok(vec![sequence_output(cx, 0, x.dtype, shape)?])
    }

    fn compute(cx: &mut KernelContext<'_>) -> KernelResult<()> {
        let x = cx.input(0)?;
        let shape = x.shape();
        let axis = normalize_axis(Self::OP_TYPE, cx.attributes().int("axis", 0)?, shape.len())?;
        let keepdims = cx.attributes().int("keepdims", 1)? != 0;
        let lengths = Lengths::of(cx.optional_input(1), keepdims)?;
        let size = x.dtype().size().unwrap_or(1);
        let outer: usize = shape[..axis].iter().product();
        let inner: usize = shape[axis + 1..].iter().product::<usize>() * size;
        let dim = shape[axis];
        let bytes = x.bytes();
        lengths.check(dim)?;
        let (mut index, mut start) = (0, 0);
        while let Some(length) = lengths.length(index, start, dim) {
            let piece_shape = lengths.piece_shape(shape, axis, length);
            let piece = cx.push_element(0, x.dtype(), &piece_shape)?.bytes_mut();
            let run = length * inner;
            for o in 0..outer {
                let from = (o * dim + start) * inner;
                piece[o * run..(o + 1) * run].copy_from_slice(&bytes[from..from + run]);
            }
            index += 1;
            start += length;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opal_plugin_api::testing::{int_attr, OwnedTensor, TestHost, TestValue};

    fn split(
        inputs: Vec<OwnedTensor>,
        attributes: &[opal_plugin_api::Attribute<'_>],
    ) -> Vec<(Vec<usize>, Vec<f32>)> {
        let inputs: Vec<TestValue> = inputs.into_iter().map(TestValue::Tensor).collect();
        let out = TestHost::new()
            .run_values::<SplitToSequence>(&inputs, attributes, 1)
            .unwrap();
        out[0]
            .elements()
            .iter()
            .map(|t| (t.shape().to_vec(), t.to_vec::<f32>()))
            .collect()
    }

    fn x() -> OwnedTensor {
        OwnedTensor::f32(&[3, 2], &[0.0, 1.0, 2.0, 3.0, 4.0, 5.0])
    }

    #[test]
    fn splits_by_a_length_by_lengths_or_into_ones() {
        let pieces = split(vec![x(), OwnedTensor::i64(&[], &[2])], &[]);
        assert_eq!(
            pieces,
            [
                (vec![2, 2], vec![0.0, 1.0, 2.0, 3.0]),
                (vec![1, 2], vec![4.0, 5.0])
            ]
        );
        let pieces = split(
            vec![x(), OwnedTensor::i64(&[2], &[1, 1])],
            &[int_attr("axis", 1)],
        );
        assert_eq!(
            pieces,
            [
                (vec![3, 1], vec![0.0, 2.0, 4.0]),
                (vec![3, 1], vec![1.0, 3.0, 5.0])
            ]
        );
        // The lengths may also be int32.
        let pieces = split(vec![x(), OwnedTensor::new::<i32>(&[2], &[1, 2])], &[]);
        assert_eq!(
            pieces,
            [
                (vec![1, 2], vec![0.0, 1.0]),
                (vec![2, 2], vec![2.0, 3.0, 4.0, 5.0])
            ]
        );
        let pieces = split(vec![x()], &[int_attr("axis", -1), int_attr("keepdims", 0)]);
        assert_eq!(
            pieces,
            [
                (vec![3], vec![0.0, 2.0, 4.0]),
                (vec![3], vec![1.0, 3.0, 5.0])
            ]
        );
    }

    #[test]
    fn refuses_lengths_that_do_not_cover_the_axis() {
        let inputs = [
            TestValue::Tensor(x()),
            TestValue::Tensor(OwnedTensor::i64(&[2], &[1, 1])),
        ];
        let err = TestHost::new()
            .run_values::<SplitToSequence>(&inputs, &[], 1)
            .unwrap_err();
        assert!(err.contains("sums to 2, but the axis has 3"), "{err}");
    }
}
