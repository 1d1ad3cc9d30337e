//! Gemm: `Y = alpha * op(A) * op(B) + beta * C` on f32, with transA/transB and C broadcast to
//! `(M, N)`, on [`sgemm`].

use crate::{
    broadcast::Plan,
    check::{error, expect_f32, Shape},
    sgemm::{
        prepared_a, prepared_b, sgemm, single_batch, transpose_into, transposed_pays_off, Operand,
        Product,
    },
};
use opal_plugin_api::prelude::*;

/// The general matrix product of ONNX (opset 7 on; C optional from 11, accepted absent here).
pub struct Gemm;

/// `(M, K)` and `(K, N)` of `op(A)` and `op(B)` from stored shapes and the transpose flags.
fn dims<T: Copy>(a: &[T], b: &[T], trans_a: bool, trans_b: bool) -> ((T, T), (T, T)) {
    let op_a = if trans_a { (a[1], a[0]) } else { (a[0], a[1]) };
    let op_b = if trans_b { (b[1], b[0]) } else { (b[0], b[1]) };
    (op_a, op_b)
}

fn flags(attributes: &Attributes<'_>) -> KernelResult<(bool, bool, f32, f32)> {
    Ok((
        attributes.int("transA", 0)? != 0,
        attributes.int("transB", 0)? != 0,
        attributes.float("alpha", 1.0)?,
        attributes.float("beta", 1.0)?,
    ))
}

/// Whether a dim of C can broadcast unidirectionally to a dim of Y (`-1` unknown).
fn broadcasts(c: i64, y: i64) -> bool {
    c == y || c == 1 || c < 0 || y < 0
}

impl Operator for Gemm {
    const OP_TYPE: &'static str = "Gemm";
    const SINCE_VERSION: i64 = 7;

    fn infer(cx: &InferContext<'_>) -> KernelResult<Vec<OutputType>> {
        let op = Self::OP_TYPE;
        let (a, b) = (cx.input(0)?, cx.input(1)?);
        expect_f32(op, 0, &a)?;
        expect_f32(op, 1, &b)?;
        if a.shape.len() != 2 || b.shape.len() != 2 {
            return Err(error(
                op,
                format_args!(
                    "A and B must be 2-D, got {} and {}",
                    Shape(a.shape),
                    Shape(b.shape)
                ),
            ));
        }
        let (trans_a, trans_b, _, _) = flags(&cx.attributes())?;
        let ((m, k_a), (k_b, n)) = dims(a.shape, b.shape, trans_a, trans_b);
        if k_a >= 0 && k_b >= 0 && k_a != k_b {
            return Err(error(
                op,
                format_args!(
                    "op(A) of {} and op(B) of {} do not agree on K ({k_a} and {k_b})",
                    Shape(a.shape),
                    Shape(b.shape)
                ),
            ));
        }
        if let Some(c) = cx.optional_input(2)? {
            expect_f32(op, 2, &c)?;
            let fits = c.shape.len() <= 2
                && c.shape
                    .iter()
                    .rev()
                    .zip([n, m])
                    .all(|(&c, y)| broadcasts(c, y));
            if !fits {
                return Err(error(
                    op,
                    format_args!(
                        "C of shape {} does not broadcast to {}",
                        Shape(c.shape),
                        Shape(&[m, n])
                    ),
                ));
            }
        }
        Ok(vec![OutputType::new(DType::F32, vec![m, n])])
    }

    fn compute(cx: &mut KernelContext<'_>) -> KernelResult<()> {
        let op = Self::OP_TYPE;
        let (a, b) = (cx.input(0)?, cx.input(1)?);
        let (sa, sb) = (a.shape(), b.shape());
        if sa.len() != 2 || sb.len() != 2 {
            return Err(error(op, "A and B must be 2-D"));
        }
        let (trans_a, trans_b, alpha, beta) = flags(&cx.attributes())?;
        let ((m, k), (k_b, n)) = dims(sa, sb, trans_a, trans_b);
        if k != k_b {
            return Err(error(
                op,
                format_args!(
                    "op(A) of {} and op(B) of {} do not agree on K",
                    Shape(sa),
                    Shape(sb)
                ),
            ));
        }
        let c_input = cx.optional_input(2);
        let (av, bv) = (a.f32()?, b.f32()?);
        let out = cx.output(0)?;
        if out.shape() != [m, n] {
            return Err(error(
                op,
                format_args!("output shape {} is not [{m},{n}]", Shape(out.shape())),
            ));
        }
        let y = out.f32_mut()?;
        // Y starts as C broadcast to (M, N); the product makes it alpha * A * B + beta * Y.
        let beta = match c_input {
            Some(c) if beta != 0.0 => {
                let cv = c.f32()?;
                let plan = Plan::broadcast(op, &[m, n], [c.shape()])?;
                let [stride] = plan.run_strides();
                plan.for_each_run(0..y.len(), |start, len, [offset]| {
                    let run = &mut y[start..start + len];
                    if stride == 0 {
                        run.fill(cv[offset]);
                    } else {
                        run.copy_from_slice(&cv[offset..offset + len]);
                    }
                });
                beta
            }
            _ => 0.0,
        };
        // The stored A is (M, K), or (K, M) when transposed; likewise B.
        let a_operand = if trans_a {
            Operand {
                data: av,
                row_stride: 1,
                col_stride: m,
            }
        } else {
            Operand {
                data: av,
                row_stride: k,
                col_stride: 1,
            }
        };
        let b_operand = if trans_b {
            Operand {
                data: bv,
                row_stride: 1,
                col_stride: k,
            }
        } else {
            Operand {
                data: bv,
                row_stride: n,
                col_stride: 1,
            }
        };
        let isa = opal_kernel_support::isa::current(cx);
        if m > 1 && cx.is_constant(1) && transposed_pays_off(isa, m, n, k) {
            // A few rows against a constant B (a classifier's rows of time steps against its
            // vocabulary): Yᵀ = op(B)ᵀ op(A)ᵀ, the weight packed once as A.
            let (bt, at) = (b_operand.transposed(), a_operand.transposed());
            let packed_a = prepared_a(cx, 1, &bt, n, k)?;
            let t = cx.scratch_unzeroed::<f32>(n * m)?;
            let product = Product {
                m: n,
                n: m,
                k,
                alpha,
                beta: 0.0,
                a: bt,
                b: at,
                batches: 1,
                batch_offsets: &single_batch,
                packed_a,
                packed_b: None,
            };
            sgemm(cx, &product, t)?;
            if beta == 0.0 {
                transpose_into(t, y, m, |_, value, _| value);
            } else {
                transpose_into(t, y, m, |_, value, c| value + beta * c);
            }
            return Ok(());
        }
        // A constant B (a weight) is packed once, unless there is a single row, which streams
        // it as stored.
        let packed_b = if m > 1 {
            prepared_b(cx, 1, &b_operand, k, n)?
        } else {
            None
        };
        let product = Product {
            m,
            n,
            k,
            alpha,
            beta,
            a: a_operand,
            b: b_operand,
            batches: 1,
            batch_offsets: &single_batch,
            packed_a: None,
            packed_b,
        };
        sgemm(cx, &product, y)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opal_kernel_support::{
        isa::Isa,
        testutil::{reference, values},
    };
    use opal_plugin_api::testing::{
        assert_close, float_attr, infer_input, infer_operator, int_attr, run_operator, OwnedTensor,
        TestHost,
    };

    #[allow(clippy::too_many_arguments)]
    fn check(
        m: usize,
        n: usize,
        k: usize,
        trans_a: bool,
        trans_b: bool,
        alpha: f32,
        beta: f32,
        c_shape: Option<&[usize]>,
    ) {
        let host = TestHost::new().threads(2);
        check_on(&host, m, n, k, trans_a, trans_b, alpha, beta, c_shape);
    }

    /// [`check`] on `host`.
    #[allow(clippy::too_many_arguments)]
    fn check_on(
        host: &TestHost,
        m: usize,
        n: usize,
        k: usize,
        trans_a: bool,
        trans_b: bool,
        alpha: f32,
        beta: f32,
        c_shape: Option<&[usize]>,
    ) {
        let a_shape = if trans_a { [k, m] } else { [m, k] };
        let b_shape = if trans_b { [n, k] } else { [k, n] };
        let a = values(m * k, 6);
        let b = values(k * n, 7);
        let mut inputs = vec![
            OwnedTensor::f32(&a_shape, &a),
            OwnedTensor::f32(&b_shape, &b),
        ];
        // C broadcast to (M, N) by hand.
        let mut c_full = vec![0.0; m * n];
        if let Some(c_shape) = c_shape {
            let c = values(c_shape.iter().product(), 8);
            let (rows, cols) = match c_shape {
                [] => (1, 1),
                [cols] => (1, *cols),
                [rows, cols] => (*rows, *cols),
                _ => unreachable!(),
            };
            for i in 0..m {
                for j in 0..n {
                    c_full[i * n + j] = c[(i % rows) * cols + j % cols];
                }
            }
            inputs.push(OwnedTensor::f32(c_shape, &c));
        }
        let a_strides = if trans_a { (1, m) } else { (k, 1) };
        let b_strides = if trans_b { (1, k) } else { (n, 1) };
        let effective_beta = if c_shape.is_some() { beta } else { 0.0 };
        let expected = reference(
            m,
            n,
            k,
            alpha,
            &a,
            a_strides,
            &b,
            b_strides,
            effective_beta,
            &c_full,
        );
        let attributes = [
            int_attr("transA", trans_a as i64),
            int_attr("transB", trans_b as i64),
            float_attr("alpha", alpha),
            float_attr("beta", beta),
        ];
        let y = host.run::<Gemm>(&inputs, &attributes, 1).unwrap();
        assert_eq!(y[0].shape(), [m, n]);
        assert_close(y[0].as_slice(), &expected, 1e-4);
    }

    #[test]
    fn transposes_and_broadcast_c() {
        for (trans_a, trans_b) in [(false, false), (true, false), (false, true), (true, true)] {
            check(5, 7, 3, trans_a, trans_b, 1.0, 1.0, Some(&[5, 7]));
            check(5, 7, 3, trans_a, trans_b, 0.5, 2.0, Some(&[7]));
            check(33, 17, 65, trans_a, trans_b, 1.5, -1.0, Some(&[33, 1]));
            check(4, 6, 9, trans_a, trans_b, 1.0, 1.0, Some(&[1, 6]));
            check(4, 6, 9, trans_a, trans_b, 1.0, 3.0, Some(&[]));
            check(4, 6, 9, trans_a, trans_b, 2.0, 1.0, None);
            check(200, 300, 70, trans_a, trans_b, 1.0, 0.0, Some(&[300]));
        }
    }

    #[test]
    fn few_rows_against_a_constant_weight_run_transposed_on_every_instruction_set() {
        let shapes = [(32, 300, 450), (16, 300, 1100), (8, 300, 300)];
        for isa in Isa::available() {
            let transposed = shapes
                .iter()
                .filter(|&&(m, n, k)| transposed_pays_off(isa, m, n, k))
                .count();
            assert!(transposed > 0, "{isa}");
            for threads in [1, 2] {
                let host = TestHost::new()
                    .isa(isa)
                    .threads(threads)
                    .constant_inputs(0b110);
                for (m, n, k) in shapes {
                    for trans_b in [false, true] {
                        check_on(&host, m, n, k, false, trans_b, 1.5, 0.5, Some(&[n]));
                        check_on(&host, m, n, k, true, trans_b, 1.0, 0.0, None);
                    }
                }
            }
        }
    }

    #[test]
    fn defaults_and_absent_c() {
        let a = OwnedTensor::f32(&[2, 2], &[1.0, 2.0, 3.0, 4.0]);
        let b = OwnedTensor::f32(&[2, 2], &[5.0, 6.0, 7.0, 8.0]);
        let y =
            run_operator::<Gemm>(&[a.clone(), b.clone(), OwnedTensor::absent()], &[], 1).unwrap();
        assert_eq!(y[0].to_vec::<f32>(), [19.0, 22.0, 43.0, 50.0]);
        let c = OwnedTensor::f32(&[1], &[1.0]);
        let y = run_operator::<Gemm>(&[a, b, c], &[], 1).unwrap();
        assert_eq!(y[0].to_vec::<f32>(), [20.0, 23.0, 44.0, 51.0]);
    }

    #[test]
    fn inference_checks_k_and_c() {
        let types = infer_operator::<Gemm>(
            &[
                infer_input(DType::F32, &[-1, 4]),
                infer_input(DType::F32, &[6, 4]),
                infer_input(DType::F32, &[6]),
            ],
            &[int_attr("transB", 1)],
            1,
        )
        .unwrap();
        assert_eq!(types[0].shape.as_slice(), [-1, 6]);
        let error = infer_operator::<Gemm>(
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
            "Gemm: op(A) of [3,4] and op(B) of [5,6] do not agree on K (4 and 5)"
        );
        let error = infer_operator::<Gemm>(
            &[
                infer_input(DType::F32, &[3, 4]),
                infer_input(DType::F32, &[4, 6]),
                infer_input(DType::F32, &[2, 6]),
            ],
            &[],
            1,
        )
        .unwrap_err();
        assert_eq!(error, "Gemm: C of shape [2,6] does not broadcast to [3,6]");
    }
}
