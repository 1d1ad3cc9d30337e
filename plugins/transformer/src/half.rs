//! Float outputs of any precision: [`FloatOut`] lends a kernel f32 values and rounds them into
//! an f16 or bf16 output's bytes. The conversions are `opal_kernel_support::half`'s.

pub(crate) use opal_kernel_support::half::{round_to, widened};
use opal_kernel_support::{check::error, half::encode};
use opal_plugin_api::{infer::InferTensor, prelude::*};

/// Whether `dtype` is a float type the kernels of this plugin compute in f32.
pub(crate) fn is_float(dtype: DType) -> bool {
    matches!(dtype, DType::F32 | DType::F16 | DType::BF16)
}

/// Fails unless each given input `(index, tensor)` has the float dtype `dtype` (f32, f16 or
/// bf16) of the input that messages call `like`.
pub(crate) fn expect_float_like(
    op: &str,
    like: &str,
    dtype: DType,
    inputs: &[(usize, Option<InferTensor<'_>>)],
) -> KernelResult<()> {
    for &(i, t) in inputs {
        if let Some(t) = t {
            if t.dtype != dtype || !is_float(t.dtype) {
                return Err(error(
                    op,
                    format_args!(
                        "input {i} has dtype {}, expected f32, f16 or bf16 like {like}",
                        t.dtype
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// An f32 view of a float output: the output itself when f32, else a scratch buffer narrowed
/// into the output's bytes by [`FloatOut::finish`].
pub(crate) struct FloatOut<'a> {
    dtype: DType,
    pub(crate) values: &'a mut [f32],
    bytes: Option<&'a mut [u8]>,
}

impl<'a> FloatOut<'a> {
    pub(crate) fn new(op: &str, cx: &KernelContext<'a>, out: TensorMut<'a>) -> KernelResult<Self> {
        let dtype = out.dtype();
        match dtype {
            DType::F32 => Ok(FloatOut {
                dtype,
                values: out.f32_mut()?,
                bytes: None,
            }),
            DType::F16 | DType::BF16 => Ok(FloatOut {
                dtype,
                values: cx.scratch::<f32>(out.len())?,
                bytes: Some(out.bytes_mut()),
            }),
            _ => Err(error(
                op,
                format_args!("cannot write f32 values as {dtype}"),
            )),
        }
    }

    /// Writes the values into the output (a no-op for f32 outputs).
    pub(crate) fn finish(self) {
        if let Some(bytes) = self.bytes {
            encode(self.dtype, self.values, bytes);
        }
    }
}
