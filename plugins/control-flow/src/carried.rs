//! Values held by a kernel across the runs of a subgraph: a loop's carried values and the
//! outputs it stacks, kept in the host's scratch arena and grown only when a value outgrows
//! its buffer.

use opal_plugin_api::{
    tensor::TensorView, DType, KernelContext, KernelError, KernelResult, TensorMut, TensorRef,
};
use smallvec::SmallVec;

/// A tensor the kernel holds between iterations.
pub(crate) struct Carried<'a> {
    dtype: DType,
    shape: SmallVec<[usize; 6]>,
    buffer: &'a mut [u8],
    len: usize,
}

impl<'a> Carried<'a> {
    /// A copy of `value`.
    pub(crate) fn new(cx: &KernelContext<'a>, value: TensorRef<'_>) -> KernelResult<Self> {
        let mut carried = Carried {
            dtype: value.dtype(),
            shape: SmallVec::new(),
            buffer: &mut [],
            len: 0,
        };
        carried.set(cx, value)?;
        Ok(carried)
    }

    /// Replaces the value with a copy of `value`, which must keep the dtype.
    pub(crate) fn set(&mut self, cx: &KernelContext<'a>, value: TensorRef<'_>) -> KernelResult<()> {
        if value.dtype() != self.dtype {
            return Err(KernelError::new(format!(
                "a value carried between iterations changed dtype from {} to {}",
                self.dtype,
                value.dtype()
            )));
        }
        let bytes = value.bytes();
        if bytes.len() > self.buffer.len() {
            self.buffer = cx.scratch_unzeroed::<u8>(bytes.len().max(2 * self.buffer.len()))?;
        }
        self.buffer[..bytes.len()].copy_from_slice(bytes);
        self.len = bytes.len();
        self.shape.clear();
        self.shape.extend_from_slice(value.shape());
        Ok(())
    }

    pub(crate) fn shape(&self) -> &[usize] {
        &self.shape
    }

    pub(crate) fn view(&self) -> TensorView<'_> {
        TensorView::new(self.dtype, &self.shape, &self.buffer[..self.len])
    }

    /// Copies the value into `output`, which has its shape.
    pub(crate) fn write_to(&self, output: TensorMut<'_>) -> KernelResult<()> {
        copy_into(output, self.dtype, &self.buffer[..self.len])
    }
}

/// Copies `bytes` of `dtype` into `output`; an error if the dtype or size differ.
pub(crate) fn copy_into(output: TensorMut<'_>, dtype: DType, bytes: &[u8]) -> KernelResult<()> {
    if output.dtype() != dtype {
        return Err(KernelError::new(format!(
            "the subgraph gives {dtype} where the node's output is {}",
            output.dtype()
        )));
    }
    let out = output.bytes_mut();
    if out.len() != bytes.len() {
        return Err(KernelError::new(format!(
            "the subgraph gives {} bytes where the node's output holds {}",
            bytes.len(),
            out.len()
        )));
    }
    out.copy_from_slice(bytes);
    Ok(())
}

/// The values one output of a loop's body takes over the iterations, stacked in order.
pub(crate) struct Stacked<'a> {
    dtype: DType,
    /// The shape of one iteration's value; every iteration must give the same.
    shape: SmallVec<[usize; 6]>,
    buffer: &'a mut [u8],
    len: usize,
    count: usize,
}

impl<'a> Stacked<'a> {
    pub(crate) fn new() -> Self {
        Stacked {
            dtype: DType::UNDEFINED,
            shape: SmallVec::new(),
            buffer: &mut [],
            len: 0,
            count: 0,
        }
    }

    /// Appends `value`, which must have the dtype and shape of the values before it.
    pub(crate) fn push(
        &mut self,
        cx: &KernelContext<'a>,
        value: TensorRef<'_>,
    ) -> KernelResult<()> {
        if self.count == 0 {
            self.dtype = value.dtype();
            self.shape.clear();
            self.shape.extend_from_slice(value.shape());
        } else if value.dtype() != self.dtype || value.shape() != self.shape.as_slice() {
            return Err(KernelError::new(format!(
                "a scan output is {} {:?} in iteration {} but was {} {:?} before; every iteration must give one shape",
                value.dtype(),
                value.shape(),
                self.count,
                self.dtype,
                self.shape.as_slice()
            )));
        }
        let bytes = value.bytes();
        let needed = self.len + bytes.len();
        if needed > self.buffer.len() {
            let grown = cx.scratch_unzeroed::<u8>(needed.max(2 * self.buffer.len()))?;
            grown[..self.len].copy_from_slice(&self.buffer[..self.len]);
            self.buffer = grown;
        }
        self.buffer[self.len..needed].copy_from_slice(bytes);
        self.len = needed;
        self.count += 1;
        Ok(())
    }

    /// The stacked shape: the iterations, then one value's shape.
    pub(crate) fn shape(&self) -> SmallVec<[usize; 7]> {
        let mut shape = SmallVec::new();
        shape.push(self.count);
        shape.extend_from_slice(&self.shape);
        shape
    }

    /// Copies the stacked values into `output`, of [`shape`](Self::shape). With no iteration
    /// there is nothing to copy.
    pub(crate) fn write_to(&self, output: TensorMut<'_>) -> KernelResult<()> {
        if self.count == 0 {
            return Ok(());
        }
        copy_into(output, self.dtype, &self.buffer[..self.len])
    }
}
