//! Elementwise f32 arithmetic with multidirectional broadcasting: Add, Sub, Mul, Div.

use crate::{
    broadcast::{broadcast_dims, broadcast_shapes, Plan},
    check::{check_rank, expect_f32},
    parallel::for_each_chunk,
    unary::ELEMENTWISE_GRAIN,
};
use opal_plugin_api::prelude::*;

/// The output of a broadcasting binary operator on f32 inputs.
fn infer_binary(op: &str, cx: &InferContext<'_>) -> KernelResult<Vec<OutputType>> {
    let (a, b) = (cx.input(0)?, cx.input(1)?);
    expect_f32(op, 0, &a)?;
    expect_f32(op, 1, &b)?;
    let shape = broadcast_shapes(op, a.shape, b.shape)?;
    check_rank(op, shape.len())?;
    Ok(vec![OutputType::new(DType::F32, shape)])
}

/// Computes output 0 as `f(a, b)` elementwise, inputs broadcast to the output's shape.
fn compute_binary(
    op: &str,
    cx: &mut KernelContext<'_>,
    f: impl Fn(f32, f32) -> f32 + Copy + Sync,
) -> KernelResult<()> {
    let (a, b) = (cx.input(0)?, cx.input(1)?);
    let (av, bv) = (a.f32()?, b.f32()?);
    let out = cx.output(0)?;
    let shape = out.shape();
    let expected = broadcast_dims(op, a.shape(), b.shape())?;
    if expected.as_slice() != shape {
        return Err(crate::check::error(
            op,
            format_args!(
                "output shape {} is not the broadcast {}",
                crate::check::Shape(shape),
                crate::check::Shape(expected.as_slice())
            ),
        ));
    }
    let y = out.f32_mut()?;

    // Fast paths: same shape, or one operand a single value.
    if av.len() == y.len() && bv.len() == y.len() {
        for_each_chunk(cx, y, 16, ELEMENTWISE_GRAIN, |start, chunk| {
            zip(chunk, &av[start..], &bv[start..], f)
        });
        return Ok(());
    }
    if bv.len() == 1 && av.len() == y.len() {
        let b = bv[0];
        for_each_chunk(cx, y, 16, ELEMENTWISE_GRAIN, |start, chunk| {
            for (y, &a) in chunk.iter_mut().zip(&av[start..]) {
                *y = f(a, b);
            }
        });
        return Ok(());
    }
    if av.len() == 1 && bv.len() == y.len() {
        let a = av[0];
        for_each_chunk(cx, y, 16, ELEMENTWISE_GRAIN, |start, chunk| {
            for (y, &b) in chunk.iter_mut().zip(&bv[start..]) {
                *y = f(a, b);
            }
        });
        return Ok(());
    }

    // General case: contiguous runs of output, each operand either walking or fixed along a run
    // (trailing-dim broadcasts such as a bias give long runs).
    let plan = Plan::broadcast(op, shape, [a.shape(), b.shape()])?;
    let [sa, sb] = plan.run_strides();
    for_each_chunk(cx, y, 16, ELEMENTWISE_GRAIN, |first, chunk| {
        plan.for_each_run(first..first + chunk.len(), |start, len, [ia, ib]| {
            let out = &mut chunk[start - first..start - first + len];
            match (sa, sb) {
                (0, 0) => out.fill(f(av[ia], bv[ib])),
                (_, 0) => {
                    let b = bv[ib];
                    for (y, &a) in out.iter_mut().zip(&av[ia..ia + len]) {
                        *y = f(a, b);
                    }
                }
                (0, _) => {
                    let a = av[ia];
                    for (y, &b) in out.iter_mut().zip(&bv[ib..ib + len]) {
                        *y = f(a, b);
                    }
                }
                _ => zip(out, &av[ia..ia + len], &bv[ib..ib + len], f),
            }
        });
    });
    Ok(())
}

fn zip(out: &mut [f32], a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> f32) {
    for ((y, &a), &b) in out.iter_mut().zip(a).zip(b) {
        *y = f(a, b);
    }
}

macro_rules! binary_operator {
    ($(#[$doc:meta])* $name:ident, $op_type:literal, $f:expr) => {
        $(#[$doc])*
        pub struct $name;

        impl Operator for $name {
            const OP_TYPE: &'static str = $op_type;
            const SINCE_VERSION: i64 = 7;

            fn infer(cx: &InferContext<'_>) -> KernelResult<Vec<OutputType>> {
                infer_binary(Self::OP_TYPE, cx)
            }

            fn compute(cx: &mut KernelContext<'_>) -> KernelResult<()> {
                compute_binary(Self::OP_TYPE, cx, $f)
            }
        }
    };
}

binary_operator!(
    /// `a + b`, broadcast.
    Add, "Add", |a, b| a + b
);
binary_operator!(
    /// `a - b`, broadcast.
    Sub, "Sub", |a, b| a - b
);
binary_operator!(
    /// `a * b`, broadcast.
    Mul, "Mul", |a, b| a * b
);
binary_operator!(
    /// `a / b`, broadcast.
    Div, "Div", |a, b| a / b
);

#[cfg(test)]
mod tests {
    use super::*;
    use opal_plugin_api::testing::{
        assert_close, infer_input, infer_operator, run_operator, OwnedTensor, TestHost,
    };

    /// Deterministic values that are exact in f32 and never zero.
    fn values(len: usize, seed: usize) -> Vec<f32> {
        (0..len)
            .map(|i| ((i * 7 + seed * 13) % 23) as f32 * 0.25 + 0.5)
            .collect()
    }

    /// Broadcasting the slow way: map every output index to both inputs.
    fn reference(
        a: &[f32],
        a_shape: &[usize],
        b: &[f32],
        b_shape: &[usize],
        f: fn(f32, f32) -> f32,
    ) -> (Vec<usize>, Vec<f32>) {
        let rank = a_shape.len().max(b_shape.len());
        let pad = |s: &[usize]| {
            let mut p = vec![1; rank - s.len()];
            p.extend_from_slice(s);
            p
        };
        let (pa, pb) = (pad(a_shape), pad(b_shape));
        let out: Vec<usize> = pa
            .iter()
            .zip(&pb)
            .map(|(&x, &y)| if x == 1 { y } else { x })
            .collect();
        let len: usize = out.iter().product();
        let flat = |shape: &[usize], index: &[usize]| {
            shape
                .iter()
                .zip(index)
                .fold(0, |acc, (&d, &i)| acc * d + if d == 1 { 0 } else { i })
        };
        let values = (0..len)
            .map(|mut e| {
                let mut index = vec![0; rank];
                for d in (0..rank).rev() {
                    index[d] = e % out[d];
                    e /= out[d];
                }
                f(a[flat(&pa, &index)], b[flat(&pb, &index)])
            })
            .collect();
        (out, values)
    }

    fn check<O: Operator>(a_shape: &[usize], b_shape: &[usize], f: fn(f32, f32) -> f32) {
        let a = values(a_shape.iter().product(), 1);
        let b = values(b_shape.iter().product(), 2);
        let (shape, expected) = reference(&a, a_shape, &b, b_shape, f);
        for threads in [1, 3] {
            let inputs = [OwnedTensor::f32(a_shape, &a), OwnedTensor::f32(b_shape, &b)];
            let y = TestHost::new()
                .threads(threads)
                .run::<O>(&inputs, &[], 1)
                .unwrap();
            assert_eq!(y[0].shape(), shape, "{a_shape:?} and {b_shape:?}");
            assert_close(y[0].as_slice(), &expected, 1e-6);
        }
    }

    const CASES: &[(&[usize], &[usize])] = &[
        (&[2, 3], &[2, 3]),
        (&[2, 3], &[]),
        (&[1], &[4, 5]),
        (&[2, 3, 4], &[4]),
        (&[2, 3, 4], &[3, 1]),
        (&[2, 1, 4], &[3, 1]),
        (&[5, 1, 1], &[1, 4, 3]),
        (&[1, 3, 1, 2], &[2, 1, 5, 1]),
        (&[7, 1], &[1, 9]),
        (&[0, 3], &[3]),
    ];

    #[test]
    fn all_four_broadcast_like_numpy() {
        for &(a, b) in CASES {
            check::<Add>(a, b, |a, b| a + b);
            check::<Sub>(b, a, |a, b| a - b);
            check::<Mul>(a, b, |a, b| a * b);
            check::<Div>(b, a, |a, b| a / b);
        }
    }

    #[test]
    fn large_broadcasts_split_across_threads() {
        check::<Add>(&[300, 257], &[257], |a, b| a + b);
        check::<Mul>(&[3, 1, 40_000], &[3, 2, 1], |a, b| a * b);
    }

    #[test]
    fn inference_explains_bad_shapes_and_keeps_unknown_dims() {
        let error = infer_operator::<Add>(
            &[
                infer_input(DType::F32, &[2, 3]),
                infer_input(DType::F32, &[4]),
            ],
            &[],
            1,
        )
        .unwrap_err();
        assert_eq!(error, "Add: shapes [2,3] and [4] cannot be broadcast");
        let types = infer_operator::<Mul>(
            &[
                infer_input(DType::F32, &[-1, 1, 3]),
                infer_input(DType::F32, &[5, 1]),
            ],
            &[],
            1,
        )
        .unwrap();
        assert_eq!(types[0].shape.as_slice(), [-1, 5, 3]);
        let error = infer_operator::<Div>(
            &[infer_input(DType::F32, &[2]), infer_input(DType::I64, &[2])],
            &[],
            1,
        )
        .unwrap_err();
        assert!(error.contains("input 1 has dtype i64"), "{error}");
    }

    #[test]
    fn compute_refuses_inputs_that_do_not_broadcast() {
        let inputs = [
            OwnedTensor::f32(&[2], &[1.0, 2.0]),
            OwnedTensor::f32(&[3], &[1.0; 3]),
        ];
        assert!(run_operator::<Sub>(&inputs, &[], 1).is_err());
    }
}
