//! What the optimisers share: the learning rate `R` and step count `T` inputs, the variadic
//! groups of tensors that follow them (`IN` tensors per parameter: the parameter, its gradient,
//! its states; `OUT` outputs per parameter: the new parameter and states), their shape and
//! dtype inference, and the elementwise update loop.

use opal_kernel_support::{
    check::{error, Shape},
    float_values::{Floats, Values},
};
use opal_plugin_api::{infer::InferTensor, prelude::*};

/// The learning rate and the number of steps already taken.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Step {
    pub(crate) rate: f64,
    pub(crate) count: i64,
}

/// A float attribute the operator requires.
pub(crate) fn required_float(
    op: &str,
    attributes: &Attributes<'_>,
    name: &str,
) -> KernelResult<f64> {
    if attributes.get(name).is_none() {
        return Err(error(
            op,
            format_args!("the required attribute '{name}' is missing"),
        ));
    }
    optional_float(op, attributes, name, 0.0)
}

/// A float attribute, `default` when absent.
pub(crate) fn optional_float(
    op: &str,
    attributes: &Attributes<'_>,
    name: &str,
    default: f32,
) -> KernelResult<f64> {
    Ok(f64::from(
        attributes.float(name, default).map_err(|e| error(op, e))?,
    ))
}

/// How many parameters a node with `inputs` inputs updates, `per_parameter` tensors each.
fn parameter_count(op: &str, inputs: usize, per_parameter: usize) -> KernelResult<usize> {
    let tensors = inputs.saturating_sub(2);
    if tensors == 0 || !tensors.is_multiple_of(per_parameter) {
        return Err(error(
            op,
            format_args!(
                "the node has {inputs} inputs; it needs R, T, then {per_parameter} tensors per parameter (2 + {per_parameter}·n inputs)"
            ),
        ));
    }
    Ok(tensors / per_parameter)
}

fn check_scalar(
    op: &str,
    name: &str,
    input: &InferTensor<'_>,
    dtypes: &[DType],
) -> KernelResult<()> {
    if !dtypes.contains(&input.dtype) {
        let expected = if dtypes.len() == 1 {
            "i64"
        } else {
            "f32 or f64"
        };
        return Err(error(
            op,
            format_args!("{name} has dtype {}, expected {expected}", input.dtype),
        ));
    }
    if input.shape.iter().any(|&d| d > 1) {
        return Err(error(
            op,
            format_args!("{name} has shape {}, expected a scalar", Shape(input.shape)),
        ));
    }
    Ok(())
}

/// The outputs of an optimiser with `names` tensors per parameter (`names[0]` the parameter)
/// and `outputs` outputs per parameter: each output has its parameter's dtype and shape.
pub(crate) fn infer(
    op: &str,
    cx: &InferContext<'_>,
    names: &[&str],
    outputs: usize,
) -> KernelResult<Vec<OutputType>> {
    check_scalar(op, "R", &cx.input(0)?, &[DType::F32, DType::F64])?;
    check_scalar(op, "T", &cx.input(1)?, &[DType::I64])?;
    let n = parameter_count(op, cx.input_count(), names.len())?;
    if cx.output_count() != outputs * n {
        return Err(error(
            op,
            format_args!(
                "the node updates {n} parameters, so it needs {} outputs, not {}",
                outputs * n,
                cx.output_count()
            ),
        ));
    }
    let mut parameters = Vec::with_capacity(n);
    for i in 0..n {
        let x = cx.input(2 + i)?;
        if !matches!(x.dtype, DType::F32 | DType::F64) {
            return Err(error(
                op,
                format_args!(
                    "{} {} has dtype {}, expected f32 or f64",
                    names[0],
                    i + 1,
                    x.dtype
                ),
            ));
        }
        for (k, name) in names.iter().enumerate().skip(1) {
            let t = cx.input(2 + k * n + i)?;
            let same_shape = t.shape.len() == x.shape.len()
                && t.shape
                    .iter()
                    .zip(x.shape)
                    .all(|(&a, &b)| a == b || a < 0 || b < 0);
            if t.dtype != x.dtype || !same_shape {
                return Err(error(
                    op,
                    format_args!(
                        "{name} {} is {} {}, but its parameter is {} {}: they must match",
                        i + 1,
                        t.dtype,
                        Shape(t.shape),
                        x.dtype,
                        Shape(x.shape)
                    ),
                ));
            }
        }
        parameters.push(OutputType::new(x.dtype, x.shape.to_vec()));
    }
    Ok((0..outputs)
        .flat_map(|_| parameters.iter().cloned())
        .collect())
}

/// Reads `R` and `T`.
fn step(op: &str, cx: &KernelContext<'_>) -> KernelResult<Step> {
    let rate = Floats::new(op, "R", cx.input(0)?)?;
    let count = cx.input(1)?.as_slice::<i64>()?;
    match (rate.is_empty(), count.first()) {
        (false, Some(&count)) => Ok(Step {
            rate: rate.get(0),
            count,
        }),
        _ => Err(error(op, "R and T must each hold one value")),
    }
}

/// Runs `update` on every element of every parameter: it takes the `IN` tensors' values at
/// one element and gives the `OUT` outputs' values there.
pub(crate) fn run<const IN: usize, const OUT: usize>(
    op: &str,
    cx: &mut KernelContext<'_>,
    update: impl Fn(Step, [f64; IN]) -> [f64; OUT],
) -> KernelResult<()> {
    let step = step(op, cx)?;
    let n = parameter_count(op, cx.input_count(), IN)?;
    for i in 0..n {
        let mut inputs = [None; IN];
        for (k, slot) in inputs.iter_mut().enumerate() {
            *slot = Some(Floats::new(
                op,
                "an optimised tensor",
                cx.input(2 + k * n + i)?,
            )?);
        }
        let mut outputs: [Option<Values<'_>>; OUT] = std::array::from_fn(|_| None);
        for (j, slot) in outputs.iter_mut().enumerate() {
            *slot = Some(Values::new(op, cx.output(j * n + i)?)?);
        }
        let len = inputs[0].map_or(0, |x| x.len());
        if inputs.iter().flatten().any(|t| t.len() != len) {
            return Err(error(
                op,
                format_args!("the tensors of parameter {} differ in size", i + 1),
            ));
        }
        for e in 0..len {
            let values = inputs.map(|t| t.map_or(0.0, |t| t.get(e)));
            for (out, value) in outputs.iter_mut().zip(update(step, values)) {
                if let Some(out) = out {
                    out.set(e, value);
                }
            }
        }
    }
    Ok(())
}

/// The inputs of ONNX's single-parameter examples: `R` = 0.1, `T` = `step`, then `X`, `G` and
/// `states` state tensors (`V` = [1.7, 3.6], then `H` = [0.1, 0.1]).
#[cfg(test)]
pub(crate) fn example_inputs(
    step: i64,
    states: usize,
) -> Vec<opal_plugin_api::testing::OwnedTensor> {
    use opal_plugin_api::testing::OwnedTensor;
    let mut inputs = vec![
        OwnedTensor::f32(&[], &[0.1]),
        OwnedTensor::i64(&[], &[step]),
        OwnedTensor::f32(&[2], &[1.2, 2.8]),
        OwnedTensor::f32(&[2], &[-0.94, -2.5]),
    ];
    let state = [[1.7, 3.6], [0.1, 0.1]];
    inputs.extend(state[..states].iter().map(|s| OwnedTensor::f32(&[2], s)));
    inputs
}
