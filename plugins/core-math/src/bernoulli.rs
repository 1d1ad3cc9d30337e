//! ONNX `Bernoulli` (opset 22): 1 with the probability the input gives for each element, else
//! 0, written as the dtype attribute `dtype` names (any numeric type or bool; the input's
//! dtype by default). Draws are numpy's `binomial(1, p)` for the same `seed` (see
//! [`legacy_random`](crate::legacy_random)). Probabilities outside `[0, 1]`, or NaN, are
//! refused, as numpy refuses them.

use crate::{cast::f64_values, check::error, legacy_random::generator};
use opal_kernel_support::float_values::Values;
use opal_plugin_api::prelude::*;

/// Draws 0 or 1 per element of the input probabilities.
pub struct Bernoulli;

impl Bernoulli {
    fn output_dtype(attributes: &Attributes<'_>, input: DType) -> KernelResult<DType> {
        let op = Self::OP_TYPE;
        let code = attributes
            .int("dtype", i64::from(input.0))
            .map_err(|e| error(op, e))?;
        let dtype = i32::try_from(code).map(DType).unwrap_or(DType::UNDEFINED);
        if dtype != DType::BOOL && !crate::check::is_numeric(dtype) {
            return Err(error(
                op,
                format_args!("dtype {dtype} is not a numeric type or bool"),
            ));
        }
        Ok(dtype)
    }
}

impl Operator for Bernoulli {
    const OP_TYPE: &'static str = "Bernoulli";
    const DRAWS_AT_RANDOM: bool = true;

    fn infer(cx: &InferContext<'_>) -> KernelResult<Vec<OutputType>> {
        let op = Self::OP_TYPE;
        let x = cx.input(0)?;
        if !matches!(x.dtype, DType::F32 | DType::F64 | DType::F16 | DType::BF16) {
            return Err(error(
                op,
                format_args!(
                    "the input has dtype {}, expected probabilities of f32, f64, f16 or bf16",
                    x.dtype
                ),
            ));
        }
        let attributes = cx.attributes();
        let dtype = Self::output_dtype(&attributes, x.dtype)?;
        generator(op, &attributes)?;
        Ok(vec![OutputType::new(dtype, x.shape.to_vec())])
    }

    fn compute(cx: &mut KernelContext<'_>) -> KernelResult<()> {
        let op = Self::OP_TYPE;
        let attributes = cx.attributes();
        let mut rng = generator(op, &attributes)?;
        let p = f64_values(op, cx, cx.input(0)?)?;
        if let Some(i) = p.iter().position(|p| !(0.0..=1.0).contains(p)) {
            return Err(error(
                op,
                format_args!(
                    "element {i} of the input is {}, not a probability in [0, 1]",
                    p[i]
                ),
            ));
        }
        let out = cx.output(0)?;
        if out.dtype() == DType::BOOL {
            for (y, &p) in out.as_slice_mut::<bool>()?.iter_mut().zip(p) {
                *y = rng.bernoulli(p) == 1;
            }
            return Ok(());
        }
        let mut values = Values::new(op, out)?;
        for (i, &p) in p.iter().enumerate() {
            values.set(i, f64::from(rng.bernoulli(p)));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opal_plugin_api::testing::{
        float_attr, infer_input, infer_operator, int_attr, run_operator, OwnedTensor,
    };

    #[test]
    fn seeded_draws_are_numpys_binomial() {
        let p = OwnedTensor::new::<f64>(&[8], &[0.1, 0.5, 0.9, 0.0, 1.0, 0.3, 0.75, 0.5]);
        let y = run_operator::<Bernoulli>(std::slice::from_ref(&p), &[float_attr("seed", 7.0)], 1)
            .unwrap();
        assert_eq!(y[0].dtype(), DType::F64);
        assert_eq!(
            y[0].to_vec::<f64>(),
            [0.0, 1.0, 1.0, 0.0, 1.0, 0.0, 1.0, 0.0]
        );
        let attrs = [float_attr("seed", 7.0), int_attr("dtype", 9)];
        let y = run_operator::<Bernoulli>(&[p], &attrs, 1).unwrap();
        assert_eq!(
            y[0].to_vec::<bool>(),
            [false, true, true, false, true, false, true, false]
        );
    }

    #[test]
    fn bad_inputs_are_named() {
        let p = OwnedTensor::f32(&[2], &[0.5, 1.5]);
        let err = run_operator::<Bernoulli>(&[p], &[], 1).unwrap_err();
        assert!(err.contains("element 1 of the input is 1.5"), "{err}");
        let ints = [infer_input(DType::I64, &[2])];
        let err = infer_operator::<Bernoulli>(&ints, &[], 1).unwrap_err();
        assert!(err.contains("the input has dtype i64"), "{err}");
        let floats = [infer_input(DType::F32, &[2])];
        let err = infer_operator::<Bernoulli>(&floats, &[int_attr("dtype", 8)], 1).unwrap_err();
        assert!(err.contains("dtype string"), "{err}");
    }
}
