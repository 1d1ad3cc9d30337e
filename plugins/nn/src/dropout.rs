//! Dropout. In inference (the default) the output is the input and the mask is all true; in
//! training mode (opset 12's `training_mode` input) with a ratio above 0, an element is kept
//! when a uniform draw in [0, 1) is at least the ratio, and scaled by `1 / (1 - ratio)`. The
//! draws come from MT19937 seeded with the `seed` attribute (default 0), as numpy's
//! `RandomState(seed).uniform` makes them, so the ONNX reference's masks are reproduced.

use crate::float::{as_f32, is_float, output_f32};
use opal_kernel_support::check::error;
use opal_plugin_api::prelude::*;

/// Dropout of opsets 1 to 9: the mask has the input's dtype (1 for kept elements).
pub struct DropoutLegacy;
/// Dropout of opset 10 on: the mask is bool; opset 12 takes ratio and training_mode as inputs.
pub struct Dropout;

const OP: &str = "Dropout";

fn infer_dropout(cx: &InferContext<'_>, mask: Option<DType>) -> KernelResult<Vec<OutputType>> {
    let x = cx.input(0)?;
    if x.dtype.size().is_none() || x.dtype == DType::STRING {
        return Err(error(
            OP,
            format_args!("dtype {} is not supported", x.dtype),
        ));
    }
    let mut outputs = vec![OutputType::new(x.dtype, x.shape.to_vec())];
    if cx.output_count() > 1 {
        outputs.push(OutputType::new(mask.unwrap_or(x.dtype), x.shape.to_vec()));
    }
    Ok(outputs)
}

/// Copies input 0 to output 0 and sets the mask (output 1, if any) to all-kept.
fn pass_through(cx: &mut KernelContext<'_>) -> KernelResult<()> {
    let x = cx.input(0)?;
    cx.output(0)?.bytes_mut().copy_from_slice(x.bytes());
    if cx.output_count() > 1 {
        let mask = cx.output(1)?;
        match mask.dtype() {
            DType::BOOL => mask.as_slice_mut::<bool>()?.fill(true),
            DType::F32 => mask.f32_mut()?.fill(1.0),
            DType::F64 => mask.as_slice_mut::<f64>()?.fill(1.0),
            DType::F16 => {
                for b in mask.bytes_mut().chunks_exact_mut(2) {
                    b.copy_from_slice(&0x3c00u16.to_le_bytes());
                }
            }
            other => {
                return Err(error(
                    OP,
                    format_args!("mask dtype {other} is not supported"),
                ));
            }
        }
    }
    Ok(())
}

impl Operator for DropoutLegacy {
    const OP_TYPE: &'static str = OP;
    const UNTIL_VERSION: i64 = 9;

    fn infer(cx: &InferContext<'_>) -> KernelResult<Vec<OutputType>> {
        infer_dropout(cx, None)
    }

    fn compute(cx: &mut KernelContext<'_>) -> KernelResult<()> {
        pass_through(cx)
    }
}

impl Operator for Dropout {
    const OP_TYPE: &'static str = OP;
    const SINCE_VERSION: i64 = 10;

    fn infer(cx: &InferContext<'_>) -> KernelResult<Vec<OutputType>> {
        infer_dropout(cx, Some(DType::BOOL))
    }

    fn compute(cx: &mut KernelContext<'_>) -> KernelResult<()> {
        let training = match cx.optional_input(2) {
            Some(t) => t.as_slice::<bool>()?.first().copied().unwrap_or(false),
            None => false,
        };
        let ratio = match cx.optional_input(1) {
            Some(r) => as_f32(cx, OP, r)?.first().copied().unwrap_or(0.5),
            None => cx.attributes().float("ratio", 0.5)?,
        };
        if !training || ratio == 0.0 {
            return pass_through(cx);
        }
        if !(0.0..1.0).contains(&ratio) || !is_float(cx.input(0)?.dtype()) {
            return Err(error(
                OP,
                format_args!("training needs a float input and a ratio in [0, 1), got {ratio}"),
            ));
        }
        let x = as_f32(cx, OP, cx.input(0)?)?;
        let seed = cx.attributes().int("seed", 0)? as u32;
        let mut mask = if cx.output_count() > 1 {
            Some(cx.output(1)?.as_slice_mut::<bool>()?)
        } else {
            None
        };
        let (y, sink) = output_f32(cx, 0)?;
        let mut random = Mt19937::new(seed);
        let scale = 1.0 / (1.0 - ratio);
        for (i, (y, &x)) in y.iter_mut().zip(x).enumerate() {
            let keep = random.next_f64() >= ratio as f64;
            *y = if keep { x * scale } else { 0.0 };
            if let Some(mask) = mask.as_deref_mut() {
                mask[i] = keep;
            }
        }
        sink.finish(OP, y)
    }
}

/// The Mersenne Twister MT19937, seeded and drawn from as numpy's legacy `RandomState` does.
struct Mt19937 {
    state: [u32; 624],
    index: usize,
}

impl Mt19937 {
    fn new(seed: u32) -> Self {
        let mut state = [0u32; 624];
        state[0] = seed;
        for i in 1..624 {
            let previous = state[i - 1];
            state[i] = 1_812_433_253u32
                .wrapping_mul(previous ^ (previous >> 30))
                .wrapping_add(i as u32);
        }
        Mt19937 { state, index: 624 }
    }

    fn next_u32(&mut self) -> u32 {
        if self.index >= 624 {
            for i in 0..624 {
                let y = (self.state[i] & 0x8000_0000) | (self.state[(i + 1) % 624] & 0x7fff_ffff);
                let mut v = self.state[(i + 397) % 624] ^ (y >> 1);
                if y & 1 != 0 {
                    v ^= 0x9908_b0df;
                }
                self.state[i] = v;
            }
            self.index = 0;
        }
        let mut y = self.state[self.index];
        self.index += 1;
        y ^= y >> 11;
        y ^= (y << 7) & 0x9d2c_5680;
        y ^= (y << 15) & 0xefc6_0000;
        y ^ (y >> 18)
    }

    /// A double in [0, 1) with 53 random bits (numpy's `random_sample`).
    fn next_f64(&mut self) -> f64 {
        let a = (self.next_u32() >> 5) as f64;
        let b = (self.next_u32() >> 6) as f64;
        (a * 67_108_864.0 + b) / 9_007_199_254_740_992.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mt19937_matches_the_reference_sequence() {
        // The first outputs of MT19937 seeded with 5489 (the reference implementation's default).
        let mut random = Mt19937::new(5489);
        assert_eq!(random.next_u32(), 3_499_211_612);
        assert_eq!(random.next_u32(), 581_869_302);
        // numpy: np.random.RandomState(0).random_sample() == 0.5488135039273248.
        assert_eq!(Mt19937::new(0).next_f64(), 0.548_813_503_927_324_8);
    }
}
