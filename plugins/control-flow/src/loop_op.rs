//! Loop: runs its `body` while a condition holds and a trip count is not reached, carrying
//! values from one iteration to the next and stacking the body's scan outputs.

use crate::{
    carried::{Carried, Stacked},
    types::{declare_kinds, merge_value_types, scalar_bool, scalar_i64},
};
use opal_plugin_api::{
    prelude::*,
    tensor::TensorView,
    value::{ValueSource, ValueType},
};
use smallvec::SmallVec;

/// Where a loop-carried value is between iterations.
enum CarriedValue<'a> {
    /// A tensor, copied into the kernel's scratch.
    Tensor(Carried<'a>),
    /// A sequence or none the node was given, which the host holds.
    Input(usize),
    /// A sequence or none the body gave in the last iteration, which the host holds.
    BodyOutput,
}

pub struct Loop;

impl Operator for Loop {
    const OP_TYPE: &'static str = "Loop";
    /// It carries sequences and optionals between iterations, as the host holds them.
    const READS_VALUE_KINDS: bool = true;

    fn infer(cx: &InferContext<'_>) -> KernelResult<Vec<OutputType>> {
        let carried = cx.input_count().saturating_sub(2);
        if cx.output_count() < carried {
            return Err(KernelError::new(format!(
                "the node has {carried} loop-carried inputs but only {} outputs",
                cx.output_count()
            )));
        }
        if let Some(m) = cx.optional_input(0)? {
            if m.dtype != DType::I64 {
                return Err(KernelError::new(format!(
                    "the trip count M must be int64, got {}",
                    m.dtype
                )));
            }
        }
        if let Some(cond) = cx.optional_input(1)? {
            if cond.dtype != DType::BOOL {
                return Err(KernelError::new(format!(
                    "the condition must be bool, got {}",
                    cond.dtype
                )));
            }
        }
        let initial: Vec<ValueType> = (0..carried)
            .map(|k| initial_type(cx, 2 + k))
            .collect::<KernelResult<_>>()?;
        let mut inputs = vec![
            InferInput::typed(DType::I64, &[]),
            InferInput::typed(DType::BOOL, &[]),
        ];
        inputs.extend(
            initial
                .iter()
                .map(|v| InferInput::typed(v.ty.dtype, &v.ty.shape)),
        );
        let mut kinds = vec![ValueKind::TENSOR; 2];
        kinds.extend(initial.iter().map(|v| v.kind));
        let body = cx.subgraph_value_types("body", &inputs, &kinds)?;
        if body.len() != 1 + cx.output_count() {
            return Err(KernelError::new(format!(
                "the body gives {} outputs; with {} node outputs it must give {} (the condition first)",
                body.len(),
                cx.output_count(),
                1 + cx.output_count()
            )));
        }
        let mut types = Vec::with_capacity(cx.output_count());
        for (k, before) in initial.iter().enumerate() {
            let after = &body[1 + k];
            let mut merged = merge_value_types(&format!("loop-carried value {k}"), before, after)?;
            // What the body makes of the value is what the node gives, unless it never runs.
            if before.kind.is_optional() && !after.kind.is_optional() {
                merged.kind = after.kind;
            }
            types.push(merged);
        }
        for (k, scan) in body[1 + carried..].iter().enumerate() {
            if scan.kind != ValueKind::TENSOR {
                return Err(KernelError::new(format!(
                    "scan output {k} of the body is {}; scan outputs are stacked tensors",
                    scan.kind.described()
                )));
            }
            let mut shape = vec![-1];
            shape.extend_from_slice(&scan.ty.shape);
            types.push(ValueType {
                kind: ValueKind::TENSOR,
                ty: OutputType::new(scan.ty.dtype, shape),
            });
        }
        declare_kinds(cx, types)
    }

    fn compute(cx: &mut KernelContext<'_>) -> KernelResult<()> {
        let trip_count = cx
            .optional_input(0)
            .map(|m| scalar_i64("the trip count M", m))
            .transpose()?;
        let mut cond = cx
            .optional_input(1)
            .map(|c| scalar_bool("the condition", c))
            .transpose()?
            .unwrap_or(true);
        let carried_count = cx.input_count().saturating_sub(2);
        let scan_count = cx.output_count().saturating_sub(carried_count);
        let mut carried: SmallVec<[CarriedValue<'_>; 8]> = SmallVec::new();
        for k in 0..carried_count {
            carried.push(match cx.value(2 + k)? {
                Value::Tensor(t) => CarriedValue::Tensor(Carried::new(cx, t)?),
                _ => CarriedValue::Input(2 + k),
            });
        }
        let mut stacked: SmallVec<[Stacked<'_>; 4]> =
            (0..scan_count).map(|_| Stacked::new()).collect();
        let mut iteration: i64 = 0;
        while cond && trip_count.is_none_or(|m| iteration < m) {
            let iteration_bytes = iteration.to_ne_bytes();
            let cond_bytes = [1u8];
            let given = run_body(cx, &iteration_bytes, &cond_bytes, &carried)?;
            if given != 1 + carried_count + scan_count {
                return Err(KernelError::new(format!(
                    "the body gives {given} outputs; it must give {} (the condition, {carried_count} loop-carried values, {scan_count} scan outputs)",
                    1 + carried_count + scan_count
                )));
            }
            cond = scalar_bool("the body's condition", cx.subgraph_output("body", 0)?)?;
            for (k, value) in carried.iter_mut().enumerate() {
                let Ok(output) = cx.subgraph_output("body", 1 + k) else {
                    *value = CarriedValue::BodyOutput;
                    continue;
                };
                match value {
                    CarriedValue::Tensor(held) => held.set(cx, output)?,
                    _ => *value = CarriedValue::Tensor(Carried::new(cx, output)?),
                }
            }
            for (k, values) in stacked.iter_mut().enumerate() {
                values.push(cx, cx.subgraph_output("body", 1 + carried_count + k)?)?;
            }
            iteration += 1;
        }
        for (k, value) in carried.iter().enumerate() {
            match value {
                CarriedValue::Tensor(held) => held.write_to(cx.shaped_output(k, held.shape())?)?,
                CarriedValue::Input(i) => cx.forward(k, ValueSource::input(*i))?,
                CarriedValue::BodyOutput => {
                    cx.forward(k, ValueSource::subgraph_output("body", 1 + k))?
                }
            }
        }
        for (k, values) in stacked.iter().enumerate() {
            values.write_to(cx.shaped_output(carried_count + k, &values.shape())?)?;
        }
        Ok(())
    }
}

/// The kind and type of the node's input `index`, a loop-carried value's first.
fn initial_type(cx: &InferContext<'_>, index: usize) -> KernelResult<ValueType> {
    let kind = cx.input_kind(index);
    let value = if kind.holds_sequence() {
        Some(cx.sequence_input(index)?)
    } else if kind.is_optional() {
        cx.optional_input(index)?
    } else {
        Some(cx.input(index)?)
    };
    let ty = value.map_or(OutputType::new(DType::UNDEFINED, Vec::new()), |v| {
        OutputType::new(v.dtype, v.shape.to_vec())
    });
    Ok(ValueType { kind, ty })
}

/// Runs the body once on the iteration number, the condition and the carried values: as
/// tensor views while every carried value is a tensor, else through the host, which holds the
/// sequences and optionals.
fn run_body(
    cx: &mut KernelContext<'_>,
    iteration: &[u8; 8],
    cond: &[u8; 1],
    carried: &[CarriedValue<'_>],
) -> KernelResult<usize> {
    let iteration = TensorView::new(DType::I64, &[], iteration);
    let cond = TensorView::new(DType::BOOL, &[], cond);
    let all_tensors = carried.iter().all(|c| matches!(c, CarriedValue::Tensor(_)));
    if all_tensors {
        let mut inputs: SmallVec<[TensorView<'_>; 10]> = SmallVec::new();
        inputs.extend([iteration, cond]);
        inputs.extend(carried.iter().filter_map(|c| match c {
            CarriedValue::Tensor(held) => Some(held.view()),
            _ => None,
        }));
        return cx.run_subgraph("body", &inputs);
    }
    let mut inputs: SmallVec<[ValueSource<'_>; 10]> = SmallVec::new();
    inputs.extend([ValueSource::tensor(iteration), ValueSource::tensor(cond)]);
    inputs.extend(carried.iter().enumerate().map(|(k, c)| match c {
        CarriedValue::Tensor(held) => ValueSource::tensor(held.view()),
        CarriedValue::Input(i) => ValueSource::input(*i),
        CarriedValue::BodyOutput => ValueSource::subgraph_output("body", 1 + k),
    }));
    cx.run_subgraph_values("body", &inputs)
}
