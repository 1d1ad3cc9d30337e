//! ONNX `FlexAttention` (domain `ai.onnx.preview`, version 1): scaled dot-product attention
//! over 4-D Q/K/V with grouped-query heads, whose scores and probabilities the node's
//! optional `score_mod` and `prob_mod` subgraphs may rewrite (see [`modifiers`](crate::modifiers)).
//! Scores are computed in the inputs' precision and the softmax in `softmax_precision` (f32
//! unless the inputs are f64), rounded where the reference rounds; f16 and bf16 are computed
//! in f32, f64 in f64.

use crate::{
    dims::{same, Dims},
    modifiers::{self, check_types, MODIFIERS},
    work_float::{encode_as, Batched, WorkFloat},
};
use opal_kernel_support::{
    check::{error, Shape},
    parallel::for_each_chunk,
};
use opal_plugin_api::prelude::*;

const OP: &str = "FlexAttention";

/// ONNX `FlexAttention`, `ai.onnx.preview` version 1.
pub struct FlexAttention;

/// Softmax elements under which one thread normalises every row.
const ROW_GRAIN: usize = 1 << 14;

/// The sizes of a call: Q `(batch, q_heads, q_len, head)`, K `(batch, kv_heads, kv_len,
/// head)`, V `(batch, kv_heads, kv_len, v_head)`. A dim of -1 is unknown (inference only).
#[derive(Clone, Copy, Debug)]
struct Geometry {
    batch: i64,
    q_heads: i64,
    kv_heads: i64,
    q_len: i64,
    kv_len: i64,
    head: i64,
    v_head: i64,
}

impl Geometry {
    fn new(q: &[i64], k: &[i64], v: &[i64]) -> KernelResult<Self> {
        let (Some([b, hq, l, e]), Some([bk, hk, s, ek]), Some([bv, hv, sv, ev])) =
            (dims4(q), dims4(k), dims4(v))
        else {
            return Err(error(
                OP,
                format_args!(
                    "Q {}, K {} and V {} must all have rank 4: Q (batch, q_heads, q_len, head_size), K (batch, kv_heads, kv_len, head_size), V (batch, kv_heads, kv_len, v_head_size)",
                    Shape(q),
                    Shape(k),
                    Shape(v)
                ),
            ));
        };
        let mismatch = |what: &str| {
            Err(error(
                OP,
                format_args!("{what}: Q {}, K {}, V {}", Shape(q), Shape(k), Shape(v)),
            ))
        };
        if !same(b, bk) || !same(b, bv) {
            return mismatch("Q, K and V must have one batch size");
        }
        if !same(hk, hv) {
            return mismatch("K and V must have the same number of heads");
        }
        if !same(s, sv) {
            return mismatch("K and V must have the same sequence length");
        }
        if !same(e, ek) {
            return mismatch("Q and K must have the same head size");
        }
        if hq >= 0 && hk >= 0 && (hk == 0 && hq > 0 || hk > 0 && hq % hk != 0) {
            return Err(error(
                OP,
                format_args!("{hq} query heads are not a multiple of {hk} key/value heads"),
            ));
        }
        Ok(Geometry {
            batch: b,
            q_heads: hq,
            kv_heads: hk,
            q_len: l,
            kv_len: s,
            head: e,
            v_head: ev,
        })
    }

    /// The shape of the scores and probabilities, which the modifiers take and give.
    fn scores(&self) -> [i64; 4] {
        [self.batch, self.q_heads, self.q_len, self.kv_len]
    }
}

/// The dims of a rank-4 shape.
fn dims4(shape: &[i64]) -> Option<[i64; 4]> {
    shape.try_into().ok()
}

/// The precisions and scale of a call.
#[derive(Clone, Copy, Debug)]
struct Settings {
    /// Q, K and V's dtype, to which the scaled inputs and the scores are rounded.
    input: DType,
    /// The dtype the modifiers see and the softmax computes in.
    softmax: DType,
    /// `sqrt(scale)`, computed in f32 and rounded to the input dtype, as the reference does.
    sqrt_scale: f32,
}

impl Settings {
    fn read(attributes: &Attributes<'_>, input: DType, head: usize) -> KernelResult<Self> {
        let scale = match attributes.get("scale") {
            Some(_) => attributes.float("scale", 1.0)?,
            None => (1.0 / (head as f64).sqrt()) as f32,
        };
        Ok(Settings {
            input,
            softmax: softmax_dtype(attributes, input)?,
            sqrt_scale: crate::half::round_to(input, scale.sqrt()),
        })
    }
}

/// Whether `dtype` is one this kernel computes: the float types the softmax may use.
fn is_supported(dtype: DType) -> bool {
    matches!(dtype, DType::F32 | DType::F16 | DType::BF16 | DType::F64)
}

/// The softmax precision: the `softmax_precision` attribute, else f64 for f64 inputs and f32
/// for the others.
fn softmax_dtype(attributes: &Attributes<'_>, input: DType) -> KernelResult<DType> {
    let Some(_) = attributes.get("softmax_precision") else {
        return Ok(if input == DType::F64 {
            DType::F64
        } else {
            DType::F32
        });
    };
    let precision = attributes.int("softmax_precision", 0)?;
    let dtype = i32::try_from(precision)
        .map(DType)
        .unwrap_or(DType::UNDEFINED);
    if !is_supported(dtype) {
        return Err(error(
            OP,
            format_args!(
                "softmax_precision {precision} is not a float type this kernel computes: give 1 (f32), 10 (f16), 16 (bf16) or 11 (f64)"
            ),
        ));
    }
    Ok(dtype)
}

impl Operator for FlexAttention {
    const DOMAIN: &'static str = "ai.onnx.preview";
    const OP_TYPE: &'static str = "FlexAttention";

    fn infer(cx: &InferContext<'_>) -> KernelResult<Vec<OutputType>> {
        let (q, k, v) = (cx.input(0)?, cx.input(1)?, cx.input(2)?);
        if k.dtype != q.dtype || v.dtype != q.dtype {
            return Err(error(
                OP,
                format_args!(
                    "Q, K and V must have one dtype; they are {}, {} and {}",
                    q.dtype, k.dtype, v.dtype
                ),
            ));
        }
        if !is_supported(q.dtype) {
            return Err(error(
                OP,
                format_args!(
                    "Q, K and V are {}; this kernel computes f32, f16, bf16 and f64",
                    q.dtype
                ),
            ));
        }
        let g = Geometry::new(q.shape, k.shape, v.shape)?;
        let softmax = softmax_dtype(&cx.attributes(), q.dtype)?;
        check_types(cx, OP, softmax, &g.scores())?;
        Ok(vec![OutputType::new(
            q.dtype,
            vec![g.batch, g.q_heads, g.q_len, g.v_head],
        )])
    }

    fn compute(cx: &mut KernelContext<'_>) -> KernelResult<()> {
        let (q, k, v) = (cx.input(0)?, cx.input(1)?, cx.input(2)?);
        let dims = |t: TensorRef<'_>| Dims::new(OP, t.shape());
        let g = Geometry::new(&dims(q)?, &dims(k)?, &dims(v)?)?;
        let sizes = Sizes::from(&g);
        let settings = Settings::read(&cx.attributes(), q.dtype(), sizes.head)?;
        if settings.input == DType::F64 || settings.softmax == DType::F64 {
            attend::<f64>(cx, &sizes, &settings)
        } else {
            attend::<f32>(cx, &sizes, &settings)
        }
    }
}

/// The known sizes of a call.
#[derive(Clone, Copy, Debug)]
struct Sizes {
    batch: usize,
    q_heads: usize,
    kv_heads: usize,
    q_len: usize,
    kv_len: usize,
    head: usize,
    v_head: usize,
}

impl From<&Geometry> for Sizes {
    fn from(g: &Geometry) -> Self {
        let u = |d: i64| d.max(0) as usize;
        Sizes {
            batch: u(g.batch),
            q_heads: u(g.q_heads),
            kv_heads: u(g.kv_heads),
            q_len: u(g.q_len),
            kv_len: u(g.kv_len),
            head: u(g.head),
            v_head: u(g.v_head),
        }
    }
}

impl Sizes {
    /// Query heads per key/value head.
    fn group(&self) -> usize {
        self.q_heads / self.kv_heads.max(1)
    }

    /// The offset of query head `batch` (counted over batch and heads) in a `[batch,
    /// q_heads, rows, width]` tensor, and of its key/value head in a `[batch, kv_heads,
    /// kv_len, kv_width]` one.
    fn offsets(&self, batch: usize, rows: usize, width: usize, kv_width: usize) -> (usize, usize) {
        let (b, h) = (batch / self.q_heads, batch % self.q_heads);
        (
            batch * rows * width,
            (b * self.kv_heads + h / self.group()) * self.kv_len * kv_width,
        )
    }
}

/// Attention in `W`: scores, `score_mod`, softmax, `prob_mod`, the product with V.
fn attend<W: WorkFloat>(
    cx: &mut KernelContext<'_>,
    sizes: &Sizes,
    settings: &Settings,
) -> KernelResult<()> {
    let s = *sizes;
    let (input, softmax) = (settings.input, settings.softmax);
    let (q, k, v) = (cx.input(0)?, cx.input(1)?, cx.input(2)?);
    let out = cx.output(0)?;
    let rows = s.batch * s.q_heads * s.q_len;
    if rows * s.v_head == 0 {
        return Ok(());
    }

    // Scores: (Q * sqrt(scale)) x (K * sqrt(scale))^T, each factor and the product rounded to
    // the inputs' precision, then to the softmax's.
    let scaled_q = scaled(cx, W::widen(cx, OP, q)?, settings)?;
    let scaled_k = scaled(cx, W::widen(cx, OP, k)?, settings)?;
    let scores = cx.scratch_unzeroed::<W>(rows * s.kv_len)?;
    let (q_len, head, kv_len, v_head) = (s.q_len, s.head, s.kv_len, s.v_head);
    W::product(
        cx,
        &Batched {
            m: q_len,
            n: kv_len,
            k: head,
            a: scaled_q,
            a_row: head,
            b: scaled_k,
            b_row: 1,
            b_col: head,
            batches: s.batch * s.q_heads,
            offsets: &move |batch| s.offsets(batch, q_len, head, head),
        },
        scores,
    )?;
    for x in scores.iter_mut() {
        *x = x.round(input).round(softmax);
    }

    let shape = [s.batch, s.q_heads, s.q_len, s.kv_len];
    let [score_mod, prob_mod] = MODIFIERS;
    modifiers::apply(cx, OP, score_mod, softmax, &shape, scores)?;
    if kv_len > 0 {
        for_each_chunk(cx, scores, kv_len, ROW_GRAIN, |_, chunk| {
            for row in chunk.chunks_exact_mut(kv_len) {
                softmax_row(row, softmax);
            }
        });
    }
    modifiers::apply(cx, OP, prob_mod, softmax, &shape, scores)?;

    // Y = P x V in the softmax precision, V cast to it.
    let v = W::widen(cx, OP, v)?;
    let v: &[W] = if W::is_exact_in(softmax) {
        v
    } else {
        let rounded = cx.scratch_unzeroed::<W>(v.len())?;
        for (y, &x) in rounded.iter_mut().zip(v) {
            *y = x.round(softmax);
        }
        rounded
    };
    let y = cx.scratch_unzeroed::<W>(rows * v_head)?;
    W::product(
        cx,
        &Batched {
            m: q_len,
            n: v_head,
            k: kv_len,
            a: scores,
            a_row: kv_len,
            b: v,
            b_row: v_head,
            b_col: 1,
            batches: s.batch * s.q_heads,
            offsets: &move |batch| s.offsets(batch, q_len, kv_len, v_head),
        },
        y,
    )?;
    if !W::is_exact_in(softmax) {
        for x in y.iter_mut() {
            *x = x.round(softmax);
        }
    }
    let dtype = out.dtype();
    encode_as(dtype, y, out.bytes_mut());
    Ok(())
}

/// `values * sqrt(scale)`, rounded to the inputs' precision, in scratch.
fn scaled<'a, W: WorkFloat>(
    cx: &KernelContext<'a>,
    values: &[W],
    settings: &Settings,
) -> KernelResult<&'a mut [W]> {
    let factor = W::from(settings.sqrt_scale);
    let out = cx.scratch_unzeroed::<W>(values.len())?;
    for (y, &x) in out.iter_mut().zip(values) {
        *y = (x * factor).round(settings.input);
    }
    Ok(out)
}

/// Turns one row of scores into probabilities, in place, each step rounded to `dtype` as the
/// reference computes it there. A row of only -inf becomes NaN, as in the reference.
fn softmax_row<W: WorkFloat>(row: &mut [W], dtype: DType) {
    let max = row
        .iter()
        .fold(W::NEG_INFINITY, |m, &x| if x > m { x } else { m });
    let mut sum = W::default();
    for x in row.iter_mut() {
        *x = (*x - max).round(dtype).exp().round(dtype);
        sum = sum + *x;
    }
    let sum = sum.round(dtype);
    for x in row.iter_mut() {
        *x = (*x / sum).round(dtype);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opal_kernel_support::half::{decode, encode};
    use opal_plugin_api::testing::{
        float_attr, infer_input, infer_operator, int_attr, run_operator, OwnedTensor, TestHost,
    };

    /// Deterministic values in [-1, 1).
    fn values(len: usize, seed: usize) -> Vec<f64> {
        (0..len)
            .map(|i| ((i * 37 + seed * 11) % 29) as f64 / 14.5 - 1.0)
            .collect()
    }

    /// Plain f64 attention: softmax(scale * Q K^T) V, query head `h` reading key/value head
    /// `h / (q_heads / kv_heads)`.
    fn reference(
        q: &[f64],
        k: &[f64],
        v: &[f64],
        [b, hq, l, e]: [usize; 4],
        [hk, s, ev]: [usize; 3],
        scale: f64,
    ) -> Vec<f64> {
        let mut y = vec![0.0; b * hq * l * ev];
        for bi in 0..b {
            for h in 0..hq {
                let kv = bi * hk + h / (hq / hk);
                for i in 0..l {
                    let qi = &q[((bi * hq + h) * l + i) * e..][..e];
                    let scores: Vec<f64> = (0..s)
                        .map(|j| {
                            let kj = &k[(kv * s + j) * e..][..e];
                            scale * qi.iter().zip(kj).map(|(a, b)| a * b).sum::<f64>()
                        })
                        .collect();
                    let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                    let exps: Vec<f64> = scores.iter().map(|x| (x - max).exp()).collect();
                    let sum: f64 = exps.iter().sum();
                    for (j, p) in exps.iter().enumerate() {
                        for c in 0..ev {
                            y[((bi * hq + h) * l + i) * ev + c] +=
                                p / sum * v[(kv * s + j) * ev + c];
                        }
                    }
                }
            }
        }
        y
    }

    fn f32_tensor(shape: &[usize], values: &[f64]) -> OwnedTensor {
        let v: Vec<f32> = values.iter().map(|&x| x as f32).collect();
        OwnedTensor::f32(shape, &v)
    }

    fn assert_close(got: &[f64], expected: &[f64], tolerance: f64) {
        assert_eq!(got.len(), expected.len());
        for (i, (g, e)) in got.iter().zip(expected).enumerate() {
            assert!((g - e).abs() <= tolerance, "element {i}: {g} vs {e}");
        }
    }

    #[test]
    fn grouped_query_heads_read_their_key_value_head() {
        let (qs, kvs) = ([2, 4, 3, 5], [2, 4, 6]);
        let q = values(2 * 4 * 3 * 5, 1);
        let k = values(2 * 2 * 4 * 5, 2);
        let v = values(2 * 2 * 4 * 6, 3);
        let y = run_operator::<FlexAttention>(
            &[
                f32_tensor(&qs, &q),
                f32_tensor(&[2, 2, 4, 5], &k),
                f32_tensor(&[2, 2, 4, 6], &v),
            ],
            &[],
            1,
        )
        .unwrap();
        assert_eq!(y[0].shape(), [2, 4, 3, 6]);
        let got: Vec<f64> = y[0].to_vec::<f32>().iter().map(|&x| x.into()).collect();
        let expected = reference(&q, &k, &v, qs, kvs, 1.0 / 5f64.sqrt());
        assert_close(&got, &expected, 1e-5);
    }

    #[test]
    fn the_scale_attribute_replaces_the_default() {
        let q = values(12, 4);
        let k = values(6, 5);
        let v = values(6, 6);
        let inputs = [
            f32_tensor(&[1, 1, 4, 3], &q),
            f32_tensor(&[1, 1, 2, 3], &k),
            f32_tensor(&[1, 1, 2, 3], &v),
        ];
        let y = run_operator::<FlexAttention>(&inputs, &[float_attr("scale", 2.5)], 1).unwrap();
        let got: Vec<f64> = y[0].to_vec::<f32>().iter().map(|&x| x.into()).collect();
        assert_close(
            &got,
            &reference(&q, &k, &v, [1, 1, 4, 3], [1, 2, 3], 2.5),
            1e-5,
        );
    }

    #[test]
    fn f64_inputs_compute_in_f64() {
        let q = values(2 * 3 * 4, 7);
        let k = values(2 * 5 * 4, 8);
        let v = values(2 * 5 * 2, 9);
        let y = run_operator::<FlexAttention>(
            &[
                OwnedTensor::new::<f64>(&[1, 2, 3, 4], &q),
                OwnedTensor::new::<f64>(&[1, 2, 5, 4], &k),
                OwnedTensor::new::<f64>(&[1, 2, 5, 2], &v),
            ],
            &[],
            1,
        )
        .unwrap();
        assert_eq!(y[0].dtype(), DType::F64);
        // sqrt(scale) is taken in f32, as the reference does.
        let sqrt_scale = f64::from((0.5f32).sqrt());
        let expected = reference(&q, &k, &v, [1, 2, 3, 4], [2, 5, 2], sqrt_scale * sqrt_scale);
        assert_close(&y[0].to_vec::<f64>(), &expected, 1e-12);
    }

    #[test]
    fn f16_inputs_compute_in_f32_and_round_once_into_the_output() {
        let (qs, ks) = ([1, 2, 3, 8], [1, 2, 4, 8]);
        let half = |shape: &[usize], values: &[f64]| {
            let v: Vec<f32> = values.iter().map(|&x| x as f32).collect();
            let mut bytes = vec![0u8; v.len() * 2];
            encode(DType::F16, &v, &mut bytes);
            let mut back = vec![0f64; v.len()];
            decode(DType::F16, &bytes, &mut back);
            (OwnedTensor::from_bytes(DType::F16, shape, &bytes), back)
        };
        let (q, qv) = half(&qs, &values(48, 1));
        let (k, kv) = half(&ks, &values(64, 2));
        let (v, vv) = half(&ks, &values(64, 3));
        let y = run_operator::<FlexAttention>(&[q, k, v], &[], 1).unwrap();
        assert_eq!(y[0].dtype(), DType::F16);
        let mut got = vec![0f64; 48];
        decode(DType::F16, y[0].bytes(), &mut got);
        let expected = reference(&qv, &kv, &vv, qs, [2, 4, 8], 1.0 / 8f64.sqrt());
        // Half an f16 ulp near 1, and the rounding of the scaled inputs and scores.
        assert_close(&got, &expected, 2e-3);
    }

    #[test]
    fn a_warmed_up_call_matches_the_first_on_parallel_rows() {
        let inputs = [
            f32_tensor(&[2, 6, 40, 16], &values(2 * 6 * 40 * 16, 1)),
            f32_tensor(&[2, 3, 70, 16], &values(2 * 3 * 70 * 16, 2)),
            f32_tensor(&[2, 3, 70, 8], &values(2 * 3 * 70 * 8, 3)),
        ];
        let one = TestHost::new()
            .run::<FlexAttention>(&inputs, &[], 1)
            .unwrap();
        let four = TestHost::new()
            .threads(4)
            .run::<FlexAttention>(&inputs, &[], 1)
            .unwrap();
        assert_eq!(one[0].to_vec::<f32>(), four[0].to_vec::<f32>());
    }

    fn infer_error(shapes: [&[i64]; 3], attributes: &[opal_plugin_api::Attribute<'_>]) -> String {
        let inputs = shapes.map(|s| infer_input(DType::F32, s));
        infer_operator::<FlexAttention>(&inputs, attributes, 1).unwrap_err()
    }

    #[test]
    fn inference_gives_batch_query_heads_query_length_and_value_head_size() {
        let inputs = [
            infer_input(DType::F32, &[2, 8, -1, 16]),
            infer_input(DType::F32, &[2, 2, 6, 16]),
            infer_input(DType::F32, &[2, 2, 6, 32]),
        ];
        let types = infer_operator::<FlexAttention>(&inputs, &[], 1).unwrap();
        assert_eq!(types, [OutputType::new(DType::F32, vec![2, 8, -1, 32])]);
    }

    #[test]
    fn inputs_of_another_rank_are_refused() {
        let error = infer_error([&[2, 3, 16], &[2, 6, 16], &[2, 6, 16]], &[]);
        assert!(error.contains("must all have rank 4"), "{error}");
        assert!(error.contains("Q [2,3,16]"), "{error}");
    }

    #[test]
    fn query_and_key_head_sizes_must_match() {
        let error = infer_error([&[1, 2, 3, 16], &[1, 2, 4, 8], &[1, 2, 4, 8]], &[]);
        assert!(
            error.contains("Q and K must have the same head size"),
            "{error}"
        );
        assert!(error.contains("K [1,2,4,8]"), "{error}");
    }

    #[test]
    fn key_and_value_heads_and_lengths_must_match() {
        let error = infer_error([&[1, 2, 3, 8], &[1, 2, 4, 8], &[1, 1, 4, 8]], &[]);
        assert!(error.contains("same number of heads"), "{error}");
        let error = infer_error([&[1, 2, 3, 8], &[1, 2, 4, 8], &[1, 2, 5, 8]], &[]);
        assert!(error.contains("same sequence length"), "{error}");
    }

    #[test]
    fn query_heads_must_be_a_multiple_of_key_value_heads() {
        let error = infer_error([&[1, 3, 3, 8], &[1, 2, 4, 8], &[1, 2, 4, 8]], &[]);
        assert!(
            error.contains("3 query heads are not a multiple of 2 key/value heads"),
            "{error}"
        );
    }

    #[test]
    fn a_softmax_precision_that_is_not_a_float_is_refused() {
        let error = infer_error(
            [&[1, 1, 3, 8], &[1, 1, 4, 8], &[1, 1, 4, 8]],
            &[int_attr("softmax_precision", 7)],
        );
        assert!(error.contains("softmax_precision 7"), "{error}");
    }

    #[test]
    fn mixed_dtypes_are_refused() {
        let inputs = [
            infer_input(DType::F32, &[1, 1, 3, 8]),
            infer_input(DType::F16, &[1, 1, 4, 8]),
            infer_input(DType::F32, &[1, 1, 4, 8]),
        ];
        let error = infer_operator::<FlexAttention>(&inputs, &[], 1).unwrap_err();
        assert!(
            error.contains("one dtype; they are f32, f16 and f32"),
            "{error}"
        );
    }
}
