//! ONNX `MatMulInteger` (opset 10: u8/i8 operands with zero points, i32 products) and
//! `QLinearMatMul` (opsets 10 to 21: the same product requantized with scales to u8/i8), with
//! numpy's matmul shapes (batch broadcasting, 1-D operands).

use crate::{
    half::{round_to, widened},
    quant::{
        check_operand, qlinear_output_dtype, quantize_value, with_quant_int, QuantInt, ZeroPoint,
    },
};
use opal_kernel_support::{
    broadcast::{broadcast_dims, broadcast_shapes, Plan},
    check::{check_rank, error, Shape},
};
use opal_plugin_api::prelude::*;

/// ONNX `MatMulInteger`: `(A - a_zero_point) x (B - b_zero_point)` in i32.
pub struct MatMulInteger;

/// ONNX `QLinearMatMul`: the integer product of two quantized matrices, requantized with
/// `a_scale * b_scale / y_scale` and `y_zero_point`.
pub struct QLinearMatMul;

/// numpy's matmul output shape (dims of -1 unknown).
fn matmul_shape(op: &str, a: &[i64], b: &[i64]) -> KernelResult<Vec<i64>> {
    if a.is_empty() || b.is_empty() {
        return Err(error(op, "operands must have rank 1 or more"));
    }
    let a2: Vec<i64> = if a.len() == 1 {
        vec![1, a[0]]
    } else {
        a.to_vec()
    };
    let b2: Vec<i64> = if b.len() == 1 {
        vec![b[0], 1]
    } else {
        b.to_vec()
    };
    let (ka, kb) = (a2[a2.len() - 1], b2[b2.len() - 2]);
    if ka >= 0 && kb >= 0 && ka != kb {
        return Err(error(
            op,
            format_args!("shapes {} and {} cannot be multiplied", Shape(a), Shape(b)),
        ));
    }
    let mut out = broadcast_shapes(op, &a2[..a2.len() - 2], &b2[..b2.len() - 2])?;
    if a.len() > 1 {
        out.push(a2[a2.len() - 2]);
    }
    if b.len() > 1 {
        out.push(b2[b2.len() - 1]);
    }
    Ok(out)
}

/// The sizes of a product of known shapes.
struct Sizes {
    m: usize,
    k: usize,
    n: usize,
    plan: Plan<2>,
    batches: usize,
}

impl Sizes {
    fn new(op: &str, a: &[usize], b: &[usize]) -> KernelResult<Self> {
        let (m, k) = match *a {
            [] => return Err(error(op, "A must have rank 1 or more")),
            [k] => (1, k),
            [.., m, k] => (m, k),
        };
        let (kb, n) = match *b {
            [] => return Err(error(op, "B must have rank 1 or more")),
            [k] => (k, 1),
            [.., k, n] => (k, n),
        };
        if k != kb {
            return Err(error(
                op,
                format_args!("shapes {} and {} cannot be multiplied", Shape(a), Shape(b)),
            ));
        }
        let a_batch = &a[..a.len().saturating_sub(2)];
        let b_batch = &b[..b.len().saturating_sub(2)];
        let out_batch = broadcast_dims(op, a_batch, b_batch)?;
        check_rank(op, out_batch.as_slice().len())?;
        let plan = Plan::broadcast(op, out_batch.as_slice(), [a_batch, b_batch])?;
        Ok(Sizes {
            m,
            k,
            n,
            plan,
            batches: out_batch.as_slice().iter().product(),
        })
    }

    /// `c = a x b` over every batch; `a` and `b` hold values with their zero points removed.
    fn multiply(&self, a: &[i32], b: &[i32], c: &mut [i32]) {
        let (m, k, n) = (self.m, self.k, self.n);
        for batch in 0..self.batches {
            let [ab, bb] = self.plan.offsets(batch);
            let (a, b) = (
                &a[ab * m * k..(ab + 1) * m * k],
                &b[bb * k * n..(bb + 1) * k * n],
            );
            let c = &mut c[batch * m * n..(batch + 1) * m * n];
            c.fill(0);
            for i in 0..m {
                let row = &mut c[i * n..(i + 1) * n];
                for (p, &x) in a[i * k..(i + 1) * k].iter().enumerate() {
                    for (y, &w) in row.iter_mut().zip(&b[p * n..(p + 1) * n]) {
                        *y += x * w;
                    }
                }
            }
        }
    }
}

/// An integer operand as i32 values minus its zero point, in scratch. The zero point has one
/// value, or one per row (`per_row`: element `e` uses `e / k % m`) or per column (`e % n`).
fn centered<'a>(
    op: &str,
    cx: &KernelContext<'a>,
    x: TensorRef<'a>,
    zero_point: Option<TensorRef<'a>>,
    rows: usize,
    cols: usize,
    per_row: bool,
) -> KernelResult<&'a [i32]> {
    let values = ZeroPoint::new(op, Some(x), x.dtype())?;
    let zero = ZeroPoint::new(op, zero_point, x.dtype())?;
    let zero_count = zero.len().unwrap_or(1);
    let axis_len = if per_row { rows } else { cols };
    if zero_count != 1 && zero_count != axis_len {
        return Err(error(
            op,
            format_args!(
                "a zero point of {zero_count} values does not fit {axis_len} rows or columns"
            ),
        ));
    }
    let out = cx.scratch::<i32>(x.len())?;
    for (e, y) in out.iter_mut().enumerate() {
        let z = match (zero_count, per_row) {
            (1, _) => 0,
            (_, true) => e / cols.max(1) % rows.max(1),
            (_, false) => e % cols.max(1),
        };
        *y = (values.get(e) - zero.get(z)) as i32;
    }
    Ok(out)
}

impl Operator for MatMulInteger {
    const OP_TYPE: &'static str = "MatMulInteger";
    const SINCE_VERSION: i64 = 10;

    fn infer(cx: &InferContext<'_>) -> KernelResult<Vec<OutputType>> {
        let (a, b) = (cx.input(0)?, cx.input(1)?);
        check_operand(Self::OP_TYPE, 0, a.dtype)?;
        check_operand(Self::OP_TYPE, 1, b.dtype)?;
        let shape = matmul_shape(Self::OP_TYPE, a.shape, b.shape)?;
        Ok(vec![OutputType::new(DType::I32, shape)])
    }

    fn compute(cx: &mut KernelContext<'_>) -> KernelResult<()> {
        let op = Self::OP_TYPE;
        let (a, b) = (cx.input(0)?, cx.input(1)?);
        let sizes = Sizes::new(op, a.shape(), b.shape())?;
        let a_values = centered(op, cx, a, cx.optional_input(2), sizes.m, sizes.k, true)?;
        let b_values = centered(op, cx, b, cx.optional_input(3), sizes.k, sizes.n, false)?;
        let y = cx.output(0)?.as_slice_mut::<i32>()?;
        sizes.multiply(a_values, b_values, y);
        Ok(())
    }
}

impl Operator for QLinearMatMul {
    const OP_TYPE: &'static str = "QLinearMatMul";
    const SINCE_VERSION: i64 = 10;
    const UNTIL_VERSION: i64 = 21;

    fn infer(cx: &InferContext<'_>) -> KernelResult<Vec<OutputType>> {
        let op = Self::OP_TYPE;
        let (a, b) = (cx.input(0)?, cx.input(3)?);
        let dtype = qlinear_output_dtype(op, cx)?;
        let shape = matmul_shape(op, a.shape, b.shape)?;
        Ok(vec![OutputType::new(dtype, shape)])
    }

    fn compute(cx: &mut KernelContext<'_>) -> KernelResult<()> {
        let op = Self::OP_TYPE;
        let (a, b) = (cx.input(0)?, cx.input(3)?);
        let sizes = Sizes::new(op, a.shape(), b.shape())?;
        let a_values = centered(op, cx, a, cx.optional_input(2), sizes.m, sizes.k, true)?;
        let b_values = centered(op, cx, b, cx.optional_input(5), sizes.k, sizes.n, false)?;
        let products = cx.scratch::<i32>(sizes.batches * sizes.m * sizes.n)?;
        sizes.multiply(a_values, b_values, products);

        let scale_dtype = cx.input(1)?.dtype();
        let a_scale = widened(op, cx, cx.input(1)?)?;
        let b_scale = widened(op, cx, cx.input(4)?)?;
        let y_scale = widened(op, cx, cx.input(6)?)?;
        let out = cx.output(0)?;
        let y_zero = ZeroPoint::new(op, cx.optional_input(7), out.dtype())?;
        let fits = |len: usize, along: usize| len == 1 || len == along;
        if !fits(a_scale.len(), sizes.m) || !fits(b_scale.len(), sizes.n) || y_scale.len() != 1 {
            return Err(error(
                op,
                "scales must be scalars, or per row of A and per column of B",
            ));
        }
        let requantize = Requantize {
            a_scale,
            b_scale,
            y_scale: y_scale[0],
            y_zero: if y_zero.len().is_some() {
                y_zero.get(0)
            } else {
                0
            },
            dtype: scale_dtype,
            m: sizes.m,
            n: sizes.n,
        };
        with_quant_int!(out.dtype(), T => {
            requantize.run::<T>(products, out.as_slice_mut::<T>()?);
            Ok(())
        }, _ => Err(error(op, format_args!("cannot requantize to {}", out.dtype()))))
    }
}

/// Turns i32 products into quantized outputs: `product * (a_scale * b_scale / y_scale) +
/// y_zero`, the multiplier rounded in the scales' dtype as the reference computes it.
struct Requantize<'a> {
    a_scale: &'a [f32],
    b_scale: &'a [f32],
    y_scale: f32,
    y_zero: i64,
    dtype: DType,
    m: usize,
    n: usize,
}

impl Requantize<'_> {
    fn run<T: QuantInt>(&self, products: &[i32], y: &mut [T]) {
        let pick = |s: &[f32], i: usize| if s.len() == 1 { s[0] } else { s[i] };
        for (e, (y, &p)) in y.iter_mut().zip(products).enumerate() {
            let (i, j) = (e / self.n.max(1) % self.m.max(1), e % self.n.max(1));
            let scale = round_to(self.dtype, pick(self.a_scale, i) * pick(self.b_scale, j));
            let multiplier = round_to(self.dtype, scale / self.y_scale);
            *y = quantize_value::<T>(f64::from(p) * f64::from(multiplier) + self.y_zero as f64);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opal_plugin_api::testing::{run_operator, OwnedTensor};

    #[test]
    fn subtracts_zero_points_before_multiplying() {
        let a = OwnedTensor::new::<u8>(&[2, 2], &[1, 2, 3, 4]);
        let b = OwnedTensor::new::<u8>(&[2, 1], &[2, 3]);
        let za = OwnedTensor::new::<u8>(&[], &[1]);
        let y = run_operator::<MatMulInteger>(&[a, b, za], &[], 1).unwrap();
        assert_eq!(y[0].to_vec::<i32>(), [3, 13]);
    }
}
