//! The loops every elementwise operator shares, generic over element types: mapping one slice
//! into another, and combining two inputs under multidirectional broadcasting. Both split big
//! outputs over the host's threads; the broadcast loop walks contiguous runs of output, with
//! fast paths for equal shapes, single-value operands and rows repeated along leading dims.

use crate::{
    broadcast::{broadcast_dims, broadcast_shapes, Plan},
    check::{check_rank, error, Shape},
    parallel::for_each_chunk,
};
use opal_plugin_api::prelude::*;

/// Elements per piece below which an elementwise kernel stays on one thread.
pub(crate) const ELEMENTWISE_GRAIN: usize = 1 << 15;

/// `y[i] = f(x[i])`, split over the host's threads.
pub(crate) fn map<X: Copy + Sync, Y: Send>(
    op: &str,
    cx: &KernelContext<'_>,
    x: &[X],
    y: &mut [Y],
    f: impl Fn(X) -> Y + Sync,
) -> KernelResult<()> {
    if x.len() != y.len() {
        return Err(error(
            op,
            format_args!("input has {} elements, output {}", x.len(), y.len()),
        ));
    }
    for_each_chunk(
        cx,
        y,
        16,
        ELEMENTWISE_GRAIN,
        #[inline(always)]
        |start, chunk| {
            for (y, &x) in chunk.iter_mut().zip(&x[start..]) {
                *y = f(x);
            }
        },
    );
    Ok(())
}

/// The broadcast shape of every present input (for inference), which must all have input 0's
/// dtype when `same_dtype` is set.
pub(crate) fn infer_broadcast_shape(
    op: &str,
    cx: &InferContext<'_>,
    same_dtype: bool,
) -> KernelResult<Vec<i64>> {
    let first = cx.input(0)?;
    let mut shape = first.shape.to_vec();
    for i in 1..cx.input_count() {
        let Some(input) = cx.optional_input(i)? else {
            continue;
        };
        if same_dtype && input.dtype != first.dtype {
            return Err(error(
                op,
                format_args!(
                    "input {i} has dtype {}, input 0 has {}",
                    input.dtype, first.dtype
                ),
            ));
        }
        shape = broadcast_shapes(op, &shape, input.shape)?;
    }
    check_rank(op, shape.len())?;
    Ok(shape)
}

/// Fails unless `y_shape` is the broadcast of `a_shape` and `b_shape`.
fn check_broadcast(
    op: &str,
    a_shape: &[usize],
    b_shape: &[usize],
    y_shape: &[usize],
) -> KernelResult<()> {
    let expected = broadcast_dims(op, a_shape, b_shape)?;
    if expected.as_slice() != y_shape {
        return Err(error(
            op,
            format_args!(
                "output shape {} is not the broadcast {}",
                Shape(y_shape),
                Shape(expected.as_slice())
            ),
        ));
    }
    Ok(())
}

/// An input of a broadcasting kernel: its elements and shape.
pub(crate) type Operand<'a, T> = (&'a [T], &'a [usize]);

/// `y = f(a, b)` elementwise, `a` and `b` broadcast to `y_shape` (which must be their
/// broadcast).
pub(crate) fn broadcast_binary<A: Copy + Sync, B: Copy + Sync, Y: Send>(
    op: &str,
    cx: &KernelContext<'_>,
    (av, a_shape): Operand<'_, A>,
    (bv, b_shape): Operand<'_, B>,
    (y, y_shape): (&mut [Y], &[usize]),
    f: impl Fn(A, B) -> Y + Copy + Sync,
) -> KernelResult<()> {
    check_broadcast(op, a_shape, b_shape, y_shape)?;
    if y.is_empty() {
        return Ok(());
    }
    // Fast paths: same shape, or one operand a single value.
    if av.len() == y.len() && bv.len() == y.len() {
        for_each_chunk(
            cx,
            y,
            16,
            ELEMENTWISE_GRAIN,
            #[inline(always)]
            |start, chunk| zip(chunk, &av[start..], &bv[start..], f),
        );
        return Ok(());
    }
    if bv.len() == 1 && av.len() == y.len() {
        let b = bv[0];
        for_each_chunk(
            cx,
            y,
            16,
            ELEMENTWISE_GRAIN,
            #[inline(always)]
            |start, chunk| {
                for (y, &a) in chunk.iter_mut().zip(&av[start..]) {
                    *y = f(a, b);
                }
            },
        );
        return Ok(());
    }
    if av.len() == 1 && bv.len() == y.len() {
        let a = av[0];
        for_each_chunk(
            cx,
            y,
            16,
            ELEMENTWISE_GRAIN,
            #[inline(always)]
            |start, chunk| {
                for (y, &b) in chunk.iter_mut().zip(&bv[start..]) {
                    *y = f(a, b);
                }
            },
        );
        return Ok(());
    }

    // A row repeated along the leading dims (a bias over the last dims): whole rows at a time.
    if av.len() == y.len() && is_trailing_row(b_shape, y_shape) {
        let row = bv.len();
        for_each_chunk(
            cx,
            y,
            row,
            ELEMENTWISE_GRAIN,
            #[inline(always)]
            |start, chunk| {
                for (out, a) in chunk.chunks_mut(row).zip(av[start..].chunks(row)) {
                    zip(out, a, bv, f);
                }
            },
        );
        return Ok(());
    }
    if bv.len() == y.len() && is_trailing_row(a_shape, y_shape) {
        let row = av.len();
        for_each_chunk(
            cx,
            y,
            row,
            ELEMENTWISE_GRAIN,
            #[inline(always)]
            |start, chunk| {
                for (out, b) in chunk.chunks_mut(row).zip(bv[start..].chunks(row)) {
                    zip(out, av, b, f);
                }
            },
        );
        return Ok(());
    }

    // General case: contiguous runs of output, each operand either walking or fixed along a run
    // (trailing-dim broadcasts such as a bias give long runs).
    let plan = Plan::broadcast(op, y_shape, [a_shape, b_shape])?;
    let [sa, sb] = plan.run_strides();
    for_each_chunk(
        cx,
        y,
        16,
        ELEMENTWISE_GRAIN,
        #[inline(always)]
        |first, chunk| {
            plan.for_each_run(first..first + chunk.len(), |start, len, [ia, ib]| {
                let out = &mut chunk[start - first..start - first + len];
                match (sa, sb) {
                    (0, 0) => {
                        let v = (av[ia], bv[ib]);
                        for y in out.iter_mut() {
                            *y = f(v.0, v.1);
                        }
                    }
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
        },
    );
    Ok(())
}

/// Whether `shape`, without its leading 1s, is a non-empty suffix of `y_shape`: an operand
/// that repeats whole along `y`'s leading dims.
fn is_trailing_row(shape: &[usize], y_shape: &[usize]) -> bool {
    let leading_ones = shape.iter().take_while(|&&d| d == 1).count();
    let row = &shape[leading_ones..];
    !row.is_empty() && row.len() <= y_shape.len() && y_shape.ends_with(row)
}

#[inline(always)]
fn zip<A: Copy, B: Copy, Y>(out: &mut [Y], a: &[A], b: &[B], f: impl Fn(A, B) -> Y) {
    for ((y, &a), &b) in out.iter_mut().zip(a).zip(b) {
        *y = f(a, b);
    }
}

/// `y = f(y, x)` elementwise in place, `x` broadcast to `y_shape`.
pub(crate) fn broadcast_update<X: Copy + Sync, Y: Copy + Send>(
    op: &str,
    cx: &KernelContext<'_>,
    (xv, x_shape): Operand<'_, X>,
    (y, y_shape): (&mut [Y], &[usize]),
    f: impl Fn(Y, X) -> Y + Copy + Sync,
) -> KernelResult<()> {
    if y.is_empty() {
        return Ok(());
    }
    let plan = Plan::broadcast(op, y_shape, [x_shape])?;
    let [sx] = plan.run_strides();
    for_each_chunk(
        cx,
        y,
        16,
        ELEMENTWISE_GRAIN,
        #[inline(always)]
        |first, chunk| {
            plan.for_each_run(first..first + chunk.len(), |start, len, [ix]| {
                let out = &mut chunk[start - first..start - first + len];
                if sx == 0 {
                    let x = xv[ix];
                    for y in out.iter_mut() {
                        *y = f(*y, x);
                    }
                } else {
                    for (y, &x) in out.iter_mut().zip(&xv[ix..ix + len]) {
                        *y = f(*y, x);
                    }
                }
            });
        },
    );
    Ok(())
}

/// `y = x` broadcast to `y_shape`.
pub(crate) fn broadcast_copy<T: Copy + Send + Sync>(
    op: &str,
    cx: &KernelContext<'_>,
    x: Operand<'_, T>,
    y: (&mut [T], &[usize]),
) -> KernelResult<()> {
    broadcast_update(op, cx, x, y, |_, x| x)
}
