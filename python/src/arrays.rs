//! NumPy arrays in and out of runs: an input array is read in place (no copy) when it is
//! C-contiguous, aligned and in native byte order (but for the signed 4-bit and 2-bit types,
//! whose bytes `ml_dtypes` does not sign-extend); an output is copied into a new array. The
//! element types NumPy lacks (bfloat16, the float8 and float4 types, 4-bit and 2-bit integers)
//! are `ml_dtypes`' types, one element per byte, as onnx's `numpy_helper` gives them. String
//! tensors come from arrays of `str` (dtype `<U` or `object`) and `bytes` (`S`), copied into a
//! string tensor, and go out as `object` arrays of `str`, as onnxruntime gives them.

use crate::errors::{InputError, RunError};
use numpy::{PyArrayDescrMethods, PyUntypedArray, PyUntypedArrayMethods};
use opal_plugin_api::DType;
use opal_runtime::{memory::Owner, tensor::Shape, Tensor, TensorRef};
use pyo3::{prelude::*, types::PyList};

/// An opal element type, the NumPy dtype name of its arrays, whether that dtype is
/// `ml_dtypes`' rather than NumPy's, and the ONNX type name (`tensor(float)`).
const ELEMENT_TYPES: [(DType, &str, bool, &str); 24] = [
    (DType::F32, "float32", false, "float"),
    (DType::U8, "uint8", false, "uint8"),
    (DType::I8, "int8", false, "int8"),
    (DType::U16, "uint16", false, "uint16"),
    (DType::I16, "int16", false, "int16"),
    (DType::I32, "int32", false, "int32"),
    (DType::I64, "int64", false, "int64"),
    (DType::BOOL, "bool", false, "bool"),
    (DType::F16, "float16", false, "float16"),
    (DType::F64, "float64", false, "double"),
    (DType::U32, "uint32", false, "uint32"),
    (DType::U64, "uint64", false, "uint64"),
    (DType::BF16, "bfloat16", true, "bfloat16"),
    (DType::F8E4M3FN, "float8_e4m3fn", true, "float8e4m3fn"),
    (DType::F8E4M3FNUZ, "float8_e4m3fnuz", true, "float8e4m3fnuz"),
    (DType::F8E5M2, "float8_e5m2", true, "float8e5m2"),
    (DType::F8E5M2FNUZ, "float8_e5m2fnuz", true, "float8e5m2fnuz"),
    (DType::U4, "uint4", true, "uint4"),
    (DType::I4, "int4", true, "int4"),
    (DType::F4E2M1, "float4_e2m1fn", true, "float4e2m1"),
    (DType::F8E8M0, "float8_e8m0fnu", true, "float8e8m0"),
    (DType::U2, "uint2", true, "uint2"),
    (DType::I2, "int2", true, "int2"),
    (DType::STRING, "str", false, "string"),
];

/// The NumPy dtype name of `dtype`'s arrays.
pub(crate) fn numpy_name(dtype: DType) -> &'static str {
    ELEMENT_TYPES
        .iter()
        .find(|t| t.0 == dtype)
        .map_or("unknown", |t| t.1)
}

/// The ONNX type of a tensor of `dtype`, as onnxruntime names it (`tensor(float)`).
pub(crate) fn onnx_type(dtype: Option<DType>) -> String {
    let name = dtype
        .and_then(|d| ELEMENT_TYPES.iter().find(|t| t.0 == d))
        .map_or("undefined", |t| t.3);
    format!("tensor({name})")
}

/// Where the view of an empty array without data points.
#[repr(align(64))]
struct Aligned([u8; 0]);
static EMPTY: Aligned = Aligned([]);

/// An input array read in place: its element type, shape and bytes. The bytes belong to the
/// array, which the caller keeps alive (and unchanged) while the view is used.
pub(crate) struct InputView {
    pub(crate) dtype: DType,
    pub(crate) shape: Shape,
    data: *const u8,
    len: usize,
    /// The elements sign-extended, for the signed 4-bit and 2-bit types: `ml_dtypes` keeps
    /// only their low bits in each byte, opal the whole value. `data` then points here.
    _widened: Option<Vec<u8>>,
}

// SAFETY: an `InputView` is only a pointer to bytes of a NumPy array that the caller keeps
// alive for as long as the view is used (see `InputView::as_tensor`); reading them from
// another thread is as safe as reading them from this one.
unsafe impl Send for InputView {}

impl InputView {
    /// The view as a tensor.
    ///
    /// # Safety
    /// The array the view was made from must still be alive, and not resized, while the
    /// returned tensor is used.
    pub(crate) unsafe fn as_tensor(&self) -> TensorRef<'_> {
        // SAFETY: the array is C-contiguous, aligned and holds `len` bytes at `data`, which is
        // not null (checked in `input_view`), and the caller keeps it alive.
        let data = unsafe { std::slice::from_raw_parts(self.data, self.len) };
        TensorRef::new(self.dtype, &self.shape, data)
    }
}

/// Reads input `name`'s array in place, or says why it cannot be.
pub(crate) fn input_view(name: &str, value: &Bound<'_, PyAny>) -> PyResult<InputView> {
    let bad = |reason: String| InputError::new_err(format!("input '{name}': {reason}"));
    let array = value.cast::<PyUntypedArray>().map_err(|_| {
        bad(format!(
            "expected a numpy array, got {}",
            value
                .get_type()
                .name()
                .map_or_else(|_| "another type".to_owned(), |n| n.to_string())
        ))
    })?;
    let descr = array.dtype();
    let numpy_dtype: String = descr.getattr("name")?.extract()?;
    let dtype = ELEMENT_TYPES
        .iter()
        .find(|t| t.1 == numpy_dtype && t.0 != DType::STRING)
        .map(|t| t.0)
        .ok_or_else(|| {
            bad(format!(
                "numpy dtype {numpy_dtype} has no opal element type (opal runs {})",
                ELEMENT_TYPES
                    .iter()
                    .filter(|t| t.0 != DType::STRING)
                    .map(|t| t.1)
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })?;
    if descr.is_native_byteorder() == Some(false) {
        return Err(bad(format!(
            "the array is not in native byte order; pass x.astype('={}')",
            descr.getattr("char")?.extract::<String>()?
        )));
    }
    if !array.is_c_contiguous() {
        return Err(bad(
            "the array is not C-contiguous; pass np.ascontiguousarray(x)".into(),
        ));
    }
    if !array.is_aligned() {
        return Err(bad(
            "the array's data is not aligned for its dtype; pass np.require(x, requirements='CA')"
                .into(),
        ));
    }
    let shape = Shape::from_slice(array.shape());
    let len = opal_runtime::tensor::byte_size(dtype, &shape)
        .ok_or_else(|| bad(format!("shape {shape:?} is too large")))?;
    // SAFETY: `array` is a live NumPy array; its `data` field points at its elements.
    let data = unsafe { (*array.as_array_ptr()).fields.data } as *const u8;
    // An empty array may have no data; its view then points at aligned bytes of its own, so
    // that kernels see an empty slice aligned for any element type.
    let data = if data.is_null() {
        EMPTY.0.as_ptr()
    } else {
        data
    };
    let bits = match dtype {
        DType::I4 => 4,
        DType::I2 => 2,
        _ => {
            return Ok(InputView {
                dtype,
                shape,
                data,
                len,
                _widened: None,
            })
        }
    };
    // SAFETY: as in `InputView::as_tensor`; the array is alive during this call.
    let narrow = unsafe { std::slice::from_raw_parts(data, len) };
    let widened: Vec<u8> = narrow
        .iter()
        .map(|&b| (((b << (8 - bits)) as i8) >> (8 - bits)) as u8)
        .collect();
    Ok(InputView {
        dtype,
        shape,
        data: widened.as_ptr(),
        len,
        _widened: Some(widened),
    })
}

/// Input `name`'s array copied into a string tensor accounted to `owner`, when it is an array
/// of strings (NumPy kinds `U`, `S` and `O`); `None` for any other array.
pub(crate) fn string_tensor(
    name: &str,
    value: &Bound<'_, PyAny>,
    owner: &Owner,
) -> PyResult<Option<Tensor>> {
    let Ok(array) = value.cast::<PyUntypedArray>() else {
        return Ok(None);
    };
    let kind: String = array.dtype().getattr("kind")?.extract()?;
    if !matches!(kind.as_str(), "U" | "S" | "O") {
        return Ok(None);
    }
    let elements = array.call_method0("ravel")?.call_method0("tolist")?;
    let mut texts: Vec<Vec<u8>> = Vec::with_capacity(array.len());
    for (i, element) in elements.try_iter()?.enumerate() {
        let element = element?;
        let bytes = if let Ok(text) = element.extract::<String>() {
            text.into_bytes()
        } else if let Ok(bytes) = element.extract::<Vec<u8>>() {
            bytes
        } else {
            return Err(InputError::new_err(format!(
                "input '{name}': element {i} of the object array is {}, not a str or bytes",
                element
                    .get_type()
                    .name()
                    .map_or_else(|_| "another type".to_owned(), |n| n.to_string())
            )));
        };
        texts.push(bytes);
    }
    Tensor::from_strings(array.shape(), texts.iter().map(Vec::as_slice), owner)
        .map(Some)
        .ok_or_else(|| {
            InputError::new_err(format!("input '{name}': out of memory copying its strings"))
        })
}

/// A new NumPy array holding a copy of `tensor`.
pub(crate) fn output_array<'py>(
    py: Python<'py>,
    tensor: TensorRef<'_>,
) -> PyResult<Bound<'py, PyAny>> {
    let numpy = py.import("numpy")?;
    if tensor.dtype == DType::STRING {
        let texts = tensor
            .strings()
            .map_err(|e| RunError::new_err(format!("a string output: {e}")))?;
        let array = numpy
            .getattr("array")?
            .call1((PyList::new(py, texts)?, "object"))?;
        return array.call_method1("reshape", (PyList::new(py, tensor.shape)?,));
    }
    let dtype: Bound<'py, PyAny> = match ELEMENT_TYPES.iter().find(|t| t.0 == tensor.dtype) {
        Some(&(_, name, false, _)) if tensor.dtype != DType::STRING => {
            numpy.getattr("dtype")?.call1((name,))?
        }
        Some(&(_, name, true, _)) => py.import("ml_dtypes")?.getattr(name)?,
        _ => {
            return Err(RunError::new_err(format!(
                "an output has element type {}, which has no numpy dtype",
                tensor.dtype
            )))
        }
    };
    let shape = PyList::new(py, tensor.shape)?;
    let array = numpy.getattr("empty")?.call1((shape, dtype))?;
    let untyped = array.cast::<PyUntypedArray>()?;
    if !tensor.data.is_empty() {
        // SAFETY: `numpy.empty` made a C-contiguous array of the tensor's dtype and shape, so
        // its data holds exactly `tensor.data.len()` bytes, and nothing else refers to it yet.
        unsafe {
            let data = (*untyped.as_array_ptr()).fields.data.cast::<u8>();
            std::ptr::copy_nonoverlapping(tensor.data.as_ptr(), data, tensor.data.len());
        }
    }
    Ok(array)
}
