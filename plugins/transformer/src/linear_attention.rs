//! ONNX `LinearAttention` (opset 27): the recurrent form of linear attention over packed
//! `[batch, seq, heads * head_size]` query, key and value, with a `[batch, kv_heads, d_k, d_v]`
//! state per key/value head carried between calls. Each step decays the state (`gated`,
//! `gated_delta`: by `exp(decay)`, per head or per key dimension), writes `k ⊗ v` into it
//! (`delta`, `gated_delta`: `k ⊗ β(v - Sᵀk)`), and reads `scale · qᵀS` for every query head
//! sharing the key/value head. Computes in f32 (f16/bf16 through scratch, rounded once).

use crate::{
    dims::{div_known, same, Dims},
    half::{expect_float_like, is_float, widened, FloatOut},
};
use opal_kernel_support::{
    check::{error, Shape},
    parallel::{task_count, Tasks},
};
use opal_plugin_api::prelude::*;

const OP: &str = "LinearAttention";

/// ONNX `LinearAttention`, opset 27.
pub struct LinearAttention;

/// Multiply-adds under which one thread does all the heads.
const GRAIN: usize = 1 << 15;

/// The attributes of a call.
#[derive(Clone, Copy, Debug)]
struct Rule {
    /// The `update_rule` attribute.
    name: &'static str,
    q_heads: usize,
    kv_heads: usize,
    /// The state decays by `exp(decay)` before each write.
    gated: bool,
    /// Each write replaces the state's prediction of `v` at `k`, at rate β.
    delta: bool,
    /// The `scale` attribute; 0 for `1 / sqrt(d_k)`.
    scale: f32,
}

impl Rule {
    fn read(attributes: &Attributes<'_>) -> KernelResult<Self> {
        let heads = |name: &str| -> KernelResult<usize> {
            match attributes.int(name, 0)? {
                h if h > 0 => Ok(h as usize),
                _ => Err(error(
                    OP,
                    format_args!("the {name} attribute must be given and positive"),
                )),
            }
        };
        let (q_heads, kv_heads) = (heads("q_num_heads")?, heads("kv_num_heads")?);
        if q_heads % kv_heads != 0 {
            return Err(error(
                OP,
                format_args!("q_num_heads {q_heads} is not a multiple of kv_num_heads {kv_heads}"),
            ));
        }
        let (name, gated, delta) = match attributes.string("update_rule", "gated_delta")? {
            "linear" => ("linear", false, false),
            "gated" => ("gated", true, false),
            "delta" => ("delta", false, true),
            "gated_delta" => ("gated_delta", true, true),
            other => {
                return Err(error(
                    OP,
                    format_args!(
                        "update_rule '{other}' is not one of 'linear', 'gated', 'delta' or 'gated_delta'"
                    ),
                ))
            }
        };
        Ok(Rule {
            name,
            q_heads,
            kv_heads,
            gated,
            delta,
            scale: attributes.float("scale", 0.0)?,
        })
    }

    /// Checks that `decay` and `beta` are given exactly when the update rule uses them.
    fn check_gates(&self, has_decay: bool, has_beta: bool) -> KernelResult<()> {
        for (name, needed, given) in [
            ("decay", self.gated, has_decay),
            ("beta", self.delta, has_beta),
        ] {
            if needed != given {
                let verb = if needed { "needs" } else { "forbids" };
                return Err(error(
                    OP,
                    format_args!("update_rule '{}' {verb} the {name} input", self.name),
                ));
            }
        }
        Ok(())
    }
}

/// The sizes of a call; dims of -1 are unknown (inference only).
#[derive(Clone, Copy, Debug)]
struct Geometry {
    batch: i64,
    len: i64,
    d_k: i64,
    d_v: i64,
    /// `decay` holds one value per key dimension (else one per head).
    decay_per_key: bool,
    /// `beta` holds one value per key/value head (else one shared by all).
    beta_per_head: bool,
}

impl Geometry {
    fn new(
        rule: &Rule,
        q: &[i64],
        k: &[i64],
        v: &[i64],
        past: Option<&[i64]>,
        decay: Option<&[i64]>,
        beta: Option<&[i64]>,
    ) -> KernelResult<Self> {
        let (hq, hkv) = (rule.q_heads as i64, rule.kv_heads as i64);
        let packed = |t: &[i64], heads: i64| {
            t.len() == 3 && same(t[0], q[0]) && same(t[1], q[1]) && (t[2] < 0 || t[2] % heads == 0)
        };
        if q.len() != 3 || !packed(q, hq) || !packed(k, hkv) || !packed(v, hkv) {
            return Err(error(
                OP,
                format_args!(
                    "query {}, key {} and value {} must be (batch, seq, heads × head size) with {hq} query and {hkv} key/value heads",
                    Shape(q),
                    Shape(k),
                    Shape(v)
                ),
            ));
        }
        let g = Geometry {
            batch: q[0],
            len: q[1],
            d_k: div_known(q[2], hq),
            d_v: div_known(v[2], hkv),
            decay_per_key: decay.is_some_and(|d| d.len() == 3 && d[2] != hkv),
            beta_per_head: beta.is_some_and(|b| b.len() == 3 && b[2] != 1),
        };
        let key_width = if g.d_k < 0 { -1 } else { hkv * g.d_k };
        if !same(k[2], key_width) {
            return Err(error(
                OP,
                format_args!(
                    "key {} must have {hkv} heads of the query's head size {}",
                    Shape(k),
                    g.d_k
                ),
            ));
        }
        if let Some(past) = past {
            let fits = past.len() == 4
                && same(past[0], g.batch)
                && same(past[1], hkv)
                && same(past[2], g.d_k)
                && same(past[3], g.d_v);
            if !fits {
                return Err(error(
                    OP,
                    format_args!(
                        "past_state {} must be (batch, kv_num_heads, d_k, d_v) = ({}, {hkv}, {}, {})",
                        Shape(past),
                        g.batch,
                        g.d_k,
                        g.d_v
                    ),
                ));
            }
        }
        if let Some(decay) = decay {
            let fits = packed(decay, 1) && (same(decay[2], hkv) || same(decay[2], key_width));
            if !fits {
                return Err(error(
                    OP,
                    format_args!(
                        "decay {} must be (batch, seq, kv_num_heads) or (batch, seq, kv_num_heads × d_k)",
                        Shape(decay)
                    ),
                ));
            }
        }
        if let Some(beta) = beta {
            let fits = packed(beta, 1) && (same(beta[2], hkv) || beta[2] == 1);
            if !fits {
                return Err(error(
                    OP,
                    format_args!(
                        "beta {} must be (batch, seq, kv_num_heads) or (batch, seq, 1)",
                        Shape(beta)
                    ),
                ));
            }
        }
        Ok(g)
    }
}

impl Operator for LinearAttention {
    const OP_TYPE: &'static str = "LinearAttention";
    const SINCE_VERSION: i64 = 27;

    fn infer(cx: &InferContext<'_>) -> KernelResult<Vec<OutputType>> {
        let (q, k, v) = (cx.input(0)?, cx.input(1)?, cx.input(2)?);
        let past = cx.optional_input(3)?;
        let (decay, beta) = (cx.optional_input(4)?, cx.optional_input(5)?);
        expect_float_like(
            OP,
            "the query",
            q.dtype,
            &[
                (0, Some(q)),
                (1, Some(k)),
                (2, Some(v)),
                (4, decay),
                (5, beta),
            ],
        )?;
        if let Some(past) = past {
            if !is_float(past.dtype) {
                return Err(error(
                    OP,
                    format_args!(
                        "past_state has dtype {}, expected f32, f16 or bf16",
                        past.dtype
                    ),
                ));
            }
        }
        let rule = Rule::read(&cx.attributes())?;
        rule.check_gates(decay.is_some(), beta.is_some())?;
        let g = Geometry::new(
            &rule,
            q.shape,
            k.shape,
            v.shape,
            past.map(|t| t.shape),
            decay.map(|t| t.shape),
            beta.map(|t| t.shape),
        )?;
        let width = if g.d_v < 0 {
            -1
        } else {
            rule.q_heads as i64 * g.d_v
        };
        let state_dtype = past.map_or(q.dtype, |p| p.dtype);
        Ok(vec![
            OutputType::new(q.dtype, vec![g.batch, g.len, width]),
            OutputType::new(
                state_dtype,
                vec![g.batch, rule.kv_heads as i64, g.d_k, g.d_v],
            ),
        ])
    }

    fn compute(cx: &mut KernelContext<'_>) -> KernelResult<()> {
        let (q, k, v) = (cx.input(0)?, cx.input(1)?, cx.input(2)?);
        let past = cx.optional_input(3);
        let (decay, beta) = (cx.optional_input(4), cx.optional_input(5));
        let rule = Rule::read(&cx.attributes())?;
        rule.check_gates(decay.is_some(), beta.is_some())?;
        let dims = |t: TensorRef<'_>| Dims::new(OP, t.shape());
        let [past_dims, decay_dims, beta_dims] =
            [past, decay, beta].map(|t| t.map(dims).transpose());
        let g = Geometry::new(
            &rule,
            &dims(q)?,
            &dims(k)?,
            &dims(v)?,
            past_dims?.as_deref(),
            decay_dims?.as_deref(),
            beta_dims?.as_deref(),
        )?;
        let sizes = Sizes {
            len: g.len as usize,
            q_heads: rule.q_heads,
            kv_heads: rule.kv_heads,
            d_k: g.d_k as usize,
            d_v: g.d_v as usize,
            decay_per_key: g.decay_per_key,
            beta_per_head: g.beta_per_head,
            scale: if rule.scale == 0.0 {
                (1.0 / (g.d_k as f64).sqrt()) as f32
            } else {
                rule.scale
            },
        };
        let batch = g.batch as usize;
        let inputs = Inputs {
            q: widened(OP, cx, q)?,
            k: widened(OP, cx, k)?,
            v: widened(OP, cx, v)?,
            decay: decay.map(|t| widened(OP, cx, t)).transpose()?,
            beta: beta.map(|t| widened(OP, cx, t)).transpose()?,
        };

        let state = cx.output(1)?;
        let state = FloatOut::new(OP, cx, state)?;
        match past {
            Some(past) => state.values.copy_from_slice(widened(OP, cx, past)?),
            None => state.values.fill(0.0),
        }
        // Outputs per key/value head, `[batch, kv_heads, seq, group × d_v]`, for the heads to
        // be computed apart; put into `[batch, seq, q_heads × d_v]` at the end.
        let group = sizes.q_heads / sizes.kv_heads;
        let head_out = sizes.len * group * sizes.d_v;
        let heads_out = cx.scratch::<f32>(batch * sizes.kv_heads * head_out)?;
        let units = batch * sizes.kv_heads;
        let state_size = sizes.d_k * sizes.d_v;
        let work = units * sizes.len * state_size * (3 + group);
        // Without key or value dims the state is empty and the outputs stay zero.
        let pieces = if state_size == 0 {
            0
        } else {
            task_count(cx, work, GRAIN).min(units.max(1))
        };
        let mut tasks = Tasks::new();
        let (mut states, mut outs) = (&mut state.values[..], &mut heads_out[..]);
        let mut first = 0;
        for p in 0..pieces {
            let end = (p + 1) * units / pieces;
            let (s, s_rest) = states.split_at_mut((end - first) * state_size);
            let (o, o_rest) = outs.split_at_mut((end - first) * head_out);
            (states, outs) = (s_rest, o_rest);
            tasks.push((first, s, o, cx.scratch::<f32>(sizes.d_v)?));
            first = end;
        }
        tasks.run(cx, |(first, states, outs, update)| {
            let heads = states
                .chunks_exact_mut(state_size)
                .zip(outs.chunks_exact_mut(head_out.max(1)));
            for (u, (state, out)) in heads.enumerate() {
                let unit = first + u;
                sizes.run_head(
                    &inputs,
                    unit / sizes.kv_heads,
                    unit % sizes.kv_heads,
                    state,
                    out,
                    update,
                );
            }
        });

        let out = cx.output(0)?;
        let out = FloatOut::new(OP, cx, out)?;
        let width = group * sizes.d_v;
        if width > 0 {
            for (row, values) in heads_out.chunks_exact(width).enumerate() {
                let t = row % sizes.len;
                let unit = row / sizes.len;
                let (b, h) = (unit / sizes.kv_heads, unit % sizes.kv_heads);
                let to = ((b * sizes.len + t) * sizes.kv_heads + h) * width;
                out.values[to..to + width].copy_from_slice(values);
            }
        }
        out.finish();
        state.finish();
        Ok(())
    }
}

/// The inputs as f32 values.
struct Inputs<'a> {
    q: &'a [f32],
    k: &'a [f32],
    v: &'a [f32],
    decay: Option<&'a [f32]>,
    beta: Option<&'a [f32]>,
}

/// The known sizes of a call.
#[derive(Clone, Copy, Debug)]
struct Sizes {
    len: usize,
    q_heads: usize,
    kv_heads: usize,
    d_k: usize,
    d_v: usize,
    decay_per_key: bool,
    beta_per_head: bool,
    scale: f32,
}

impl Sizes {
    /// Runs the recurrence of key/value head `h` of batch `b` over the sequence: `state`
    /// (`[d_k, d_v]`) holds the past state and ends as the present one; `out`
    /// (`[seq, group × d_v]`) gets the outputs of the query heads sharing the head; `update`
    /// (`d_v`) is room for the value written.
    fn run_head(
        &self,
        inputs: &Inputs<'_>,
        b: usize,
        h: usize,
        state: &mut [f32],
        out: &mut [f32],
        update: &mut [f32],
    ) {
        let (d_k, d_v, hkv) = (self.d_k, self.d_v, self.kv_heads);
        let group = self.q_heads / hkv;
        for t in 0..self.len {
            let row = b * self.len + t;
            let k = &inputs.k[(row * hkv + h) * d_k..][..d_k];
            let v = &inputs.v[(row * hkv + h) * d_v..][..d_v];
            if let Some(decay) = inputs.decay {
                if self.decay_per_key {
                    let decay = &decay[(row * hkv + h) * d_k..][..d_k];
                    for (s, &g) in state.chunks_exact_mut(d_v).zip(decay) {
                        let factor = g.exp();
                        s.iter_mut().for_each(|s| *s *= factor);
                    }
                } else {
                    let factor = decay[row * hkv + h].exp();
                    state.iter_mut().for_each(|s| *s *= factor);
                }
            }
            update.copy_from_slice(v);
            if let Some(beta) = inputs.beta {
                let beta = if self.beta_per_head {
                    beta[row * hkv + h]
                } else {
                    beta[row]
                };
                // v - Sᵀk, the correction to what the state recalls at k.
                for (s, &k) in state.chunks_exact(d_v).zip(k) {
                    for (u, &s) in update.iter_mut().zip(s) {
                        *u -= s * k;
                    }
                }
                update.iter_mut().for_each(|u| *u *= beta);
            }
            for (s, &k) in state.chunks_exact_mut(d_v).zip(k) {
                for (s, &u) in s.iter_mut().zip(update.iter()) {
                    *s += k * u;
                }
            }
            let out = &mut out[t * group * d_v..][..group * d_v];
            for (i, o) in out.chunks_exact_mut(d_v).enumerate() {
                let q = &inputs.q[(row * self.q_heads + h * group + i) * d_k..][..d_k];
                o.fill(0.0);
                for (s, &q) in state.chunks_exact(d_v).zip(q) {
                    for (o, &s) in o.iter_mut().zip(s) {
                        *o += q * s;
                    }
                }
                o.iter_mut().for_each(|o| *o *= self.scale);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opal_plugin_api::testing::{
        assert_close, float_attr, int_attr, run_operator, string_attr, OwnedTensor, TestHost,
    };

    fn heads(q: i64, kv: i64) -> [opal_plugin_api::Attribute<'static>; 2] {
        [int_attr("q_num_heads", q), int_attr("kv_num_heads", kv)]
    }

    #[test]
    fn linear_rule_accumulates_outer_products() {
        // One head, d_k = d_v = 1: S_t = Σ k·v, o_t = q_t·S_t (scale 1).
        let q = OwnedTensor::f32(&[1, 2, 1], &[1.0, 2.0]);
        let k = OwnedTensor::f32(&[1, 2, 1], &[3.0, 1.0]);
        let v = OwnedTensor::f32(&[1, 2, 1], &[2.0, 5.0]);
        let [a, b] = heads(1, 1);
        let attributes = [a, b, string_attr("update_rule", "linear")];
        let y = run_operator::<LinearAttention>(&[q, k, v], &attributes, 2).unwrap();
        assert_eq!(y[0].to_vec::<f32>(), [6.0, 22.0]);
        assert_eq!(y[1].shape(), [1, 1, 1, 1]);
        assert_eq!(y[1].to_vec::<f32>(), [11.0]);
    }

    #[test]
    fn gated_delta_decays_then_corrects_the_recalled_value() {
        // S = 2 from the past; decay ln 0.5 halves it to 1; with k = 1, v = 3, β = 0.5 the
        // write is 0.5·(3 - 1) = 1, so S = 2; o = 0.5·q·S with q = 2.
        let q = OwnedTensor::f32(&[1, 1, 1], &[2.0]);
        let k = OwnedTensor::f32(&[1, 1, 1], &[1.0]);
        let v = OwnedTensor::f32(&[1, 1, 1], &[3.0]);
        let past = OwnedTensor::f32(&[1, 1, 1, 1], &[2.0]);
        let decay = OwnedTensor::f32(&[1, 1, 1], &[0.5f32.ln()]);
        let beta = OwnedTensor::f32(&[1, 1, 1], &[0.5]);
        let [a, b] = heads(1, 1);
        let attributes = [a, b, float_attr("scale", 0.5)];
        let y =
            run_operator::<LinearAttention>(&[q, k, v, past, decay, beta], &attributes, 2).unwrap();
        assert_close(&y[0].to_vec::<f32>(), &[2.0], 1e-6);
        assert_close(&y[1].to_vec::<f32>(), &[2.0], 1e-6);
    }

    #[test]
    fn query_heads_share_their_key_value_head() {
        // Two query heads on one key/value head read the same state.
        let q = OwnedTensor::f32(&[1, 1, 2], &[1.0, -1.0]);
        let k = OwnedTensor::f32(&[1, 1, 1], &[1.0]);
        let v = OwnedTensor::f32(&[1, 1, 1], &[4.0]);
        let [a, b] = heads(2, 1);
        let attributes = [a, b, string_attr("update_rule", "linear")];
        let y = run_operator::<LinearAttention>(&[q, k, v], &attributes, 2).unwrap();
        assert_eq!(y[0].to_vec::<f32>(), [4.0, -4.0]);
    }

    #[test]
    fn parallel_heads_match_one_thread() {
        let values = |shape: &[usize]| {
            let len: usize = shape.iter().product();
            let v: Vec<f32> = (0..len)
                .map(|i| ((i * 37) % 23) as f32 * 0.02 - 0.2)
                .collect();
            OwnedTensor::f32(shape, &v)
        };
        let inputs = [
            values(&[2, 5, 8 * 16]),
            values(&[2, 5, 4 * 16]),
            values(&[2, 5, 4 * 32]),
            OwnedTensor::absent(),
            values(&[2, 5, 4 * 16]),
            values(&[2, 5, 4]),
        ];
        let [a, b] = heads(8, 4);
        let one = TestHost::new()
            .run::<LinearAttention>(&inputs, &[a, b], 2)
            .unwrap();
        let four = TestHost::new()
            .threads(4)
            .run::<LinearAttention>(&inputs, &[a, b], 2)
            .unwrap();
        for i in 0..2 {
            assert_eq!(one[i].to_vec::<f32>(), four[i].to_vec::<f32>());
        }
        assert_eq!(one[0].shape(), [2, 5, 8 * 32]);
        assert_eq!(one[1].shape(), [2, 4, 16, 32]);
    }

    #[test]
    fn a_missing_gate_is_an_error() {
        let t = OwnedTensor::f32(&[1, 1, 1], &[1.0]);
        let [a, b] = heads(1, 1);
        let error =
            run_operator::<LinearAttention>(&[t.clone(), t.clone(), t], &[a, b], 2).unwrap_err();
        assert!(error.contains("decay"), "{error}");
    }
}
