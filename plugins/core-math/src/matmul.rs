//! MatMul: numpy `matmul` (1-D operands promoted, batch dims broadcast): f32 on [`sgemm`], f16
//! and bf16 through it in f32, other numeric dtypes (f64, integers) by plain loops.

use crate::{
    binary::expect_numeric,
    broadcast::{broadcast_dims, broadcast_shapes, Plan},
    check::{check_rank, error, Shape},
    half::{widened, Narrow},
    numeric::{is_half, with_numeric, Num},
    sgemm::{prepared_b, sgemm, single_batch, Operand, Product},
};
use opal_plugin_api::prelude::*;

/// The matrix product of two tensors, as numpy's `matmul`.
pub struct MatMul;

impl Operator for MatMul {
    const OP_TYPE: &'static str = "MatMul";

    fn infer(cx: &InferContext<'_>) -> KernelResult<Vec<OutputType>> {
        let op = Self::OP_TYPE;
        let (a, b) = (cx.input(0)?, cx.input(1)?);
        expect_numeric(op, 0, a.dtype)?;
        if b.dtype != a.dtype {
            return Err(error(
                op,
                format_args!("inputs have dtypes {} and {}", a.dtype, b.dtype),
            ));
        }
        let (sa, sb) = (a.shape, b.shape);
        if sa.is_empty() || sb.is_empty() {
            return Err(error(op, "operands must have rank 1 or more"));
        }
        let k_a = sa[sa.len() - 1];
        let k_b = if sb.len() == 1 {
            sb[0]
        } else {
            sb[sb.len() - 2]
        };
        if k_a >= 0 && k_b >= 0 && k_a != k_b {
            return Err(error(
                op,
                format_args!(
                    "shapes {} and {} do not agree on the inner dimension ({k_a} and {k_b})",
                    Shape(sa),
                    Shape(sb)
                ),
            ));
        }
        let batch_a = &sa[..sa.len().saturating_sub(2)];
        let batch_b = &sb[..sb.len().saturating_sub(2)];
        let mut shape = broadcast_shapes(op, batch_a, batch_b).map_err(|_| {
            error(
                op,
                format_args!(
                    "batch dims of {} and {} cannot be broadcast",
                    Shape(sa),
                    Shape(sb)
                ),
            )
        })?;
        if sa.len() >= 2 {
            shape.push(sa[sa.len() - 2]);
        }
        if sb.len() >= 2 {
            shape.push(sb[sb.len() - 1]);
        }
        check_rank(op, sa.len().max(sb.len()))?;
        Ok(vec![OutputType::new(a.dtype, shape)])
    }

    fn compute(cx: &mut KernelContext<'_>) -> KernelResult<()> {
        let op = Self::OP_TYPE;
        let (a, b) = (cx.input(0)?, cx.input(1)?);
        let (sa, sb) = (a.shape(), b.shape());
        check_rank(op, sa.len().max(sb.len()))?;
        if sa.is_empty() || sb.is_empty() {
            return Err(error(op, "operands must have rank 1 or more"));
        }
        // 1-D operands: A as a row [1, k], B as a column [k, 1].
        let (m, k) = match sa {
            [k] => (1, *k),
            [.., m, k] => (*m, *k),
            [] => unreachable!("checked above"),
        };
        let (k_b, n) = match sb {
            [k] => (*k, 1),
            [.., k, n] => (*k, *n),
            [] => unreachable!("checked above"),
        };
        if k != k_b {
            return Err(error(
                op,
                format_args!(
                    "shapes {} and {} do not agree on the inner dimension",
                    Shape(sa),
                    Shape(sb)
                ),
            ));
        }
        let batch_a = &sa[..sa.len().saturating_sub(2)];
        let batch_b = &sb[..sb.len().saturating_sub(2)];
        let batch = broadcast_dims(op, batch_a, batch_b)?;
        let batches: usize = batch.as_slice().iter().product();
        let out = cx.output(0)?;
        if out.len() != batches * m * n {
            return Err(error(
                op,
                format_args!(
                    "output shape {} does not hold the product",
                    Shape(out.shape())
                ),
            ));
        }
        // Batch index -> offsets of A's and B's matrices, through broadcast strides (in matrices).
        let plan = Plan::broadcast(op, batch.as_slice(), [batch_a, batch_b])?;
        let offsets = |batch: usize| {
            let [ia, ib] = plan.offsets(batch);
            (ia * m * k, ib * k * n)
        };
        let dims = Dims {
            m,
            n,
            k,
            batches,
            b_batches: batch_b.iter().product(),
        };
        let dtype = a.dtype();
        if dtype == DType::F32 {
            return product_f32(cx, dims, a.f32()?, b.f32()?, out.f32_mut()?, &offsets);
        }
        if is_half(dtype) {
            let (av, bv) = (widened(op, cx, a)?, widened(op, cx, b)?);
            let narrow = Narrow::new(cx, out)?;
            product_f32(cx, dims, av, bv, &mut *narrow.values, &offsets)?;
            narrow.finish();
            return Ok(());
        }
        with_numeric!(dtype, T => {
            product_loops(dims, a.as_slice::<T>()?, b.as_slice::<T>()?, out.as_slice_mut::<T>()?, &offsets);
            Ok(())
        }, _ => Err(error(op, format_args!("dtype {dtype} is not supported"))))
    }
}

/// The sizes of a batched product: `batches` products of `[m, k] x [k, n]`; B has `b_batches`.
#[derive(Clone, Copy)]
struct Dims {
    m: usize,
    n: usize,
    k: usize,
    batches: usize,
    b_batches: usize,
}

/// The product on [`sgemm`]; `offsets(batch)` gives the offsets of A's and B's matrices.
fn product_f32(
    cx: &KernelContext<'_>,
    dims: Dims,
    av: &[f32],
    bv: &[f32],
    c: &mut [f32],
    offsets: &(dyn Fn(usize) -> (usize, usize) + Sync),
) -> KernelResult<()> {
    let Dims {
        m,
        n,
        k,
        batches,
        b_batches,
    } = dims;
    let a_operand = Operand {
        data: av,
        row_stride: k,
        col_stride: 1,
    };
    let b_operand = Operand {
        data: bv,
        row_stride: n,
        col_stride: 1,
    };
    if b_batches == 1 && av.len() == batches * m * k {
        // One B for every batch of a contiguous A: a single product of `batches * m` rows. A
        // constant B (a weight) is packed once, unless there is a single row, which streams it
        // as stored.
        let packed_b = if batches * m > 1 {
            prepared_b(cx, 1, &b_operand, k, n)?
        } else {
            None
        };
        let product = Product {
            m: batches * m,
            n,
            k,
            alpha: 1.0,
            beta: 0.0,
            a: a_operand,
            b: b_operand,
            batches: 1,
            batch_offsets: &single_batch,
            packed_a: None,
            packed_b,
        };
        return sgemm(cx, &product, c);
    }
    let product = Product {
        m,
        n,
        k,
        alpha: 1.0,
        beta: 0.0,
        a: a_operand,
        b: b_operand,
        batches,
        batch_offsets: offsets,
        packed_a: None,
        packed_b: None,
    };
    sgemm(cx, &product, c)
}

/// The product by plain loops, for f64 and integers (which wrap).
fn product_loops<T: Num>(
    dims: Dims,
    av: &[T],
    bv: &[T],
    c: &mut [T],
    offsets: &dyn Fn(usize) -> (usize, usize),
) {
    let Dims { m, n, k, .. } = dims;
    if m * n == 0 {
        return;
    }
    for (batch, c) in c.chunks_exact_mut(m * n).enumerate() {
        let (oa, ob) = offsets(batch);
        c.fill(T::ZERO);
        for (i, row) in c.chunks_exact_mut(n).enumerate() {
            for p in 0..k {
                let a = av[oa + i * k + p];
                let b_row = &bv[ob + p * n..ob + (p + 1) * n];
                for (c, &b) in row.iter_mut().zip(b_row) {
                    *c = c.add(a.mul(b));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opal_kernel_support::testutil::{reference, values};
    use opal_plugin_api::testing::{
        assert_close, infer_input, infer_operator, OwnedTensor, TestHost,
    };

    /// numpy's matmul the slow way: promote, broadcast batch dims, multiply each pair.
    fn matmul_reference(
        a: &[f32],
        sa: &[usize],
        b: &[f32],
        sb: &[usize],
    ) -> (Vec<usize>, Vec<f32>) {
        let pa: Vec<usize> = if sa.len() == 1 {
            vec![1, sa[0]]
        } else {
            sa.to_vec()
        };
        let pb: Vec<usize> = if sb.len() == 1 {
            vec![sb[0], 1]
        } else {
            sb.to_vec()
        };
        let (m, k, n) = (pa[pa.len() - 2], pa[pa.len() - 1], pb[pb.len() - 1]);
        let (ba, bb) = (&pa[..pa.len() - 2], &pb[..pb.len() - 2]);
        let rank = ba.len().max(bb.len());
        let pad = |s: &[usize]| {
            let mut p = vec![1; rank - s.len()];
            p.extend_from_slice(s);
            p
        };
        let (ba, bb) = (pad(ba), pad(bb));
        let batch: Vec<usize> = ba.iter().zip(&bb).map(|(&x, &y)| x.max(y)).collect();
        let count: usize = batch.iter().product();
        let flat = |shape: &[usize], index: &[usize]| {
            shape
                .iter()
                .zip(index)
                .fold(0, |acc, (&d, &i)| acc * d + if d == 1 { 0 } else { i })
        };
        let mut out = Vec::new();
        for mut e in 0..count {
            let mut index = vec![0; rank];
            for d in (0..rank).rev() {
                index[d] = e % batch[d];
                e /= batch[d];
            }
            let (oa, ob) = (flat(&ba, &index) * m * k, flat(&bb, &index) * k * n);
            out.extend(reference(
                m,
                n,
                k,
                1.0,
                &a[oa..],
                (k, 1),
                &b[ob..],
                (n, 1),
                0.0,
                &[],
            ));
        }
        let mut shape = batch;
        if sa.len() > 1 {
            shape.push(m);
        }
        if sb.len() > 1 {
            shape.push(n);
        }
        (shape, out)
    }

    fn check(sa: &[usize], sb: &[usize]) {
        let a = values(sa.iter().product(), 4);
        let b = values(sb.iter().product(), 5);
        let (shape, expected) = matmul_reference(&a, sa, &b, sb);
        for threads in [1, 2] {
            let inputs = [OwnedTensor::f32(sa, &a), OwnedTensor::f32(sb, &b)];
            let y = TestHost::new()
                .threads(threads)
                .run::<MatMul>(&inputs, &[], 1)
                .unwrap();
            assert_eq!(y[0].shape(), shape, "{sa:?} x {sb:?}");
            assert_close(y[0].as_slice(), &expected, 1e-4);
        }
    }

    #[test]
    fn plain_and_one_dimensional_operands() {
        check(&[3, 4], &[4, 5]);
        check(&[4], &[4, 5]);
        check(&[3, 4], &[4]);
        check(&[4], &[4]);
        check(&[2, 3, 4], &[4]);
        check(&[4], &[2, 4, 5]);
        check(&[1, 1], &[1, 1]);
    }

    #[test]
    fn batched_with_broadcast_batch_dims() {
        check(&[2, 3, 4], &[2, 4, 5]);
        check(&[2, 3, 4], &[4, 5]);
        check(&[3, 4], &[2, 4, 5]);
        check(&[2, 1, 3, 4], &[3, 4, 5]);
        check(&[1, 3, 6, 4], &[2, 1, 4, 7]);
        check(&[5, 40, 70], &[70, 33]);
        check(&[2, 3, 130, 70], &[3, 70, 66]);
    }

    #[test]
    fn other_dtypes_multiply_too() {
        let a = OwnedTensor::new::<f64>(&[2, 2], &[1.0, 2.0, 3.0, 4.0]);
        let b = OwnedTensor::new::<f64>(&[2], &[1.0, -1.0]);
        let y = TestHost::new().run::<MatMul>(&[a, b], &[], 1).unwrap();
        assert_eq!(y[0].to_vec::<f64>(), [-1.0, -1.0]);
        let a = OwnedTensor::new::<i32>(&[2, 1, 2], &[1, 2, 3, 4]);
        let b = OwnedTensor::new::<i32>(&[2, 1], &[5, 6]);
        let y = TestHost::new().run::<MatMul>(&[a, b], &[], 1).unwrap();
        assert_eq!(y[0].shape(), [2, 1, 1]);
        assert_eq!(y[0].to_vec::<i32>(), [17, 39]);
    }

    #[test]
    fn inference_promotes_broadcasts_and_explains() {
        let types = infer_operator::<MatMul>(
            &[
                infer_input(DType::F32, &[-1, 1, 3, 4]),
                infer_input(DType::F32, &[5, 4, -1]),
            ],
            &[],
            1,
        )
        .unwrap();
        assert_eq!(types[0].shape.as_slice(), [-1, 5, 3, -1]);
        let types = infer_operator::<MatMul>(
            &[
                infer_input(DType::F32, &[4]),
                infer_input(DType::F32, &[2, 4, 6]),
            ],
            &[],
            1,
        )
        .unwrap();
        assert_eq!(types[0].shape.as_slice(), [2, 6]);
        let error = infer_operator::<MatMul>(
            &[
                infer_input(DType::F32, &[3, 4]),
                infer_input(DType::F32, &[5, 6]),
            ],
            &[],
            1,
        )
        .unwrap_err();
        assert_eq!(
            error,
            "MatMul: shapes [3,4] and [5,6] do not agree on the inner dimension (4 and 5)"
        );
        let error = infer_operator::<MatMul>(
            &[
                infer_input(DType::F32, &[2, 3, 4]),
                infer_input(DType::F32, &[3, 4, 5]),
            ],
            &[],
            1,
        )
        .unwrap_err();
        assert!(error.contains("batch dims"), "{error}");
    }
}
