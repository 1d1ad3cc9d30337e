//! The row-wise half of `Attention`: the additive bias of each score (mask, causal frontier,
//! sliding window, key padding), softcap, the softmax in its precision, the fully-masked-row
//! guard, and the optional `qk_matmul_output` captures.

use crate::{
    attention::{Sizes, OP},
    half::{is_float, round_to, widened},
};
use opal_kernel_support::check::{error, Shape};
use opal_plugin_api::prelude::*;

/// The attributes that shape the scores and their normalisation.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Settings {
    dtype: DType,
    /// The dtype the scores are rounded to.
    score_dtype: DType,
    pub(crate) sqrt_scale: f32,
    is_causal: bool,
    softcap: f32,
    mode: i64,
    /// The dtype the softmax computes in (f64 or one of the float types).
    softmax_dtype: DType,
    left_window: i64,
    right_window: i64,
}

impl Settings {
    pub(crate) fn read(
        attributes: &Attributes<'_>,
        dtype: DType,
        head: usize,
    ) -> KernelResult<Self> {
        let scale = match attributes.get("scale") {
            Some(_) => f64::from(attributes.float("scale", 1.0)?),
            None => 1.0 / (head as f64).sqrt(),
        };
        let mode = attributes.int("qk_matmul_output_mode", 0)?;
        if !(0..=3).contains(&mode) {
            return Err(error(
                OP,
                format_args!("qk_matmul_output_mode {mode} is not 0, 1, 2 or 3"),
            ));
        }
        let score_dtype = dtype;
        let softmax_dtype = match attributes.int("softmax_precision", 0)? {
            0 => score_dtype,
            precision => {
                let d = DType(precision as i32);
                if !is_float(d) && d != DType::F64 {
                    return Err(error(
                        OP,
                        format_args!("softmax_precision {precision} is not a float type"),
                    ));
                }
                d
            }
        };
        Ok(Settings {
            dtype,
            score_dtype,
            sqrt_scale: round_to(dtype, scale.sqrt() as f32),
            is_causal: attributes.int("is_causal", 0)? != 0,
            softcap: attributes.float("softcap", 0.0)?,
            mode,
            softmax_dtype,
            left_window: attributes.int("left_window_size", -1)?,
            right_window: attributes.int("right_window_size", -1)?,
        })
    }

    /// The additive bias of score `(b, h, i, j)`: the mask, the causal frontier and the
    /// sliding window (both offset-aligned at `offset`), and the padding of `nonpad`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn bias(
        &self,
        mask: Option<&Mask<'_>>,
        nonpad: Option<&[i64]>,
        offset: i64,
        b: usize,
        h: usize,
        i: usize,
        j: usize,
    ) -> f32 {
        let mut bias = mask.map_or(0.0, |m| m.value(b, h, i, j));
        let diff = i as i64 + offset - j as i64;
        if self.is_causal && diff < 0 {
            bias += f32::NEG_INFINITY;
        }
        let outside_window = (self.left_window >= 0 && diff > self.left_window)
            || (self.right_window >= 0 && -diff > self.right_window);
        if outside_window {
            bias += f32::NEG_INFINITY;
        }
        if nonpad.is_some_and(|n| j as i64 >= n[b]) {
            bias += f32::NEG_INFINITY;
        }
        round_to(self.dtype, bias)
    }

    /// Turns one row of raw scores into probabilities, in place, writing the requested
    /// `qk_matmul_output` row on the way.
    pub(crate) fn normalize_row(
        &self,
        scores: &mut [f32],
        bias: &[f32],
        qk_row: Option<&mut [f32]>,
    ) {
        let dtype = self.score_dtype;
        for s in scores.iter_mut() {
            *s = round_to(dtype, *s);
        }
        if self.softcap > 0.0 {
            let cap = round_to(dtype, self.softcap);
            for s in scores.iter_mut() {
                let t = round_to(dtype, round_to(dtype, *s / cap).tanh());
                *s = round_to(dtype, t * cap);
            }
        }
        let mut qk_row = qk_row;
        if self.mode <= 1 {
            if let Some(out) = qk_row.as_deref_mut() {
                out.copy_from_slice(scores);
            }
        }
        for (s, &b) in scores.iter_mut().zip(bias) {
            *s = round_to(dtype, *s + b);
        }
        if self.mode == 2 {
            if let Some(out) = qk_row.as_deref_mut() {
                out.copy_from_slice(scores);
            }
        }
        let all_masked = bias.iter().all(|&b| b == f32::NEG_INFINITY);
        if all_masked {
            scores.fill(0.0);
        } else {
            self.softmax(scores);
        }
        if self.mode == 3 {
            if let Some(out) = qk_row {
                out.copy_from_slice(scores);
            }
        }
    }

    /// Softmax in the softmax precision; the result is rounded to the inputs' dtype.
    fn softmax(&self, x: &mut [f32]) {
        let max = x.iter().fold(f32::NEG_INFINITY, |m, &v| {
            if m.is_nan() || v.is_nan() {
                f32::NAN
            } else {
                m.max(v)
            }
        });
        let safe_max = if max == f32::NEG_INFINITY { 0.0 } else { max };
        if self.softmax_dtype == DType::F64 {
            let max = f64::from(safe_max);
            let sum: f64 = x.iter().map(|&v| (f64::from(v) - max).exp()).sum();
            let sum = if sum == 0.0 { 1.0 } else { sum };
            for v in x.iter_mut() {
                *v = round_to(self.dtype, ((f64::from(*v) - max).exp() / sum) as f32);
            }
            return;
        }
        let precision = self.softmax_dtype;
        let mut sum = 0.0f32;
        for v in x.iter_mut() {
            *v = round_to(precision, round_to(precision, *v - safe_max).exp());
            // bf16 sums add element by element in bf16; f16 and f32 sums accumulate in f32.
            sum = if precision == DType::BF16 {
                round_to(precision, sum + *v)
            } else {
                sum + *v
            };
        }
        let sum = round_to(precision, sum);
        let sum = if sum == 0.0 { 1.0 } else { sum };
        for v in x.iter_mut() {
            *v = round_to(self.dtype, round_to(precision, *v / sum));
        }
    }
}

/// The attention mask, broadcast right-aligned to `[batch, q_heads, q_len, total]`; keys past
/// its last dim are masked out.
pub(crate) struct Mask<'a> {
    values: MaskValues<'a>,
    strides: [usize; 4],
    len: usize,
}

enum MaskValues<'a> {
    Bool(&'a [bool]),
    Float(&'a [f32]),
}

impl<'a> Mask<'a> {
    pub(crate) fn new(
        cx: &KernelContext<'a>,
        mask: TensorRef<'a>,
        sizes: &Sizes,
    ) -> KernelResult<Self> {
        let shape = mask.shape();
        let rank = shape.len();
        let full = [sizes.batch, sizes.q_heads, sizes.q_len, sizes.total];
        let mut dims = [1usize; 4];
        if rank == 0 || rank > 4 {
            return Err(error(
                OP,
                format_args!("attn_mask {} must have rank 1 to 4", Shape(shape)),
            ));
        }
        dims[4 - rank..].copy_from_slice(shape);
        let fits = (0..3).all(|d| dims[d] == 1 || dims[d] == full[d]) && dims[3] <= full[3];
        if !fits {
            return Err(error(
                OP,
                format_args!(
                    "attn_mask {} does not broadcast to {}",
                    Shape(shape),
                    Shape(&full)
                ),
            ));
        }
        let mut strides = [0usize; 4];
        let mut stride = 1;
        for d in (0..4).rev() {
            strides[d] = if dims[d] == 1 && d < 3 { 0 } else { stride };
            stride *= dims[d];
        }
        let values = if mask.dtype() == DType::BOOL {
            MaskValues::Bool(mask.as_slice::<bool>()?)
        } else {
            MaskValues::Float(widened(OP, cx, mask)?)
        };
        Ok(Mask {
            values,
            strides,
            len: dims[3],
        })
    }

    fn value(&self, b: usize, h: usize, i: usize, j: usize) -> f32 {
        if j >= self.len {
            return f32::NEG_INFINITY;
        }
        let index = b * self.strides[0] + h * self.strides[1] + i * self.strides[2] + j;
        match self.values {
            MaskValues::Bool(values) => {
                if values[index] {
                    0.0
                } else {
                    f32::NEG_INFINITY
                }
            }
            MaskValues::Float(values) => values[index],
        }
    }
}
