//! Deterministic synthetic inputs, for runs and benchmarks given no input files.

use crate::{
    memory::{AlignedBuffer, Owner},
    tensor::{byte_size, Shape, Tensor},
};
use opal_plugin_api::DType;

/// A tensor of `dtype` and `shape` filled from a seeded generator: floats uniform in [-1, 1),
/// integers in 0..8, bools alternating. The same seed gives the same tensor.
pub fn synthetic_tensor(dtype: DType, shape: &[usize], seed: u64, owner: &Owner) -> Option<Tensor> {
    let bytes = byte_size(dtype, shape)?;
    let mut data = AlignedBuffer::zeroed(bytes, owner)?;
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = move || {
        // xorshift64*
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        state.wrapping_mul(0x2545_F491_4F6C_DD1D)
    };
    let unit = |r: u64| (r >> 40) as f64 / (1u64 << 24) as f64 * 2.0 - 1.0;
    let out = data.as_mut_slice();
    match dtype {
        DType::F32 => out
            .chunks_exact_mut(4)
            .for_each(|c| c.copy_from_slice(&(unit(next()) as f32).to_le_bytes())),
        DType::F64 => out
            .chunks_exact_mut(8)
            .for_each(|c| c.copy_from_slice(&unit(next()).to_le_bytes())),
        DType::BOOL => out
            .iter_mut()
            .enumerate()
            .for_each(|(i, b)| *b = (i % 2) as u8),
        _ => {
            let size = dtype.size()?;
            // Small non-negative integers in little-endian, whatever the width.
            out.chunks_exact_mut(size)
                .for_each(|c| c[0] = (next() % 8) as u8);
        }
    }
    Some(Tensor::from_parts(dtype, Shape::from_slice(shape), data))
}
