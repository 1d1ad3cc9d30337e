//! String tensors as a kernel sees them (ABI 1.9): a string input's elements read by index, and
//! a string output's elements written one by one, each copied by the host into memory it keeps
//! with the output. Only operators that declare
//! [`TAKES_STRINGS`](crate::Operator::TAKES_STRINGS) are given strings.

use crate::{
    host::HostServices,
    kernel::{KernelError, KernelResult, TensorMut, TensorRef},
    tensor::StringView,
    DType,
};
use abi_stable::std_types::RStr;

/// The elements of a string tensor, lent by the host for the call.
#[derive(Clone, Copy)]
pub struct Strings<'a> {
    views: &'a [StringView],
}

impl<'a> Strings<'a> {
    /// Number of elements.
    pub fn len(&self) -> usize {
        self.views.len()
    }

    pub fn is_empty(&self) -> bool {
        self.views.is_empty()
    }

    /// Element `index`; an error past the end, or if the host lent bytes that are not UTF-8.
    pub fn get(&self, index: usize) -> KernelResult<&'a str> {
        let view = self.views.get(index).ok_or_else(|| {
            KernelError::new(format!(
                "element {index} of a string tensor of {} is out of range",
                self.views.len()
            ))
        })?;
        if view.len == 0 {
            return Ok("");
        }
        if view.ptr.is_null() {
            return Err(KernelError::new(format!(
                "element {index} of a string tensor has no bytes"
            )));
        }
        // SAFETY: the host lends a string tensor's elements as views of `len` bytes it keeps
        // unchanged until the call returns (a null view is handled above).
        let bytes = unsafe { std::slice::from_raw_parts(view.ptr, view.len) };
        std::str::from_utf8(bytes).map_err(|_| {
            KernelError::new(format!("element {index} of a string tensor is not UTF-8"))
        })
    }

    /// The elements in order.
    pub fn iter(self) -> impl Iterator<Item = KernelResult<&'a str>> + 'a {
        (0..self.views.len()).map(move |i| self.get(i))
    }
}

/// The elements of a string output, written one by one.
pub struct StringsMut<'a> {
    host: HostServices,
    output: usize,
    shape: &'a [usize],
    views: &'a mut [StringView],
}

impl StringsMut<'_> {
    /// Number of elements.
    pub fn len(&self) -> usize {
        self.views.len()
    }

    pub fn is_empty(&self) -> bool {
        self.views.is_empty()
    }

    pub fn shape(&self) -> &[usize] {
        self.shape
    }

    /// Sets element `index` to `value`, which the host copies (the empty string costs
    /// nothing). Elements never set are empty strings.
    pub fn set(&mut self, index: usize, value: &str) -> KernelResult<()> {
        let len = self.views.len();
        let slot = self.views.get_mut(index).ok_or_else(|| {
            KernelError::new(format!(
                "element {index} of a string output of {len} is out of range"
            ))
        })?;
        if value.is_empty() {
            *slot = StringView::EMPTY;
            return Ok(());
        }
        let store = self.host.vtable.store_string().ok_or_else(|| {
            KernelError::new("the host does not take string outputs (it is older than ABI 1.9)")
        })?;
        // SAFETY: the table and context come from the host for the duration of this call.
        let view = unsafe { store(self.host.ctx, self.output, RStr::from_str(value)) };
        if view.is_null() || view.len != value.len() {
            return Err(KernelError::new(format!(
                "the host refused a string of {} bytes for output {}: it is no string output, or the deployment's engine.memory_limit does not allow it",
                value.len(),
                self.output
            )));
        }
        *slot = view;
        Ok(())
    }
}

/// `bytes` as string views: the dtype must be string, and the bytes a whole, aligned run.
fn views_of(dtype: DType, bytes: &[u8]) -> KernelResult<(*const StringView, usize)> {
    let size = std::mem::size_of::<StringView>();
    if dtype != DType::STRING {
        return Err(KernelError::new(format!(
            "tensor has dtype {dtype}, kernel expected string"
        )));
    }
    if bytes
        .as_ptr()
        .align_offset(std::mem::align_of::<StringView>())
        != 0
        || !bytes.len().is_multiple_of(size)
    {
        return Err(KernelError::new(format!(
            "string tensor data of {} bytes at {:p} is not a whole, aligned run of views",
            bytes.len(),
            bytes.as_ptr()
        )));
    }
    Ok((bytes.as_ptr().cast(), bytes.len() / size))
}

impl<'a> TensorRef<'a> {
    /// The elements of a string tensor; an error if the dtype is not string.
    pub fn strings(&self) -> KernelResult<Strings<'a>> {
        let (ptr, len) = views_of(self.dtype(), self.bytes())?;
        // SAFETY: `views_of` checked alignment and length; a string tensor's bytes are views
        // the host wrote, and any bits are a valid `StringView` (a pointer and a length).
        let views = unsafe { std::slice::from_raw_parts(ptr, len) };
        Ok(Strings { views })
    }
}

impl<'a> TensorMut<'a> {
    /// The elements of a string output, to be written; an error if the dtype is not string or
    /// the tensor is an element of a sequence (sequences of strings are not supported).
    pub fn strings_mut(self) -> KernelResult<StringsMut<'a>> {
        let (host, output) = self.output.ok_or_else(|| {
            KernelError::new("a sequence's elements cannot be strings in this version")
        })?;
        let (_, len) = views_of(self.dtype, self.data)?;
        let ptr = self.data.as_mut_ptr().cast::<StringView>();
        // SAFETY: as in `TensorRef::strings`; the pointer comes from the output's unique borrow
        // (`self.data`, consumed here), lent to this call alone.
        let views = unsafe { std::slice::from_raw_parts_mut(ptr, len) };
        Ok(StringsMut {
            host,
            output,
            shape: self.shape,
            views,
        })
    }
}
