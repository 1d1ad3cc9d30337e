//! Loop: runs its `body` while a condition holds and a trip count is not reached, carrying
//! values from one iteration to the next and stacking the body's scan outputs.

use crate::{
    carried::{Carried, Stacked},
    types::{merge_types, scalar_bool, scalar_i64},
};
use opal_plugin_api::{prelude::*, tensor::TensorView};
use smallvec::SmallVec;

pub struct Loop;

impl Operator for Loop {
    const OP_TYPE: &'static str = "Loop";

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
        let initial: Vec<_> = (0..carried)
            .map(|k| cx.input(2 + k))
            .collect::<KernelResult<_>>()?;
        let mut inputs = vec![
            InferInput::typed(DType::I64, &[]),
            InferInput::typed(DType::BOOL, &[]),
        ];
        inputs.extend(initial.iter().map(|v| InferInput::typed(v.dtype, v.shape)));
        let body = cx.subgraph_types("body", &inputs)?;
        if body.len() != 1 + cx.output_count() {
            return Err(KernelError::new(format!(
                "the body gives {} outputs; with {} node outputs it must give {} (the condition first)",
                body.len(),
                cx.output_count(),
                1 + cx.output_count()
            )));
        }
        let mut types = Vec::with_capacity(cx.output_count());
        for (k, value) in initial.iter().enumerate() {
            let before = OutputType::new(value.dtype, value.shape.to_vec());
            types.push(merge_types(
                &format!("loop-carried value {k}"),
                &before,
                &body[1 + k],
            )?);
        }
        for scan in &body[1 + carried..] {
            let mut shape = vec![-1];
            shape.extend_from_slice(&scan.shape);
            types.push(OutputType::new(scan.dtype, shape));
        }
        Ok(types)
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
        let mut carried: SmallVec<[Carried<'_>; 8]> = SmallVec::new();
        for k in 0..carried_count {
            carried.push(Carried::new(cx, cx.input(2 + k)?)?);
        }
        let mut stacked: SmallVec<[Stacked<'_>; 4]> =
            (0..scan_count).map(|_| Stacked::new()).collect();
        let mut iteration: i64 = 0;
        while cond && trip_count.is_none_or(|m| iteration < m) {
            let iteration_bytes = iteration.to_ne_bytes();
            let cond_bytes = [1u8];
            let mut inputs: SmallVec<[TensorView<'_>; 10]> = SmallVec::new();
            inputs.push(TensorView::new(DType::I64, &[], &iteration_bytes));
            inputs.push(TensorView::new(DType::BOOL, &[], &cond_bytes));
            inputs.extend(carried.iter().map(Carried::view));
            let given = cx.run_subgraph("body", &inputs)?;
            drop(inputs);
            if given != 1 + carried_count + scan_count {
                return Err(KernelError::new(format!(
                    "the body gives {given} outputs; it must give {} (the condition, {carried_count} loop-carried values, {scan_count} scan outputs)",
                    1 + carried_count + scan_count
                )));
            }
            cond = scalar_bool("the body's condition", cx.subgraph_output("body", 0)?)?;
            for (k, value) in carried.iter_mut().enumerate() {
                value.set(cx, cx.subgraph_output("body", 1 + k)?)?;
            }
            for (k, values) in stacked.iter_mut().enumerate() {
                values.push(cx, cx.subgraph_output("body", 1 + carried_count + k)?)?;
            }
            iteration += 1;
        }
        for (k, value) in carried.iter().enumerate() {
            value.write_to(cx.shaped_output(k, value.shape())?)?;
        }
        for (k, values) in stacked.iter().enumerate() {
            values.write_to(cx.shaped_output(carried_count + k, &values.shape())?)?;
        }
        Ok(())
    }
}
