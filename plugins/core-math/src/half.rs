//! Half-float outputs: kernels write f32 into scratch and [`Narrow`] rounds it into the output's
//! f16 or bf16 bytes. Widening inputs and the conversions themselves are
//! `opal_kernel_support::half`'s.

pub(crate) use opal_kernel_support::half::{decode, encode, widened};
use opal_plugin_api::prelude::*;

/// An f32 buffer a kernel writes instead of a half-float output, narrowed by [`Narrow::finish`].
pub(crate) struct Narrow<'a> {
    dtype: DType,
    pub(crate) values: &'a mut [f32],
    bytes: &'a mut [u8],
}

impl<'a> Narrow<'a> {
    /// A scratch f32 buffer standing for half-float output `out`.
    pub(crate) fn new(cx: &KernelContext<'a>, out: TensorMut<'a>) -> KernelResult<Self> {
        let dtype = out.dtype();
        let len = out.len();
        Ok(Narrow {
            dtype,
            values: cx.scratch::<f32>(len)?,
            bytes: out.bytes_mut(),
        })
    }

    /// Writes the values into the output as half floats.
    pub(crate) fn finish(self) {
        encode(self.dtype, self.values, self.bytes);
    }
}
