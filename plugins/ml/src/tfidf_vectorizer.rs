//! ONNX `TfIdfVectorizer` (opset 9): counts the n-grams of the pool found in each row of an
//! int32 or int64 token sequence (`[C]` or `[N, C]`), with tokens up to `max_skip_count` apart,
//! and weighs the counts by `mode`: `TF` keeps them, `IDF` turns each present n-gram into its
//! weight (1 without `weights`), `TFIDF` multiplies counts by weights. The output is f32,
//! `[max(ngram_indexes) + 1]` or `[N, max(ngram_indexes) + 1]`.
//!
//! As in onnxruntime and ONNX's reference, `weights` is indexed by output coordinate (the
//! documentation speaks of the n-gram's position in the pool), and 1-grams are counted once
//! whatever the skip. String tokens (`pool_strings`) are refused: strings do not cross the
//! plugin ABI yet.

use crate::{
    attributes::{missing, required_ints},
    ngram_pool::NgramPool,
};
use opal_kernel_support::check::error;
use opal_plugin_api::prelude::*;

/// How counts become output values.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Mode {
    Tf,
    Idf,
    TfIdf,
}

/// The node's settings, read from its attributes.
struct Settings<'a> {
    mode: Mode,
    min_gram: usize,
    max_gram: usize,
    max_skip: usize,
    weights: Option<&'a [f32]>,
    pool: NgramPool<'a>,
}

fn required_int(op: &str, attributes: &Attributes<'_>, name: &str) -> KernelResult<usize> {
    if attributes.get(name).is_none() {
        return Err(missing(op, name));
    }
    let value = attributes.int(name, 0).map_err(|e| error(op, e))?;
    usize::try_from(value)
        .map_err(|_| error(op, format_args!("attribute '{name}' is negative ({value})")))
}

impl<'a> Settings<'a> {
    fn new(op: &str, attributes: &Attributes<'a>) -> KernelResult<Self> {
        let mode = match attributes.get("mode") {
            None => return Err(missing(op, "mode")),
            Some(_) => match attributes.string("mode", "").map_err(|e| error(op, e))? {
                "TF" => Mode::Tf,
                "IDF" => Mode::Idf,
                "TFIDF" => Mode::TfIdf,
                other => {
                    return Err(error(
                        op,
                        format_args!("mode '{other}' is not one of TF, IDF, TFIDF"),
                    ))
                }
            },
        };
        let min_gram = required_int(op, attributes, "min_gram_length")?;
        let max_gram = required_int(op, attributes, "max_gram_length")?;
        let max_skip = required_int(op, attributes, "max_skip_count")?;
        if min_gram == 0 || min_gram > max_gram {
            return Err(error(
                op,
                format_args!(
                    "min_gram_length {min_gram} and max_gram_length {max_gram} must satisfy 1 <= min <= max"
                ),
            ));
        }
        if attributes.get("pool_strings").is_some() {
            return Err(error(
                op,
                "pool_strings is not supported: string tensors do not cross the plugin ABI yet; use integer token ids with pool_int64s",
            ));
        }
        let pool = required_ints(op, attributes, "pool_int64s")?;
        let counts = required_ints(op, attributes, "ngram_counts")?;
        let indexes = required_ints(op, attributes, "ngram_indexes")?;
        let pool = NgramPool::new(pool, counts, indexes)?;
        let weights = attributes.floats("weights").map_err(|e| error(op, e))?;
        if let Some(weights) = weights {
            if weights.len() < pool.output_size() {
                return Err(error(
                    op,
                    format_args!(
                        "weights has {} values, one per output coordinate needs {}",
                        weights.len(),
                        pool.output_size()
                    ),
                ));
            }
        }
        Ok(Settings {
            mode,
            min_gram,
            max_gram,
            max_skip,
            weights,
            pool,
        })
    }

    /// Counts the pool's n-grams in `row` (read through `token`, `len` tokens) into `counts`.
    fn count(&self, len: usize, token: impl Fn(usize) -> i64, counts: &mut [f32]) {
        let longest = self.max_gram.min(self.pool.longest());
        let mut shortest = self.min_gram;
        for skip in 1..=self.max_skip + 1 {
            if shortest > longest {
                break;
            }
            for start in 0..len {
                for n in shortest..=longest {
                    let last = start + (n - 1) * skip;
                    if last >= len {
                        break;
                    }
                    if let Some(at) = self.pool.find(n, |j| token(start + j * skip)) {
                        counts[at] += 1.0;
                    }
                }
            }
            // 1-grams do not depend on the skip: count them on the first pass only.
            if shortest == 1 {
                shortest = 2;
            }
        }
    }

    /// Turns one row's counts into output values, as `mode` says.
    fn weigh(&self, row: &mut [f32]) {
        for (i, v) in row.iter_mut().enumerate() {
            let weight = self.weights.map_or(1.0, |w| w[i]);
            *v = match self.mode {
                Mode::Tf => *v,
                Mode::Idf if *v > 0.0 => weight,
                Mode::Idf => 0.0,
                Mode::TfIdf => weight * *v,
            };
        }
    }
}

/// N-gram counts of integer token sequences, weighted.
pub struct TfIdfVectorizer;

impl Operator for TfIdfVectorizer {
    const OP_TYPE: &'static str = "TfIdfVectorizer";
    const SINCE_VERSION: i64 = 9;

    fn infer(cx: &InferContext<'_>) -> KernelResult<Vec<OutputType>> {
        let op = Self::OP_TYPE;
        let x = cx.input(0)?;
        match x.dtype {
            DType::I32 | DType::I64 => {}
            DType::STRING => {
                return Err(error(
                    op,
                    "string input is not supported yet: strings do not cross the plugin ABI; feed integer token ids",
                ))
            }
            dtype => {
                return Err(error(
                    op,
                    format_args!("X has dtype {dtype}, expected i32 or i64 token ids"),
                ))
            }
        }
        let settings = Settings::new(op, &cx.attributes())?;
        let size = settings.pool.output_size() as i64;
        let shape = match x.shape {
            [] | [_] => vec![size],
            &[rows, _] => vec![rows, size],
            _ => {
                return Err(error(
                    op,
                    format_args!("X has rank {}, expected [C] or [N, C]", x.shape.len()),
                ))
            }
        };
        Ok(vec![OutputType::new(DType::F32, shape)])
    }

    fn compute(cx: &mut KernelContext<'_>) -> KernelResult<()> {
        let op = Self::OP_TYPE;
        let settings = Settings::new(op, &cx.attributes())?;
        let x = cx.input(0)?;
        let columns = match x.shape() {
            [] => 1,
            [.., c] => *c,
        };
        let out = cx.output(0)?.f32_mut()?;
        out.fill(0.0);
        let size = settings.pool.output_size();
        if size == 0 || columns == 0 {
            return Ok(());
        }
        for (r, row) in out.chunks_exact_mut(size).enumerate() {
            let base = r * columns;
            match x.dtype() {
                DType::I32 => {
                    let tokens = &x.as_slice::<i32>()?[base..base + columns];
                    settings.count(columns, |i| i64::from(tokens[i]), row);
                }
                _ => {
                    let tokens = &x.as_slice::<i64>()?[base..base + columns];
                    settings.count(columns, |i| tokens[i], row);
                }
            }
            settings.weigh(row);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opal_plugin_api::testing::{
        floats_attr, infer_input, infer_operator, int_attr, ints_attr, run_operator, string_attr,
        OwnedTensor,
    };

    const POOL: [i64; 10] = [2, 3, 5, 4, 5, 6, 7, 8, 6, 7];
    const INDEXES: [i64; 7] = [0, 1, 2, 3, 4, 5, 6];

    fn attributes<'a>(
        mode: &'a str,
        min: i64,
        max: i64,
        skip: i64,
    ) -> Vec<opal_plugin_api::Attribute<'a>> {
        vec![
            string_attr("mode", mode),
            int_attr("min_gram_length", min),
            int_attr("max_gram_length", max),
            int_attr("max_skip_count", skip),
            ints_attr("ngram_counts", &[0, 4]),
            ints_attr("ngram_indexes", &INDEXES),
            ints_attr("pool_int64s", &POOL),
        ]
    }

    fn tokens() -> OwnedTensor {
        OwnedTensor::new::<i32>(&[12], &[1, 1, 3, 3, 3, 7, 8, 6, 7, 5, 6, 8])
    }

    fn run(x: OwnedTensor, attrs: &[opal_plugin_api::Attribute<'_>]) -> OwnedTensor {
        run_operator::<TfIdfVectorizer>(&[x], attrs, 1)
            .unwrap()
            .remove(0)
    }

    #[test]
    fn counts_unigrams_and_skipped_bigrams() {
        let y = run(tokens(), &attributes("TF", 1, 2, 5));
        assert_eq!(y.shape(), [7]);
        assert_eq!(y.to_vec::<f32>(), [0.0, 3.0, 1.0, 0.0, 1.0, 3.0, 1.0]);
        let y = run(tokens(), &attributes("TF", 2, 2, 0));
        assert_eq!(y.to_vec::<f32>(), [0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0]);
    }

    #[test]
    fn batches_count_per_row() {
        let x = OwnedTensor::i64(&[2, 6], &[1, 1, 3, 3, 3, 7, 8, 6, 7, 5, 6, 8]);
        let y = run(x, &attributes("TF", 1, 2, 5));
        assert_eq!(y.shape(), [2, 7]);
        assert_eq!(
            y.to_vec::<f32>(),
            [0.0, 3.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 1.0, 1.0, 1.0]
        );
    }

    #[test]
    fn idf_and_tfidf_weigh_by_output_coordinate() {
        let weights = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0];
        let mut idf = attributes("IDF", 1, 2, 5);
        idf.push(floats_attr("weights", &weights));
        let y = run(tokens(), &idf);
        assert_eq!(y.to_vec::<f32>(), [0.0, 2.0, 3.0, 0.0, 5.0, 6.0, 7.0]);
        let mut tfidf = attributes("TFIDF", 1, 2, 5);
        tfidf.push(floats_attr("weights", &weights));
        let y = run(tokens(), &tfidf);
        assert_eq!(y.to_vec::<f32>(), [0.0, 6.0, 3.0, 0.0, 5.0, 18.0, 7.0]);
        let y = run(tokens(), &attributes("IDF", 1, 2, 5));
        assert_eq!(y.to_vec::<f32>(), [0.0, 1.0, 1.0, 0.0, 1.0, 1.0, 1.0]);
    }

    #[test]
    fn bad_inputs_and_attributes_are_named() {
        let attrs = attributes("TF", 1, 2, 5);
        let err = infer_operator::<TfIdfVectorizer>(&[infer_input(DType::F32, &[4])], &attrs, 1)
            .unwrap_err();
        assert!(err.contains("X has dtype f32"), "{err}");
        let err = infer_operator::<TfIdfVectorizer>(&[infer_input(DType::STRING, &[4])], &attrs, 1)
            .unwrap_err();
        assert!(err.contains("string input is not supported"), "{err}");
        let err =
            infer_operator::<TfIdfVectorizer>(&[infer_input(DType::I64, &[1, 2, 3])], &attrs, 1)
                .unwrap_err();
        assert!(err.contains("X has rank 3"), "{err}");
        let ok = [infer_input(DType::I64, &[4])];
        let mut missing = attrs.clone();
        missing.remove(0);
        let err = infer_operator::<TfIdfVectorizer>(&ok, &missing, 1).unwrap_err();
        assert!(
            err.contains("required attribute 'mode' is missing"),
            "{err}"
        );
        let err =
            infer_operator::<TfIdfVectorizer>(&ok, &attributes("BM25", 1, 2, 5), 1).unwrap_err();
        assert!(err.contains("mode 'BM25'"), "{err}");
        let err =
            infer_operator::<TfIdfVectorizer>(&ok, &attributes("TF", 3, 2, 5), 1).unwrap_err();
        assert!(err.contains("min_gram_length 3"), "{err}");
    }
}
