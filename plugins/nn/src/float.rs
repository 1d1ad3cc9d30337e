//! Floating-point dtypes seen as f32: the kernels of this plugin compute in f32, and inputs and
//! outputs of dtype f64, f16 or bf16 are converted through host scratch (f16 and bf16 by
//! `opal_kernel_support::half`, rounding to nearest even).

use opal_kernel_support::{
    check::{error, Shape},
    half,
};
use opal_plugin_api::{infer::InferTensor, prelude::*};

/// The dtypes the float kernels accept.
pub(crate) fn is_float(dtype: DType) -> bool {
    matches!(dtype, DType::F32 | DType::F64 | DType::F16 | DType::BF16)
}

/// Fails unless input `index` has a floating-point dtype.
pub(crate) fn expect_float(op: &str, index: usize, input: &InferTensor<'_>) -> KernelResult<()> {
    if !is_float(input.dtype) {
        return Err(error(
            op,
            format_args!(
                "input {index} has dtype {}, expected f32, f64, f16 or bf16",
                input.dtype
            ),
        ));
    }
    Ok(())
}

/// Fails unless X (input 0) has a floating-point dtype and a channel axis (rank 2 or more).
pub(crate) fn expect_float_channels(op: &str, x: &InferTensor<'_>) -> KernelResult<()> {
    expect_float(op, 0, x)?;
    if x.shape.len() < 2 {
        return Err(error(
            op,
            format_args!("X {} has no channel axis", Shape(x.shape)),
        ));
    }
    Ok(())
}

/// Converts `bytes` of `dtype` into `out` (as many elements as `out` holds).
fn decode(op: &str, dtype: DType, bytes: &[u8], out: &mut [f32]) -> KernelResult<()> {
    match dtype {
        DType::F64 => {
            for (v, b) in out.iter_mut().zip(bytes.chunks_exact(8)) {
                let array: [u8; 8] = b.try_into().unwrap_or([0; 8]);
                *v = f64::from_le_bytes(array) as f32;
            }
        }
        DType::F16 | DType::BF16 => half::decode(dtype, bytes, out),
        _ => {
            return Err(error(
                op,
                format_args!("dtype {dtype} is not a floating-point type"),
            ))
        }
    }
    Ok(())
}

/// Writes `values` into `bytes` of `dtype`.
fn encode(op: &str, dtype: DType, values: &[f32], bytes: &mut [u8]) -> KernelResult<()> {
    match dtype {
        DType::F64 => {
            for (&v, b) in values.iter().zip(bytes.chunks_exact_mut(8)) {
                b.copy_from_slice(&(v as f64).to_le_bytes());
            }
        }
        DType::F16 | DType::BF16 => half::encode(dtype, values, bytes),
        _ => {
            return Err(error(
                op,
                format_args!("dtype {dtype} is not a floating-point type"),
            ))
        }
    }
    Ok(())
}

/// A float tensor's values as f32: the tensor itself when it is f32, else converted into scratch.
pub(crate) fn as_f32<'a>(
    cx: &KernelContext<'a>,
    op: &str,
    tensor: TensorRef<'a>,
) -> KernelResult<&'a [f32]> {
    if tensor.dtype() == DType::F32 {
        return tensor.f32();
    }
    let values = cx.scratch::<f32>(tensor.len())?;
    decode(op, tensor.dtype(), tensor.bytes(), values)?;
    Ok(values)
}

/// A float tensor's values as an owned f32 vector, for shape inference, which may allocate
/// (kernels use [`as_f32`]).
pub(crate) fn to_f32_vec(op: &str, tensor: TensorRef<'_>) -> KernelResult<Vec<f32>> {
    if tensor.dtype() == DType::F32 {
        return Ok(tensor.f32()?.to_vec());
    }
    let mut values = vec![0.0; tensor.len()];
    decode(op, tensor.dtype(), tensor.bytes(), &mut values)?;
    Ok(values)
}

/// Input `index` as f32 values (see [`as_f32`]).
pub(crate) fn input_f32<'a>(
    cx: &KernelContext<'a>,
    op: &str,
    index: usize,
) -> KernelResult<&'a [f32]> {
    as_f32(cx, op, cx.input(index)?)
}

/// Optional input `index` as f32 values, or `None` when omitted.
pub(crate) fn optional_input_f32<'a>(
    cx: &KernelContext<'a>,
    op: &str,
    index: usize,
) -> KernelResult<Option<&'a [f32]>> {
    cx.optional_input(index)
        .map(|t| as_f32(cx, op, t))
        .transpose()
}

/// Where f32 results go once computed: nowhere more when the output is f32, else converted
/// into the output's bytes.
pub(crate) struct Sink<'a> {
    target: Option<(DType, &'a mut [u8])>,
}

impl Sink<'_> {
    /// Stores `values` (the slice [`output_f32`] returned) into the output.
    pub(crate) fn finish(self, op: &str, values: &[f32]) -> KernelResult<()> {
        match self.target {
            None => Ok(()),
            Some((dtype, bytes)) => encode(op, dtype, values, bytes),
        }
    }
}

/// Output `index` as a zeroed-or-host-filled f32 buffer to compute into, and the [`Sink`] that
/// stores it. For f32 outputs the buffer is the output itself.
pub(crate) fn output_f32<'a>(
    cx: &mut KernelContext<'a>,
    index: usize,
) -> KernelResult<(&'a mut [f32], Sink<'a>)> {
    let output = cx.output(index)?;
    if output.dtype() == DType::F32 {
        return Ok((output.f32_mut()?, Sink { target: None }));
    }
    let dtype = output.dtype();
    let values = cx.scratch::<f32>(output.len())?;
    Ok((
        values,
        Sink {
            target: Some((dtype, output.bytes_mut())),
        },
    ))
}
