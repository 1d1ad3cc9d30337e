//! Operators that move bytes without arithmetic, for any dtype of fixed size: Reshape,
//! Transpose, Identity.

use crate::{
    broadcast::{Plan, MAX_RANK},
    check::{check_rank, error, expect_fixed_size, Shape},
    parallel::for_each_chunk,
};
use opal_plugin_api::{prelude::*, value::ValueSource};

/// Bytes per piece below which a copy stays on one thread.
const COPY_GRAIN: usize = 1 << 17;

/// Copies input 0's bytes to output 0, which must be as large.
fn copy_bytes(op: &str, cx: &mut KernelContext<'_>) -> KernelResult<()> {
    let x = cx.input(0)?;
    let out = cx.output(0)?;
    if out.dtype() != x.dtype() {
        return Err(error(op, "output dtype differs from the input's"));
    }
    let y = out.bytes_mut();
    if y.len() != x.bytes().len() {
        return Err(error(
            op,
            format_args!(
                "input of {} bytes does not fill an output of {}",
                x.bytes().len(),
                y.len()
            ),
        ));
    }
    y.copy_from_slice(x.bytes());
    Ok(())
}

/// The input unchanged: a tensor, or a sequence or optional, which the host copies.
pub struct Identity;

impl Operator for Identity {
    const OP_TYPE: &'static str = "Identity";
    const READS_VALUE_KINDS: bool = true;

    fn infer(cx: &InferContext<'_>) -> KernelResult<Vec<OutputType>> {
        let kind = cx.input_kind(0);
        if kind != ValueKind::TENSOR {
            cx.set_output_kind(0, kind)?;
            let x = if kind.holds_sequence() {
                Some(cx.sequence_input(0)?)
            } else {
                cx.optional_input(0)?
            };
            return Ok(vec![x
                .map_or(OutputType::new(DType::UNDEFINED, Vec::new()), |x| {
                    OutputType::new(x.dtype, x.shape.to_vec())
                })]);
        }
        let x = cx.input(0)?;
        expect_fixed_size(Self::OP_TYPE, x.dtype)?;
        Ok(vec![OutputType::new(x.dtype, x.shape.to_vec())])
    }

    fn compute(cx: &mut KernelContext<'_>) -> KernelResult<()> {
        match cx.value(0)? {
            Value::Tensor(_) if !cx.is_unshaped(0) => copy_bytes(Self::OP_TYPE, cx),
            _ => cx.forward(0, ValueSource::input(0)),
        }
    }
}

/// The input's elements under a new shape (input 1, an i64 tensor: 0 copies the input's dim
/// unless `allowzero` is 1, and one -1 is inferred).
pub struct Reshape;

impl Operator for Reshape {
    const OP_TYPE: &'static str = "Reshape";
    const SINCE_VERSION: i64 = 5;
    const VALUE_INPUTS: &'static [usize] = &[1];

    fn infer(cx: &InferContext<'_>) -> KernelResult<Vec<OutputType>> {
        let op = Self::OP_TYPE;
        let (data, shape) = (cx.input(0)?, cx.input(1)?);
        expect_fixed_size(op, data.dtype)?;
        if shape.dtype != DType::I64 || shape.shape.len() != 1 {
            return Err(error(
                op,
                format_args!(
                    "the shape input must be a 1-D i64 tensor, got {} {}",
                    shape.dtype,
                    Shape(shape.shape)
                ),
            ));
        }
        let allow_zero = cx.attributes().int("allowzero", 0)? != 0;
        let target = match shape.value_as::<i64>()? {
            Some(target) => reshaped(data.shape, target, allow_zero)?,
            // Without the value only the rank is known, if that.
            None if shape.shape[0] >= 0 => vec![-1; shape.shape[0] as usize],
            None => return Err(error(op, "the shape input's length is not known")),
        };
        check_rank(op, target.len())?;
        Ok(vec![OutputType::new(data.dtype, target)])
    }

    fn compute(cx: &mut KernelContext<'_>) -> KernelResult<()> {
        copy_bytes(Self::OP_TYPE, cx)
    }
}

/// The output shape of reshaping `input` (dims of -1 unknown) to `target`.
fn reshaped(input: &[i64], target: &[i64], allow_zero: bool) -> KernelResult<Vec<i64>> {
    let op = "Reshape";
    let cannot = |why: &str| {
        error(
            op,
            format_args!(
                "cannot reshape {} to {}: {why}",
                Shape(input),
                DimsList(target)
            ),
        )
    };
    let mut out = Vec::with_capacity(target.len());
    let mut inferred = None;
    for (i, &t) in target.iter().enumerate() {
        out.push(match t {
            0 if allow_zero => 0,
            0 => *input
                .get(i)
                .ok_or_else(|| cannot("a 0 has no input dim to copy"))?,
            -1 if inferred.is_some() => return Err(cannot("more than one -1")),
            -1 => {
                inferred = Some(i);
                -1
            }
            t if t < 0 => return Err(cannot("dims must be -1 or more")),
            t => t,
        });
    }
    if allow_zero && inferred.is_some() && target.contains(&0) {
        return Err(cannot("-1 and 0 together with allowzero"));
    }
    let known = |dims: &[i64]| -> Option<i64> {
        dims.iter().try_fold(1i64, |p, &d| (d >= 0).then(|| p * d))
    };
    let total = known(input);
    match inferred {
        Some(i) => {
            let rest = out
                .iter()
                .enumerate()
                .filter(|&(j, _)| j != i)
                .try_fold(1i64, |p, (_, &d)| (d >= 0).then(|| p * d));
            if let (Some(total), Some(rest)) = (total, rest) {
                if rest == 0 || total % rest != 0 {
                    return Err(cannot("the sizes do not divide"));
                }
                out[i] = total / rest;
            }
        }
        None => {
            if let (Some(total), Some(size)) = (total, known(&out)) {
                if total != size {
                    return Err(cannot("the sizes differ"));
                }
            }
        }
    }
    Ok(out)
}

/// A target shape as given, -1 included.
struct DimsList<'a>(&'a [i64]);

impl std::fmt::Display for DimsList<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[")?;
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{d}")?;
        }
        f.write_str("]")
    }
}

/// The input's dims permuted by `perm` (default: reversed).
pub struct Transpose;

/// The permutation for a tensor of `rank`, checked, in a fixed array.
fn permutation(
    op: &str,
    attributes: &Attributes<'_>,
    rank: usize,
) -> KernelResult<[usize; MAX_RANK]> {
    check_rank(op, rank)?;
    let mut perm = [0; MAX_RANK];
    match attributes.ints("perm")? {
        None => {
            for (i, p) in perm[..rank].iter_mut().enumerate() {
                *p = rank - 1 - i;
            }
        }
        Some(given) => {
            let mut seen = [false; MAX_RANK];
            let valid = given.len() == rank
                && given.iter().zip(&mut perm).all(|(&g, p)| {
                    let ok = usize::try_from(g).is_ok_and(|g| g < rank && !seen[g]);
                    if ok {
                        *p = g as usize;
                        seen[*p] = true;
                    }
                    ok
                });
            if !valid {
                return Err(error(
                    op,
                    format_args!(
                        "perm {} is not a permutation of the {rank} dims",
                        DimsList(given)
                    ),
                ));
            }
        }
    }
    Ok(perm)
}

impl Operator for Transpose {
    const OP_TYPE: &'static str = "Transpose";

    fn infer(cx: &InferContext<'_>) -> KernelResult<Vec<OutputType>> {
        let x = cx.input(0)?;
        expect_fixed_size(Self::OP_TYPE, x.dtype)?;
        let rank = x.shape.len();
        let perm = permutation(Self::OP_TYPE, &cx.attributes(), rank)?;
        let shape = perm[..rank].iter().map(|&p| x.shape[p]).collect();
        Ok(vec![OutputType::new(x.dtype, shape)])
    }

    fn compute(cx: &mut KernelContext<'_>) -> KernelResult<()> {
        let op = Self::OP_TYPE;
        let x = cx.input(0)?;
        let shape = x.shape();
        let rank = shape.len();
        let perm = permutation(op, &cx.attributes(), rank)?;
        let size = expect_fixed_size(op, x.dtype())?;
        // The input's element strides, taken in output order.
        let mut input_strides = [0; MAX_RANK];
        let mut stride = 1;
        for d in (0..rank).rev() {
            input_strides[d] = stride;
            stride *= shape[d];
        }
        let mut out_dims = [0; MAX_RANK];
        let mut strides = [[0; MAX_RANK]; 1];
        for (i, &p) in perm[..rank].iter().enumerate() {
            out_dims[i] = shape[p];
            strides[0][i] = input_strides[p];
        }
        let out = cx.output(0)?;
        if out.shape() != &out_dims[..rank] || out.dtype() != x.dtype() {
            return Err(error(
                op,
                format_args!(
                    "output shape {} is not the permuted input's",
                    Shape(out.shape())
                ),
            ));
        }
        let plan = Plan::with_strides(&out_dims[..rank], strides);
        let (from, to) = (x.bytes(), out.bytes_mut());
        match size {
            1 => permute::<1>(cx, &plan, from, to),
            2 => permute::<2>(cx, &plan, from, to),
            4 => permute::<4>(cx, &plan, from, to),
            8 => permute::<8>(cx, &plan, from, to),
            _ => {
                return Err(error(
                    op,
                    format_args!("elements of {size} bytes are not supported"),
                ))
            }
        }
        Ok(())
    }
}

/// Copies elements of `N` bytes from `from` to `to` as the plan walks them.
fn permute<const N: usize>(cx: &KernelContext<'_>, plan: &Plan<1>, from: &[u8], to: &mut [u8]) {
    let [stride] = plan.run_strides();
    for_each_chunk(
        cx,
        to,
        N,
        COPY_GRAIN,
        #[inline(always)]
        |first_byte, chunk| {
            let first = first_byte / N;
            plan.for_each_run(first..first + chunk.len() / N, |start, len, [offset]| {
                let out = &mut chunk[(start - first) * N..(start - first + len) * N];
                if stride == 1 {
                    out.copy_from_slice(&from[offset * N..(offset + len) * N]);
                } else {
                    for (t, element) in out.chunks_exact_mut(N).enumerate() {
                        let at = (offset + t * stride) * N;
                        element.copy_from_slice(&from[at..at + N]);
                    }
                }
            });
        },
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use opal_plugin_api::testing::{
        infer_input, infer_operator, int_attr, ints_attr, run_operator, OwnedTensor, TestHost,
    };

    fn reshape(input: &[usize], target: &[i64], allow_zero: bool) -> Result<Vec<usize>, String> {
        let len: usize = input.iter().product();
        let values: Vec<i32> = (0..len as i32).collect();
        let inputs = [
            OwnedTensor::new(input, &values),
            OwnedTensor::i64(&[target.len()], target),
        ];
        let y = run_operator::<Reshape>(&inputs, &[int_attr("allowzero", allow_zero as i64)], 1)?;
        assert_eq!(y[0].to_vec::<i32>(), values);
        Ok(y[0].shape().to_vec())
    }

    #[test]
    fn reshape_copies_zeros_and_infers_minus_one() {
        assert_eq!(reshape(&[2, 3, 4], &[4, -1], false).unwrap(), [4, 6]);
        assert_eq!(reshape(&[2, 3, 4], &[0, -1], false).unwrap(), [2, 12]);
        assert_eq!(
            reshape(&[2, 3, 4], &[0, 0, 2, 2], false).unwrap(),
            [2, 3, 2, 2]
        );
        assert_eq!(reshape(&[2, 3, 4], &[-1], false).unwrap(), [24]);
        assert_eq!(reshape(&[0, 3], &[0, 3], true).unwrap(), [0, 3]);
        assert_eq!(reshape(&[6], &[1, 2, 1, 3], false).unwrap(), [1, 2, 1, 3]);
    }

    #[test]
    fn reshape_explains_bad_targets() {
        let error = reshape(&[2, 3], &[4, -1], false).unwrap_err();
        assert_eq!(
            error,
            "Reshape: cannot reshape [2,3] to [4,-1]: the sizes do not divide"
        );
        assert!(reshape(&[2, 3], &[-1, -1], false)
            .unwrap_err()
            .contains("more than one -1"));
        assert!(reshape(&[2, 3], &[5], false)
            .unwrap_err()
            .contains("sizes differ"));
        assert!(reshape(&[2, 3], &[0, -1], true)
            .unwrap_err()
            .contains("allowzero"));
        assert!(reshape(&[2, 3], &[1, 1, 0], false)
            .unwrap_err()
            .contains("no input dim"));
    }

    #[test]
    fn reshape_inference_with_unknown_dims_or_value() {
        assert_eq!(reshaped(&[-1, 3, 4], &[0, -1], false).unwrap(), [-1, -1]);
        assert_eq!(reshaped(&[-1, 3, 4], &[0, 12], false).unwrap(), [-1, 12]);
        assert_eq!(reshaped(&[2, 3, 4], &[0, -1], false).unwrap(), [2, 12]);
        let types = infer_operator::<Reshape>(
            &[
                infer_input(DType::F32, &[2, 3]),
                infer_input(DType::I64, &[3]),
            ],
            &[],
            1,
        )
        .unwrap();
        assert_eq!(types[0].shape.as_slice(), [-1, -1, -1]);
    }

    /// Transposes the slow way: each output index mapped back through `perm`.
    fn transpose_reference(values: &[u64], shape: &[usize], perm: &[usize]) -> Vec<u64> {
        let out: Vec<usize> = perm.iter().map(|&p| shape[p]).collect();
        (0..values.len())
            .map(|mut e| {
                let mut index = vec![0; shape.len()];
                for d in (0..out.len()).rev() {
                    index[perm[d]] = e % out[d];
                    e /= out[d];
                }
                values[index.iter().zip(shape).fold(0, |acc, (&i, &d)| acc * d + i)]
            })
            .collect()
    }

    #[test]
    fn transpose_permutes_any_element_size() {
        let cases: &[(&[usize], Option<&[i64]>)] = &[
            (&[2, 3], None),
            (&[2, 3, 4], Some(&[1, 0, 2])),
            (&[2, 3, 4], Some(&[2, 0, 1])),
            (&[2, 3, 4, 5], None),
            (&[1, 5, 1, 7], Some(&[3, 2, 1, 0])),
            (&[4], None),
            (&[], None),
        ];
        for &(shape, perm) in cases {
            let len: usize = shape.iter().product();
            let values: Vec<u64> = (0..len as u64).collect();
            let perm_usize: Vec<usize> = match perm {
                Some(p) => p.iter().map(|&p| p as usize).collect(),
                None => (0..shape.len()).rev().collect(),
            };
            let expected = transpose_reference(&values, shape, &perm_usize);
            let out_shape: Vec<usize> = perm_usize.iter().map(|&p| shape[p]).collect();
            let attributes: Vec<_> = perm.map(|p| ints_attr("perm", p)).into_iter().collect();
            let narrow: Vec<u8> = values.iter().map(|&v| v as u8).collect();
            let halves: Vec<i16> = values.iter().map(|&v| v as i16).collect();
            let floats: Vec<f32> = values.iter().map(|&v| v as f32).collect();
            for threads in [1, 3] {
                let host = TestHost::new().threads(threads);
                let y = host
                    .run::<Transpose>(&[OwnedTensor::new(shape, &values)], &attributes, 1)
                    .unwrap();
                assert_eq!(y[0].shape(), out_shape);
                assert_eq!(y[0].to_vec::<u64>(), expected, "{shape:?} {perm:?}");
                let y = host
                    .run::<Transpose>(&[OwnedTensor::new(shape, &narrow)], &attributes, 1)
                    .unwrap();
                assert_eq!(
                    y[0].to_vec::<u8>(),
                    expected.iter().map(|&v| v as u8).collect::<Vec<_>>()
                );
                let y = host
                    .run::<Transpose>(&[OwnedTensor::new(shape, &halves)], &attributes, 1)
                    .unwrap();
                assert_eq!(
                    y[0].to_vec::<i16>(),
                    expected.iter().map(|&v| v as i16).collect::<Vec<_>>()
                );
                let y = host
                    .run::<Transpose>(&[OwnedTensor::new(shape, &floats)], &attributes, 1)
                    .unwrap();
                assert_eq!(
                    y[0].to_vec::<f32>(),
                    expected.iter().map(|&v| v as f32).collect::<Vec<_>>()
                );
            }
        }
    }

    #[test]
    fn large_transposes_split_across_threads() {
        let shape = [300, 257];
        let values: Vec<f32> = (0..300 * 257).map(|v| v as f32).collect();
        let y = TestHost::new()
            .threads(2)
            .run::<Transpose>(&[OwnedTensor::f32(&shape, &values)], &[], 1)
            .unwrap();
        let expected: Vec<u64> =
            transpose_reference(&(0..300 * 257).collect::<Vec<u64>>(), &shape, &[1, 0]);
        assert_eq!(
            y[0].to_vec::<f32>(),
            expected.iter().map(|&v| v as f32).collect::<Vec<_>>()
        );
    }

    #[test]
    fn transpose_refuses_bad_perms() {
        for perm in [&[0, 0][..], &[0], &[0, 2], &[-1, 0]] {
            let error = infer_operator::<Transpose>(
                &[infer_input(DType::F32, &[2, 3])],
                &[ints_attr("perm", perm)],
                1,
            )
            .unwrap_err();
            assert!(error.contains("is not a permutation"), "{error}");
        }
        let types = infer_operator::<Transpose>(
            &[infer_input(DType::I64, &[-1, 3, 5])],
            &[ints_attr("perm", &[2, 0, 1])],
            1,
        )
        .unwrap();
        assert_eq!(types[0].shape.as_slice(), [5, -1, 3]);
    }

    #[test]
    fn identity_copies_any_fixed_size_dtype() {
        let x = OwnedTensor::new(&[2, 2], &[true, false, true, true]);
        let y = run_operator::<Identity>(&[x], &[], 1).unwrap();
        assert_eq!(y[0].to_vec::<bool>(), [true, false, true, true]);
        let error =
            infer_operator::<Identity>(&[infer_input(DType::STRING, &[2])], &[], 1).unwrap_err();
        assert_eq!(error, "Identity: dtype string has no fixed element size");
    }
}
