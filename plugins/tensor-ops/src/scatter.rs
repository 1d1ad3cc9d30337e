//! Scattering by index: ScatterND (slices addressed by index tuples), ScatterElements and the
//! deprecated Scatter (opsets 9-10; one element per index). The output is the data with the
//! updates written, or combined by the `reduction` attribute (add, mul, max, min).

use crate::{
    check::{error, normalize_axis, Shape},
    gather::{ElementWalk, NdWalk},
    layout::{element_size, elements, elements_mut, with_element_size},
    number::{with_number_type, Number},
    params::{expect_int_dtype, Ints},
};
use opal_plugin_api::prelude::*;

/// How an update combines with the element it lands on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Reduction {
    Replace,
    Add,
    Mul,
    Max,
    Min,
}

impl Reduction {
    fn from_attributes(op: &str, attributes: &Attributes<'_>) -> KernelResult<Self> {
        Ok(match attributes.string("reduction", "none")? {
            "none" => Reduction::Replace,
            "add" => Reduction::Add,
            "mul" => Reduction::Mul,
            "max" => Reduction::Max,
            "min" => Reduction::Min,
            other => return Err(error(op, format_args!("unknown reduction '{other}'"))),
        })
    }

    fn apply<T: Number>(self, current: T, update: T) -> T {
        match self {
            Reduction::Replace => update,
            Reduction::Add => current.add(update),
            Reduction::Mul => current.mul(update),
            Reduction::Max => current.larger(update),
            Reduction::Min => current.smaller(update),
        }
    }
}

/// The output has the data's dtype and shape; the updates must share the dtype.
fn infer_scatter(op: &str, cx: &InferContext<'_>) -> KernelResult<Vec<OutputType>> {
    let (data, indices, updates) = (cx.input(0)?, cx.input(1)?, cx.input(2)?);
    element_size(op, data.dtype)?;
    expect_int_dtype(op, "the indices", &indices)?;
    if updates.dtype != data.dtype {
        return Err(error(
            op,
            format_args!(
                "the updates have dtype {}, the data {}",
                updates.dtype, data.dtype
            ),
        ));
    }
    Ok(vec![OutputType::new(data.dtype, data.shape.to_vec())])
}

/// Copies the data to the output, then calls `scatter` with the updates, indices and output.
fn scatter_into(
    op: &str,
    cx: &mut KernelContext<'_>,
    scatter: impl FnOnce(&[u8], Ints<'_>, &mut [u8], usize) -> KernelResult<()>,
) -> KernelResult<()> {
    let data = cx.input(0)?;
    let indices = Ints::from_tensor(op, "the indices", cx.input(1)?)?;
    let updates = cx.input(2)?;
    let out = cx.output(0)?;
    if out.dtype() != data.dtype() || out.shape() != data.shape() || updates.dtype() != data.dtype()
    {
        return Err(error(
            op,
            format_args!(
                "the output {} {} does not match the data",
                out.dtype(),
                Shape(out.shape())
            ),
        ));
    }
    let size = element_size(op, data.dtype())?;
    let y = out.bytes_mut();
    y.copy_from_slice(data.bytes());
    scatter(updates.bytes(), indices, y, size)
}

/// Writes or combines each update element at the element its index addresses.
fn scatter_elements(
    op: &str,
    cx: &mut KernelContext<'_>,
    reduction: Reduction,
) -> KernelResult<()> {
    let data = cx.input(0)?;
    let (indices, updates) = (cx.input(1)?, cx.input(2)?);
    if indices.shape() != updates.shape() {
        return Err(error(
            op,
            format_args!(
                "indices {} and updates {} differ in shape",
                Shape(indices.shape()),
                Shape(updates.shape())
            ),
        ));
    }
    let axis = normalize_axis(op, cx.attributes().int("axis", 0)?, data.shape().len())?;
    let walk = ElementWalk::new(op, data.shape(), indices.shape(), axis)?;
    let dtype = data.dtype();
    scatter_into(op, cx, |updates, indices, y, size| {
        if reduction == Reduction::Replace {
            with_element_size!(op, size, N => {
                let (from, to) = (elements::<N>(updates), elements_mut::<N>(y));
                walk.for_each(op, &indices, |position, at| to[at] = from[position])
            })
        } else {
            with_number_type!(op, dtype, T => {
                let (from, to) = (T::view(updates), T::view_mut(y));
                walk.for_each(op, &indices, |position, at| {
                    let current = T::from_bytes(to[at]);
                    to[at] = reduction.apply(current, T::from_bytes(from[position])).to_bytes();
                })
            })
        }
    })
}

/// Updates written (or combined) at the elements the indices address along `axis`.
pub struct ScatterElements;

impl Operator for ScatterElements {
    const OP_TYPE: &'static str = "ScatterElements";
    const SINCE_VERSION: i64 = 11;

    fn infer(cx: &InferContext<'_>) -> KernelResult<Vec<OutputType>> {
        infer_scatter(Self::OP_TYPE, cx)
    }

    fn compute(cx: &mut KernelContext<'_>) -> KernelResult<()> {
        let reduction = Reduction::from_attributes(Self::OP_TYPE, &cx.attributes())?;
        scatter_elements(Self::OP_TYPE, cx, reduction)
    }
}

/// The deprecated form of ScatterElements (opsets 9-10), without reductions.
pub struct Scatter;

impl Operator for Scatter {
    const OP_TYPE: &'static str = "Scatter";
    const SINCE_VERSION: i64 = 9;
    const UNTIL_VERSION: i64 = 10;

    fn infer(cx: &InferContext<'_>) -> KernelResult<Vec<OutputType>> {
        infer_scatter(Self::OP_TYPE, cx)
    }

    fn compute(cx: &mut KernelContext<'_>) -> KernelResult<()> {
        scatter_elements(Self::OP_TYPE, cx, Reduction::Replace)
    }
}

/// Update slices written (or combined) at the slices the index tuples address.
pub struct ScatterND;

impl Operator for ScatterND {
    const OP_TYPE: &'static str = "ScatterND";
    const SINCE_VERSION: i64 = 11;

    fn infer(cx: &InferContext<'_>) -> KernelResult<Vec<OutputType>> {
        infer_scatter(Self::OP_TYPE, cx)
    }

    fn compute(cx: &mut KernelContext<'_>) -> KernelResult<()> {
        let op = Self::OP_TYPE;
        let reduction = Reduction::from_attributes(op, &cx.attributes())?;
        let data = cx.input(0)?;
        let (indices, updates) = (cx.input(1)?, cx.input(2)?);
        let walk = NdWalk::new(op, data.shape(), indices.shape(), 0)?;
        let slice = walk.slice;
        if updates.len() != walk.tuples * slice {
            return Err(error(
                op,
                format_args!(
                    "updates {} do not match indices {} and data {}",
                    Shape(updates.shape()),
                    Shape(indices.shape()),
                    Shape(data.shape())
                ),
            ));
        }
        let dtype = data.dtype();
        scatter_into(op, cx, |updates, indices, y, size| {
            if reduction == Reduction::Replace {
                let block = slice * size;
                walk.for_each(op, &indices, |tuple, at| {
                    y[at * size..at * size + block]
                        .copy_from_slice(&updates[tuple * block..(tuple + 1) * block]);
                })
            } else {
                with_number_type!(op, dtype, T => {
                    let (from, to) = (T::view(updates), T::view_mut(y));
                    walk.for_each(op, &indices, |tuple, at| {
                        let sources = &from[tuple * slice..(tuple + 1) * slice];
                        for (target, &update) in to[at..at + slice].iter_mut().zip(sources) {
                            *target = reduction.apply(T::from_bytes(*target), T::from_bytes(update)).to_bytes();
                        }
                    })
                })
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opal_plugin_api::testing::{int_attr, run_operator, string_attr, OwnedTensor};

    #[test]
    fn scatter_elements_reduces_duplicates() {
        let data = OwnedTensor::f32(&[1, 5], &[1.0, 2.0, 3.0, 4.0, 5.0]);
        let indices = OwnedTensor::i64(&[1, 2], &[1, 1]);
        let updates = OwnedTensor::f32(&[1, 2], &[1.1, 2.1]);
        let inputs = [data, indices, updates];
        let y = run_operator::<ScatterElements>(
            &inputs,
            &[int_attr("axis", 1), string_attr("reduction", "add")],
            1,
        )
        .unwrap();
        assert_eq!(y[0].to_vec::<f32>(), [1.0, 5.2, 3.0, 4.0, 5.0]);
        let y = run_operator::<ScatterElements>(&inputs, &[int_attr("axis", 1)], 1).unwrap();
        assert_eq!(y[0].to_vec::<f32>(), [1.0, 2.1, 3.0, 4.0, 5.0]);
    }

    #[test]
    fn scatter_nd_writes_slices() {
        let data = OwnedTensor::new(&[4], &[1i32, 2, 3, 4]);
        let indices = OwnedTensor::i64(&[2, 1], &[3, -4]);
        let updates = OwnedTensor::new(&[2], &[9i32, 10]);
        let y =
            run_operator::<ScatterND>(&[data.clone(), indices.clone(), updates.clone()], &[], 1)
                .unwrap();
        assert_eq!(y[0].to_vec::<i32>(), [10, 2, 3, 9]);
        let y = run_operator::<ScatterND>(
            &[data, indices, updates],
            &[string_attr("reduction", "mul")],
            1,
        )
        .unwrap();
        assert_eq!(y[0].to_vec::<i32>(), [10, 2, 3, 36]);
    }
}
