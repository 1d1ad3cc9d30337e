//! Integer parameters of operators (axes, starts, pads, repeats, indices) read from i32/i64
//! inputs or int-list attributes: as `Vec`s for inference, in place or in fixed arrays for
//! kernels, which must not allocate.

use crate::{
    broadcast::MAX_RANK,
    check::{error, normalize_axis},
};
use opal_plugin_api::{infer::InferTensor, DType, KernelResult, TensorRef};

/// The elements of an i32 or i64 tensor, read as i64.
#[derive(Clone, Copy)]
pub(crate) enum Ints<'a> {
    I32(&'a [i32]),
    I64(&'a [i64]),
}

impl<'a> Ints<'a> {
    /// The elements of `tensor`, input `what` of operator `op`; an error unless it is i32/i64.
    pub(crate) fn from_tensor(op: &str, what: &str, tensor: TensorRef<'a>) -> KernelResult<Self> {
        match tensor.dtype() {
            DType::I32 => Ok(Ints::I32(tensor.as_slice()?)),
            DType::I64 => Ok(Ints::I64(tensor.as_slice()?)),
            other => Err(error(
                op,
                format_args!("{what} must be i32 or i64, got {other}"),
            )),
        }
    }

    pub(crate) fn len(&self) -> usize {
        match self {
            Ints::I32(v) => v.len(),
            Ints::I64(v) => v.len(),
        }
    }

    /// Element `i` (which must exist).
    pub(crate) fn get(&self, i: usize) -> i64 {
        match self {
            Ints::I32(v) => i64::from(v[i]),
            Ints::I64(v) => v[i],
        }
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = i64> + '_ {
        (0..self.len()).map(|i| self.get(i))
    }

    /// The single element of a scalar (or one-element) tensor.
    pub(crate) fn scalar(&self, op: &str, what: &str) -> KernelResult<i64> {
        if self.len() != 1 {
            return Err(error(
                op,
                format_args!("{what} must hold one value, it holds {}", self.len()),
            ));
        }
        Ok(self.get(0))
    }
}

/// Fails unless input `what` of inference has dtype i32 or i64.
pub(crate) fn expect_int_dtype(op: &str, what: &str, input: &InferTensor<'_>) -> KernelResult<()> {
    match input.dtype {
        DType::I32 | DType::I64 => Ok(()),
        other => Err(error(
            op,
            format_args!("{what} must be i32 or i64, got {other}"),
        )),
    }
}

/// The value of an integer input during inference, when the host has it.
pub(crate) fn known_ints(
    op: &str,
    what: &str,
    input: &InferTensor<'_>,
) -> KernelResult<Option<Vec<i64>>> {
    expect_int_dtype(op, what, input)?;
    match input.value() {
        None => Ok(None),
        Some(value) => Ok(Some(Ints::from_tensor(op, what, value)?.iter().collect())),
    }
}

/// The length of a 1-D input during inference, when known (for rank-only inference).
pub(crate) fn known_length(input: &InferTensor<'_>) -> Option<usize> {
    match input.shape {
        [] => Some(1),
        [n] => usize::try_from(*n).ok(),
        _ => None,
    }
}

/// Which dims of a tensor of rank ≤ `MAX_RANK` a list of axes names.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct AxisSet {
    chosen: [bool; MAX_RANK],
}

impl AxisSet {
    /// The axes (counting from the end when negative) of a tensor of `rank`; an error if one is
    /// out of range or repeated.
    pub(crate) fn new(
        op: &str,
        axes: impl Iterator<Item = i64>,
        rank: usize,
    ) -> KernelResult<Self> {
        let mut set = AxisSet::default();
        for axis in axes {
            let a = normalize_axis(op, axis, rank)?;
            if a >= MAX_RANK {
                return Err(error(
                    op,
                    format_args!("axis {axis} exceeds the supported rank"),
                ));
            }
            if set.chosen[a] {
                return Err(error(op, format_args!("axis {axis} is repeated")));
            }
            set.chosen[a] = true;
        }
        Ok(set)
    }

    pub(crate) fn contains(&self, axis: usize) -> bool {
        self.chosen.get(axis).copied().unwrap_or(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axis_sets_normalise_and_refuse_repeats() {
        let set = AxisSet::new("Op", [0, -1].into_iter(), 3).unwrap();
        assert!(set.contains(0) && set.contains(2) && !set.contains(1));
        assert!(AxisSet::new("Op", [1, -2].into_iter(), 3).is_err());
        assert!(AxisSet::new("Op", [3].into_iter(), 3).is_err());
    }

    #[test]
    fn ints_read_both_widths() {
        let a = [1i32, -2];
        let ints = Ints::I32(&a);
        assert_eq!(ints.iter().collect::<Vec<_>>(), [1, -2]);
        assert!(ints.scalar("Op", "k").is_err());
        assert_eq!(Ints::I64(&[7]).scalar("Op", "k").unwrap(), 7);
    }
}
