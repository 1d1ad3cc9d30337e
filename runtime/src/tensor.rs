//! Host tensors: an owned, aligned tensor, and a borrowed view of any tensor's bytes. A string
//! tensor's bytes are [`StringView`]s of UTF-8 bytes it owns beside them ([`StringBytes`]).

use crate::memory::{AlignedBuffer, Owner, StringBytes};
use opal_plugin_api::{
    tensor::{StringView, TensorView, TensorViewMut},
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
    /// The bytes a string tensor's elements view.
    strings: Option<StringBytes>,
}

/// A borrowed tensor: graph inputs, constants and intermediates are all seen this way.
#[derive(Debug, Clone, Copy)]
pub struct TensorRef<'a> {
    pub dtype: DType,
    pub shape: &'a [usize],
    pub data: &'a [u8],
    /// The bytes a string tensor's elements view; `None` for other tensors.
    pub strings: Option<&'a StringBytes>,
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
        Tensor {
            dtype,
            shape,
            data,
            strings: None,
        }
    }

    pub(crate) fn into_parts(self) -> (DType, Shape, AlignedBuffer, Option<StringBytes>) {
        (self.dtype, self.shape, self.data, self.strings)
    }

    /// A string tensor of `shape` holding `values` (row-major), its bytes accounted to
    /// `owner`; `None` when out of memory. The number of values must match the shape.
    pub fn from_strings<'s>(
        shape: &[usize],
        values: impl IntoIterator<Item = &'s [u8]>,
        owner: &Owner,
    ) -> Option<Self> {
        let bytes = byte_size(DType::STRING, shape)?;
        let mut tensor = Tensor::from_parts(
            DType::STRING,
            Shape::from_slice(shape),
            AlignedBuffer::zeroed(bytes, owner)?,
        );
        let mut strings = StringBytes::new(owner);
        let views = string_views_mut(tensor.data.as_mut_slice());
        let mut values = values.into_iter();
        for view in views.iter_mut() {
            *view = strings.store(values.next()?)?;
        }
        if values.next().is_some() {
            return None;
        }
        tensor.strings = Some(strings);
        Some(tensor)
    }

    /// A copy of `tensor` in memory accounted to `owner` (its strings too); `None` when out of
    /// memory.
    pub fn copy_of(tensor: TensorRef<'_>, owner: &Owner) -> Option<Self> {
        if tensor.dtype == DType::STRING {
            let strings = (0..tensor.len()).map(|i| tensor.string_bytes(i).unwrap_or_default());
            return Tensor::from_strings(tensor.shape, strings, owner);
        }
        Some(Tensor::from_parts(
            tensor.dtype,
            Shape::from_slice(tensor.shape),
            AlignedBuffer::copy_of(tensor.data, owner)?,
        ))
    }

    /// Gives a string tensor the bytes its elements view (a kernel's output, after its call).
    /// An error names the first element that is not a view of `strings`.
    pub(crate) fn attach_strings(&mut self, strings: StringBytes) -> Result<(), String> {
        self.strings = Some(strings);
        let view = self.as_ref();
        match (0..view.len()).find(|&i| view.string_bytes(i).is_none()) {
            Some(i) => {
                self.data.as_mut_slice().fill(0);
                self.strings = None;
                Err(format!(
                    "element {i} of the string output was not stored through the host"
                ))
            }
            None => Ok(()),
        }
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
            strings: self.strings.as_ref(),
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
        TensorRef {
            dtype,
            shape,
            data,
            strings: None,
        }
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The bytes of string element `index`, if this is a string tensor whose element is a
    /// view of its own bytes.
    pub fn string_bytes(&self, index: usize) -> Option<&'a [u8]> {
        if self.dtype != DType::STRING {
            return None;
        }
        let view = *string_views(self.data)?.get(index)?;
        match self.strings {
            Some(strings) => strings.resolve(view),
            None => (view.len == 0).then_some(&[][..]),
        }
    }

    /// String element `index` as UTF-8 text; an error naming the element otherwise.
    pub fn string(&self, index: usize) -> Result<&'a str, String> {
        let bytes = self
            .string_bytes(index)
            .ok_or_else(|| format!("element {index} is not a string of this tensor"))?;
        std::str::from_utf8(bytes).map_err(|_| format!("element {index} is not UTF-8"))
    }

    /// Every element of a string tensor, in order.
    pub fn strings(&self) -> Result<Vec<&'a str>, String> {
        (0..self.len()).map(|i| self.string(i)).collect()
    }

    /// Whether every element of a string tensor is a UTF-8 view of its own bytes (other
    /// tensors: always).
    pub fn strings_are_valid(&self) -> bool {
        self.dtype != DType::STRING || (0..self.len()).all(|i| self.string(i).is_ok())
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

/// A string tensor's bytes as its views, if they are a whole, aligned run of them.
fn string_views(data: &[u8]) -> Option<&[StringView]> {
    let size = std::mem::size_of::<StringView>();
    if data
        .as_ptr()
        .align_offset(std::mem::align_of::<StringView>())
        != 0
        || !data.len().is_multiple_of(size)
    {
        return None;
    }
    // SAFETY: alignment and length were checked; any bits are a valid `StringView` (a pointer
    // and a length), and nothing dereferences these pointers: they are resolved by address.
    Some(unsafe { std::slice::from_raw_parts(data.as_ptr().cast(), data.len() / size) })
}

/// The views of a string tensor's (64-byte aligned, whole) bytes, to be written.
fn string_views_mut(data: &mut [u8]) -> &mut [StringView] {
    let size = std::mem::size_of::<StringView>();
    let len = data.len() / size;
    assert!(
        data.as_ptr()
            .align_offset(std::mem::align_of::<StringView>())
            == 0
    );
    // SAFETY: the host's buffers are 64-byte aligned (checked) and `len` views fit; any bits
    // are a valid `StringView`, and `data` is borrowed uniquely.
    unsafe { std::slice::from_raw_parts_mut(data.as_mut_ptr().cast(), len) }
}
