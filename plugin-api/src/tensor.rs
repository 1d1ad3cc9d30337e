//! Tensor views as they cross the ABI: a dtype, a shape and a byte slice owned by the host.
//! A string tensor's bytes are its elements' [`StringView`]s (since ABI 1.9).

use crate::DType;
use abi_stable::{
    std_types::{RSlice, RSliceMut},
    StableAbi,
};

/// A read-only view of a tensor the host owns. An absent optional input has dtype
/// [`DType::UNDEFINED`] and no data.
#[repr(C)]
#[derive(StableAbi, Clone, Copy)]
pub struct TensorView<'a> {
    pub dtype: DType,
    pub shape: RSlice<'a, usize>,
    pub data: RSlice<'a, u8>,
}

/// A writable view of an output tensor the host allocated before the call, from shape inference.
#[repr(C)]
#[derive(StableAbi)]
pub struct TensorViewMut<'a> {
    pub dtype: DType,
    pub shape: RSlice<'a, usize>,
    pub data: RSliceMut<'a, u8>,
}

impl<'a> TensorView<'a> {
    /// The view of an absent optional input.
    pub const ABSENT: TensorView<'static> = TensorView {
        dtype: DType::UNDEFINED,
        shape: RSlice::from_slice(&[]),
        data: RSlice::from_slice(&[]),
    };

    /// A view of `data` with the given dtype and shape.
    pub fn new(dtype: DType, shape: &'a [usize], data: &'a [u8]) -> Self {
        TensorView {
            dtype,
            shape: shape.into(),
            data: data.into(),
        }
    }

    /// Whether this is an absent optional input.
    pub fn is_absent(&self) -> bool {
        self.dtype == DType::UNDEFINED
    }
}

impl<'a> TensorViewMut<'a> {
    /// A writable view of `data` with the given dtype and shape.
    pub fn new(dtype: DType, shape: &'a [usize], data: &'a mut [u8]) -> Self {
        TensorViewMut {
            dtype,
            shape: shape.into(),
            data: data.into(),
        }
    }
}

/// One element of a string tensor as it crosses the ABI (since 1.9): a view of UTF-8 bytes the
/// host owns. A string tensor's data is an array of these; an element never written is the
/// empty view (null, 0), the empty string. Kernels read them through
/// [`TensorRef::strings`](crate::TensorRef::strings) and write them through
/// [`TensorMut::strings_mut`](crate::TensorMut::strings_mut), which has the host copy each
/// string into memory it keeps with the output.
#[repr(C)]
#[derive(StableAbi, Clone, Copy, Debug, PartialEq, Eq)]
pub struct StringView {
    pub ptr: *const u8,
    pub len: usize,
}

impl StringView {
    /// The empty string.
    pub const EMPTY: StringView = StringView {
        ptr: std::ptr::null(),
        len: 0,
    };

    /// Whether this is the null view a host returns when it refuses to store a string.
    pub fn is_null(&self) -> bool {
        self.ptr.is_null()
    }
}
