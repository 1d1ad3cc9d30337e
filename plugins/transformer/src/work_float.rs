//! The float a `FlexAttention` call computes in — f32, or f64 when its inputs or its softmax
//! are f64 — and the steps that differ between the two: widening inputs, rounding to a
//! narrower dtype where the reference rounds, batched matrix products, and the bytes of a
//! tensor of another float dtype (a subgraph's input or output, the node's output).

use crate::half::{round_to, widened};
use opal_kernel_support::{
    check::error,
    half::{decode, encode},
    sgemm::{sgemm, Operand, Product},
};
use opal_plugin_api::prelude::*;
use std::ops::{Add, Div, Mul, Sub};

/// A batch of products `C[b] = A[b] x B[b]`, `A[b]` of `m x k`, `B[b]` of `k x n`, `C` being
/// `batches` row-major `m x n` matrices back to back. Element `(i, p)` of `A[b]` is
/// `a[oa + i * a_row + p]` and element `(p, j)` of `B[b]` is `b[ob + p * b_row + j * b_col]`,
/// where `(oa, ob) = offsets(b)`.
pub(crate) struct Batched<'a, W> {
    pub(crate) m: usize,
    pub(crate) n: usize,
    pub(crate) k: usize,
    pub(crate) a: &'a [W],
    pub(crate) a_row: usize,
    pub(crate) b: &'a [W],
    pub(crate) b_row: usize,
    pub(crate) b_col: usize,
    pub(crate) batches: usize,
    pub(crate) offsets: &'a (dyn Fn(usize) -> (usize, usize) + Sync),
}

/// f32 or f64, as a call computes in it.
pub(crate) trait WorkFloat:
    Element
    + Default
    + PartialOrd
    + From<f32>
    + Into<f64>
    + Add<Output = Self>
    + Sub<Output = Self>
    + Mul<Output = Self>
    + Div<Output = Self>
{
    const NEG_INFINITY: Self;

    /// `value`, rounded to nearest when `Self` is narrower.
    fn from_f64(value: f64) -> Self;

    fn exp(self) -> Self;

    /// The value rounded to the precision of float `dtype` (unchanged when `dtype` holds
    /// every value of `Self`).
    fn round(self, dtype: DType) -> Self;

    /// Whether float `dtype` holds every value of `Self`, so that [`round`](Self::round) is
    /// the identity.
    fn is_exact_in(dtype: DType) -> bool;

    /// Input `tensor` (a float of any width) as values of `Self`: its own data when it has
    /// this type, else a widened copy in scratch.
    fn widen<'a>(
        cx: &KernelContext<'a>,
        op: &str,
        tensor: TensorRef<'a>,
    ) -> KernelResult<&'a [Self]>;

    /// Computes `product` into `c`.
    fn product(
        cx: &KernelContext<'_>,
        product: &Batched<'_, Self>,
        c: &mut [Self],
    ) -> KernelResult<()>;
}

impl WorkFloat for f32 {
    const NEG_INFINITY: Self = f32::NEG_INFINITY;

    fn from_f64(value: f64) -> Self {
        value as f32
    }

    fn exp(self) -> Self {
        f32::exp(self)
    }

    fn round(self, dtype: DType) -> Self {
        round_to(dtype, self)
    }

    fn is_exact_in(dtype: DType) -> bool {
        matches!(dtype, DType::F32 | DType::F64)
    }

    fn widen<'a>(
        cx: &KernelContext<'a>,
        op: &str,
        tensor: TensorRef<'a>,
    ) -> KernelResult<&'a [Self]> {
        widened(op, cx, tensor)
    }

    fn product(cx: &KernelContext<'_>, p: &Batched<'_, Self>, c: &mut [Self]) -> KernelResult<()> {
        sgemm(
            cx,
            &Product {
                m: p.m,
                n: p.n,
                k: p.k,
                alpha: 1.0,
                beta: 0.0,
                a: Operand {
                    data: p.a,
                    row_stride: p.a_row,
                    col_stride: 1,
                },
                b: Operand {
                    data: p.b,
                    row_stride: p.b_row,
                    col_stride: p.b_col,
                },
                batches: p.batches,
                batch_offsets: p.offsets,
                packed_a: None,
                packed_b: None,
            },
            c,
        )
    }
}

impl WorkFloat for f64 {
    const NEG_INFINITY: Self = f64::NEG_INFINITY;

    fn from_f64(value: f64) -> Self {
        value
    }

    fn exp(self) -> Self {
        f64::exp(self)
    }

    fn round(self, dtype: DType) -> Self {
        match dtype {
            DType::F32 => f64::from(self as f32),
            DType::F16 | DType::BF16 => f64::from(round_to(dtype, self as f32)),
            _ => self,
        }
    }

    fn is_exact_in(dtype: DType) -> bool {
        dtype == DType::F64
    }

    fn widen<'a>(
        cx: &KernelContext<'a>,
        op: &str,
        tensor: TensorRef<'a>,
    ) -> KernelResult<&'a [Self]> {
        match tensor.dtype() {
            DType::F64 => tensor.as_slice::<f64>(),
            DType::F32 => {
                let out = cx.scratch_unzeroed::<f64>(tensor.len())?;
                for (y, &x) in out.iter_mut().zip(tensor.f32()?) {
                    *y = f64::from(x);
                }
                Ok(out)
            }
            dtype @ (DType::F16 | DType::BF16) => {
                let out = cx.scratch_unzeroed::<f64>(tensor.len())?;
                decode(dtype, tensor.bytes(), out);
                Ok(out)
            }
            dtype => Err(error(op, format_args!("cannot widen {dtype} to f64"))),
        }
    }

    fn product(_: &KernelContext<'_>, p: &Batched<'_, Self>, c: &mut [Self]) -> KernelResult<()> {
        for (batch, c) in c.chunks_exact_mut((p.m * p.n).max(1)).enumerate() {
            let (oa, ob) = (p.offsets)(batch);
            for (i, row) in c.chunks_exact_mut(p.n.max(1)).enumerate() {
                let a = &p.a[oa + i * p.a_row..];
                for (j, y) in row.iter_mut().enumerate() {
                    let b = &p.b[ob + j * p.b_col..];
                    *y = (0..p.k).map(|l| a[l] * b[l * p.b_row]).sum();
                }
            }
        }
        Ok(())
    }
}

/// Writes `values` as float `dtype` into `bytes` (little-endian), each rounded once.
pub(crate) fn encode_as<W: WorkFloat>(dtype: DType, values: &[W], bytes: &mut [u8]) {
    match dtype {
        DType::F64 => {
            for (b, &v) in bytes.chunks_exact_mut(8).zip(values) {
                b.copy_from_slice(&v.into().to_le_bytes());
            }
        }
        DType::F32 => {
            for (b, &v) in bytes.chunks_exact_mut(4).zip(values) {
                b.copy_from_slice(&(v.into() as f32).to_le_bytes());
            }
        }
        _ => encode(dtype, values, bytes),
    }
}

/// Reads float tensor `tensor` into `values`, which has its length.
pub(crate) fn decode_into<W: WorkFloat>(
    tensor: TensorRef<'_>,
    values: &mut [W],
) -> KernelResult<()> {
    match tensor.dtype() {
        DType::F64 => {
            for (y, &x) in values.iter_mut().zip(tensor.as_slice::<f64>()?) {
                *y = W::from_f64(x);
            }
        }
        DType::F32 => {
            for (y, &x) in values.iter_mut().zip(tensor.f32()?) {
                *y = W::from(x);
            }
        }
        dtype => decode(dtype, tensor.bytes(), values),
    }
    Ok(())
}
