//! Unique: the distinct elements (or slices along `axis`), sorted or in order of first
//! occurrence, with the index of each one's first occurrence, the inverse mapping and counts,
//! as numpy's `unique` returns them. The output shapes depend on the input's values.

use crate::{
    check::{check_rank, error, normalize_axis},
    layout::{around_axis, element_size},
    number::{with_number_type, Number},
};
use opal_plugin_api::prelude::*;
use std::cmp::Ordering;

/// The items Unique compares: `n` slices of `outer x inner` elements (`outer = inner = 1`
/// without an axis).
#[derive(Clone, Copy)]
struct Items {
    outer: usize,
    n: usize,
    inner: usize,
}

impl Items {
    /// The items of a tensor of `shape` along `axis` (each element when `None`).
    fn new(shape: &[usize], axis: Option<usize>) -> Self {
        match axis {
            None => Items {
                outer: 1,
                n: shape.iter().product(),
                inner: 1,
            },
            Some(axis) => {
                let (outer, n, inner) = around_axis(shape, axis);
                Items { outer, n, inner }
            }
        }
    }

    /// Compares items `a` and `b` element by element, in row-major order.
    fn compare<T: Number>(&self, data: &[T::Bytes], a: usize, b: usize) -> Ordering {
        for o in 0..self.outer {
            for i in 0..self.inner {
                let at = |j: usize| T::from_bytes(data[(o * self.n + j) * self.inner + i]);
                let ordering = at(a).order(at(b));
                if ordering != Ordering::Equal {
                    return ordering;
                }
            }
        }
        Ordering::Equal
    }
}

/// Groups equal items. Fills `group_of[j]` (each item's group, groups numbered in sorted
/// order, or in order of first occurrence when `!sorted`), `first[g]` and `count[g]`; returns
/// the number of groups. `order` and `rank` are working space; every slice holds `n` elements.
#[allow(clippy::too_many_arguments)]
fn group<T: Number>(
    data: &[T::Bytes],
    items: Items,
    sorted: bool,
    order: &mut [u32],
    group_of: &mut [u32],
    first: &mut [u32],
    count: &mut [u32],
    rank: &mut [u32],
) -> usize {
    for (j, slot) in order.iter_mut().enumerate() {
        *slot = j as u32;
    }
    order.sort_unstable_by(|&a, &b| {
        items
            .compare::<T>(data, a as usize, b as usize)
            .then(a.cmp(&b))
    });
    let mut groups = 0;
    for (position, &j) in order.iter().enumerate() {
        let new_group = position == 0
            || items.compare::<T>(data, order[position - 1] as usize, j as usize)
                != Ordering::Equal;
        if new_group {
            first[groups] = j;
            count[groups] = 0;
            groups += 1;
        }
        group_of[j as usize] = (groups - 1) as u32;
        count[groups - 1] += 1;
    }
    if !sorted {
        // Renumber the groups by first occurrence: `order` becomes the groups sorted by it.
        let by_first = &mut order[..groups];
        for (g, slot) in by_first.iter_mut().enumerate() {
            *slot = g as u32;
        }
        by_first.sort_unstable_by_key(|&g| first[g as usize]);
        for (new, &g) in by_first.iter().enumerate() {
            rank[g as usize] = new as u32;
        }
        for g in group_of.iter_mut() {
            *g = rank[*g as usize];
        }
        // `first` in the new numbering, through `rank` (free again) as scratch.
        for (new, &g) in by_first.iter().enumerate() {
            rank[new] = first[g as usize];
        }
        first[..groups].copy_from_slice(&rank[..groups]);
        // Counts follow from the new group numbers.
        count[..groups].fill(0);
        for &g in group_of.iter() {
            count[g as usize] += 1;
        }
    }
    groups
}

/// The `axis` attribute, normalised, when given.
fn unique_axis(op: &str, attributes: &Attributes<'_>, rank: usize) -> KernelResult<Option<usize>> {
    match attributes.get("axis") {
        None => Ok(None),
        Some(_) => normalize_axis(op, attributes.int("axis", 0)?, rank).map(Some),
    }
}

/// Distinct elements or slices, with indices, inverse indices and counts.
pub struct Unique;

impl Operator for Unique {
    const OP_TYPE: &'static str = "Unique";
    const SINCE_VERSION: i64 = 11;
    const VALUE_INPUTS: &'static [usize] = &[0];

    fn infer(cx: &InferContext<'_>) -> KernelResult<Vec<OutputType>> {
        let op = Self::OP_TYPE;
        let x = cx.input(0)?;
        element_size(op, x.dtype)?;
        check_rank(op, x.shape.len())?;
        let axis = unique_axis(op, &cx.attributes(), x.shape.len())?;
        let sorted = cx.attributes().int("sorted", 1)? != 0;
        let (groups, n) = match x.value() {
            Some(value) => {
                let items = Items::new(value.shape(), axis);
                let n = items.n;
                let mut buffers = vec![0u32; 5 * n];
                let (order, rest) = buffers.split_at_mut(n);
                let (group_of, rest) = rest.split_at_mut(n);
                let (first, rest) = rest.split_at_mut(n);
                let (count, rank) = rest.split_at_mut(n);
                let groups = with_number_type!(op, x.dtype, T => {
                    group::<T>(T::view(value.bytes()), items, sorted, order, group_of, first, count, rank)
                });
                (groups as i64, n as i64)
            }
            None => {
                let n = match axis {
                    Some(a) => x.shape[a],
                    None => x
                        .shape
                        .iter()
                        .try_fold(1i64, |p, &d| (d >= 0).then(|| p * d))
                        .unwrap_or(-1),
                };
                (-1, n)
            }
        };
        let y_shape = match axis {
            None => vec![groups],
            Some(a) => {
                let mut shape = x.shape.to_vec();
                shape[a] = groups;
                shape
            }
        };
        let mut types = vec![
            OutputType::new(x.dtype, y_shape),
            OutputType::new(DType::I64, vec![groups]),
            OutputType::new(DType::I64, vec![n]),
            OutputType::new(DType::I64, vec![groups]),
        ];
        types.truncate(cx.output_count().max(1));
        Ok(types)
    }

    fn compute(cx: &mut KernelContext<'_>) -> KernelResult<()> {
        let op = Self::OP_TYPE;
        let x = cx.input(0)?;
        check_rank(op, x.shape().len())?;
        let axis = unique_axis(op, &cx.attributes(), x.shape().len())?;
        let sorted = cx.attributes().int("sorted", 1)? != 0;
        let items = Items::new(x.shape(), axis);
        let n = items.n;
        if n > u32::MAX as usize {
            return Err(error(op, "too many items"));
        }
        let (order, group_of) = (cx.scratch::<u32>(n)?, cx.scratch::<u32>(n)?);
        let (first, count, rank) = (
            cx.scratch::<u32>(n)?,
            cx.scratch::<u32>(n)?,
            cx.scratch::<u32>(n)?,
        );
        let size = element_size(op, x.dtype())?;
        let groups = with_number_type!(op, x.dtype(), T => {
            group::<T>(T::view(x.bytes()), items, sorted, order, group_of, first, count, rank)
        });
        let y = cx.output(0)?;
        if y.dtype() != x.dtype() || y.len() != items.outer * groups * items.inner {
            return Err(error(op, "the output does not fit the distinct items"));
        }
        let (from, to) = (x.bytes(), y.bytes_mut());
        let block = items.inner * size;
        for o in 0..items.outer {
            for (g, &item) in first[..groups].iter().enumerate() {
                let source = (o * n + item as usize) * block;
                let target = (o * groups + g) * block;
                to[target..target + block].copy_from_slice(&from[source..source + block]);
            }
        }
        let outputs = cx.output_count();
        let lists: [(&[u32], usize); 3] = [
            (&first[..groups], groups),
            (&group_of[..], n),
            (&count[..groups], groups),
        ];
        for (k, (values, len)) in lists
            .into_iter()
            .enumerate()
            .take(outputs.saturating_sub(1))
        {
            let out = cx.output(k + 1)?.as_slice_mut::<i64>()?;
            if out.len() != len {
                return Err(error(
                    op,
                    format_args!("output {} must hold {len} elements", k + 1),
                ));
            }
            for (o, &v) in out.iter_mut().zip(values) {
                *o = i64::from(v);
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
    fn unique_sorted_and_by_first_occurrence() {
        let x = OwnedTensor::f32(&[6], &[2.0, 1.0, 1.0, 3.0, 4.0, 3.0]);
        let y = run_operator::<Unique>(std::slice::from_ref(&x), &[], 4).unwrap();
        assert_eq!(y[0].to_vec::<f32>(), [1.0, 2.0, 3.0, 4.0]);
        assert_eq!(y[1].to_vec::<i64>(), [1, 0, 3, 4]);
        assert_eq!(y[2].to_vec::<i64>(), [1, 0, 0, 2, 3, 2]);
        assert_eq!(y[3].to_vec::<i64>(), [2, 1, 2, 1]);
        let y = run_operator::<Unique>(&[x], &[int_attr("sorted", 0)], 4).unwrap();
        assert_eq!(y[0].to_vec::<f32>(), [2.0, 1.0, 3.0, 4.0]);
        assert_eq!(y[1].to_vec::<i64>(), [0, 1, 3, 4]);
        assert_eq!(y[2].to_vec::<i64>(), [0, 1, 1, 2, 3, 2]);
        assert_eq!(y[3].to_vec::<i64>(), [1, 2, 2, 1]);
    }

    #[test]
    fn unique_slices_along_an_axis() {
        let x = OwnedTensor::new(&[3, 2], &[1i32, 0, 1, 0, 0, 5]);
        let y = run_operator::<Unique>(&[x], &[int_attr("axis", 0)], 1).unwrap();
        assert_eq!(y[0].shape(), [2, 2]);
        assert_eq!(y[0].to_vec::<i32>(), [0, 5, 1, 0]);
    }
}
