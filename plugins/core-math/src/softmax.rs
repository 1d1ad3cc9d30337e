//! Softmax on f32, numerically stable (the maximum is subtracted before `exp`), in both ONNX
//! semantics: opsets 1 to 12 flatten the input to 2-D at `axis` (default 1) and normalise each
//! row; opset 13 on normalises along `axis` alone (default -1).

use crate::{
    check::{check_rank, expect_f32, normalize_axis},
    parallel::for_each_chunk,
    unary::ELEMENTWISE_GRAIN,
};
use opal_plugin_api::prelude::*;

/// Softmax of opsets 1 to 12: over all dims from `axis` on.
pub struct SoftmaxFlattened;

/// Softmax of opset 13 on: over dim `axis` only.
pub struct Softmax;

impl Operator for SoftmaxFlattened {
    const OP_TYPE: &'static str = "Softmax";
    const UNTIL_VERSION: i64 = 12;

    fn infer(cx: &InferContext<'_>) -> KernelResult<Vec<OutputType>> {
        infer_softmax(cx, 1)
    }

    fn compute(cx: &mut KernelContext<'_>) -> KernelResult<()> {
        let shape = cx.input(0)?.shape();
        let axis = normalize_axis(Self::OP_TYPE, cx.attributes().int("axis", 1)?, shape.len())?;
        let dim = shape[axis..].iter().product();
        softmax(cx, dim, 1)
    }
}

impl Operator for Softmax {
    const OP_TYPE: &'static str = "Softmax";
    const SINCE_VERSION: i64 = 13;

    fn infer(cx: &InferContext<'_>) -> KernelResult<Vec<OutputType>> {
        infer_softmax(cx, -1)
    }

    fn compute(cx: &mut KernelContext<'_>) -> KernelResult<()> {
        let shape = cx.input(0)?.shape();
        let axis = normalize_axis(Self::OP_TYPE, cx.attributes().int("axis", -1)?, shape.len())?;
        softmax(cx, shape[axis], shape[axis + 1..].iter().product())
    }
}

fn infer_softmax(cx: &InferContext<'_>, default_axis: i64) -> KernelResult<Vec<OutputType>> {
    let op = "Softmax";
    let x = cx.input(0)?;
    expect_f32(op, 0, &x)?;
    check_rank(op, x.shape.len())?;
    normalize_axis(
        op,
        cx.attributes().int("axis", default_axis)?,
        x.shape.len(),
    )?;
    Ok(vec![OutputType::new(x.dtype, x.shape.to_vec())])
}

/// Input 0 seen as `[outer, dim, inner]`, normalised along `dim`, into output 0.
fn softmax(cx: &mut KernelContext<'_>, dim: usize, inner: usize) -> KernelResult<()> {
    let x = cx.input(0)?.f32()?;
    let y = cx.output(0)?.f32_mut()?;
    if x.len() != y.len() {
        return Err(KernelError::new("Softmax: output and input sizes differ"));
    }
    let group = dim * inner;
    if group == 0 {
        return Ok(());
    }
    if inner == 1 {
        for_each_chunk(cx, y, group, ELEMENTWISE_GRAIN, |start, chunk| {
            for (y, x) in chunk
                .chunks_exact_mut(dim)
                .zip(x[start..].chunks_exact(dim))
            {
                softmax_row(x, y);
            }
        });
        return Ok(());
    }
    // Strided: a running maximum and sum per inner position, in scratch for each piece.
    let groups = x.len() / group;
    let pieces = crate::parallel::task_count(cx, y.len(), ELEMENTWISE_GRAIN).min(groups);
    let mut tasks = crate::parallel::Tasks::new();
    let mut rest = y;
    let mut start = 0;
    for p in 0..pieces {
        let end = (p + 1) * groups / pieces * group;
        let (chunk, tail) = rest.split_at_mut(end - start);
        tasks.push((start, chunk, cx.scratch::<f32>(2 * inner)?));
        rest = tail;
        start = end;
    }
    tasks.run(cx, |(start, chunk, scratch)| {
        for (y, x) in chunk
            .chunks_exact_mut(group)
            .zip(x[start..].chunks_exact(group))
        {
            softmax_strided(x, y, inner, scratch);
        }
    });
    Ok(())
}

/// Softmax of a contiguous row.
fn softmax_row(x: &[f32], y: &mut [f32]) {
    let max = x.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    let mut sum = 0.0;
    for (y, &x) in y.iter_mut().zip(x) {
        *y = (x - max).exp();
        sum += *y;
    }
    let scale = 1.0 / sum;
    y.iter_mut().for_each(|y| *y *= scale);
}

/// Softmax of a `[dim, inner]` block along `dim`; `scratch` holds `2 * inner` values.
fn softmax_strided(x: &[f32], y: &mut [f32], inner: usize, scratch: &mut [f32]) {
    let (max, sum) = scratch.split_at_mut(inner);
    max.copy_from_slice(&x[..inner]);
    for row in x.chunks_exact(inner).skip(1) {
        for (m, &v) in max.iter_mut().zip(row) {
            *m = m.max(v);
        }
    }
    sum.fill(0.0);
    for (y_row, x_row) in y.chunks_exact_mut(inner).zip(x.chunks_exact(inner)) {
        for (((y, &x), &m), s) in y_row
            .iter_mut()
            .zip(x_row)
            .zip(max.iter())
            .zip(sum.iter_mut())
        {
            *y = (x - m).exp();
            *s += *y;
        }
    }
    for s in sum.iter_mut() {
        *s = 1.0 / *s;
    }
    for y_row in y.chunks_exact_mut(inner) {
        for (y, &scale) in y_row.iter_mut().zip(sum.iter()) {
            *y *= scale;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opal_kernel_support::testutil::values;
    use opal_plugin_api::testing::{
        assert_close, infer_input, infer_operator, int_attr, OwnedTensor, TestHost,
    };

    /// Softmax over `[outer, dim, inner]` along `dim`, in f64.
    fn reference(x: &[f32], dim: usize, inner: usize) -> Vec<f32> {
        let mut y = vec![0.0; x.len()];
        for o in 0..x.len() / (dim * inner) {
            for i in 0..inner {
                let at = |d: usize| o * dim * inner + d * inner + i;
                let max = (0..dim)
                    .map(|d| x[at(d)] as f64)
                    .fold(f64::NEG_INFINITY, f64::max);
                let sum: f64 = (0..dim).map(|d| (x[at(d)] as f64 - max).exp()).sum();
                for d in 0..dim {
                    y[at(d)] = ((x[at(d)] as f64 - max).exp() / sum) as f32;
                }
            }
        }
        y
    }

    fn run<O: Operator>(shape: &[usize], axis: Option<i64>, threads: usize) -> Vec<f32> {
        let x: Vec<f32> = values(shape.iter().product(), 9)
            .iter()
            .map(|v| v * 20.0)
            .collect();
        let attributes: Vec<_> = axis.map(|a| int_attr("axis", a)).into_iter().collect();
        let y = TestHost::new()
            .threads(threads)
            .run::<O>(&[OwnedTensor::f32(shape, &x)], &attributes, 1)
            .unwrap();
        assert_eq!(y[0].shape(), shape);
        y[0].to_vec()
    }

    #[test]
    fn opset_13_normalises_along_one_axis() {
        let shape = [2, 3, 4, 5];
        let x: Vec<f32> = values(120, 9).iter().map(|v| v * 20.0).collect();
        for (axis, dim, inner) in [
            (None, 5, 1),
            (Some(-1), 5, 1),
            (Some(1), 3, 20),
            (Some(0), 2, 60),
            (Some(-2), 4, 5),
        ] {
            for threads in [1, 2] {
                let y = run::<Softmax>(&shape, axis, threads);
                assert_close(&y, &reference(&x, dim, inner), 1e-6);
            }
        }
    }

    #[test]
    fn opsets_1_to_12_flatten_at_the_axis() {
        let shape = [2, 3, 4, 5];
        let x: Vec<f32> = values(120, 9).iter().map(|v| v * 20.0).collect();
        for (axis, dim) in [
            (None, 60),
            (Some(0), 120),
            (Some(2), 20),
            (Some(-1), 5),
            (Some(3), 5),
        ] {
            let y = run::<SoftmaxFlattened>(&shape, axis, 1);
            assert_close(&y, &reference(&x, dim, 1), 1e-6);
        }
    }

    #[test]
    fn large_values_do_not_overflow() {
        let x = OwnedTensor::f32(&[1, 3], &[1000.0, 1000.0, -1000.0]);
        let y = TestHost::new().run::<Softmax>(&[x], &[], 1).unwrap();
        assert_close(y[0].as_slice(), &[0.5, 0.5, 0.0], 1e-6);
    }

    #[test]
    fn large_strided_inputs_split_across_threads() {
        let shape = [128, 10, 100];
        let x: Vec<f32> = values(128_000, 9).iter().map(|v| v * 20.0).collect();
        let y = run::<Softmax>(&shape, Some(1), 2);
        assert_close(&y, &reference(&x, 10, 100), 1e-6);
    }

    #[test]
    fn inference_checks_the_axis() {
        let error = infer_operator::<Softmax>(
            &[infer_input(DType::F32, &[2, 3])],
            &[int_attr("axis", 2)],
            1,
        )
        .unwrap_err();
        assert_eq!(error, "Softmax: axis 2 is out of range for rank 2");
        let types =
            infer_operator::<SoftmaxFlattened>(&[infer_input(DType::F32, &[-1, 3])], &[], 1)
                .unwrap();
        assert_eq!(types[0].shape.as_slice(), [-1, 3]);
    }
}
