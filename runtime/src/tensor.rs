//! Host tensors: an owned, aligned tensor, and a borrowed view of any tensor's bytes.

use crate::memory::AlignedBuffer;
use opal_plugin_api::{
    tensor::{TensorView, TensorViewMut},
    DType, Element,
};
use smallvec::SmallVec;

/// Dims of a tensor; ranks up to 8 are stored inline, without a heap allocation.
pub type Shape = SmallVec<[usize; 8]>;

/// A tensor whose bytes the host owns (from the pool or the tracked allocator).
#[derive(Debug)]
pub struct Tensor {
    dtype: DType,
    shape: Shape,
    data: AlignedBuffer,
}

/// A borrowed tensor: graph inputs, constants and intermediates are all seen this way.
#[derive(Debug, Clone, Copy)]
pub struct TensorRef<'a> {
    pub dtype: DType,
    pub shape: &'a [usize],
    pub data: &'a [u8],
}

/// Number of elements of `shape`, or `None` if it overflows.
pub fn element_count(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d))
}

/// Bytes of a tensor of `dtype` and `shape`, or `None` if it overflows or the dtype has no size.
pub fn byte_size(dtype: DType, shape: &[usize]) -> Option<usize> {
    element_count(shape)?.checked_mul(dtype.size()?)
}

impl Tensor {
    /// A tensor over `data`, which must hold exactly the bytes of `dtype` × `shape`.
    pub(crate) fn from_parts(dtype: DType, shape: Shape, data: AlignedBuffer) -> Self {
        debug_assert_eq!(byte_size(dtype, &shape), Some(data.len()));
        Tensor { dtype, shape, data }
    }

    pub(crate) fn into_parts(self) -> (DType, Shape, AlignedBuffer) {
        (self.dtype, self.shape, self.data)
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    pub fn bytes(&self) -> &[u8] {
        self.data.as_slice()
    }

    pub fn bytes_mut(&mut self) -> &mut [u8] {
        self.data.as_mut_slice()
    }

    pub fn as_ref(&self) -> TensorRef<'_> {
        TensorRef {
            dtype: self.dtype,
            shape: &self.shape,
            data: self.data.as_slice(),
        }
    }

    /// The elements as `&[T]`, if the dtype is `T`'s.
    pub fn as_slice<T: Element>(&self) -> Option<&[T]> {
        self.as_ref().as_slice()
    }

    /// The writable view a kernel receives for an output.
    pub fn to_abi_mut(&mut self) -> TensorViewMut<'_> {
        TensorViewMut::new(self.dtype, &self.shape, self.data.as_mut_slice())
    }
}

impl<'a> TensorRef<'a> {
    pub fn new(dtype: DType, shape: &'a [usize], data: &'a [u8]) -> Self {
        TensorRef { dtype, shape, data }
    }

    /// A view of typed elements.
    pub fn from_slice<T: Element>(shape: &'a [usize], data: &'a [T]) -> Self {
        let bytes = std::mem::size_of_val(data);
        // SAFETY: every `Element` is plain old data, so its bytes may be read as `u8`.
        let data = unsafe { std::slice::from_raw_parts(data.as_ptr().cast::<u8>(), bytes) };
        TensorRef::new(T::DTYPE, shape, data)
    }

    /// The elements as `&[T]`, if the dtype is `T`'s and the bytes are aligned for it.
    pub fn as_slice<T: Element>(&self) -> Option<&'a [T]> {
        let size = std::mem::size_of::<T>();
        if self.dtype != T::DTYPE
            || self.data.as_ptr().align_offset(std::mem::align_of::<T>()) != 0
            || !self.data.len().is_multiple_of(size)
        {
            return None;
        }
        // SAFETY: dtype, alignment and length were checked; every `Element` is valid for any
        // bytes the host writes for its dtype.
        Some(unsafe {
            std::slice::from_raw_parts(self.data.as_ptr().cast(), self.data.len() / size)
        })
    }

    /// The view plugins receive.
    pub fn to_abi(self) -> TensorView<'a> {
        TensorView::new(self.dtype, self.shape, self.data)
    }
}
