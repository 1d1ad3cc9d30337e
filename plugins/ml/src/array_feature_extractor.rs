//! `ai.onnx.ml` `ArrayFeatureExtractor`: the elements of `X` at the int64 indices `Y`, taken
//! along the last axis. The output has `X`'s leading dims and one last dim per index; a 1-D
//! `X` gives a `[1, len(Y)]` matrix, as onnxruntime and ONNX's reference make it. Indices must
//! lie in `[0, X.shape[-1])`.

use crate::ML_DOMAIN;
use opal_kernel_support::check::error;
use opal_plugin_api::prelude::*;

/// Whether `dtype` is one the operator takes for `X` (strings are not in the ABI yet).
fn supported(dtype: DType) -> bool {
    matches!(dtype, DType::F32 | DType::F64 | DType::I32 | DType::I64)
}

/// The elements of input 0 at the indices of input 1, along the last axis.
pub struct ArrayFeatureExtractor;

impl Operator for ArrayFeatureExtractor {
    const DOMAIN: &'static str = ML_DOMAIN;
    const OP_TYPE: &'static str = "ArrayFeatureExtractor";

    fn infer(cx: &InferContext<'_>) -> KernelResult<Vec<OutputType>> {
        let op = Self::OP_TYPE;
        let (x, y) = (cx.input(0)?, cx.input(1)?);
        if !supported(x.dtype) {
            return Err(error(
                op,
                format_args!(
                    "X has dtype {}, expected f32, f64, i32 or i64 (string tensors are not supported yet)",
                    x.dtype
                ),
            ));
        }
        if y.dtype != DType::I64 {
            return Err(error(
                op,
                format_args!("Y has dtype {}, expected i64 indices", y.dtype),
            ));
        }
        if x.shape.is_empty() {
            return Err(error(op, "X is a scalar; it needs at least one dim"));
        }
        let count = if y.shape.iter().any(|&d| d < 0) {
            -1
        } else {
            y.shape.iter().product()
        };
        let mut shape = match x.shape {
            [_] => vec![1],
            [lead @ .., _] => lead.to_vec(),
            [] => unreachable!("checked above"),
        };
        shape.push(count);
        Ok(vec![OutputType::new(x.dtype, shape)])
    }

    fn compute(cx: &mut KernelContext<'_>) -> KernelResult<()> {
        let op = Self::OP_TYPE;
        let (x, y) = (cx.input(0)?, cx.input(1)?);
        let indices = y.as_slice::<i64>()?;
        let features = x.shape().last().copied().unwrap_or(1);
        if let Some(&bad) = indices
            .iter()
            .find(|&&i| usize::try_from(i).map_or(true, |i| i >= features))
        {
            return Err(error(
                op,
                format_args!(
                    "index {bad} in Y is out of range for the last dim of X, which has {features} elements"
                ),
            ));
        }
        let size = x.dtype().size().unwrap_or(1);
        let input = x.bytes();
        let out = cx.output(0)?.bytes_mut();
        let row_bytes = indices.len() * size;
        if row_bytes == 0 {
            return Ok(());
        }
        for (row, out_row) in out.chunks_exact_mut(row_bytes).enumerate() {
            let in_row = &input[row * features * size..(row + 1) * features * size];
            for (&i, element) in indices.iter().zip(out_row.chunks_exact_mut(size)) {
                let at = i as usize * size;
                element.copy_from_slice(&in_row[at..at + size]);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opal_plugin_api::testing::{infer_input, infer_operator, run_operator, OwnedTensor};

    #[test]
    fn takes_the_indexed_columns_of_every_row() {
        let x = OwnedTensor::f32(&[3, 4], &(0..12).map(|v| v as f32).collect::<Vec<_>>());
        let y = OwnedTensor::i64(&[2], &[0, 3]);
        let z = run_operator::<ArrayFeatureExtractor>(&[x, y], &[], 1).unwrap();
        assert_eq!(z[0].shape(), [3, 2]);
        assert_eq!(z[0].to_vec::<f32>(), [0.0, 3.0, 4.0, 7.0, 8.0, 11.0]);
    }

    #[test]
    fn a_vector_gives_one_row_and_indices_may_repeat() {
        let x = OwnedTensor::new::<i32>(&[3], &[10, 20, 30]);
        let y = OwnedTensor::i64(&[1, 3], &[2, 2, 0]);
        let z = run_operator::<ArrayFeatureExtractor>(&[x, y], &[], 1).unwrap();
        assert_eq!(z[0].shape(), [1, 3]);
        assert_eq!(z[0].to_vec::<i32>(), [30, 30, 10]);
    }

    #[test]
    fn out_of_range_indices_are_refused() {
        let x = OwnedTensor::f32(&[2, 2], &[1.0; 4]);
        for bad in [2, -1] {
            let y = OwnedTensor::i64(&[1], &[bad]);
            let err = run_operator::<ArrayFeatureExtractor>(&[x.clone(), y], &[], 1).unwrap_err();
            assert!(
                err.contains(&format!("index {bad} in Y is out of range")),
                "{err}"
            );
        }
    }

    #[test]
    fn wrong_dtypes_and_ranks_are_named() {
        let indices = infer_input(DType::I64, &[1]);
        let x = [infer_input(DType::U8, &[2, 2]), indices];
        let err = infer_operator::<ArrayFeatureExtractor>(&x, &[], 1).unwrap_err();
        assert!(err.contains("X has dtype u8"), "{err}");
        let x = [
            infer_input(DType::F32, &[2, 2]),
            infer_input(DType::I32, &[1]),
        ];
        let err = infer_operator::<ArrayFeatureExtractor>(&x, &[], 1).unwrap_err();
        assert!(err.contains("Y has dtype i32"), "{err}");
        let x = [infer_input(DType::F32, &[]), indices];
        let err = infer_operator::<ArrayFeatureExtractor>(&x, &[], 1).unwrap_err();
        assert!(err.contains("X is a scalar"), "{err}");
    }
}
