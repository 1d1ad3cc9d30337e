//! ONNX `RandomUniform`, `RandomUniformLike`, `RandomNormal` and `RandomNormalLike` (opset 22):
//! draws from the uniform distribution on `[low, high)` (default `[0, 1)`) or the normal
//! distribution of `mean` (default 0) and standard deviation `scale` (default 1), of the shape
//! of attribute `shape` (or, for the `Like` forms, of the input) and of the float dtype
//! attribute `dtype` names (default f32, or the `Like` input's dtype when it is a float type).
//! Draws are numpy's for the same `seed` (see [`legacy_random`](crate::legacy_random)).

use crate::check::error;
use crate::legacy_random::{fill, float_dtype, generator};
use opal_plugin_api::prelude::*;

/// Which distribution an operator draws from.
#[derive(Clone, Copy)]
enum Distribution {
    Uniform,
    Normal,
}

impl Distribution {
    /// The scale and shift of a draw from the standard form (`[0, 1)` or N(0, 1)): `high - low`
    /// and `low`, or `scale` and `mean`.
    fn affine(self, op: &str, attributes: &Attributes<'_>) -> KernelResult<(f32, f32)> {
        let read = |name, default| attributes.float(name, default).map_err(|e| error(op, e));
        Ok(match self {
            Distribution::Uniform => {
                let (low, high) = (read("low", 0.0)?, read("high", 1.0)?);
                (high - low, low)
            }
            Distribution::Normal => (read("scale", 1.0)?, read("mean", 0.0)?),
        })
    }
}

/// The output shape attribute `shape` gives; an error when it is absent or has a negative dim.
fn shape_attribute(op: &str, attributes: &Attributes<'_>) -> KernelResult<Vec<i64>> {
    let shape = attributes
        .ints("shape")
        .map_err(|e| error(op, e))?
        .ok_or_else(|| error(op, "the required attribute 'shape' is missing"))?;
    if shape.iter().any(|&d| d < 0) {
        return Err(error(
            op,
            format_args!("shape {shape:?} has a negative dim"),
        ));
    }
    Ok(shape.to_vec())
}

/// The output type of a generator; `like` operators take the shape (and by default the dtype)
/// of input 0.
fn infer(
    op: &str,
    cx: &InferContext<'_>,
    distribution: Distribution,
    like: bool,
) -> KernelResult<Vec<OutputType>> {
    let attributes = cx.attributes();
    let (default_dtype, shape) = if like {
        let x = cx.input(0)?;
        let float = matches!(x.dtype, DType::F32 | DType::F64 | DType::F16 | DType::BF16);
        (float.then_some(x.dtype), x.shape.to_vec())
    } else {
        (Some(DType::F32), shape_attribute(op, &attributes)?)
    };
    let dtype = float_dtype(op, &attributes, default_dtype)?;
    distribution.affine(op, &attributes)?;
    generator(op, &attributes)?;
    Ok(vec![OutputType::new(dtype, shape)])
}

fn compute(op: &str, cx: &mut KernelContext<'_>, distribution: Distribution) -> KernelResult<()> {
    let attributes = cx.attributes();
    let (scale, shift) = distribution.affine(op, &attributes)?;
    let mut rng = generator(op, &attributes)?;
    let out = cx.output(0)?;
    match distribution {
        Distribution::Uniform => fill(out, || rng.uniform(), scale, shift),
        Distribution::Normal => fill(out, || rng.gauss(), scale, shift),
    }
}

/// A generator operator: its distribution, and whether it takes its shape from an input.
macro_rules! random_operator {
    ($(#[$doc:meta])* $name:ident, $distribution:expr, like: $like:expr) => {
        $(#[$doc])*
        pub struct $name;

        impl Operator for $name {
            const OP_TYPE: &'static str = stringify!($name);
            const DRAWS_AT_RANDOM: bool = true;

            fn infer(cx: &InferContext<'_>) -> KernelResult<Vec<OutputType>> {
                infer(Self::OP_TYPE, cx, $distribution, $like)
            }

            fn compute(cx: &mut KernelContext<'_>) -> KernelResult<()> {
                compute(Self::OP_TYPE, cx, $distribution)
            }
        }
    };
}

random_operator!(
    /// Uniform draws of the shape the `shape` attribute gives.
    RandomUniform,
    Distribution::Uniform,
    like: false
);
random_operator!(
    /// Uniform draws of the input's shape.
    RandomUniformLike,
    Distribution::Uniform,
    like: true
);
random_operator!(
    /// Normal draws of the shape the `shape` attribute gives.
    RandomNormal,
    Distribution::Normal,
    like: false
);
random_operator!(
    /// Normal draws of the input's shape.
    RandomNormalLike,
    Distribution::Normal,
    like: true
);

#[cfg(test)]
mod tests {
    use super::*;
    use opal_plugin_api::testing::{
        float_attr, infer_input, infer_operator, int_attr, ints_attr, run_operator, OwnedTensor,
    };

    #[test]
    fn seeded_uniform_draws_are_numpys_scaled_in_the_output_dtype() {
        let attrs = [
            ints_attr("shape", &[3]),
            float_attr("seed", 3.0),
            float_attr("low", -2.0),
            float_attr("high", 2.0),
        ];
        let y = run_operator::<RandomUniform>(&[], &attrs, 1).unwrap();
        // numpy: RandomState(3).rand(3).astype(float32) * 4.0 - 2.0
        assert_eq!(
            y[0].to_vec::<f32>(),
            [0.203_191_52, 0.832_591_3, -0.836_381_1]
        );
        let again = run_operator::<RandomUniform>(&[], &attrs, 1).unwrap();
        assert_eq!(y[0].bytes(), again[0].bytes());
    }

    #[test]
    fn seeded_normal_draws_are_numpys_scaled_and_shifted() {
        let attrs = [
            ints_attr("shape", &[5]),
            float_attr("seed", 42.0),
            int_attr("dtype", 11),
            float_attr("scale", 2.0),
            float_attr("mean", 1.0),
        ];
        let y = run_operator::<RandomNormal>(&[], &attrs, 1).unwrap();
        let y = y[0].to_vec::<f64>();
        // numpy: RandomState(42).randn(5) * 2 + 1
        let numpy = [
            0.496_714_153_011_232_7,
            -0.138_264_301_171_184_66,
            0.647_688_538_100_692_5,
        ];
        for (a, b) in y.iter().zip(numpy) {
            assert!((a - (2.0 * b + 1.0)).abs() < 1e-14, "{y:?}");
        }
    }

    #[test]
    fn like_operators_take_the_input_shape_and_dtype() {
        let x = OwnedTensor::new::<f64>(&[2, 2], &[0.0; 4]);
        let y = run_operator::<RandomUniformLike>(&[x], &[float_attr("seed", 0.0)], 1).unwrap();
        assert_eq!((y[0].dtype(), y[0].shape()), (DType::F64, &[2, 2][..]));
        assert_eq!(y[0].to_vec::<f64>()[0], 0.548_813_503_927_324_8);
        let ints = OwnedTensor::i64(&[3], &[1, 2, 3]);
        let y = run_operator::<RandomNormalLike>(&[ints], &[int_attr("dtype", 10)], 1).unwrap();
        assert_eq!((y[0].dtype(), y[0].shape()), (DType::F16, &[3][..]));
    }

    #[test]
    fn unseeded_draws_differ_between_calls() {
        let shape = [ints_attr("shape", &[64])];
        let first = run_operator::<RandomNormal>(&[], &shape, 1).unwrap();
        let second = run_operator::<RandomNormal>(&[], &shape, 1).unwrap();
        assert_ne!(first[0].bytes(), second[0].bytes());
    }

    #[test]
    fn bad_attributes_are_named() {
        let err = infer_operator::<RandomUniform>(&[], &[], 1).unwrap_err();
        assert!(
            err.contains("required attribute 'shape' is missing"),
            "{err}"
        );
        let err =
            infer_operator::<RandomNormal>(&[], &[ints_attr("shape", &[2, -1])], 1).unwrap_err();
        assert!(err.contains("shape [2, -1] has a negative dim"), "{err}");
        let attrs = [ints_attr("shape", &[2]), int_attr("dtype", 6)];
        let err = infer_operator::<RandomUniform>(&[], &attrs, 1).unwrap_err();
        assert!(
            err.contains("dtype i32 is not one the generator makes"),
            "{err}"
        );
        let ints = [infer_input(DType::I32, &[2])];
        let err = infer_operator::<RandomUniformLike>(&ints, &[], 1).unwrap_err();
        assert!(err.contains("'dtype' attribute must name"), "{err}");
        let attrs = [ints_attr("shape", &[2]), float_attr("seed", -3.0)];
        let err = infer_operator::<RandomNormal>(&[], &attrs, 1).unwrap_err();
        assert!(err.contains("seed -3"), "{err}");
    }
}
