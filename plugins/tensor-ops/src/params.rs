//! Integer parameters of operators (axes, starts, pads, repeats, indices) read from i32/i64
//! inputs or int-list attributes: as `Vec`s for inference, in place or in fixed arrays for
//! kernels, which must not allocate.

use crate::{
    broadcast::MAX_RANK,
    check::{error, normalize_axis},
};
pub(crate) use opal_kernel_support::int_values::Ints;
use opal_plugin_api::{infer::InferTensor, DType, KernelResult};

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
