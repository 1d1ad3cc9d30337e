//! Scan at opset 8: batched. Input 0 is the optional `sequence_lens` (one length per batch
//! entry), then the state values and scan inputs, each with the batch axis 0; the scan
//! inputs' sequence axis is 1. Each batch entry is scanned on its own for its length with the
//! machinery of later opsets ([`Pass`]); the scan outputs are padded with zeros past it.

use crate::{
    scan::ScanAttributes,
    scan_pass::{Pass, Stacker},
};
use opal_plugin_api::{prelude::*, tensor::TensorView};
use smallvec::SmallVec;

/// ONNX `Scan`, opset 8.
pub struct ScanV8;

impl Operator for ScanV8 {
    const OP_TYPE: &'static str = "Scan";
    const SINCE_VERSION: i64 = 8;
    const UNTIL_VERSION: i64 = 8;

    fn infer(cx: &InferContext<'_>) -> KernelResult<Vec<OutputType>> {
        let count = cx.input_count().saturating_sub(1);
        let scan = ScanAttributes::read_v8(cx.attributes(), count)?;
        let mut batch = -1;
        if let Some(lens) = cx.optional_input(0)? {
            if lens.dtype != DType::I64 || lens.shape.len() != 1 {
                return Err(KernelError::new(format!(
                    "sequence_lens must be a 1-D int64 tensor of one length per batch entry, got {} of shape {:?}",
                    lens.dtype, lens.shape
                )));
            }
            batch = lens.shape[0];
        }
        // Each value as a batch entry sees it: without its batch axis.
        let mut entries = Vec::with_capacity(count);
        for k in 0..count {
            let value = cx.input(1 + k)?;
            let least = if k < scan.states { 1 } else { 2 };
            if value.shape.len() < least {
                return Err(KernelError::new(format!(
                    "input {} has shape {:?}; {} needs a batch axis{}",
                    1 + k,
                    value.shape,
                    if k < scan.states {
                        "a state value"
                    } else {
                        "a scan input"
                    },
                    if k < scan.states {
                        ""
                    } else {
                        " and a sequence axis"
                    }
                )));
            }
            let b = value.shape[0];
            if batch >= 0 && b >= 0 && b != batch {
                return Err(KernelError::new(format!(
                    "input {} has a batch of {b}, where the inputs before it have {batch}",
                    1 + k
                )));
            }
            if b >= 0 {
                batch = b;
            }
            entries.push(OutputType::new(value.dtype, value.shape[1..].to_vec()));
        }
        let (states, scan_inputs) = entries.split_at(scan.states);
        let types = scan.output_types(cx, states, scan_inputs)?;
        Ok(types
            .into_iter()
            .map(|t| {
                let mut shape = vec![batch];
                shape.extend_from_slice(&t.shape);
                OutputType::new(t.dtype, shape)
            })
            .collect())
    }

    fn compute(cx: &mut KernelContext<'_>) -> KernelResult<()> {
        compute(cx)
    }
}

fn compute<'a>(cx: &mut KernelContext<'a>) -> KernelResult<()> {
    let count = cx.input_count().saturating_sub(1);
    let scan = ScanAttributes::read_v8(cx.attributes(), count)?;
    let inputs = (0..count)
        .map(|k| cx.input(1 + k))
        .collect::<KernelResult<SmallVec<[TensorRef<'a>; 12]>>>()?;
    let batch = batch_size(&inputs, scan.states)?;
    let lens = cx
        .optional_input(0)
        .map(|l| l.as_slice::<i64>())
        .transpose()?;
    let entry = |b: usize| -> SmallVec<[TensorRef<'a>; 12]> {
        inputs.iter().map(|&t| batch_entry(t, batch, b)).collect()
    };
    let first = entry(0);
    let (states, scan_inputs) = first.split_at(scan.states);
    let cuts = scan.cuts(scan_inputs.iter().map(TensorRef::shape))?;
    let outputs = cx.output_count().saturating_sub(scan.states);
    let mut pass = Pass::new(cx, states, scan_inputs, &cuts, outputs)?;
    let max_len = pass.length()?;
    let lengths = sequence_lengths(lens, batch, max_len)?;
    let mut final_states: SmallVec<[Option<&'a mut [u8]>; 8]> =
        (0..scan.states).map(|_| None).collect();
    for b in 0..batch {
        if b > 0 {
            let values = entry(b);
            let (states, scan_inputs) = values.split_at(scan.states);
            pass.restart(cx, states, scan_inputs, b)?;
        }
        pass.run(cx, lengths.get(b), &mut |cx, k, value_shape| {
            let mut shape: SmallVec<[usize; 8]> = SmallVec::from_slice(&[batch, max_len]);
            shape.extend_from_slice(value_shape);
            let output = cx.shaped_output(scan.states + k, &shape)?;
            let dtype = output.dtype();
            // Zero the padding past each sequence (and the entries before this one).
            let data = output.bytes_mut();
            data.fill(0);
            Ok(Stacker::new(data, dtype, batch, &shape[1..], 0, false).at_entry(b))
        })?;
        for (k, (state, slot)) in pass.states().iter().zip(&mut final_states).enumerate() {
            let view = state.view();
            let out = match slot {
                Some(out) => out,
                None => {
                    let mut shape: SmallVec<[usize; 7]> = SmallVec::from_slice(&[batch]);
                    shape.extend_from_slice(state.shape());
                    slot.insert(cx.shaped_output(k, &shape)?.bytes_mut())
                }
            };
            let bytes = view.data.as_slice();
            let size = out.len() / batch;
            if bytes.len() != size {
                return Err(KernelError::new(format!(
                    "state value {k} has shape {:?} after batch entry {b}, unlike the entries before it",
                    state.shape()
                )));
            }
            out[b * size..(b + 1) * size].copy_from_slice(bytes);
        }
    }
    // With no batch entry, the outputs are empty.
    for (k, slot) in final_states.iter().enumerate() {
        if slot.is_none() && cx.is_unshaped(k) {
            cx.shaped_output(k, inputs[k].shape())?;
        }
    }
    for k in 0..outputs {
        if !pass.is_stacking(k) && cx.is_unshaped(scan.states + k) {
            if batch * max_len > 0 {
                return Err(KernelError::new(format!(
                    "every sequence is empty, so the shape of scan output {k} is unknown: give the body's outputs shapes"
                )));
            }
            cx.shaped_output(scan.states + k, &[batch, max_len])?;
        }
    }
    Ok(())
}

/// The batch size the inputs (`states` state values, then the scan inputs) share along
/// their axis 0; the scan inputs also need their sequence axis 1.
fn batch_size(inputs: &[TensorRef<'_>], states: usize) -> KernelResult<usize> {
    let batch = inputs[0].shape().first().copied().unwrap_or(0);
    for (k, input) in inputs.iter().enumerate() {
        let least = if k < states { 1 } else { 2 };
        if input.shape().len() < least || input.shape()[0] != batch {
            return Err(KernelError::new(format!(
                "input {} has shape {:?}; the state values need the batch axis 0 and the scan inputs also the sequence axis 1, all of one batch ({batch})",
                1 + k,
                input.shape()
            )));
        }
    }
    Ok(batch)
}

/// Entry `b` of `batch` of `tensor` along its axis 0.
fn batch_entry(tensor: TensorRef<'_>, batch: usize, b: usize) -> TensorRef<'_> {
    let size = tensor.bytes().len() / batch.max(1);
    TensorRef::new(TensorView::new(
        tensor.dtype(),
        &tensor.shape()[1..],
        &tensor.bytes()[b * size..(b + 1) * size],
    ))
}

/// How many iterations each batch entry runs.
enum Lengths<'a> {
    All(usize),
    Each(&'a [i64]),
}

impl Lengths<'_> {
    fn get(&self, b: usize) -> usize {
        match self {
            Lengths::All(n) => *n,
            Lengths::Each(lens) => lens[b] as usize,
        }
    }
}

/// The lengths `sequence_lens` gives (each in `0..=max_len`, one per batch entry), or
/// `max_len` for every entry when it is absent.
fn sequence_lengths(
    lens: Option<&[i64]>,
    batch: usize,
    max_len: usize,
) -> KernelResult<Lengths<'_>> {
    let Some(lens) = lens else {
        return Ok(Lengths::All(max_len));
    };
    if lens.len() != batch {
        return Err(KernelError::new(format!(
            "sequence_lens has {} lengths for a batch of {batch}",
            lens.len()
        )));
    }
    if let Some(b) = lens
        .iter()
        .position(|&n| n < 0 || n as u64 > max_len as u64)
    {
        return Err(KernelError::new(format!(
            "sequence_lens[{b}] is {}, outside 0..={max_len}: the scan inputs have {max_len} steps along their sequence axis (axis 1)",
            lens[b]
        )));
    }
    Ok(Lengths::Each(lens))
}
