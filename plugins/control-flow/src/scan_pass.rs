//! The per-iteration machinery of Scan, shared by every opset: one pass of the body over a set
//! of tensors (a whole call from opset 9, one batch entry in opset 8), carrying the state
//! values between iterations, cutting the scan inputs into slices along their axes, and
//! writing each iteration's scan outputs at their place along theirs.

use crate::carried::Carried;
use opal_plugin_api::{prelude::*, tensor::TensorView};
use smallvec::SmallVec;

/// One pass of the body: the state values, the scan inputs' slicers, the scan outputs'
/// stackers (each made when the body first gives its value, as only then is its shape known).
pub(crate) struct Pass<'a> {
    states: SmallVec<[Carried<'a>; 8]>,
    slicers: SmallVec<[Slicer<'a>; 4]>,
    stacks: SmallVec<[Option<Stacker<'a>>; 4]>,
}

/// Makes the stacker of scan output `k` from the shape of the body's first value of it.
pub(crate) type MakeStacker<'s, 'a> =
    dyn FnMut(&KernelContext<'a>, usize, &[usize]) -> KernelResult<Stacker<'a>> + 's;

impl<'a> Pass<'a> {
    /// A pass from the state values `states` over `scan_inputs`, each cut along its `(axis,
    /// reversed)` of `cuts`, stacking `outputs` scan outputs.
    pub(crate) fn new(
        cx: &KernelContext<'a>,
        states: &[TensorRef<'a>],
        scan_inputs: &[TensorRef<'a>],
        cuts: &[(usize, bool)],
        outputs: usize,
    ) -> KernelResult<Self> {
        let states = states
            .iter()
            .map(|&s| Carried::new(cx, s))
            .collect::<KernelResult<_>>()?;
        let slicers = scan_inputs
            .iter()
            .zip(cuts)
            .map(|(&input, &(axis, reversed))| Slicer::new(cx, input, axis, reversed))
            .collect::<KernelResult<_>>()?;
        Ok(Pass {
            states,
            slicers,
            stacks: (0..outputs).map(|_| None).collect(),
        })
    }

    /// The slices along the scan inputs' axes; an error when the inputs disagree.
    pub(crate) fn length(&self) -> KernelResult<usize> {
        let length = self.slicers.first().map_or(0, Slicer::length);
        if let Some(k) = self.slicers.iter().position(|s| s.length() != length) {
            return Err(KernelError::new(format!(
                "scan input {k} has {} slices along its axis, scan input 0 has {length}",
                self.slicers[k].length()
            )));
        }
        Ok(length)
    }

    /// Starts again from `states` over `scan_inputs`, which have the shapes of the tensors
    /// the pass was made with; the stackers write at batch entry `entry`.
    pub(crate) fn restart(
        &mut self,
        cx: &KernelContext<'a>,
        states: &[TensorRef<'a>],
        scan_inputs: &[TensorRef<'a>],
        entry: usize,
    ) -> KernelResult<()> {
        for (state, &value) in self.states.iter_mut().zip(states) {
            state.set(cx, value)?;
        }
        for (slicer, &input) in self.slicers.iter_mut().zip(scan_inputs) {
            slicer.input = input;
        }
        for stack in self.stacks.iter_mut().flatten() {
            stack.entry = entry;
        }
        Ok(())
    }

    /// Runs the body `count` times, on the first `count` slices of the scan inputs (the last
    /// `count`, from the end, when reversed).
    pub(crate) fn run(
        &mut self,
        cx: &mut KernelContext<'a>,
        count: usize,
        make_stacker: &mut MakeStacker<'_, 'a>,
    ) -> KernelResult<()> {
        let (states, outputs) = (self.states.len(), self.stacks.len());
        for t in 0..count {
            for slicer in &mut self.slicers {
                slicer.cut(t, count);
            }
            let mut inputs: SmallVec<[TensorView<'_>; 10]> = SmallVec::new();
            inputs.extend(self.states.iter().map(Carried::view));
            inputs.extend(self.slicers.iter().map(Slicer::view));
            let given = cx.run_subgraph("body", &inputs)?;
            drop(inputs);
            if given != states + outputs {
                return Err(KernelError::new(format!(
                    "the body gives {given} outputs; it must give {} ({states} state values, {outputs} scan outputs)",
                    states + outputs
                )));
            }
            for (k, state) in self.states.iter_mut().enumerate() {
                state.set(cx, cx.subgraph_output("body", k)?)?;
            }
            for (k, stack) in self.stacks.iter_mut().enumerate() {
                let value = cx.subgraph_output("body", states + k)?;
                let stack = match stack {
                    Some(stack) => stack,
                    None => stack.insert(make_stacker(cx, k, value.shape())?),
                };
                stack.put(t, value)?;
            }
        }
        Ok(())
    }

    pub(crate) fn states(&self) -> &[Carried<'a>] {
        &self.states
    }

    /// Whether scan output `k` has its stacker, made from the body's first value of it.
    pub(crate) fn is_stacking(&self, k: usize) -> bool {
        self.stacks.get(k).is_some_and(Option::is_some)
    }
}

/// Cuts a slice of a scan input along its axis into a buffer the body reads.
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

    /// Copies slice `t` of the first `count` (counted from slice `count - 1` down when
    /// reversed) into the buffer.
    fn cut(&mut self, t: usize, count: usize) {
        let length = self.length();
        let index = if self.reversed { count - 1 - t } else { t };
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

/// Writes each iteration's value of a scan output at its place along the output's axis,
/// within one of the output's batch entries (opset 8; a single entry from opset 9).
pub(crate) struct Stacker<'a> {
    data: &'a mut [u8],
    dtype: DType,
    /// Bytes of one batch entry.
    entry_bytes: usize,
    /// The batch entry written to.
    entry: usize,
    length: usize,
    reversed: bool,
    /// Bytes of one iteration's contiguous run: the dims after the axis.
    run: usize,
    slice_shape: SmallVec<[usize; 6]>,
}

impl<'a> Stacker<'a> {
    /// A stacker into `data`, `entries` batch entries of dtype `dtype` and shape `dims` each,
    /// along axis `axis` of `dims`.
    pub(crate) fn new(
        data: &'a mut [u8],
        dtype: DType,
        entries: usize,
        dims: &[usize],
        axis: usize,
        reversed: bool,
    ) -> Self {
        let element = dtype.size().unwrap_or(1);
        let mut slice_shape = SmallVec::from_slice(dims);
        let length = slice_shape.remove(axis);
        Stacker {
            entry_bytes: data.len() / entries.max(1),
            data,
            dtype,
            entry: 0,
            length,
            reversed,
            run: dims[axis + 1..].iter().product::<usize>() * element,
            slice_shape,
        }
    }

    /// The stacker, writing at batch entry `entry`.
    pub(crate) fn at_entry(mut self, entry: usize) -> Self {
        self.entry = entry;
        self
    }

    /// The stacker of a node's output from opset 9: one batch entry, the whole output.
    pub(crate) fn whole(output: TensorMut<'a>, axis: usize, reversed: bool) -> Self {
        let (dtype, dims) = (output.dtype(), output.shape());
        Stacker::new(output.bytes_mut(), dtype, 1, dims, axis, reversed)
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
        if self.run == 0 {
            return Ok(());
        }
        let base = self.entry * self.entry_bytes;
        for (o, chunk) in value.bytes().chunks_exact(self.run).enumerate() {
            let start = base + (o * self.length + index) * self.run;
            self.data[start..start + self.run].copy_from_slice(chunk);
        }
        Ok(())
    }
}
