//! What the sequence operators share: positions in a sequence, element types as inference
//! sees them, and copying tensors into a sequence output.

use opal_kernel_support::check::error;
pub(crate) use opal_kernel_support::int_values::int_scalar;
use opal_plugin_api::{infer::InferTensor, prelude::*};

/// `position` (which may count from the end) as an index into a sequence of `len` elements;
/// `len` itself is allowed when `past_end` (insertion at the back).
pub(crate) fn position(op: &str, position: i64, len: usize, past_end: bool) -> KernelResult<usize> {
    let n = len as i64;
    let index = if position < 0 { position + n } else { position };
    let last = if past_end { n } else { n - 1 };
    if (0..=last).contains(&index) {
        return Ok(index as usize);
    }
    let range = if past_end {
        format!("[-{n}, {n}]")
    } else if len == 0 {
        "empty: the sequence has no elements".to_owned()
    } else {
        format!("[-{n}, {}]", n - 1)
    };
    Err(error(
        op,
        format_args!(
            "position {position} is out of range for a sequence of {len} elements ({range})"
        ),
    ))
}

/// The dims two tensor types share: -1 where they differ, and for every dim when their
/// ranks differ.
pub(crate) fn merge_shapes(a: &[i64], b: &[i64]) -> Vec<i64> {
    if a.len() != b.len() {
        return vec![-1; b.len()];
    }
    a.iter()
        .zip(b)
        .map(|(&x, &y)| if x == y { x } else { -1 })
        .collect()
}

/// The type of a sequence holding elements of `elements` (its dtype and shared dims), or
/// `UNDEFINED` when `elements` says nothing (a sequence known to be empty).
pub(crate) fn element_type(elements: &InferTensor<'_>) -> Option<(DType, Vec<i64>)> {
    (elements.dtype != DType::UNDEFINED).then(|| (elements.dtype, elements.shape.to_vec()))
}

/// Declares output `index` a sequence of `dtype` elements of `shape`.
pub(crate) fn sequence_output(
    cx: &InferContext<'_>,
    index: usize,
    dtype: DType,
    shape: Vec<i64>,
) -> KernelResult<OutputType> {
    cx.set_output_kind(index, ValueKind::SEQUENCE)?;
    Ok(OutputType::new(dtype, shape))
}

/// Appends a copy of `tensor` to sequence output `output`.
pub(crate) fn push_copy(
    cx: &KernelContext<'_>,
    output: usize,
    tensor: TensorRef<'_>,
) -> KernelResult<()> {
    let element = cx.push_element(output, tensor.dtype(), tensor.shape())?;
    element.bytes_mut().copy_from_slice(tensor.bytes());
    Ok(())
}

/// The dtype the elements of `sequence` have; `None` for an empty one.
pub(crate) fn sequence_dtype(sequence: &SequenceRef<'_>) -> KernelResult<Option<DType>> {
    if sequence.is_empty() {
        return Ok(None);
    }
    Ok(Some(sequence.get(0)?.dtype()))
}

/// Fails unless `dtype` is the elements' dtype `expected` (any when the sequence is empty).
pub(crate) fn expect_element_dtype(op: &str, expected: DType, dtype: DType) -> KernelResult<()> {
    if expected == DType::UNDEFINED || expected == dtype {
        return Ok(());
    }
    Err(error(
        op,
        format_args!("the tensor has dtype {dtype}, but the sequence holds {expected} elements"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_count_from_either_end_within_their_range() {
        assert_eq!(position("Op", -1, 3, false), Ok(2));
        assert_eq!(position("Op", 3, 3, true), Ok(3));
        assert_eq!(position("Op", -3, 3, false), Ok(0));
        let err = position("Op", 3, 3, false).unwrap_err();
        assert_eq!(
            err.message(),
            "Op: position 3 is out of range for a sequence of 3 elements ([-3, 2])"
        );
        assert!(position("Op", 0, 0, false)
            .unwrap_err()
            .message()
            .contains("empty"));
        assert_eq!(merge_shapes(&[2, 3], &[2, 4]), vec![2, -1]);
        assert_eq!(merge_shapes(&[2], &[2, 4]), vec![-1, -1]);
    }
}

/// Sequences of one-element f32 tensors, built and read back by the operators' unit tests.
#[cfg(test)]
pub(crate) mod test_sequences {
    use opal_plugin_api::testing::{OwnedTensor, TestHost, TestValue};
    use opal_plugin_api::{DType, Operator};

    /// A sequence whose elements are the one-element tensors `[v]` for each `v`.
    pub(crate) fn sequence(values: &[f32]) -> TestValue {
        TestValue::Sequence(
            DType::F32,
            values
                .iter()
                .map(|&v| OwnedTensor::f32(&[1], &[v]))
                .collect(),
        )
    }

    /// Runs `O` on `inputs` and reads its sequence output back as one value per element.
    pub(crate) fn run_on_sequence<O: Operator>(inputs: &[TestValue]) -> Result<Vec<f32>, String> {
        let out = TestHost::new().run_values::<O>(inputs, &[], 1)?;
        Ok(out[0]
            .elements()
            .iter()
            .map(|t| t.to_vec::<f32>()[0])
            .collect())
    }
}
