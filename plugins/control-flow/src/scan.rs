//! Scan (opset 9 and later): runs its `body` once per slice of its scan inputs along their
//! axes, carrying state values between iterations and stacking the body's scan outputs along
//! their axes, either way round.

use crate::{carried::Carried, types::merge_types};
use opal_plugin_api::{prelude::*, tensor::TensorView};
use smallvec::SmallVec;

pub struct Scan;

/// The node's attributes, checked against its inputs.
struct ScanAttributes<'a> {
    states: usize,
    scan_inputs: usize,
    input_axes: Option<&'a [i64]>,
    input_directions: Option<&'a [i64]>,
    output_axes: Option<&'a [i64]>,
    output_directions: Option<&'a [i64]>,
}

impl<'a> ScanAttributes<'a> {
    fn read(attributes: Attributes<'a>, inputs: usize) -> KernelResult<Self> {
        let scan_inputs = attributes.int("num_scan_inputs", -1)?;
        let scan_inputs = usize::try_from(scan_inputs)
            .ok()
            .filter(|&m| m >= 1 && m <= inputs)
            .ok_or_else(|| {
                KernelError::new(format!(
                    "attribute 'num_scan_inputs' must be between 1 and the node's {inputs} inputs, got {scan_inputs}"
                ))
            })?;
        let read = ScanAttributes {
            states: inputs - scan_inputs,
            scan_inputs,
            input_axes: attributes.ints("scan_input_axes")?,
            input_directions: attributes.ints("scan_input_directions")?,
            output_axes: attributes.ints("scan_output_axes")?,
            output_directions: attributes.ints("scan_output_directions")?,
        };
        for (name, list) in [
            ("scan_input_axes", read.input_axes),
            ("scan_input_directions", read.input_directions),
        ] {
            if list.is_some_and(|l| l.len() != scan_inputs) {
                return Err(KernelError::new(format!(
                    "attribute '{name}' must have one entry per scan input ({scan_inputs})"
                )));
            }
        }
        Ok(read)
    }

    /// The axis scan input `k` is sliced along, for an input of `rank` dims.
    fn input_axis(&self, k: usize, rank: usize) -> KernelResult<usize> {
        axis(self.input_axes, k, rank, "scan_input_axes")
    }

    /// The axis scan output `k` is stacked along, for an output of `rank` dims.
    fn output_axis(&self, k: usize, rank: usize) -> KernelResult<usize> {
        axis(self.output_axes, k, rank, "scan_output_axes")
    }

    fn input_reversed(&self, k: usize) -> bool {
        self.input_directions
            .and_then(|d| d.get(k))
            .is_some_and(|&d| d == 1)
    }

    fn output_reversed(&self, k: usize) -> bool {
        self.output_directions
            .and_then(|d| d.get(k))
            .is_some_and(|&d| d == 1)
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
        let mut slices: Vec<Vec<i64>> = Vec::new();
        let mut length: Option<i64> = None;
        for k in 0..scan.scan_inputs {
            let input = cx.input(scan.states + k)?;
            let axis = scan.input_axis(k, input.shape.len())?;
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
        let states: Vec<_> = (0..scan.states)
            .map(|k| cx.input(k))
            .collect::<KernelResult<_>>()?;
        let mut inputs: Vec<InferInput<'_>> = states
            .iter()
            .map(|s| InferInput::typed(s.dtype, s.shape))
            .collect();
        for (k, slice) in slices.iter().enumerate() {
            inputs.push(InferInput::typed(cx.input(scan.states + k)?.dtype, slice));
        }
        let body = cx.subgraph_types("body", &inputs)?;
        if body.len() != cx.output_count() || body.len() < scan.states {
            return Err(KernelError::new(format!(
                "the body gives {} outputs; the node has {} and {} state values",
                body.len(),
                cx.output_count(),
                scan.states
            )));
        }
        let mut types = Vec::with_capacity(body.len());
        for (k, state) in states.iter().enumerate() {
            let before = OutputType::new(state.dtype, state.shape.to_vec());
            types.push(merge_types(&format!("state value {k}"), &before, &body[k])?);
        }
        for (k, out) in body[scan.states..].iter().enumerate() {
            let axis = scan.output_axis(k, out.shape.len() + 1)?;
            let mut shape = out.shape.to_vec();
            shape.insert(axis, length);
            types.push(OutputType::new(out.dtype, shape));
        }
        Ok(types)
    }

    fn compute(cx: &mut KernelContext<'_>) -> KernelResult<()> {
        let scan = ScanAttributes::read(cx.attributes(), cx.input_count())?;
        let mut states: SmallVec<[Carried<'_>; 8]> = SmallVec::new();
        for k in 0..scan.states {
            states.push(Carried::new(cx, cx.input(k)?)?);
        }
        let mut slicers: SmallVec<[Slicer<'_>; 4]> = SmallVec::new();
        for k in 0..scan.scan_inputs {
            let input = cx.input(scan.states + k)?;
            let axis = scan.input_axis(k, input.shape().len())?;
            slicers.push(Slicer::new(cx, input, axis, scan.input_reversed(k))?);
        }
        let length = slicers[0].length();
        if let Some(k) = slicers.iter().position(|s| s.length() != length) {
            return Err(KernelError::new(format!(
                "scan input {k} has {} slices along its axis, scan input 0 has {length}",
                slicers[k].length()
            )));
        }
        let outputs = cx.output_count().saturating_sub(scan.states);
        let mut stacks: SmallVec<[Option<Stacker<'_>>; 4]> = (0..outputs).map(|_| None).collect();
        for t in 0..length {
            for slicer in &mut slicers {
                slicer.cut(t);
            }
            let mut inputs: SmallVec<[TensorView<'_>; 10]> = SmallVec::new();
            inputs.extend(states.iter().map(Carried::view));
            inputs.extend(slicers.iter().map(Slicer::view));
            let given = cx.run_subgraph("body", &inputs)?;
            drop(inputs);
            if given != scan.states + outputs {
                return Err(KernelError::new(format!(
                    "the body gives {given} outputs; it must give {} ({} state values, {outputs} scan outputs)",
                    scan.states + outputs,
                    scan.states
                )));
            }
            for (k, state) in states.iter_mut().enumerate() {
                state.set(cx, cx.subgraph_output("body", k)?)?;
            }
            for (k, stack) in stacks.iter_mut().enumerate() {
                let value = cx.subgraph_output("body", scan.states + k)?;
                if stack.is_none() {
                    let axis = scan.output_axis(k, value.shape().len() + 1)?;
                    let mut shape: SmallVec<[usize; 7]> = SmallVec::from_slice(value.shape());
                    shape.insert(axis, length);
                    let output = cx.shaped_output(scan.states + k, &shape)?;
                    *stack = Some(Stacker::new(output, axis, scan.output_reversed(k))?);
                }
                if let Some(stack) = stack {
                    stack.put(t, value)?;
                }
            }
        }
        for (k, state) in states.iter().enumerate() {
            state.write_to(cx.shaped_output(k, state.shape())?)?;
        }
        if length == 0 {
            for k in 0..outputs {
                if cx.is_unshaped(scan.states + k) {
                    cx.shaped_output(scan.states + k, &[0])?;
                }
            }
        }
        Ok(())
    }
}

/// Cuts slice `t` of a scan input along its axis into a buffer the body reads.
struct Slicer<'a> {
    input: TensorRef<'a>,
    axis: usize,
    reversed: bool,
    /// Bytes of one slice's contiguous run: the dims after the axis.
    run: usize,
    shape: SmallVec<[usize; 6]>,
    buffer: &'a mut [u8],
}

impl<'a> Slicer<'a> {
    fn new(
        cx: &KernelContext<'a>,
        input: TensorRef<'a>,
        axis: usize,
        reversed: bool,
    ) -> KernelResult<Self> {
        let dims = input.shape();
        let element = input.dtype().size().unwrap_or(1);
        let run = dims[axis + 1..].iter().product::<usize>() * element;
        let outer: usize = dims[..axis].iter().product();
        let mut shape = SmallVec::from_slice(dims);
        shape.remove(axis);
        Ok(Slicer {
            input,
            axis,
            reversed,
            run,
            shape,
            buffer: cx.scratch_unzeroed::<u8>(outer * run)?,
        })
    }

    fn length(&self) -> usize {
        self.input.shape()[self.axis]
    }

    /// Copies slice `t` (counted from the end when reversed) into the buffer.
    fn cut(&mut self, t: usize) {
        let length = self.length();
        let index = if self.reversed { length - 1 - t } else { t };
        let bytes = self.input.bytes();
        for (o, chunk) in self.buffer.chunks_exact_mut(self.run.max(1)).enumerate() {
            let start = (o * length + index) * self.run;
            chunk.copy_from_slice(&bytes[start..start + self.run]);
        }
    }

    fn view(&self) -> TensorView<'_> {
        TensorView::new(self.input.dtype(), &self.shape, self.buffer)
    }
}

/// Writes each iteration's value of a scan output at its place along the output's axis.
struct Stacker<'a> {
    data: &'a mut [u8],
    dtype: DType,
    length: usize,
    reversed: bool,
    /// Bytes of one iteration's contiguous run: the dims after the axis.
    run: usize,
    slice_shape: SmallVec<[usize; 6]>,
}

impl<'a> Stacker<'a> {
    fn new(output: TensorMut<'a>, axis: usize, reversed: bool) -> KernelResult<Self> {
        let dims = output.shape();
        let dtype = output.dtype();
        let element = dtype.size().unwrap_or(1);
        let mut slice_shape = SmallVec::from_slice(dims);
        let length = slice_shape.remove(axis);
        Ok(Stacker {
            run: dims[axis + 1..].iter().product::<usize>() * element,
            data: output.bytes_mut(),
            dtype,
            length,
            reversed,
            slice_shape,
        })
    }

    /// Writes iteration `t`'s value.
    fn put(&mut self, t: usize, value: TensorRef<'_>) -> KernelResult<()> {
        if value.dtype() != self.dtype || value.shape() != self.slice_shape.as_slice() {
            return Err(KernelError::new(format!(
                "a scan output is {} {:?} in iteration {t} but {} {:?} before; every iteration must give one shape",
                value.dtype(),
                value.shape(),
                self.dtype,
                self.slice_shape.as_slice()
            )));
        }
        let index = if self.reversed {
            self.length - 1 - t
        } else {
            t
        };
        let bytes = value.bytes();
        if self.run == 0 {
            return Ok(());
        }
        for (o, chunk) in bytes.chunks_exact(self.run).enumerate() {
            let start = (o * self.length + index) * self.run;
            self.data[start..start + self.run].copy_from_slice(chunk);
        }
        Ok(())
    }
}
