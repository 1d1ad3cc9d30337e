//! MeanVarianceNormalization: `(x - mean) / (sqrt(variance) + 1e-9)` with the statistics taken
//! over the `axes` attribute (default `[0, 2, 3]`), as the ONNX function defines it.

use crate::float::{expect_float, input_f32, output_f32};
use opal_kernel_support::{
    broadcast::MAX_RANK,
    check::{check_rank, error, normalize_axis},
};
use opal_plugin_api::prelude::*;

/// MeanVarianceNormalization of every opset.
pub struct MeanVarianceNormalization;

const OP: &str = "MeanVarianceNormalization";
const DEFAULT_AXES: [i64; 3] = [0, 2, 3];

/// The reduced axes as a bit set.
fn reduced_axes(attributes: &Attributes<'_>, rank: usize) -> KernelResult<u32> {
    let axes = attributes.ints("axes")?.unwrap_or(&DEFAULT_AXES);
    let mut set = 0u32;
    for &axis in axes {
        set |= 1 << normalize_axis(OP, axis, rank)?;
    }
    Ok(set)
}

/// Calls `f(flat index, group index)` for every element, where the group index numbers the
/// combinations of the kept (not reduced) axes.
fn for_each_group(shape: &[usize], reduced: u32, mut f: impl FnMut(usize, usize)) {
    let rank = shape.len();
    let mut group_strides = [0usize; MAX_RANK];
    let mut stride = 1;
    for axis in (0..rank).rev() {
        if reduced & (1 << axis) == 0 {
            group_strides[axis] = stride;
            stride *= shape[axis];
        }
    }
    let total: usize = shape.iter().product();
    let mut coords = [0usize; MAX_RANK];
    let mut group = 0;
    for index in 0..total {
        f(index, group);
        for axis in (0..rank).rev() {
            coords[axis] += 1;
            group += group_strides[axis];
            if coords[axis] < shape[axis] {
                break;
            }
            group -= group_strides[axis] * coords[axis];
            coords[axis] = 0;
        }
    }
}

impl Operator for MeanVarianceNormalization {
    const OP_TYPE: &'static str = OP;

    fn infer(cx: &InferContext<'_>) -> KernelResult<Vec<OutputType>> {
        let x = cx.input(0)?;
        expect_float(OP, 0, &x)?;
        check_rank(OP, x.shape.len())?;
        reduced_axes(&cx.attributes(), x.shape.len())?;
        Ok(vec![OutputType::new(x.dtype, x.shape.to_vec())])
    }

    fn compute(cx: &mut KernelContext<'_>) -> KernelResult<()> {
        let shape = cx.input(0)?.shape();
        let reduced = reduced_axes(&cx.attributes(), shape.len())?;
        let groups: usize = (0..shape.len())
            .filter(|a| reduced & (1 << a) == 0)
            .map(|a| shape[a])
            .product();
        let total: usize = shape.iter().product();
        if total == 0 {
            return Ok(());
        }
        let count = (total / groups) as f32;
        let x = input_f32(cx, OP, 0)?;
        let mean = cx.scratch::<f32>(groups)?;
        let deviation = cx.scratch::<f32>(groups)?;
        for_each_group(shape, reduced, |i, g| mean[g] += x[i]);
        mean.iter_mut().for_each(|m| *m /= count);
        for_each_group(shape, reduced, |i, g| {
            deviation[g] += (x[i] - mean[g]) * (x[i] - mean[g])
        });
        deviation
            .iter_mut()
            .for_each(|d| *d = (*d / count).sqrt() + 1e-9);
        let (y, sink) = output_f32(cx, 0)?;
        if y.len() != total {
            return Err(error(OP, "output size does not match the input"));
        }
        for_each_group(shape, reduced, |i, g| {
            y[i] = (x[i] - mean[g]) / deviation[g]
        });
        sink.finish(OP, y)
    }
}
