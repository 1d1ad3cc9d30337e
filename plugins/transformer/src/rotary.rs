//! ONNX `RotaryEmbedding` (opset 23): rotates the first `rotary_embedding_dim` values of each
//! head by position-dependent angles given as cos/sin caches, in halves or interleaved pairs,
//! for 4-D `[batch, heads, seq, head_size]` or 3-D `[batch, seq, heads * head_size]` inputs.

use crate::half::{expect_float_like, round_to, widened, FloatOut};
use opal_kernel_support::check::{error, Shape};
use opal_plugin_api::prelude::*;

const OP: &str = "RotaryEmbedding";

/// ONNX `RotaryEmbedding`, opset 23.
pub struct RotaryEmbedding;

/// The sizes of one call.
#[derive(Clone, Copy, Debug)]
struct Layout {
    three_d: bool,
    batch: usize,
    heads: usize,
    seq: usize,
    head: usize,
    /// Values rotated at the start of each head (even).
    rotary: usize,
}

impl Layout {
    fn new(attributes: &Attributes<'_>, shape: &[usize]) -> KernelResult<Self> {
        let (three_d, batch, heads, seq, head) = match *shape {
            [batch, heads, seq, head] => (false, batch, heads, seq, head),
            [batch, seq, hidden] => {
                let heads = attributes.int("num_heads", 0)?;
                if heads <= 0 || hidden % heads as usize != 0 {
                    return Err(error(
                        OP,
                        format_args!(
                            "3-D input {} needs a num_heads attribute dividing its hidden size",
                            Shape(shape)
                        ),
                    ));
                }
                let heads = heads as usize;
                (true, batch, heads, seq, hidden / heads)
            }
            _ => {
                return Err(error(
                    OP,
                    format_args!("input {} must have rank 3 or 4", Shape(shape)),
                ))
            }
        };
        let rotary = match attributes.int("rotary_embedding_dim", 0)? {
            0 => head,
            d if d > 0 && d as usize <= head && d % 2 == 0 => d as usize,
            d => {
                return Err(error(
                    OP,
                    format_args!(
                        "rotary_embedding_dim {d} must be even and at most the head size {head}"
                    ),
                ))
            }
        };
        if rotary % 2 != 0 {
            return Err(error(
                OP,
                format_args!("the rotated size {rotary} must be even"),
            ));
        }
        Ok(Layout {
            three_d,
            batch,
            heads,
            seq,
            head,
            rotary,
        })
    }

    /// The offset of head `h` at position `s` of batch `b`.
    fn offset(&self, b: usize, h: usize, s: usize) -> usize {
        if self.three_d {
            ((b * self.seq + s) * self.heads + h) * self.head
        } else {
            ((b * self.heads + h) * self.seq + s) * self.head
        }
    }
}

impl Operator for RotaryEmbedding {
    const OP_TYPE: &'static str = "RotaryEmbedding";
    const SINCE_VERSION: i64 = 23;

    fn infer(cx: &InferContext<'_>) -> KernelResult<Vec<OutputType>> {
        let x = cx.input(0)?;
        let (cos, sin) = (cx.input(1)?, cx.input(2)?);
        expect_float_like(
            OP,
            "the input",
            x.dtype,
            &[(0, Some(x)), (1, Some(cos)), (2, Some(sin))],
        )?;
        if let Some(ids) = cx.optional_input(3)? {
            if ids.dtype != DType::I64 {
                return Err(error(
                    OP,
                    format_args!("position_ids has dtype {}, expected i64", ids.dtype),
                ));
            }
        }
        if x.shape.len() != 3 && x.shape.len() != 4 {
            return Err(error(
                OP,
                format_args!("input {} must have rank 3 or 4", Shape(x.shape)),
            ));
        }
        Ok(vec![OutputType::new(x.dtype, x.shape.to_vec())])
    }

    fn compute(cx: &mut KernelContext<'_>) -> KernelResult<()> {
        let input = cx.input(0)?;
        let layout = Layout::new(&cx.attributes(), input.shape())?;
        let interleaved = cx.attributes().int("interleaved", 0)? != 0;
        let dtype = input.dtype();
        let half = layout.rotary / 2;
        let (cos_tensor, sin_tensor) = (cx.input(1)?, cx.input(2)?);
        let positions = cx
            .optional_input(3)
            .map(|t| t.as_slice::<i64>())
            .transpose()?;
        let rows = layout.batch * layout.seq;
        let cache_rows = match positions {
            Some(ids) if ids.len() != rows => {
                return Err(error(
                    OP,
                    format_args!("position_ids has {} values, expected {rows}", ids.len()),
                ))
            }
            Some(_) => cos_tensor.shape().first().copied().unwrap_or(0),
            None => rows,
        };
        for cache in [cos_tensor, sin_tensor] {
            if cache.len() != cache_rows * half || cache.shape().last() != Some(&half) {
                return Err(error(
                    OP,
                    format_args!(
                        "cache {} does not hold {cache_rows} rows of {half} values",
                        Shape(cache.shape())
                    ),
                ));
            }
        }
        let x = widened(OP, cx, input)?;
        let cos = widened(OP, cx, cos_tensor)?;
        let sin = widened(OP, cx, sin_tensor)?;
        let out_tensor = cx.output(0)?;
        let out = FloatOut::new(OP, cx, out_tensor)?;
        out.values.copy_from_slice(x);
        let r = |v: f32| round_to(dtype, v);
        for b in 0..layout.batch {
            for s in 0..layout.seq {
                let row = match positions {
                    Some(ids) => {
                        let p = ids[b * layout.seq + s];
                        usize::try_from(p)
                            .ok()
                            .filter(|&p| p < cache_rows)
                            .ok_or_else(|| {
                                error(
                                    OP,
                                    format_args!(
                                        "position id {p} is outside the cache of {cache_rows} rows"
                                    ),
                                )
                            })?
                    }
                    None => b * layout.seq + s,
                };
                let (cos, sin) = (
                    &cos[row * half..(row + 1) * half],
                    &sin[row * half..(row + 1) * half],
                );
                for h in 0..layout.heads {
                    let base = layout.offset(b, h, s);
                    let x = &x[base..base + layout.rotary];
                    let y = &mut out.values[base..base + layout.rotary];
                    for i in 0..half {
                        let (first, second) = if interleaved {
                            (2 * i, 2 * i + 1)
                        } else {
                            (i, half + i)
                        };
                        let (x1, x2) = (x[first], x[second]);
                        y[first] = r(r(cos[i] * x1) - r(sin[i] * x2));
                        y[second] = r(r(sin[i] * x1) + r(cos[i] * x2));
                    }
                }
            }
        }
        out.finish();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opal_plugin_api::testing::{run_operator, OwnedTensor};

    #[test]
    fn rotates_halves_by_the_cached_angle() {
        let x = OwnedTensor::f32(&[1, 1, 1, 4], &[1.0, 2.0, 3.0, 4.0]);
        let cos = OwnedTensor::f32(&[1, 1, 2], &[0.0, 1.0]);
        let sin = OwnedTensor::f32(&[1, 1, 2], &[1.0, 0.0]);
        let y = run_operator::<RotaryEmbedding>(&[x, cos, sin], &[], 1).unwrap();
        // Pair (1, 3) turns a quarter (-> (-3, 1)); pair (2, 4) stays.
        assert_eq!(y[0].to_vec::<f32>(), [-3.0, 2.0, 1.0, 4.0]);
    }
}
