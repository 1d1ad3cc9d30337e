//! Scan (opset 9 and later): runs its `body` once per slice of its scan inputs along their
//! axes, carrying state values between iterations and stacking the body's scan outputs along
//! their axes, either way round. What a scan's attributes say and how its outputs are typed
//! are shared with opset 8's [`ScanV8`](crate::scan_v8::ScanV8).

use crate::{
    scan_pass::{Pass, Stacker},
    types::merge_types,
};
use opal_plugin_api::prelude::*;
use smallvec::SmallVec;

pub struct Scan;

/// The node's attributes, checked against its inputs.
pub(crate) struct ScanAttributes<'a> {
    pub(crate) states: usize,
    pub(crate) scan_inputs: usize,
    input_axes: Option<&'a [i64]>,
    input_directions: Option<&'a [i64]>,
    output_axes: Option<&'a [i64]>,
    output_directions: Option<&'a [i64]>,
}

impl<'a> ScanAttributes<'a> {
    /// The attributes from opset 9, for a node of `inputs` state values and scan inputs.
    fn read(attributes: Attributes<'a>, inputs: usize) -> KernelResult<Self> {
        let mut read = Self::counts(attributes, inputs)?;
        read.input_axes = attributes.ints("scan_input_axes")?;
        read.input_directions = attributes.ints("scan_input_directions")?;
        read.output_axes = attributes.ints("scan_output_axes")?;
        read.output_directions = attributes.ints("scan_output_directions")?;
        read.check_list("scan_input_axes", read.input_axes)?;
        read.check_list("scan_input_directions", read.input_directions)?;
        Ok(read)
    }

    /// The attributes of opset 8, whose only list is the scan inputs' `directions`; every
    /// axis is 0 within a batch entry.
    pub(crate) fn read_v8(attributes: Attributes<'a>, inputs: usize) -> KernelResult<Self> {
        let mut read = Self::counts(attributes, inputs)?;
        read.input_directions = attributes.ints("directions")?;
        read.check_list("directions", read.input_directions)?;
        Ok(read)
    }

    /// `num_scan_inputs` and the number of state values it leaves of `inputs`.
    fn counts(attributes: Attributes<'a>, inputs: usize) -> KernelResult<Self> {
        let scan_inputs = attributes.int("num_scan_inputs", -1)?;
        let scan_inputs = usize::try_from(scan_inputs)
            .ok()
            .filter(|&m| m >= 1 && m <= inputs)
            .ok_or_else(|| {
                KernelError::new(format!(
                    "attribute 'num_scan_inputs' must be between 1 and the node's {inputs} state values and scan inputs, got {scan_inputs}"
                ))
            })?;
        Ok(ScanAttributes {
            states: inputs - scan_inputs,
            scan_inputs,
            input_axes: None,
            input_directions: None,
            output_axes: None,
            output_directions: None,
        })
    }

    /// Fails unless per-scan-input list `name` has one entry per scan input.
    fn check_list(&self, name: &str, list: Option<&[i64]>) -> KernelResult<()> {
        if list.is_some_and(|l| l.len() != self.scan_inputs) {
            return Err(KernelError::new(format!(
                "attribute '{name}' must have one entry per scan input ({})",
                self.scan_inputs
            )));
        }
        Ok(())
    }

    /// The axis scan input `k` is sliced along, for an input of `rank` dims.
    fn input_axis(&self, k: usize, rank: usize) -> KernelResult<usize> {
        axis(self.input_axes, k, rank, "scan_input_axes")
    }

    /// The axis scan output `k` is stacked along, for an output of `rank` dims.
    fn output_axis(&self, k: usize, rank: usize) -> KernelResult<usize> {
        axis(self.output_axes, k, rank, "scan_output_axes")
    }

    fn output_reversed(&self, k: usize) -> bool {
        self.output_directions
            .and_then(|d| d.get(k))
            .is_some_and(|&d| d == 1)
    }

    /// The axis and direction of each scan input, whose shapes are `shapes`.
    pub(crate) fn cuts<'s>(
        &self,
        shapes: impl Iterator<Item = &'s [usize]>,
    ) -> KernelResult<SmallVec<[(usize, bool); 4]>> {
        shapes
            .enumerate()
            .map(|(k, shape)| {
                let reversed = self
                    .input_directions
                    .and_then(|d| d.get(k))
                    .is_some_and(|&d| d == 1);
                Ok((self.input_axis(k, shape.len())?, reversed))
            })
            .collect()
    }

    /// The output types of a scan whose state values and scan inputs have the types
    /// `states` and `scan_inputs` (a dim of -1 is unknown), typing the body through the host.
    pub(crate) fn output_types(
        &self,
        cx: &InferContext<'_>,
        states: &[OutputType],
        scan_inputs: &[OutputType],
    ) -> KernelResult<Vec<OutputType>> {
        let mut slices: Vec<Vec<i64>> = Vec::new();
        let mut length: Option<i64> = None;
        for (k, input) in scan_inputs.iter().enumerate() {
            let axis = self.input_axis(k, input.shape.len())?;
            let mut slice = input.shape.to_vec();
            let len = slice.remove(axis);
            match length {
                Some(l) if l >= 0 && len >= 0 && l != len => {
                    return Err(KernelError::new(format!(
                        "scan input {k} has {len} slices along its axis, scan input 0 has {l}"
                    )))
                }
                Some(l) if l >= 0 => {}
                _ => length = Some(len),
            }
            slices.push(slice);
        }
        let length = length.unwrap_or(-1);
        let mut inputs: Vec<InferInput<'_>> = states
            .iter()
            .map(|s| InferInput::typed(s.dtype, &s.shape))
            .collect();
        for (input, slice) in scan_inputs.iter().zip(&slices) {
            inputs.push(InferInput::typed(input.dtype, slice));
        }
        let body = cx.subgraph_types("body", &inputs)?;
        if body.len() != cx.output_count() || body.len() < self.states {
            return Err(KernelError::new(format!(
                "the body gives {} outputs; the node has {} and {} state values",
                body.len(),
                cx.output_count(),
                self.states
            )));
        }
        let mut types = Vec::with_capacity(body.len());
        for (k, state) in states.iter().enumerate() {
            types.push(merge_types(&format!("state value {k}"), state, &body[k])?);
        }
        for (k, out) in body[self.states..].iter().enumerate() {
            let axis = self.output_axis(k, out.shape.len() + 1)?;
            let mut shape = out.shape.to_vec();
            shape.insert(axis, length);
            types.push(OutputType::new(out.dtype, shape));
        }
        Ok(types)
    }
}

/// Entry `k` of an axes attribute (0 when absent), in `0..rank`.
fn axis(axes: Option<&[i64]>, k: usize, rank: usize, name: &str) -> KernelResult<usize> {
    let value = axes.and_then(|a| a.get(k)).copied().unwrap_or(0);
    let resolved = if value < 0 {
        value + rank as i64
    } else {
        value
    };
    usize::try_from(resolved)
        .ok()
        .filter(|&a| a < rank)
        .ok_or_else(|| {
            KernelError::new(format!(
                "attribute '{name}' entry {k} is {value}, outside a tensor of {rank} dims"
            ))
        })
}

impl Operator for Scan {
    const OP_TYPE: &'static str = "Scan";
    const SINCE_VERSION: i64 = 9;

    fn infer(cx: &InferContext<'_>) -> KernelResult<Vec<OutputType>> {
        let scan = ScanAttributes::read(cx.attributes(), cx.input_count())?;
        let types = (0..cx.input_count())
            .map(|k| {
                cx.input(k)
                    .map(|t| OutputType::new(t.dtype, t.shape.to_vec()))
            })
            .collect::<KernelResult<Vec<_>>>()?;
        let (states, scan_inputs) = types.split_at(scan.states);
        scan.output_types(cx, states, scan_inputs)
    }

    fn compute(cx: &mut KernelContext<'_>) -> KernelResult<()> {
        compute(cx)
    }
}

fn compute<'a>(cx: &mut KernelContext<'a>) -> KernelResult<()> {
    let scan = ScanAttributes::read(cx.attributes(), cx.input_count())?;
    let inputs = (0..cx.input_count())
        .map(|k| cx.input(k))
        .collect::<KernelResult<SmallVec<[TensorRef<'a>; 12]>>>()?;
    let (states, scan_inputs) = inputs.split_at(scan.states);
    let cuts = scan.cuts(scan_inputs.iter().map(TensorRef::shape))?;
    let outputs = cx.output_count().saturating_sub(scan.states);
    let mut pass = Pass::new(cx, states, scan_inputs, &cuts, outputs)?;
    let length = pass.length()?;
    pass.run(cx, length, &mut |cx, k, value_shape| {
        let axis = scan.output_axis(k, value_shape.len() + 1)?;
        let mut shape: SmallVec<[usize; 7]> = SmallVec::from_slice(value_shape);
        shape.insert(axis, length);
        let output = cx.shaped_output(scan.states + k, &shape)?;
        Ok(Stacker::whole(output, axis, scan.output_reversed(k)))
    })?;
    for (k, state) in pass.states().iter().enumerate() {
        state.write_to(cx.shaped_output(k, state.shape())?)?;
    }
    for k in 0..outputs {
        if !pass.is_stacking(k) && cx.is_unshaped(scan.states + k) {
            cx.shaped_output(scan.states + k, &[0])?;
        }
    }
    Ok(())
}
