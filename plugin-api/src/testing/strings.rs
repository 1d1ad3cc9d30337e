//! String tensors in the test host (ABI 1.9): tensors of strings a test passes, the host
//! function that stores a kernel's string outputs, and the strings a test gets back. As in the
//! real host, an output element must be a view the host stored for that output.

use super::{host, lock, AlignedBytes, OwnedTensor};
use crate::{tensor::StringView, DType};
use abi_stable::std_types::RStr;
use std::{ffi::c_void, sync::Arc};

/// The bytes of a string tensor: chunks that never move once made, so views into them stay
/// valid. `reset` keeps one chunk large enough for what the last pass stored, so a repeated
/// call stores without allocating.
#[derive(Default, Debug)]
pub(super) struct StringBytes {
    chunks: Vec<Vec<u8>>,
    /// Bytes stored since the last reset.
    stored: usize,
}

impl StringBytes {
    /// Copies `bytes` and returns the view of the copy.
    pub(super) fn store(&mut self, bytes: &[u8]) -> StringView {
        let fits = self
            .chunks
            .last()
            .is_some_and(|c| c.capacity() - c.len() >= bytes.len());
        if !fits {
            self.chunks.push(Vec::with_capacity(bytes.len().max(1024)));
        }
        self.stored += bytes.len();
        let Some(chunk) = self.chunks.last_mut() else {
            return StringView::EMPTY;
        };
        let start = chunk.len();
        // Within capacity: the chunk's buffer does not move, so earlier views stay valid.
        chunk.extend_from_slice(bytes);
        StringView {
            ptr: chunk.as_ptr().wrapping_add(start),
            len: bytes.len(),
        }
    }

    /// The bytes `view` names, if it lies within one chunk (the empty view is `""`).
    pub(super) fn resolve(&self, view: StringView) -> Option<&[u8]> {
        if view.len == 0 {
            return Some(&[]);
        }
        let at = view.ptr as usize;
        self.chunks.iter().find_map(|chunk| {
            let start = at.checked_sub(chunk.as_ptr() as usize)?;
            chunk.get(start..start.checked_add(view.len)?)
        })
    }

    /// Forgets what was stored, keeping the memory.
    pub(super) fn reset(&mut self) {
        if self.chunks.len() > 1 {
            self.chunks.clear();
            self.chunks.push(Vec::with_capacity(self.stored));
        }
        if let Some(chunk) = self.chunks.first_mut() {
            chunk.clear();
        }
        self.stored = 0;
    }
}

impl OwnedTensor {
    /// A string tensor with the given shape and elements (row-major). Panics if the number of
    /// elements does not match the shape.
    pub fn strings(shape: &[usize], values: &[&str]) -> Self {
        let count: usize = shape.iter().product();
        assert_eq!(
            count,
            values.len(),
            "shape {shape:?} holds {count} elements, {} were given",
            values.len()
        );
        let mut bytes = StringBytes::default();
        let views: Vec<StringView> = values.iter().map(|v| bytes.store(v.as_bytes())).collect();
        let mut tensor = OwnedTensor::filled(DType::STRING, shape, 0);
        write_views(&mut tensor.data, &views);
        tensor.strings = Some(Arc::new(bytes));
        tensor
    }

    /// The elements of a string tensor. Panics if the dtype is not string, or an element is
    /// not a view of this tensor's bytes.
    pub fn to_strings(&self) -> Vec<String> {
        assert_eq!(self.dtype, DType::STRING, "the tensor holds {}", self.dtype);
        let strings = self.strings.as_deref();
        read_views(&self.data)
            .into_iter()
            .enumerate()
            .map(|(i, view)| {
                let bytes = strings
                    .and_then(|s| s.resolve(view))
                    .or_else(|| (view.len == 0).then_some(&[][..]))
                    .unwrap_or_else(|| panic!("element {i} is not one of the tensor's strings"));
                String::from_utf8(bytes.to_vec())
                    .unwrap_or_else(|_| panic!("element {i} is not UTF-8"))
            })
            .collect()
    }

    /// This string output as the test gets it: its elements checked against `stored`, what the
    /// host stored for it during the call, and copied into a tensor of their own.
    pub(super) fn with_stored_strings(
        self,
        output: usize,
        stored: &StringBytes,
    ) -> Result<OwnedTensor, String> {
        let elements = read_views(&self.data)
            .into_iter()
            .enumerate()
            .map(|(i, view)| {
                let bytes = stored.resolve(view).ok_or_else(|| {
                    format!("element {i} of string output {output} was not stored through the host")
                })?;
                std::str::from_utf8(bytes)
                    .map_err(|_| format!("element {i} of string output {output} is not UTF-8"))
            })
            .collect::<Result<Vec<&str>, String>>()?;
        Ok(OwnedTensor::strings(&self.shape, &elements))
    }
}

/// The views a string tensor's bytes hold.
fn read_views(data: &AlignedBytes) -> Vec<StringView> {
    let bytes = data.as_slice();
    let count = bytes.len() / std::mem::size_of::<StringView>();
    // SAFETY: the bytes are 64-byte aligned and hold `count` whole views (a string tensor's
    // size is a multiple of the view's); any bits are a valid pointer and length.
    unsafe { std::slice::from_raw_parts(bytes.as_ptr().cast::<StringView>(), count) }.to_vec()
}

/// Writes `views` as a string tensor's bytes.
fn write_views(data: &mut AlignedBytes, views: &[StringView]) {
    let bytes = data.as_mut_slice();
    assert_eq!(bytes.len(), std::mem::size_of_val(views));
    // SAFETY: the bytes are 64-byte aligned and exactly as long as `views`, and borrowed
    // uniquely; writing through a typed pointer keeps the views' pointers intact.
    let out = unsafe {
        std::slice::from_raw_parts_mut(bytes.as_mut_ptr().cast::<StringView>(), views.len())
    };
    out.copy_from_slice(views);
}

pub(super) unsafe extern "C" fn test_store_string(
    ctx: *const c_void,
    index: usize,
    bytes: RStr<'_>,
) -> StringView {
    // SAFETY: the plugin passes back the context it was lent.
    let host = unsafe { host(ctx) };
    if host.output_dtypes.get(index) != Some(&DType::STRING) {
        return StringView::EMPTY;
    }
    let mut strings = lock(&host.strings);
    match strings.get_mut(index) {
        Some(stored) => stored.store(bytes.as_str().as_bytes()),
        None => StringView::EMPTY,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        testing::{run_operator, TestHost},
        KernelContext, KernelResult, Operator,
    };

    /// Joins each element with itself and a separator attribute, and reports each element's
    /// length; the second output's elements are left unwritten.
    struct Doubled;

    impl Operator for Doubled {
        const OP_TYPE: &'static str = "Doubled";
        const TAKES_STRINGS: bool = true;

        fn infer(cx: &crate::InferContext<'_>) -> KernelResult<Vec<crate::OutputType>> {
            let x = cx.input(0)?;
            Ok(vec![
                crate::OutputType::new(DType::STRING, x.shape.to_vec()),
                crate::OutputType::new(DType::STRING, x.shape.to_vec()),
                crate::OutputType::new(DType::I64, x.shape.to_vec()),
            ])
        }

        fn compute(cx: &mut KernelContext<'_>) -> KernelResult<()> {
            let x = cx.input(0)?.strings()?;
            assert!(cx.input(0)?.f32().is_err());
            assert!(x.get(x.len()).is_err());
            let mut y = cx.output(0)?.strings_mut()?;
            assert_eq!(y.len(), x.len());
            let mut joined = String::new();
            for (i, s) in x.iter().enumerate() {
                let s = s?;
                joined.clear();
                joined.push_str(s);
                joined.push('|');
                joined.push_str(s);
                y.set(i, &joined)?;
            }
            assert!(y.set(y.len(), "past the end").is_err());
            let untouched = cx.output(1)?.strings_mut()?;
            assert_eq!(untouched.shape(), cx.input(0)?.shape());
            let lengths = cx.output(2)?;
            assert!(lengths.dtype() != DType::STRING);
            let lengths = lengths.as_slice_mut::<i64>()?;
            for (n, s) in lengths.iter_mut().zip(x.iter()) {
                *n = s?.len() as i64;
            }
            Ok(())
        }
    }

    #[test]
    fn string_elements_are_read_and_stored_through_the_host() {
        let x = OwnedTensor::strings(&[2, 2], &["a", "", "héllo", "x y"]);
        let y = TestHost::new()
            .heap_probe(|| 0)
            .run::<Doubled>(std::slice::from_ref(&x), &[], 3)
            .unwrap();
        assert_eq!(y[0].to_strings(), ["a|a", "|", "héllo|héllo", "x y|x y"]);
        assert_eq!(y[0].shape(), [2, 2]);
        assert_eq!(y[1].to_strings(), ["", "", "", ""]);
        assert_eq!(y[2].to_vec::<i64>(), [1, 0, 6, 3]);
        assert_eq!(x.to_strings(), ["a", "", "héllo", "x y"]);
    }

    /// Copies its input's views into its output instead of storing them.
    struct CopiesViews;

    impl Operator for CopiesViews {
        const OP_TYPE: &'static str = "CopiesViews";
        const TAKES_STRINGS: bool = true;

        fn compute(cx: &mut KernelContext<'_>) -> KernelResult<()> {
            let x = cx.input(0)?.bytes();
            cx.output(0)?.bytes_mut().copy_from_slice(x);
            Ok(())
        }
    }

    #[test]
    fn an_output_element_the_host_did_not_store_is_refused() {
        let x = OwnedTensor::strings(&[1], &["kept by the input"]);
        let error = run_operator::<CopiesViews>(&[x], &[], 1).unwrap_err();
        assert_eq!(
            error,
            "element 0 of string output 0 was not stored through the host"
        );
    }

    /// Writes a string into a float output.
    struct StringIntoFloats;

    impl Operator for StringIntoFloats {
        const OP_TYPE: &'static str = "StringIntoFloats";

        fn compute(cx: &mut KernelContext<'_>) -> KernelResult<()> {
            cx.output(0)?.strings_mut()?.set(0, "no")
        }
    }

    #[test]
    fn a_numeric_output_has_no_string_elements() {
        let x = OwnedTensor::f32(&[1], &[1.0]);
        let error = run_operator::<StringIntoFloats>(&[x], &[], 1).unwrap_err();
        assert_eq!(error, "tensor has dtype f32, kernel expected string");
    }
}
