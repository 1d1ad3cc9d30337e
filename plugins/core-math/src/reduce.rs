//! The Reduce* operators (Sum, Mean, Max, Min, Prod, L1, L2, LogSum, LogSumExp, SumSquare)
//! over numeric inputs, and Max/Min over bools. The axes come from the `axes` attribute (older
//! opsets) or the optional input 1 (ReduceSum from 13, the others from 18), so one operator
//! per op type covers every opset. One pass walks the input in order, each element adding into
//! its output's accumulator (f64 for floats, i64 or u64 for integers) in scratch.

use crate::{
    broadcast::{Plan, MAX_RANK},
    check::{check_rank, error, normalize_axis},
    half::{widened, Narrow},
    numeric::{is_numeric, with_numeric, Accumulator, Num},
};
use opal_plugin_api::prelude::*;

/// What a reduction computes.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Reduction {
    Sum,
    Mean,
    Max,
    Min,
    Prod,
    L1,
    L2,
    LogSum,
    LogSumExp,
    SumSquare,
}

/// Which input dims a node reduces.
#[derive(Clone, Copy)]
struct Axes {
    reduced: [bool; MAX_RANK],
}

impl Axes {
    /// The reduced dims of a rank-`rank` input: `axes` (negative ones count from the end), all
    /// dims when `axes` is absent or empty, none when it is empty and `noop` is set.
    fn resolve(op: &str, rank: usize, axes: Option<&[i64]>, noop: bool) -> KernelResult<Self> {
        check_rank(op, rank)?;
        let mut reduced = [false; MAX_RANK];
        match axes {
            Some(axes) if !axes.is_empty() => {
                for &axis in axes {
                    reduced[normalize_axis(op, axis, rank)?] = true;
                }
            }
            _ if noop => {}
            _ => reduced[..rank].fill(true),
        }
        Ok(Axes { reduced })
    }
}

/// The node's `keepdims` and `noop_with_empty_axes` attributes.
fn flags(attributes: Attributes<'_>) -> KernelResult<(bool, bool)> {
    Ok((
        attributes.int("keepdims", 1)? != 0,
        attributes.int("noop_with_empty_axes", 0)? != 0,
    ))
}

/// Fails unless the axes input is a 1-D (or scalar) i64 tensor.
fn check_axes_input(op: &str, dtype: DType, rank: usize) -> KernelResult<()> {
    if dtype != DType::I64 || rank > 1 {
        return Err(error(op, "the axes input must be a 1-D i64 tensor"));
    }
    Ok(())
}

fn infer_reduce(
    op: &str,
    cx: &InferContext<'_>,
    accept_bool: bool,
) -> KernelResult<Vec<OutputType>> {
    let x = cx.input(0)?;
    if !(is_numeric(x.dtype) || (accept_bool && x.dtype == DType::BOOL)) {
        return Err(error(
            op,
            format_args!("dtype {} is not supported", x.dtype),
        ));
    }
    let rank = x.shape.len();
    let (keepdims, noop) = flags(cx.attributes())?;
    let axes = match cx.optional_input(1)? {
        Some(input) => {
            check_axes_input(op, input.dtype, input.shape.len())?;
            match input.value_as::<i64>()? {
                Some(axes) => Some(axes),
                None => {
                    // The value is known only at run time: so are the output dims.
                    let count = input.shape.first().copied().unwrap_or(1);
                    let out_rank = match (keepdims, count) {
                        (true, _) => rank,
                        (false, 0) if noop => rank,
                        (false, 0) => 0,
                        (false, k) if k > 0 => rank.saturating_sub(k as usize),
                        _ => return Err(error(
                            op,
                            "the output rank depends on the axes input, whose length is not known",
                        )),
                    };
                    return Ok(vec![OutputType::new(x.dtype, vec![-1; out_rank])]);
                }
            }
        }
        None => cx.attributes().ints("axes")?,
    };
    let axes = Axes::resolve(op, rank, axes, noop)?;
    let shape = x
        .shape
        .iter()
        .enumerate()
        .filter_map(|(d, &dim)| match (axes.reduced[d], keepdims) {
            (false, _) => Some(dim),
            (true, true) => Some(1),
            (true, false) => None,
        })
        .collect();
    Ok(vec![OutputType::new(x.dtype, shape)])
}

/// A walk over the input in order, giving each element's output index.
fn plan(shape: &[usize], axes: &Axes) -> Plan<2> {
    let mut strides = [[0; MAX_RANK]; 2];
    let (mut input_stride, mut output_stride) = (1, 1);
    for d in (0..shape.len()).rev() {
        strides[0][d] = input_stride;
        input_stride *= shape[d];
        if !axes.reduced[d] {
            strides[1][d] = output_stride;
            output_stride *= shape[d];
        }
    }
    Plan::with_strides(shape, strides)
}

/// `acc[out] = f(acc[out], x)` for every input element `x`.
fn accumulate<T: Num, A: Copy>(plan: &Plan<2>, x: &[T], acc: &mut [A], f: impl Fn(A, T) -> A) {
    let [_, output_stride] = plan.run_strides();
    plan.for_each_run(0..x.len(), |_, len, [ix, io]| {
        let run = &x[ix..ix + len];
        if output_stride == 0 {
            let slot = &mut acc[io];
            let mut a = *slot;
            for &v in run {
                a = f(a, v);
            }
            *slot = a;
        } else {
            for (a, &v) in acc[io..io + len].iter_mut().zip(run) {
                *a = f(*a, v);
            }
        }
    });
}

/// Reduces `x` (of shape `shape`) into `y` along `axes`.
fn reduce<T: Num>(
    cx: &KernelContext<'_>,
    kind: Reduction,
    x: &[T],
    shape: &[usize],
    axes: &Axes,
    y: &mut [T],
) -> KernelResult<()> {
    let plan = plan(shape, axes);
    let count = if y.is_empty() { 0 } else { x.len() / y.len() };
    if kind == Reduction::LogSumExp {
        let peak = cx.scratch::<f64>(y.len())?;
        peak.fill(f64::NEG_INFINITY);
        accumulate(&plan, x, peak, |m, v| {
            let v = v.to_f64();
            if v > m && v.is_finite() {
                v
            } else {
                m
            }
        });
        let sum = cx.scratch::<f64>(y.len())?;
        let shifted = |m: f64| if m.is_finite() { m } else { 0.0 };
        // The peak of each output, looked up through the same walk.
        let [_, output_stride] = plan.run_strides();
        plan.for_each_run(0..x.len(), |_, len, [ix, io]| {
            for (k, &v) in x[ix..ix + len].iter().enumerate() {
                let o = io + k * output_stride;
                sum[o] += (v.to_f64() - shifted(peak[o])).exp();
            }
        });
        for ((y, &s), &m) in y.iter_mut().zip(sum.iter()).zip(peak.iter()) {
            *y = T::from_f64(s.ln() + shifted(m));
        }
        return Ok(());
    }
    match kind {
        Reduction::Max => {
            y.fill(T::LOWEST);
            accumulate(&plan, x, y, T::max_nan);
            return Ok(());
        }
        Reduction::Min => {
            y.fill(T::HIGHEST);
            accumulate(&plan, x, y, T::min_nan);
            return Ok(());
        }
        _ => {}
    }
    let acc = cx.scratch::<T::Acc>(y.len())?;
    let start = match kind {
        Reduction::Prod => T::ONE,
        _ => T::ZERO,
    };
    acc.fill(start.to_acc());
    match kind {
        Reduction::Sum | Reduction::Mean | Reduction::LogSum => {
            accumulate(&plan, x, acc, |a, v| a.plus(v.to_acc()))
        }
        Reduction::Prod => accumulate(&plan, x, acc, |a, v| a.times(v.to_acc())),
        Reduction::L1 => accumulate(&plan, x, acc, |a, v| a.plus(v.abs().to_acc())),
        Reduction::L2 | Reduction::SumSquare => accumulate(&plan, x, acc, |a, v| {
            let v = v.to_acc();
            a.plus(v.times(v))
        }),
        Reduction::LogSumExp | Reduction::Max | Reduction::Min => {}
    }
    for (y, &a) in y.iter_mut().zip(acc.iter()) {
        *y = match kind {
            Reduction::Mean => T::from_f64(a.to_float() / count as f64),
            Reduction::L2 => T::from_f64(a.to_float().sqrt()),
            Reduction::LogSum => T::from_f64(a.to_float().ln()),
            _ => T::from_acc(a),
        };
    }
    Ok(())
}

fn compute_reduce(op: &str, kind: Reduction, cx: &mut KernelContext<'_>) -> KernelResult<()> {
    let x = cx.input(0)?;
    let (_, noop) = flags(cx.attributes())?;
    let axes = match cx.optional_input(1) {
        Some(input) => {
            check_axes_input(op, input.dtype(), input.shape().len())?;
            Some(input.as_slice::<i64>()?)
        }
        None => cx.attributes().ints("axes")?,
    };
    let axes = Axes::resolve(op, x.shape().len(), axes, noop)?;
    let out = cx.output(0)?;
    let cx = &*cx;
    with_numeric!(x.dtype(), T => {
        reduce(cx, kind, x.as_slice::<T>()?, x.shape(), &axes, out.as_slice_mut::<T>()?)
    },
    _ => match x.dtype() {
        DType::BOOL if matches!(kind, Reduction::Max | Reduction::Min) => {
            // Bools are bytes of 0 or 1: reduce them as u8 and map any non-zero back to 1.
            let y = out.bytes_mut();
            reduce(cx, kind, x.bytes(), x.shape(), &axes, y)?;
            for v in y.iter_mut() {
                *v = u8::from(*v != 0);
            }
            Ok(())
        }
        DType::F16 | DType::BF16 => {
            let narrow = Narrow::new(cx, out)?;
            reduce(cx, kind, widened(op, cx, x)?, x.shape(), &axes, &mut *narrow.values)?;
            narrow.finish();
            Ok(())
        }
        dtype => Err(error(op, format_args!("dtype {dtype} is not supported"))),
    })
}

macro_rules! reduce_operator {
    ($(#[$doc:meta])* $name:ident, $op_type:literal, $kind:ident, bool $bool:literal) => {
        $(#[$doc])*
        pub struct $name;

        impl Operator for $name {
            const OP_TYPE: &'static str = $op_type;
            const VALUE_INPUTS: &'static [usize] = &[1];

            fn infer(cx: &InferContext<'_>) -> KernelResult<Vec<OutputType>> {
                infer_reduce(Self::OP_TYPE, cx, $bool)
            }

            fn compute(cx: &mut KernelContext<'_>) -> KernelResult<()> {
                compute_reduce(Self::OP_TYPE, Reduction::$kind, cx)
            }
        }
    };
}

reduce_operator!(
    /// The sum over the axes.
    ReduceSum, "ReduceSum", Sum, bool false
);
reduce_operator!(
    /// The mean over the axes.
    ReduceMean, "ReduceMean", Mean, bool false
);
reduce_operator!(
    /// The maximum over the axes (the lowest value over none).
    ReduceMax, "ReduceMax", Max, bool true
);
reduce_operator!(
    /// The minimum over the axes (the highest value over none).
    ReduceMin, "ReduceMin", Min, bool true
);
reduce_operator!(
    /// The product over the axes.
    ReduceProd, "ReduceProd", Prod, bool false
);
reduce_operator!(
    /// The sum of absolute values over the axes.
    ReduceL1, "ReduceL1", L1, bool false
);
reduce_operator!(
    /// The Euclidean norm over the axes.
    ReduceL2, "ReduceL2", L2, bool false
);
reduce_operator!(
    /// The logarithm of the sum over the axes.
    ReduceLogSum, "ReduceLogSum", LogSum, bool false
);
reduce_operator!(
    /// `log(sum(exp(x)))` over the axes, computed without overflow.
    ReduceLogSumExp, "ReduceLogSumExp", LogSumExp, bool false
);
reduce_operator!(
    /// The sum of squares over the axes.
    ReduceSumSquare, "ReduceSumSquare", SumSquare, bool false
);

#[cfg(test)]
mod tests {
    use super::*;
    use opal_plugin_api::testing::{
        assert_close, infer_input, infer_operator, int_attr, ints_attr, run_operator, OwnedTensor,
    };

    type Run = fn(&[OwnedTensor]) -> Result<Vec<OwnedTensor>, String>;

    fn x() -> OwnedTensor {
        OwnedTensor::f32(&[2, 3], &[1.0, -2.0, 3.0, 4.0, 5.0, -6.0])
    }

    #[test]
    fn axes_come_from_attributes_or_input() {
        let y = run_operator::<ReduceSum>(&[x()], &[ints_attr("axes", &[1])], 1).unwrap();
        assert_eq!(y[0].shape(), [2, 1]);
        assert_eq!(y[0].to_vec::<f32>(), [2.0, 3.0]);
        let axes = OwnedTensor::i64(&[1], &[0]);
        let y = run_operator::<ReduceMax>(&[x(), axes], &[int_attr("keepdims", 0)], 1).unwrap();
        assert_eq!(y[0].shape(), [3]);
        assert_eq!(y[0].to_vec::<f32>(), [4.0, 5.0, 3.0]);
        let y = run_operator::<ReduceMean>(&[x()], &[], 1).unwrap();
        assert_eq!(y[0].shape(), [1, 1]);
        assert_close(y[0].as_slice(), &[5.0 / 6.0], 1e-7);
    }

    #[test]
    fn every_kind_reduces_along_the_first_axis() {
        let run = |inputs: &[OwnedTensor],
                   f: fn(&[OwnedTensor]) -> Result<Vec<OwnedTensor>, String>| {
            f(inputs).unwrap()[0].to_vec::<f32>()
        };
        let inputs = [x(), OwnedTensor::i64(&[1], &[-2])];
        let cases: [(Run, [f32; 3]); 8] = [
            (
                |i| run_operator::<ReduceProd>(i, &[], 1),
                [4.0, -10.0, -18.0],
            ),
            (|i| run_operator::<ReduceMin>(i, &[], 1), [1.0, -2.0, -6.0]),
            (|i| run_operator::<ReduceL1>(i, &[], 1), [5.0, 7.0, 9.0]),
            (
                |i| run_operator::<ReduceL2>(i, &[], 1),
                [17f32.sqrt(), 29f32.sqrt(), 45f32.sqrt()],
            ),
            (
                |i| run_operator::<ReduceSumSquare>(i, &[], 1),
                [17.0, 29.0, 45.0],
            ),
            (
                |i| run_operator::<ReduceLogSum>(i, &[], 1),
                [5f32.ln(), 3f32.ln(), f32::NAN],
            ),
            (
                |i| run_operator::<ReduceLogSumExp>(i, &[], 1),
                [
                    (1f32.exp() + 4f32.exp()).ln(),
                    ((-2f32).exp() + 5f32.exp()).ln(),
                    (3f32.exp() + (-6f32).exp()).ln(),
                ],
            ),
            (|i| run_operator::<ReduceSum>(i, &[], 1), [5.0, 3.0, -3.0]),
        ];
        for (f, expected) in cases {
            assert_close(&run(&inputs, f), &expected, 1e-6);
        }
    }

    #[test]
    fn integers_bools_and_empty_sets() {
        let x = OwnedTensor::new::<i32>(&[2, 2], &[7, -3, 4, 10]);
        let y = run_operator::<ReduceMean>(&[x], &[ints_attr("axes", &[1])], 1).unwrap();
        assert_eq!(y[0].to_vec::<i32>(), [2, 7]);
        let flags = OwnedTensor::new::<bool>(&[2, 2], &[true, false, false, false]);
        let any =
            run_operator::<ReduceMax>(std::slice::from_ref(&flags), &[ints_attr("axes", &[1])], 1)
                .unwrap();
        assert_eq!(any[0].to_vec::<bool>(), [true, false]);
        let all = run_operator::<ReduceMin>(&[flags], &[ints_attr("axes", &[1])], 1).unwrap();
        assert_eq!(all[0].to_vec::<bool>(), [false, false]);
        let empty = OwnedTensor::f32(&[2, 0, 4], &[]);
        let axes = OwnedTensor::i64(&[1], &[1]);
        let y = run_operator::<ReduceSum>(&[empty.clone(), axes.clone()], &[], 1).unwrap();
        assert_eq!(y[0].to_vec::<f32>(), [0.0; 8]);
        let y = run_operator::<ReduceLogSumExp>(&[empty, axes], &[], 1).unwrap();
        assert_eq!(y[0].to_vec::<f32>(), [f32::NEG_INFINITY; 8]);
    }

    #[test]
    fn noop_with_empty_axes_keeps_the_input() {
        let axes = OwnedTensor::i64(&[0], &[]);
        let y = run_operator::<ReduceSum>(&[x(), axes], &[int_attr("noop_with_empty_axes", 1)], 1)
            .unwrap();
        assert_eq!(y[0].shape(), [2, 3]);
        assert_eq!(y[0].to_vec::<f32>(), x().to_vec::<f32>());
    }

    #[test]
    fn unknown_axes_give_unknown_dims() {
        let types = infer_operator::<ReduceSum>(
            &[
                infer_input(DType::F32, &[2, 3, 4]),
                infer_input(DType::I64, &[2]),
            ],
            &[int_attr("keepdims", 0)],
            1,
        )
        .unwrap();
        assert_eq!(types[0].shape.as_slice(), [-1]);
    }
}
