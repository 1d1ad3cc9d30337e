//! ONNX `Attention` (opsets 23 to 25): scaled dot-product attention over 3-D (`[batch, seq,
//! heads * head_size]`) or 4-D (`[batch, heads, seq, head_size]`) Q/K/V, with grouped-query
//! heads, a boolean or additive mask, causal and sliding-window masking, a past key/value
//! cache, a per-batch count of valid keys, softcap, and the optional `qk_matmul_output`.
//! Computes in f32 (f16/bf16 through scratch, rounded where the reference rounds).

use crate::{
    attention_scores::{Mask, Settings},
    dims::{div_known, same, Dims},
    half::{expect_float_like, round_to, widened, FloatOut},
};
use opal_kernel_support::{
    check::{error, Shape},
    parallel::{task_count, Tasks},
    sgemm::{sgemm, Operand, Product},
};
use opal_plugin_api::prelude::*;

pub(crate) const OP: &str = "Attention";

/// ONNX `Attention`, opsets 23 to 25 (opset 24 added `nonpad_kv_seqlen`, 25 the window sizes).
pub struct Attention;

/// The sizes of one attention call; dims of -1 are unknown (inference only).
#[derive(Clone, Copy, Debug)]
struct Geometry {
    three_d: bool,
    batch: i64,
    q_heads: i64,
    kv_heads: i64,
    q_len: i64,
    kv_len: i64,
    past_len: i64,
    head: i64,
    v_head: i64,
}

fn add_known(a: i64, b: i64) -> i64 {
    if a < 0 || b < 0 {
        -1
    } else {
        a + b
    }
}

impl Geometry {
    fn new(
        attributes: &Attributes<'_>,
        q: &[i64],
        k: &[i64],
        v: &[i64],
        past_key: Option<&[i64]>,
        past_value: Option<&[i64]>,
    ) -> KernelResult<Self> {
        let rank = q.len();
        if k.len() != rank || v.len() != rank {
            return Err(error(
                OP,
                format_args!(
                    "Q {}, K {} and V {} must have the same rank",
                    Shape(q),
                    Shape(k),
                    Shape(v)
                ),
            ));
        }
        let g = match rank {
            3 => {
                let q_heads = attributes.int("q_num_heads", 0)?;
                let kv_heads = attributes.int("kv_num_heads", 0)?;
                if q_heads <= 0 || kv_heads <= 0 {
                    return Err(error(
                        OP,
                        "3-D inputs need positive q_num_heads and kv_num_heads attributes",
                    ));
                }
                for (name, hidden, heads) in [("Q", q[2], q_heads), ("K", k[2], kv_heads)]
                    .into_iter()
                    .chain([("V", v[2], kv_heads)])
                {
                    if hidden >= 0 && hidden % heads != 0 {
                        return Err(error(
                            OP,
                            format_args!(
                                "{name}'s hidden size {hidden} is not a multiple of {heads} heads"
                            ),
                        ));
                    }
                }
                Geometry {
                    three_d: true,
                    batch: q[0],
                    q_heads,
                    kv_heads,
                    q_len: q[1],
                    kv_len: k[1],
                    past_len: 0,
                    head: div_known(q[2], q_heads),
                    v_head: div_known(v[2], kv_heads),
                }
            }
            4 => Geometry {
                three_d: false,
                batch: q[0],
                q_heads: q[1],
                kv_heads: k[1],
                q_len: q[2],
                kv_len: k[2],
                past_len: 0,
                head: q[3],
                v_head: v[3],
            },
            _ => {
                return Err(error(
                    OP,
                    format_args!("Q {} must have rank 3 or 4", Shape(q)),
                ))
            }
        };
        let k_head = if g.three_d {
            div_known(k[2], g.kv_heads)
        } else {
            k[3]
        };
        let (k_batch, v_batch, v_len) = (k[0], v[0], v[rank - 2]);
        let v_len = if g.three_d { v[1] } else { v_len };
        let v_heads = if g.three_d { g.kv_heads } else { v[1] };
        if !same(k_head, g.head)
            || !same(k_batch, g.batch)
            || !same(v_batch, g.batch)
            || !same(v_len, g.kv_len)
            || !same(v_heads, g.kv_heads)
        {
            return Err(error(
                OP,
                format_args!(
                    "Q {}, K {} and V {} do not fit together",
                    Shape(q),
                    Shape(k),
                    Shape(v)
                ),
            ));
        }
        if g.q_heads > 0 && g.kv_heads > 0 && g.q_heads % g.kv_heads != 0 {
            return Err(error(
                OP,
                format_args!(
                    "{} query heads are not a multiple of {} key/value heads",
                    g.q_heads, g.kv_heads
                ),
            ));
        }
        let mut g = g;
        match (past_key, past_value) {
            (None, None) => {}
            (Some(pk), Some(pv)) => {
                let fits = pk.len() == 4
                    && pv.len() == 4
                    && same(pk[0], g.batch)
                    && same(pk[1], g.kv_heads)
                    && same(pk[3], g.head)
                    && same(pv[0], g.batch)
                    && same(pv[1], g.kv_heads)
                    && same(pv[2], pk[2])
                    && same(pv[3], g.v_head);
                if !fits {
                    return Err(error(
                        OP,
                        format_args!(
                            "past_key {} and past_value {} do not fit K and V",
                            Shape(pk),
                            Shape(pv)
                        ),
                    ));
                }
                g.past_len = pk[2];
            }
            _ => return Err(error(OP, "past_key and past_value must be given together")),
        }
        Ok(g)
    }

    fn total_len(&self) -> i64 {
        add_known(self.past_len, self.kv_len)
    }

    fn output_shapes(&self) -> [Vec<i64>; 4] {
        let total = self.total_len();
        let y = if self.three_d {
            let hidden = if self.v_head < 0 {
                -1
            } else {
                self.q_heads * self.v_head
            };
            vec![self.batch, self.q_len, hidden]
        } else {
            vec![self.batch, self.q_heads, self.q_len, self.v_head]
        };
        [
            y,
            vec![self.batch, self.kv_heads, total, self.head],
            vec![self.batch, self.kv_heads, total, self.v_head],
            vec![self.batch, self.q_heads, self.q_len, total],
        ]
    }
}

impl Operator for Attention {
    const OP_TYPE: &'static str = "Attention";
    const SINCE_VERSION: i64 = 23;
    const UNTIL_VERSION: i64 = 25;

    fn infer(cx: &InferContext<'_>) -> KernelResult<Vec<OutputType>> {
        let q = cx.input(0)?;
        let k = cx.input(1)?;
        let v = cx.input(2)?;
        expect_float_like(
            OP,
            "Q",
            q.dtype,
            &[(0, Some(q)), (1, Some(k)), (2, Some(v))],
        )?;
        let past_key = cx.optional_input(4)?;
        let past_value = cx.optional_input(5)?;
        let g = Geometry::new(
            &cx.attributes(),
            q.shape,
            k.shape,
            v.shape,
            past_key.as_ref().map(|t| t.shape),
            past_value.as_ref().map(|t| t.shape),
        )?;
        if let Some(mask) = cx.optional_input(3)? {
            if mask.dtype != DType::BOOL && mask.dtype != q.dtype {
                return Err(error(
                    OP,
                    format_args!(
                        "attn_mask has dtype {}, expected bool or {}",
                        mask.dtype, q.dtype
                    ),
                ));
            }
        }
        let count = cx.output_count().min(4);
        Ok(g.output_shapes()
            .into_iter()
            .take(count)
            .map(|shape| OutputType::new(q.dtype, shape))
            .collect())
    }

    fn compute(cx: &mut KernelContext<'_>) -> KernelResult<()> {
        let (q, k, v) = (cx.input(0)?, cx.input(1)?, cx.input(2)?);
        let (past_key, past_value) = (cx.optional_input(4), cx.optional_input(5));
        let attributes = cx.attributes();
        let dims = |t: TensorRef<'_>| Dims::new(OP, t.shape());
        let pk = past_key.map(dims).transpose()?;
        let pv = past_value.map(dims).transpose()?;
        let g = Geometry::new(
            &attributes,
            &dims(q)?,
            &dims(k)?,
            &dims(v)?,
            pk.as_deref(),
            pv.as_deref(),
        )?;
        let sizes = Sizes::from(&g);
        let dtype = q.dtype();
        let settings = Settings::read(&attributes, dtype, sizes.head)?;

        let q_values = widened(OP, cx, q)?;
        let present_key =
            cx.scratch::<f32>(sizes.batch * sizes.kv_heads * sizes.total * sizes.head)?;
        let present_value =
            cx.scratch::<f32>(sizes.batch * sizes.kv_heads * sizes.total * sizes.v_head)?;
        let past_key_values = past_key.map(|t| widened(OP, cx, t)).transpose()?;
        let past_value_values = past_value.map(|t| widened(OP, cx, t)).transpose()?;
        sizes.concat_cache(
            past_key_values,
            widened(OP, cx, k)?,
            sizes.head,
            present_key,
        );
        sizes.concat_cache(
            past_value_values,
            widened(OP, cx, v)?,
            sizes.v_head,
            present_value,
        );

        let mask = cx
            .optional_input(3)
            .map(|m| Mask::new(cx, m, &sizes))
            .transpose()?;
        let nonpad = cx
            .optional_input(6)
            .map(|t| t.as_slice::<i64>())
            .transpose()?;
        if let Some(nonpad) = nonpad {
            if nonpad.len() != sizes.batch {
                return Err(error(
                    OP,
                    format_args!(
                        "nonpad_kv_seqlen has {} values for a batch of {}",
                        nonpad.len(),
                        sizes.batch
                    ),
                ));
            }
        }

        // Scores: (Q * sqrt(scale)) x (K * sqrt(scale))^T, each factor rounded as the inputs.
        let scaled_q = cx.scratch::<f32>(q_values.len())?;
        for (s, &x) in scaled_q.iter_mut().zip(q_values) {
            *s = round_to(dtype, x * settings.sqrt_scale);
        }
        let scaled_k = cx.scratch::<f32>(present_key.len())?;
        for (s, &x) in scaled_k.iter_mut().zip(present_key.iter()) {
            *s = round_to(dtype, x * settings.sqrt_scale);
        }
        let rows = sizes.batch * sizes.q_heads * sizes.q_len;
        let scores = cx.scratch::<f32>(rows * sizes.total)?;
        let (q_batch, q_head, q_row) = sizes.q_strides();
        let reps = sizes.q_heads / sizes.kv_heads.max(1);
        let (heads, kv_heads, total, head) =
            (sizes.q_heads, sizes.kv_heads, sizes.total, sizes.head);
        let score_offsets = move |batch: usize| {
            let (b, h) = (batch / heads, batch % heads);
            (
                b * q_batch + h * q_head,
                (b * kv_heads + h / reps) * total * head,
            )
        };
        sgemm(
            cx,
            &Product {
                m: sizes.q_len,
                n: sizes.total,
                k: sizes.head,
                alpha: 1.0,
                beta: 0.0,
                a: Operand {
                    data: scaled_q,
                    row_stride: q_row,
                    col_stride: 1,
                },
                b: Operand {
                    data: scaled_k,
                    row_stride: 1,
                    col_stride: sizes.head,
                },
                batches: sizes.batch * sizes.q_heads,
                batch_offsets: &score_offsets,
                packed_a: None,
                packed_b: None,
            },
            scores,
        )?;

        let output_count = cx.output_count();
        let mut qk_output = if output_count > 3 {
            {
                let out = cx.output(3)?;
                Some(FloatOut::new(OP, cx, out)?)
            }
        } else {
            None
        };
        if sizes.total > 0 {
            let qk_values = qk_output.as_mut().map(|out| &mut *out.values);
            let rows_of = RowContext {
                sizes,
                settings,
                mask: mask.as_ref(),
                nonpad,
                has_past: past_key.is_some(),
            };
            normalize_rows(cx, &rows_of, scores, qk_values)?;
        }
        if let Some(out) = qk_output {
            out.finish();
        }

        // Y = P x V, per query head against its key/value head.
        let y = cx.scratch::<f32>(rows * sizes.v_head)?;
        let v_head = sizes.v_head;
        let (q_len, total) = (sizes.q_len, sizes.total);
        let value_offsets = move |batch: usize| {
            let (b, h) = (batch / heads, batch % heads);
            (
                batch * q_len * total,
                (b * kv_heads + h / reps) * total * v_head,
            )
        };
        sgemm(
            cx,
            &Product {
                m: sizes.q_len,
                n: sizes.v_head,
                k: sizes.total,
                alpha: 1.0,
                beta: 0.0,
                a: Operand {
                    data: scores,
                    row_stride: sizes.total,
                    col_stride: 1,
                },
                b: Operand {
                    data: present_value,
                    row_stride: sizes.v_head,
                    col_stride: 1,
                },
                batches: sizes.batch * sizes.q_heads,
                batch_offsets: &value_offsets,
                packed_a: None,
                packed_b: None,
            },
            y,
        )?;
        let out = cx.output(0)?;
        let out = FloatOut::new(OP, cx, out)?;
        sizes.write_output(y, out.values);
        out.finish();
        if output_count > 1 {
            let out = cx.output(1)?;
            let out = FloatOut::new(OP, cx, out)?;
            out.values.copy_from_slice(present_key);
            out.finish();
        }
        if output_count > 2 {
            let out = cx.output(2)?;
            let out = FloatOut::new(OP, cx, out)?;
            out.values.copy_from_slice(present_value);
            out.finish();
        }
        Ok(())
    }
}

/// Work under which the score rows are normalised on one thread.
const ROW_GRAIN: usize = 1 << 14;

/// What every score row needs to be turned into probabilities.
struct RowContext<'a> {
    sizes: Sizes,
    settings: Settings,
    mask: Option<&'a Mask<'a>>,
    nonpad: Option<&'a [i64]>,
    has_past: bool,
}

impl RowContext<'_> {
    /// Normalises the rows from `first_row` that `scores` holds (and their `qk` rows), with
    /// `bias` as room for one row's bias.
    fn run(&self, first_row: usize, scores: &mut [f32], qk: Option<&mut [f32]>, bias: &mut [f32]) {
        let s = &self.sizes;
        let mut qk = qk;
        for (r, scores) in scores.chunks_exact_mut(s.total).enumerate() {
            let row = first_row + r;
            let b = row / (s.q_heads * s.q_len);
            let h = row / s.q_len % s.q_heads;
            let i = row % s.q_len;
            let offset = match (self.has_past, self.nonpad) {
                (false, Some(nonpad)) => nonpad[b] - s.q_len as i64,
                _ => s.past as i64,
            };
            for (j, bias) in bias.iter_mut().enumerate() {
                *bias = self
                    .settings
                    .bias(self.mask, self.nonpad, offset, b, h, i, j);
            }
            let qk_row = qk
                .as_deref_mut()
                .map(|out| &mut out[r * s.total..(r + 1) * s.total]);
            self.settings.normalize_row(scores, bias, qk_row);
        }
    }
}

/// Normalises every row of `scores` (`total` wide), on the host's threads when there is
/// enough work, each piece with its own bias row in scratch.
fn normalize_rows(
    cx: &KernelContext<'_>,
    rows_of: &RowContext<'_>,
    scores: &mut [f32],
    qk: Option<&mut [f32]>,
) -> KernelResult<()> {
    let total = rows_of.sizes.total;
    let rows = scores.len() / total;
    let pieces = task_count(cx, scores.len(), ROW_GRAIN).min(rows).max(1);
    let mut tasks = Tasks::new();
    let (mut rest, mut qk_rest) = (scores, qk);
    let mut start = 0;
    for p in 0..pieces {
        let end = (p + 1) * rows / pieces;
        let (chunk, tail) = rest.split_at_mut((end - start) * total);
        rest = tail;
        let qk_chunk = match qk_rest.take() {
            Some(values) => {
                let (chunk, tail) = values.split_at_mut((end - start) * total);
                qk_rest = Some(tail);
                Some(chunk)
            }
            None => None,
        };
        tasks.push((start, chunk, qk_chunk, cx.scratch::<f32>(total)?));
        start = end;
    }
    tasks.run(
        cx,
        #[inline(always)]
        |(first_row, chunk, qk_chunk, bias)| rows_of.run(first_row, chunk, qk_chunk, bias),
    );
    Ok(())
}

/// The known sizes of a call.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Sizes {
    pub(crate) three_d: bool,
    pub(crate) batch: usize,
    pub(crate) q_heads: usize,
    pub(crate) kv_heads: usize,
    pub(crate) q_len: usize,
    pub(crate) kv_len: usize,
    pub(crate) past: usize,
    pub(crate) total: usize,
    pub(crate) head: usize,
    pub(crate) v_head: usize,
}

impl From<&Geometry> for Sizes {
    fn from(g: &Geometry) -> Self {
        let u = |d: i64| d.max(0) as usize;
        Sizes {
            three_d: g.three_d,
            batch: u(g.batch),
            q_heads: u(g.q_heads),
            kv_heads: u(g.kv_heads),
            q_len: u(g.q_len),
            kv_len: u(g.kv_len),
            past: u(g.past_len),
            total: u(g.past_len) + u(g.kv_len),
            head: u(g.head),
            v_head: u(g.v_head),
        }
    }
}

impl Sizes {
    /// Q's element strides between batches, heads and sequence positions.
    fn q_strides(&self) -> (usize, usize, usize) {
        Self::strides(self.three_d, self.q_heads, self.q_len, self.head)
    }

    fn strides(three_d: bool, heads: usize, len: usize, head: usize) -> (usize, usize, usize) {
        if three_d {
            (len * heads * head, head, heads * head)
        } else {
            (heads * len * head, len * head, head)
        }
    }

    /// Writes the cache `[batch, kv_heads, total, width]`: the past rows, then the new ones.
    fn concat_cache(&self, past: Option<&[f32]>, new: &[f32], width: usize, out: &mut [f32]) {
        let (nb, nh, ns) = Self::strides(self.three_d, self.kv_heads, self.kv_len, width);
        for b in 0..self.batch {
            for h in 0..self.kv_heads {
                let base = (b * self.kv_heads + h) * self.total * width;
                if let Some(past) = past {
                    let from = (b * self.kv_heads + h) * self.past * width;
                    out[base..base + self.past * width]
                        .copy_from_slice(&past[from..from + self.past * width]);
                }
                for s in 0..self.kv_len {
                    let from = b * nb + h * nh + s * ns;
                    let to = base + (self.past + s) * width;
                    out[to..to + width].copy_from_slice(&new[from..from + width]);
                }
            }
        }
    }

    /// Writes `[batch, q_heads, q_len, v_head]` values as Y (transposed back for 3-D inputs).
    fn write_output(&self, y: &[f32], out: &mut [f32]) {
        if !self.three_d {
            out.copy_from_slice(y);
            return;
        }
        let width = self.v_head;
        if width == 0 {
            return;
        }
        for (row, values) in y.chunks_exact(width).enumerate() {
            let b = row / (self.q_heads * self.q_len);
            let h = row / self.q_len % self.q_heads;
            let i = row % self.q_len;
            let to = ((b * self.q_len + i) * self.q_heads + h) * width;
            out[to..to + width].copy_from_slice(values);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opal_plugin_api::testing::{int_attr, run_operator, OwnedTensor, TestHost};

    #[test]
    fn one_key_gives_its_value() {
        let q = OwnedTensor::f32(&[1, 1, 2, 2], &[1.0, 0.0, 0.0, 1.0]);
        let k = OwnedTensor::f32(&[1, 1, 1, 2], &[1.0, 1.0]);
        let v = OwnedTensor::f32(&[1, 1, 1, 3], &[1.0, 2.0, 3.0]);
        let y = run_operator::<Attention>(&[q, k, v], &[], 1).unwrap();
        assert_eq!(y[0].shape(), [1, 1, 2, 3]);
        assert_eq!(y[0].to_vec::<f32>(), [1.0, 2.0, 3.0, 1.0, 2.0, 3.0]);
    }

    #[test]
    fn causal_rows_attend_to_the_past_only() {
        let q = OwnedTensor::f32(&[1, 2, 2], &[0.0; 4]);
        let k = OwnedTensor::f32(&[1, 2, 2], &[0.0; 4]);
        let v = OwnedTensor::f32(&[1, 2, 2], &[1.0, 1.0, 3.0, 5.0]);
        let attributes = [
            int_attr("is_causal", 1),
            int_attr("q_num_heads", 1),
            int_attr("kv_num_heads", 1),
        ];
        let y = run_operator::<Attention>(&[q, k, v], &attributes, 1).unwrap();
        assert_eq!(y[0].to_vec::<f32>(), [1.0, 1.0, 2.0, 3.0]);
    }

    #[test]
    fn parallel_rows_match_one_thread() {
        let values = |shape: &[usize]| {
            let len: usize = shape.iter().product();
            let v: Vec<f32> = (0..len)
                .map(|i| ((i * 37) % 23) as f32 * 0.05 - 0.5)
                .collect();
            OwnedTensor::f32(shape, &v)
        };
        let inputs = [
            values(&[2, 40, 96]),
            values(&[2, 70, 32]),
            values(&[2, 70, 32]),
        ];
        let attributes = [
            int_attr("q_num_heads", 6),
            int_attr("kv_num_heads", 2),
            int_attr("is_causal", 1),
        ];
        let one = TestHost::new()
            .run::<Attention>(&inputs, &attributes, 1)
            .unwrap();
        let four = TestHost::new()
            .threads(4)
            .run::<Attention>(&inputs, &attributes, 1)
            .unwrap();
        assert_eq!(one[0].to_vec::<f32>(), four[0].to_vec::<f32>());
        assert!(one[0].to_vec::<f32>().iter().all(|v| v.is_finite()));
    }

    #[test]
    fn mismatched_ranks_are_errors() {
        let q = OwnedTensor::f32(&[1, 1, 2, 2], &[0.0; 4]);
        let k = OwnedTensor::f32(&[1, 2, 2], &[0.0; 4]);
        let error = run_operator::<Attention>(&[q, k.clone(), k], &[], 1).unwrap_err();
        assert!(error.contains("same rank"), "{error}");
    }
}
