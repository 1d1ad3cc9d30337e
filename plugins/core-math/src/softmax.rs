//! Softmax, LogSoftmax and Hardmax on floats, numerically stable (the maximum is subtracted
//! before `exp`), in both ONNX semantics: opsets 1 to 12 flatten the input to 2-D at `axis`
//! (default 1) and normalise each row; opset 13 on normalises along `axis` alone (default -1).

use crate::{
    check::{check_rank, error, normalize_axis},
    elementwise::ELEMENTWISE_GRAIN,
    half::{widened, Narrow},
    numeric::{is_any_float, with_float, Float},
    parallel::{for_each_chunk, task_count, Tasks},
};
use opal_plugin_api::prelude::*;

/// What is computed along the axis.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Normalization {
    Softmax,
    LogSoftmax,
    Hardmax,
}

fn infer_softmax(
    op: &str,
    cx: &InferContext<'_>,
    default_axis: i64,
) -> KernelResult<Vec<OutputType>> {
    let x = cx.input(0)?;
    if !is_any_float(x.dtype) {
        return Err(error(
            op,
            format_args!("input 0 has dtype {}, expected a float type", x.dtype),
        ));
    }
    check_rank(op, x.shape.len())?;
    normalize_axis(
        op,
        cx.attributes().int("axis", default_axis)?,
        x.shape.len(),
    )?;
    Ok(vec![OutputType::new(x.dtype, x.shape.to_vec())])
}

/// Normalises input 0, seen as `[outer, dim, inner]` by `dims(shape, axis)`, along `dim`.
fn compute_softmax(
    op: &str,
    cx: &mut KernelContext<'_>,
    kind: Normalization,
    default_axis: i64,
    flattened: bool,
) -> KernelResult<()> {
    let x = cx.input(0)?;
    let shape = x.shape();
    let axis = normalize_axis(op, cx.attributes().int("axis", default_axis)?, shape.len())?;
    let (dim, inner) = if flattened {
        (shape[axis..].iter().product(), 1)
    } else {
        (shape[axis], shape[axis + 1..].iter().product())
    };
    let out = cx.output(0)?;
    let cx = &*cx;
    with_float!(x.dtype(), F => {
        normalize(cx, kind, x.as_slice::<F>()?, out.as_slice_mut::<F>()?, dim, inner)
    },
    _ => {
        let narrow = Narrow::new(cx, out)?;
        normalize(cx, kind, widened(op, cx, x)?, &mut *narrow.values, dim, inner)?;
        narrow.finish();
        Ok(())
    })
}

/// `x` seen as `[outer, dim, inner]`, normalised along `dim` into `y`.
fn normalize<F: Float>(
    cx: &KernelContext<'_>,
    kind: Normalization,
    x: &[F],
    y: &mut [F],
    dim: usize,
    inner: usize,
) -> KernelResult<()> {
    if x.len() != y.len() {
        return Err(KernelError::new("Softmax: output and input sizes differ"));
    }
    let group = dim * inner;
    if group == 0 {
        return Ok(());
    }
    if inner == 1 {
        for_each_chunk(
            cx,
            y,
            group,
            ELEMENTWISE_GRAIN,
            #[inline(always)]
            |start, chunk| {
                for (y, x) in chunk
                    .chunks_exact_mut(dim)
                    .zip(x[start..].chunks_exact(dim))
                {
                    normalize_row(kind, x, y);
                }
            },
        );
        return Ok(());
    }
    // Strided: a running maximum and sum per inner position, in scratch for each piece.
    let groups = x.len() / group;
    let pieces = task_count(cx, y.len(), ELEMENTWISE_GRAIN).min(groups);
    let mut tasks = Tasks::new();
    let mut rest = y;
    let mut start = 0;
    for p in 0..pieces {
        let end = (p + 1) * groups / pieces * group;
        let (chunk, tail) = rest.split_at_mut(end - start);
        tasks.push((start, chunk, cx.scratch::<F>(2 * inner)?));
        rest = tail;
        start = end;
    }
    tasks.run(
        cx,
        #[inline(always)]
        |(start, chunk, scratch)| {
            for (y, x) in chunk
                .chunks_exact_mut(group)
                .zip(x[start..].chunks_exact(group))
            {
                normalize_strided(kind, x, y, inner, scratch);
            }
        },
    );
    Ok(())
}

/// Accumulators the row reductions keep side by side, so that their loops vectorise.
const LANES: usize = 8;

/// The largest value of `x` (NaN ignored unless first in a lane), `F::LOWEST` when empty.
#[inline(always)]
fn row_maximum<F: Float>(x: &[F]) -> F {
    let mut lanes = [F::LOWEST; LANES];
    let chunks = x.chunks_exact(LANES);
    let tail = chunks.remainder();
    for chunk in chunks {
        for (m, &v) in lanes.iter_mut().zip(chunk) {
            *m = if v > *m { v } else { *m };
        }
    }
    tail.iter()
        .chain(&lanes)
        .fold(F::LOWEST, |m, &v| if v > m { v } else { m })
}

/// The sum of `x`, in [`LANES`] partial sums.
#[inline(always)]
fn row_sum<F: Float>(x: &[F]) -> F {
    let mut lanes = [F::ZERO; LANES];
    let chunks = x.chunks_exact(LANES);
    let tail = chunks.remainder();
    for chunk in chunks {
        for (s, &v) in lanes.iter_mut().zip(chunk) {
            *s = *s + v;
        }
    }
    tail.iter().chain(&lanes).fold(F::ZERO, |s, &v| s + v)
}

/// Normalises a contiguous row.
#[inline(always)]
fn normalize_row<F: Float>(kind: Normalization, x: &[F], y: &mut [F]) {
    let max = row_maximum(x);
    if kind == Normalization::Hardmax {
        let first = x.iter().position(|&v| v == max).unwrap_or(0);
        y.fill(F::ZERO);
        y[first] = F::ONE;
        return;
    }
    for (y, &x) in y.iter_mut().zip(x) {
        *y = (x - max).exp();
    }
    let sum = row_sum(y);
    if kind == Normalization::LogSoftmax {
        let offset = max + sum.ln();
        for (y, &x) in y.iter_mut().zip(x) {
            *y = x - offset;
        }
        return;
    }
    let scale = F::ONE / sum;
    y.iter_mut().for_each(|y| *y = *y * scale);
}

/// Normalises a `[dim, inner]` block along `dim`; `scratch` holds `2 * inner` values.
#[inline(always)]
fn normalize_strided<F: Float>(
    kind: Normalization,
    x: &[F],
    y: &mut [F],
    inner: usize,
    scratch: &mut [F],
) {
    let (max, sum) = scratch.split_at_mut(inner);
    max.copy_from_slice(&x[..inner]);
    for row in x.chunks_exact(inner).skip(1) {
        for (m, &v) in max.iter_mut().zip(row) {
            if v > *m {
                *m = v;
            }
        }
    }
    if kind == Normalization::Hardmax {
        // `sum` marks the positions whose maximum was already placed.
        sum.fill(F::ZERO);
        for (y_row, x_row) in y.chunks_exact_mut(inner).zip(x.chunks_exact(inner)) {
            for (((y, &x), &m), done) in y_row
                .iter_mut()
                .zip(x_row)
                .zip(max.iter())
                .zip(sum.iter_mut())
            {
                let hit = x == m && *done == F::ZERO;
                *y = if hit { F::ONE } else { F::ZERO };
                if hit {
                    *done = F::ONE;
                }
            }
        }
        return;
    }
    sum.fill(F::ZERO);
    for (y_row, x_row) in y.chunks_exact_mut(inner).zip(x.chunks_exact(inner)) {
        for (((y, &x), &m), s) in y_row
            .iter_mut()
            .zip(x_row)
            .zip(max.iter())
            .zip(sum.iter_mut())
        {
            *y = (x - m).exp();
            *s = *s + *y;
        }
    }
    if kind == Normalization::LogSoftmax {
        for (s, &m) in sum.iter_mut().zip(max.iter()) {
            *s = m + s.ln();
        }
        for (y_row, x_row) in y.chunks_exact_mut(inner).zip(x.chunks_exact(inner)) {
            for ((y, &x), &offset) in y_row.iter_mut().zip(x_row).zip(sum.iter()) {
                *y = x - offset;
            }
        }
        return;
    }
    for s in sum.iter_mut() {
        *s = F::ONE / *s;
    }
    for y_row in y.chunks_exact_mut(inner) {
        for (y, &scale) in y_row.iter_mut().zip(sum.iter()) {
            *y = *y * scale;
        }
    }
}

macro_rules! normalization_operators {
    ($(#[$doc:meta])* $flattened:ident, $axis:ident, $op_type:literal, $kind:ident) => {
        $(#[$doc])*
        /// Opsets 1 to 12: over all dims from `axis` on.
        pub struct $flattened;

        $(#[$doc])*
        /// Opset 13 on: over dim `axis` only.
        pub struct $axis;

        impl Operator for $flattened {
            const OP_TYPE: &'static str = $op_type;
            const UNTIL_VERSION: i64 = 12;

            fn infer(cx: &InferContext<'_>) -> KernelResult<Vec<OutputType>> {
                infer_softmax(Self::OP_TYPE, cx, 1)
            }

            fn compute(cx: &mut KernelContext<'_>) -> KernelResult<()> {
                compute_softmax(Self::OP_TYPE, cx, Normalization::$kind, 1, true)
            }
        }

        impl Operator for $axis {
            const OP_TYPE: &'static str = $op_type;
            const SINCE_VERSION: i64 = 13;

            fn infer(cx: &InferContext<'_>) -> KernelResult<Vec<OutputType>> {
                infer_softmax(Self::OP_TYPE, cx, -1)
            }

            fn compute(cx: &mut KernelContext<'_>) -> KernelResult<()> {
                compute_softmax(Self::OP_TYPE, cx, Normalization::$kind, -1, false)
            }
        }
    };
}

normalization_operators!(
    /// `exp(x) / sum(exp(x))`.
    SoftmaxFlattened, Softmax, "Softmax", Softmax
);
normalization_operators!(
    /// `x - log(sum(exp(x)))`.
    LogSoftmaxFlattened, LogSoftmax, "LogSoftmax", LogSoftmax
);
normalization_operators!(
    /// 1 at the first maximum, 0 elsewhere.
    HardmaxFlattened, Hardmax, "Hardmax", Hardmax
);

#[cfg(test)]
mod tests {
    use super::*;
    use opal_kernel_support::testutil::values;
    use opal_plugin_api::testing::{
        assert_close, infer_input, infer_operator, int_attr, OwnedTensor, TestHost,
    };

    /// Softmax (or log-softmax) over `[outer, dim, inner]` along `dim`, in f64.
    fn reference(x: &[f32], dim: usize, inner: usize, log: bool) -> Vec<f32> {
        let mut y = vec![0.0; x.len()];
        for o in 0..x.len() / (dim * inner) {
            for i in 0..inner {
                let at = |d: usize| o * dim * inner + d * inner + i;
                let max = (0..dim)
                    .map(|d| x[at(d)] as f64)
                    .fold(f64::NEG_INFINITY, f64::max);
                let sum: f64 = (0..dim).map(|d| (x[at(d)] as f64 - max).exp()).sum();
                for d in 0..dim {
                    let v = x[at(d)] as f64 - max;
                    y[at(d)] = if log { v - sum.ln() } else { v.exp() / sum } as f32;
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
                assert_close(&y, &reference(&x, dim, inner, false), 1e-6);
                let y = run::<LogSoftmax>(&shape, axis, threads);
                assert_close(&y, &reference(&x, dim, inner, true), 1e-5);
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
            assert_close(&y, &reference(&x, dim, 1, false), 1e-6);
            let y = run::<LogSoftmaxFlattened>(&shape, axis, 1);
            assert_close(&y, &reference(&x, dim, 1, true), 1e-5);
        }
    }

    #[test]
    fn hardmax_marks_the_first_maximum() {
        let x = OwnedTensor::f32(&[2, 3], &[1.0, 3.0, 3.0, 2.0, 0.0, 2.0]);
        let y = TestHost::new()
            .run::<Hardmax>(std::slice::from_ref(&x), &[], 1)
            .unwrap();
        assert_eq!(y[0].to_vec::<f32>(), [0.0, 1.0, 0.0, 1.0, 0.0, 0.0]);
        let y = TestHost::new()
            .run::<Hardmax>(&[x], &[int_attr("axis", 0)], 1)
            .unwrap();
        assert_eq!(y[0].to_vec::<f32>(), [0.0, 1.0, 1.0, 1.0, 0.0, 0.0]);
    }

    #[test]
    fn large_values_do_not_overflow_and_f64_works() {
        let x = OwnedTensor::f32(&[1, 3], &[1000.0, 1000.0, -1000.0]);
        let y = TestHost::new().run::<Softmax>(&[x], &[], 1).unwrap();
        assert_close(y[0].as_slice(), &[0.5, 0.5, 0.0], 1e-6);
        let x = OwnedTensor::new::<f64>(&[2], &[0.0, 2f64.ln()]);
        let y = TestHost::new().run::<Softmax>(&[x], &[], 1).unwrap();
        let y = y[0].to_vec::<f64>();
        assert!((y[0] - 1.0 / 3.0).abs() < 1e-15 && (y[1] - 2.0 / 3.0).abs() < 1e-15);
    }

    #[test]
    fn large_strided_inputs_split_across_threads() {
        let shape = [128, 10, 100];
        let x: Vec<f32> = values(128_000, 9).iter().map(|v| v * 20.0).collect();
        let y = run::<Softmax>(&shape, Some(1), 2);
        assert_close(&y, &reference(&x, 10, 100, false), 1e-6);
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
