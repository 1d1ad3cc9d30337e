//! A small in-process host for unit-testing operators: it infers output types, allocates the
//! outputs, lends an allocator, a scratch arena and `parallel_for`, and runs the kernel through
//! the same ABI table the real host calls.
//!
//! ```ignore
//! use opal_plugin_api::testing::{run_operator, OwnedTensor};
//!
//! // `Relu` is a plugin's `Operator`.
//! let x = OwnedTensor::f32(&[2, 2], &[1.0, -2.0, 3.0, -4.0]);
//! let y = run_operator::<Relu>(&[x], &[], 1).unwrap();
//! assert_eq!(y[0].to_vec::<f32>(), [1.0, 0.0, 3.0, 0.0]);
//! ```
//!
//! Differences from the real host, on purpose: outputs start filled with `0xFF` bytes (NaN for
//! floats) so that elements a kernel forgets to write show up (string outputs start empty, as
//! in the real host); `parallel_for` runs its ranges
//! one after the other on the calling thread, split into a few pieces so range handling is
//! exercised; the run fails if the kernel leaks memory from the lent allocator.
//! [`TestHost`] also reports a thread count (so kernels take their parallel paths) and can
//! check that a warmed-up kernel makes no heap allocations ([`TestHost::heap_probe`]).

use crate::{
    attribute::{AttrValue, Attribute},
    export::operator_vtable_ref,
    host::{HostServices, HostVTable, HostVTableRef, ParallelTask, PrepareTask},
    infer::{InferInput, OutputType},
    operator::{InferCall, KernelCall},
    subgraph::InferHost,
    tensor::{TensorView, TensorViewMut},
    value::ValueKind,
    DType, Element, Isa, Operator, TensorRef,
};
use values::{CallValues, InferValues, OutputValue, TEST_INFER_HOST_VTABLE};

mod strings;
mod values;

use abi_stable::{
    prefix_type::WithMetadata,
    std_types::{ROption, RResult, RSlice, RStr, RString},
};
use std::{
    alloc::Layout,
    ffi::c_void,
    fmt,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Mutex,
    },
};
pub use values::TestValue;

/// The alignment of tensor data, lent allocations and scratch memory.
const ALIGN: usize = 64;

/// One 64-byte-aligned block; tensor and scratch bytes are stored as runs of these.
#[repr(C, align(64))]
#[derive(Clone, Copy)]
struct Block([u8; ALIGN]);

const ZERO_BLOCK: Block = Block([0; ALIGN]);

/// `len` bytes in 64-byte-aligned storage.
#[derive(Clone)]
struct AlignedBytes {
    blocks: Vec<Block>,
    len: usize,
}

impl AlignedBytes {
    fn filled(len: usize, byte: u8) -> Self {
        AlignedBytes {
            blocks: vec![Block([byte; ALIGN]); len.div_ceil(ALIGN)],
            len,
        }
    }

    fn as_slice(&self) -> &[u8] {
        // SAFETY: `blocks` holds at least `len` initialised bytes (`Block` is plain bytes with no
        // padding), borrowed from `self`.
        unsafe { std::slice::from_raw_parts(self.blocks.as_ptr().cast::<u8>(), self.len) }
    }

    fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as in `as_slice`, and `&mut self` makes the borrow unique.
        unsafe { std::slice::from_raw_parts_mut(self.blocks.as_mut_ptr().cast::<u8>(), self.len) }
    }
}

/// A tensor owned by the test: dtype, shape and 64-byte-aligned bytes. A tensor of dtype
/// [`DType::UNDEFINED`] ([`OwnedTensor::absent`]) stands for an omitted optional input.
#[derive(Clone)]
pub struct OwnedTensor {
    dtype: DType,
    shape: Vec<usize>,
    data: AlignedBytes,
    /// A string tensor's bytes, which its elements view.
    strings: Option<std::sync::Arc<strings::StringBytes>>,
}

impl OwnedTensor {
    /// A tensor of `T` with the given shape and elements (row-major). Panics if the number of
    /// elements does not match the shape.
    pub fn new<T: Element>(shape: &[usize], values: &[T]) -> Self {
        let count: usize = shape.iter().product();
        assert_eq!(
            count,
            values.len(),
            "shape {shape:?} holds {count} elements, {} were given",
            values.len()
        );
        let mut tensor = OwnedTensor::filled(T::DTYPE, shape, 0);
        // SAFETY: `Element` types are plain-old-data without padding, so their bytes are
        // initialised; the slice covers exactly `values`.
        let bytes = unsafe {
            std::slice::from_raw_parts(values.as_ptr().cast::<u8>(), std::mem::size_of_val(values))
        };
        tensor.data.as_mut_slice().copy_from_slice(bytes);
        tensor
    }

    /// An `f32` tensor.
    pub fn f32(shape: &[usize], values: &[f32]) -> Self {
        OwnedTensor::new(shape, values)
    }

    /// An `i64` tensor, such as Reshape's shape input.
    pub fn i64(shape: &[usize], values: &[i64]) -> Self {
        OwnedTensor::new(shape, values)
    }

    /// A tensor of `dtype` whose bytes are all `byte`. Panics for dtypes without a fixed size.
    pub fn filled(dtype: DType, shape: &[usize], byte: u8) -> Self {
        let size = dtype
            .size()
            .unwrap_or_else(|| panic!("dtype {dtype} has no fixed element size"));
        let count: usize = shape.iter().product();
        OwnedTensor {
            dtype,
            shape: shape.to_vec(),
            data: AlignedBytes::filled(count * size, byte),
            strings: None,
        }
    }

    /// A tensor of `dtype` holding `bytes` as they are: how tests build tensors of the types
    /// that have no Rust type (the low-bit ones, a byte per element). Panics if the number of
    /// bytes does not match the shape.
    pub fn from_bytes(dtype: DType, shape: &[usize], bytes: &[u8]) -> Self {
        let mut tensor = OwnedTensor::filled(dtype, shape, 0);
        assert_eq!(
            tensor.data.as_slice().len(),
            bytes.len(),
            "{dtype} {shape:?} does not take {} bytes",
            bytes.len()
        );
        tensor.data.as_mut_slice().copy_from_slice(bytes);
        tensor
    }

    /// An omitted optional input.
    pub fn absent() -> Self {
        OwnedTensor {
            dtype: DType::UNDEFINED,
            shape: Vec::new(),
            data: AlignedBytes::filled(0, 0),
            strings: None,
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

    /// The elements as `&[T]`. Panics if the dtype is not `T`'s.
    pub fn as_slice<T: Element>(&self) -> &[T] {
        TensorRef::new(self.view())
            .as_slice::<T>()
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// The elements as a `Vec<T>`. Panics if the dtype is not `T`'s.
    pub fn to_vec<T: Element>(&self) -> Vec<T> {
        self.as_slice::<T>().to_vec()
    }

    /// The ABI view of this tensor.
    pub fn view(&self) -> TensorView<'_> {
        if self.dtype == DType::UNDEFINED {
            return TensorView::ABSENT;
        }
        TensorView::new(self.dtype, &self.shape, self.data.as_slice())
    }
}

impl fmt::Debug for OwnedTensor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "OwnedTensor({} {:?}", self.dtype, self.shape)?;
        if self.dtype == DType::F32 {
            write!(f, " {:?}", self.as_slice::<f32>())?;
        }
        if self.dtype == DType::STRING && self.strings.is_some() {
            write!(f, " {:?}", self.to_strings())?;
        }
        f.write_str(")")
    }
}

/// An integer attribute.
pub fn int_attr(name: &str, value: i64) -> Attribute<'_> {
    Attribute {
        name: RStr::from_str(name),
        value: AttrValue::Int(value),
    }
}

/// A float attribute.
pub fn float_attr(name: &str, value: f32) -> Attribute<'_> {
    Attribute {
        name: RStr::from_str(name),
        value: AttrValue::Float(value),
    }
}

/// A string attribute.
pub fn string_attr<'a>(name: &'a str, value: &'a str) -> Attribute<'a> {
    Attribute {
        name: RStr::from_str(name),
        value: AttrValue::String(RSlice::from_slice(value.as_bytes())),
    }
}

/// A tensor attribute holding `tensor`.
pub fn tensor_attr<'a>(name: &'a str, tensor: &'a OwnedTensor) -> Attribute<'a> {
    Attribute {
        name: RStr::from_str(name),
        value: AttrValue::Tensor(tensor.view()),
    }
}

/// A string-list attribute of `values`, made with [`string_slices`].
pub fn strings_attr<'a>(name: &'a str, values: &'a [RSlice<'a, u8>]) -> Attribute<'a> {
    Attribute {
        name: RStr::from_str(name),
        value: AttrValue::Strings(RSlice::from_slice(values)),
    }
}

/// The values of a string-list attribute, for [`strings_attr`].
pub fn string_slices<'a>(values: &[&'a str]) -> Vec<RSlice<'a, u8>> {
    values
        .iter()
        .map(|v| RSlice::from_slice(v.as_bytes()))
        .collect()
}

/// An integer-list attribute.
pub fn ints_attr<'a>(name: &'a str, values: &'a [i64]) -> Attribute<'a> {
    Attribute {
        name: RStr::from_str(name),
        value: AttrValue::Ints(RSlice::from_slice(values)),
    }
}

/// A float-list attribute.
pub fn floats_attr<'a>(name: &'a str, values: &'a [f32]) -> Attribute<'a> {
    Attribute {
        name: RStr::from_str(name),
        value: AttrValue::Floats(RSlice::from_slice(values)),
    }
}

/// What inference sees of an input whose value is not known: a dtype and a shape, where a dim
/// of -1 is unknown. Use with [`infer_operator`].
pub fn infer_input(dtype: DType, shape: &[i64]) -> InferInput<'_> {
    InferInput {
        dtype,
        shape: RSlice::from_slice(shape),
        value: ROption::RNone,
    }
}

/// Runs `O`'s shape inference on `inputs` (see [`infer_input`]), through its ABI table.
pub fn infer_operator<O: Operator>(
    inputs: &[InferInput<'_>],
    attributes: &[Attribute<'_>],
    output_count: usize,
) -> Result<Vec<OutputType>, String> {
    let call = InferCall {
        inputs: RSlice::from_slice(inputs),
        attributes: RSlice::from_slice(attributes),
        output_count,
    };
    let result: Result<_, _> = (operator_vtable_ref::<O>().infer())(&call).into();
    result.map(Vec::from).map_err(|e| e.to_string())
}

/// Runs operator `O` on `inputs` with a default [`TestHost`]: infers the outputs (passing the
/// values of the inputs `O` lists in `VALUE_INPUTS`), allocates them, and computes them.
pub fn run_operator<O: Operator>(
    inputs: &[OwnedTensor],
    attributes: &[Attribute<'_>],
    output_count: usize,
) -> Result<Vec<OwnedTensor>, String> {
    TestHost::new().run::<O>(inputs, attributes, output_count)
}

/// Asserts that `actual` and `expected` have the same length and differ element-wise by at
/// most `tolerance * max(1, |expected|)`; NaNs must match NaNs.
#[track_caller]
pub fn assert_close(actual: &[f32], expected: &[f32], tolerance: f32) {
    assert_eq!(actual.len(), expected.len(), "lengths differ");
    for (i, (&a, &e)) in actual.iter().zip(expected).enumerate() {
        let ok = if e.is_nan() {
            a.is_nan()
        } else {
            (a - e).abs() <= tolerance * e.abs().max(1.0)
        };
        assert!(
            ok,
            "element {i}: got {a}, expected {e} (tolerance {tolerance})"
        );
    }
}

/// Heap allocations made so far by the calling thread through the counting allocator
/// `export_plugin!` installs; in a plugin crate's own test binaries that is the binary's global
/// allocator. Per thread, because the test harness's own threads allocate at any moment; the
/// test host runs a kernel's parallel pieces on the calling thread, so this sees all of them.
pub fn heap_allocations() -> u64 {
    crate::export::thread_heap_allocation_count()
}

/// Fails unless operator `O`, warmed up, makes no heap allocation on `inputs`, with one and with
/// two reported threads.
pub fn assert_no_heap<O: Operator>(
    inputs: &[OwnedTensor],
    attributes: &[Attribute<'_>],
    output_count: usize,
) {
    for threads in [1, 2] {
        TestHost::new()
            .threads(threads)
            .heap_probe(heap_allocations)
            .run::<O>(inputs, attributes, output_count)
            .unwrap_or_else(|e| panic!("{} with {threads} threads: {e}", O::OP_TYPE));
    }
}

/// A configurable test host. [`run_operator`] uses the defaults.
#[derive(Clone, Debug)]
pub struct TestHost {
    threads: usize,
    heap_probe: Option<fn() -> u64>,
    constant_inputs: u64,
    run_time_shapes: u64,
    fusion: Vec<u8>,
    isa: Isa,
}

impl Default for TestHost {
    fn default() -> Self {
        TestHost::new()
    }
}

impl TestHost {
    /// One reported thread, no heap probe, the instruction set of
    /// [`Isa::from_environment`] (so `OPAL_ISA` reruns a plugin's tests on another path).
    pub fn new() -> Self {
        TestHost {
            threads: 1,
            heap_probe: None,
            constant_inputs: 0,
            run_time_shapes: 0,
            fusion: Vec::new(),
            isa: Isa::from_environment(),
        }
    }

    /// The instruction set `KernelContext::isa` reports.
    ///
    /// # Panics
    /// When this CPU cannot run `isa`: a kernel would fault on it.
    pub fn isa(mut self, isa: Isa) -> Self {
        assert!(isa.is_available(), "this CPU cannot run {isa} kernels");
        self.isa = isa;
        self
    }

    /// Runs the kernel as a fused call with this description (what its
    /// [`Operator::fuse`] returned), which
    /// `KernelContext::fusion` gives back. Pass the absorbed nodes' inputs after the node's own
    /// (inference sees them too, so the operator's `infer` must ignore inputs past its own).
    pub fn fusion(mut self, description: Vec<u8>) -> Self {
        self.fusion = description;
        self
    }

    /// The thread count `KernelContext::threads` reports, so kernels take their parallel paths.
    /// Ranges still run one after the other on the calling thread.
    pub fn threads(mut self, threads: usize) -> Self {
        self.threads = threads.max(1);
        self
    }

    /// Reports the inputs whose bit is set in `mask` as constants (`KernelContext::is_constant`),
    /// so kernels keep prepared data, which the kernel's second call (with
    /// [`heap_probe`](Self::heap_probe)) gets back. None are constants by default.
    pub fn constant_inputs(mut self, mask: u64) -> Self {
        self.constant_inputs = mask;
        self
    }

    /// Hides the dims of the inputs whose bit is set in `mask` from shape inference (each dim
    /// is -1, and no value is passed), as the real host does for values whose shape is known
    /// only at run time: the kernel then gets inputs its inference never checked.
    pub fn run_time_shapes(mut self, mask: u64) -> Self {
        self.run_time_shapes = mask;
        self
    }

    /// Checks that the kernel makes no heap allocations once warmed up: the kernel runs twice
    /// and the run fails if `probe` (a count of heap allocations, such as the plugin module's
    /// `heap_allocations`) moves during the second call. Use a count of the calling thread's
    /// allocations, such as [`heap_allocations`]: other threads of a test binary allocate at any
    /// moment.
    pub fn heap_probe(mut self, probe: fn() -> u64) -> Self {
        self.heap_probe = Some(probe);
        self
    }

    /// Runs operator `O`: see [`run_operator`].
    pub fn run<O: Operator>(
        &self,
        inputs: &[OwnedTensor],
        attributes: &[Attribute<'_>],
        output_count: usize,
    ) -> Result<Vec<OwnedTensor>, String> {
        let inputs: Vec<TestValue> = inputs.iter().cloned().map(TestValue::Tensor).collect();
        self.run_values::<O>(&inputs, attributes, output_count)?
            .into_iter()
            .enumerate()
            .map(|(k, value)| match value {
                TestValue::Tensor(t) => Ok(t),
                other => Err(format!("output {k} is not a tensor: {other:?}")),
            })
            .collect()
    }

    /// Runs operator `O` on values of any kind (sequences, optionals): infers the outputs'
    /// kinds and types, lends what the kernel reads and writes, and returns each output as
    /// the kind its inference declared.
    pub fn run_values<O: Operator>(
        &self,
        inputs: &[TestValue],
        attributes: &[Attribute<'_>],
        output_count: usize,
    ) -> Result<Vec<TestValue>, String> {
        let vtable = operator_vtable_ref::<O>();
        let hidden = |i: usize| i < 64 && self.run_time_shapes & (1 << i) != 0;
        let types: Vec<(DType, Vec<i64>)> = inputs
            .iter()
            .enumerate()
            .map(|(i, value)| {
                let (dtype, shape) = value.infer_type();
                let shape = shape
                    .iter()
                    .map(|&d| if hidden(i) { -1 } else { d })
                    .collect();
                (dtype, shape)
            })
            .collect();
        let infer_inputs: Vec<InferInput<'_>> = inputs
            .iter()
            .zip(&types)
            .enumerate()
            .map(|(i, (value, (dtype, shape)))| InferInput {
                dtype: *dtype,
                shape: RSlice::from_slice(shape),
                value: match value {
                    TestValue::Tensor(t)
                        if O::VALUE_INPUTS.contains(&i)
                            && t.dtype != DType::UNDEFINED
                            && !hidden(i) =>
                    {
                        ROption::RSome(t.view())
                    }
                    _ => ROption::RNone,
                },
            })
            .collect();
        let kinds = InferValues {
            inputs,
            outputs: std::cell::RefCell::new(vec![ValueKind::TENSOR; output_count]),
        };
        let call = InferCall {
            inputs: RSlice::from_slice(&infer_inputs),
            attributes: RSlice::from_slice(attributes),
            output_count,
        };
        let infer_host = InferHost {
            vtable: TEST_INFER_HOST_VTABLE,
            ctx: (&kinds as *const InferValues<'_>).cast(),
        };
        let infer = vtable
            .infer_scoped()
            .ok_or("the operator has no infer_scoped")?;
        let types: Vec<OutputType> = Result::from(infer(&call, infer_host))
            .map(Vec::from)
            .map_err(|e: RString| e.to_string())?;
        if types.len() != output_count {
            return Err(format!(
                "inference gave {} outputs, the node has {output_count}",
                types.len()
            ));
        }
        let output_kinds = kinds.outputs.into_inner();
        let mut unshaped = 0u64;
        let outputs = types
            .iter()
            .zip(&output_kinds)
            .enumerate()
            .map(|(k, (t, &kind))| {
                if t.dtype.size().is_none() && kind == ValueKind::TENSOR {
                    return Err(format!(
                        "inferred output dtype {} has no fixed size",
                        t.dtype
                    ));
                }
                if kind.holds_sequence() {
                    return Ok(OutputValue::Sequence(t.dtype, Vec::new()));
                }
                let shape = t
                    .shape
                    .iter()
                    .map(|&d| usize::try_from(d))
                    .collect::<Result<Vec<_>, _>>();
                match shape {
                    // Strings start empty, as the ABI says of elements never written.
                    Ok(shape) if kind == ValueKind::TENSOR => {
                        Ok(OutputValue::Tensor(OwnedTensor::filled(
                            t.dtype,
                            &shape,
                            u8::from(t.dtype != DType::STRING) * 0xFF,
                        )))
                    }
                    _ => {
                        unshaped |= 1u64.checked_shl(k as u32).unwrap_or(0);
                        Ok(OutputValue::Unshaped(t.dtype, None))
                    }
                }
            })
            .collect::<Result<Vec<_>, String>>()?;

        let context = HostContext {
            threads: self.threads,
            live_allocations: AtomicUsize::new(0),
            scratch: Mutex::new(Scratch::default()),
            constant_inputs: self.constant_inputs,
            prepared: Mutex::new(None),
            fusion: self.fusion.clone(),
            isa: self.isa,
            unshaped,
            output_dtypes: types.iter().map(|t| t.dtype).collect(),
            strings: Mutex::new((0..output_count).map(|_| Default::default()).collect()),
            values: CallValues {
                inputs: inputs.to_vec(),
                kinds: output_kinds,
                outputs: Mutex::new(outputs),
                spare: Mutex::new(Vec::new()),
            },
        };
        let input_views: Vec<TensorView<'_>> =
            context.values.inputs.iter().map(TestValue::view).collect();
        let passes = if self.heap_probe.is_some() { 2 } else { 1 };
        for pass in 0..passes {
            context.values.reset();
            lock(&context.strings)
                .iter_mut()
                .for_each(strings::StringBytes::reset);
            let output_views: Vec<TensorViewMut<'_>> = lock(&context.values.outputs)
                .iter_mut()
                .map(|output| match output {
                    // SAFETY: the tensor stays in the context, lent to this call alone.
                    OutputValue::Tensor(t) => unsafe { values::lend_mut(t) },
                    OutputValue::Unshaped(dtype, _) | OutputValue::Sequence(dtype, _) => {
                        TensorViewMut::new(*dtype, &[], &mut [])
                    }
                    OutputValue::None => TensorViewMut::new(DType::UNDEFINED, &[], &mut []),
                })
                .collect();
            let mut call = KernelCall {
                inputs: RSlice::from_slice(&input_views),
                outputs: RSlice::from_slice(&output_views),
                attributes: RSlice::from_slice(attributes),
                host: HostServices {
                    vtable: TEST_HOST_VTABLE,
                    ctx: (&context as *const HostContext).cast(),
                },
            };
            let before = self.heap_probe.map(|probe| probe());
            let result: Result<(), _> = (vtable.compute())(&mut call).into();
            let after = self.heap_probe.map(|probe| probe());
            result.map_err(|e| e.to_string())?;
            if let (Some(before), Some(after)) = (before, after) {
                if pass > 0 && after != before {
                    return Err(format!(
                        "{}: the kernel made {} heap allocations after warm-up",
                        O::OP_TYPE,
                        after - before
                    ));
                }
            }
            lock(&context.scratch).reset();
        }
        let leaked = context.live_allocations.load(Ordering::Relaxed);
        if leaked != 0 {
            return Err(format!(
                "{}: the kernel leaked {leaked} allocations of the lent allocator",
                O::OP_TYPE
            ));
        }
        let stored = std::mem::take(&mut *lock(&context.strings));
        context
            .values
            .results()?
            .into_iter()
            .zip(&stored)
            .enumerate()
            .map(|(k, (value, stored))| match value {
                TestValue::Tensor(t) if t.dtype == DType::STRING => {
                    t.with_stored_strings(k, stored).map(TestValue::Tensor)
                }
                other => Ok(other),
            })
            .collect()
    }
}

/// The per-call state behind the host table's `ctx`.
struct HostContext {
    threads: usize,
    live_allocations: AtomicUsize,
    scratch: Mutex<Scratch>,
    constant_inputs: u64,
    /// The node's prepared data and its size in bytes, kept across the calls of one `run`.
    prepared: Mutex<Option<(usize, Vec<Block>)>>,
    fusion: Vec<u8>,
    isa: Isa,
    /// Bit `k` set: output `k` is shaped by the kernel during the call.
    unshaped: u64,
    /// The dtype inference gave each output.
    output_dtypes: Vec<DType>,
    /// The bytes stored for each string output (ABI 1.9).
    strings: Mutex<Vec<strings::StringBytes>>,
    values: CallValues,
}

/// A bump arena of zeroed, 64-byte-aligned chunks. Chunks never move once made, so pointers
/// into them stay valid until the arena is dropped; `reset` keeps one chunk large enough for
/// everything the last call used, so a repeated call allocates nothing.
#[derive(Default)]
struct Scratch {
    chunks: Vec<Vec<Block>>,
    /// Blocks used in the last chunk.
    used: usize,
    /// Blocks handed out since the last reset.
    requested: usize,
}

impl Scratch {
    fn alloc(&mut self, size: usize) -> *mut u8 {
        let blocks = size.div_ceil(ALIGN).max(1);
        let fits = self
            .chunks
            .last()
            .is_some_and(|chunk| chunk.len() - self.used >= blocks);
        if !fits {
            self.chunks.push(vec![ZERO_BLOCK; blocks.max(1024)]);
            self.used = 0;
        }
        let start = self.used;
        self.used += blocks;
        self.requested += blocks;
        let Some(chunk) = self.chunks.last_mut() else {
            return std::ptr::null_mut();
        };
        // `as_mut_ptr` makes no reference to the whole chunk, so the pointers handed out
        // before stay valid.
        let base = chunk.as_mut_ptr();
        // SAFETY: `start + blocks <= chunk.len()` (checked by `fits`, or the chunk is new and
        // large enough), so the range is inside the chunk and not handed out before.
        unsafe {
            let ptr = base.add(start);
            ptr.write_bytes(0, blocks);
            ptr.cast()
        }
    }

    fn reset(&mut self) {
        if self.chunks.len() > 1 {
            self.chunks.clear();
            self.chunks.push(vec![ZERO_BLOCK; self.requested]);
        }
        self.used = 0;
        self.requested = 0;
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

const TEST_HOST_VTABLE: HostVTableRef = HostVTableRef(TEST_HOST_VTABLE_WM.static_as_prefix());

const TEST_HOST_VTABLE_WM: &WithMetadata<HostVTable> = &WithMetadata::new(HostVTable {
    alloc: test_alloc,
    free: test_free,
    scratch: test_scratch,
    parallel_for: test_parallel_for,
    threads: test_threads,
    constant_inputs: test_constant_inputs,
    prepared: test_prepared,
    scratch_unzeroed: test_scratch_unzeroed,
    fusion: test_fusion,
    isa: test_isa,
    run_subgraph: test_run_subgraph,
    subgraph_output: test_subgraph_output,
    unshaped_outputs: test_unshaped_outputs,
    shape_output: test_shape_output,
    has_subgraph: test_has_subgraph,
    input_held: values::test_input_held,
    sequence_len: values::test_sequence_len,
    sequence_element: values::test_sequence_element,
    push_element: values::test_push_element,
    set_none: values::test_set_none,
    forward: values::test_forward,
    run_subgraph_values: values::test_run_subgraph_values,
    store_string: strings::test_store_string,
});

/// The test host lends no subgraphs: they run in the real host.
unsafe extern "C" fn test_has_subgraph(_ctx: *const c_void, _name: RStr<'_>) -> bool {
    false
}

unsafe extern "C" fn test_run_subgraph(
    _ctx: *const c_void,
    name: RStr<'_>,
    _inputs: RSlice<'_, TensorView<'_>>,
) -> RResult<usize, RString> {
    RResult::RErr(RString::from(format!(
        "the test host has no subgraph '{name}': subgraphs run in the real host"
    )))
}

unsafe extern "C" fn test_subgraph_output(
    _ctx: *const c_void,
    _name: RStr<'_>,
    _index: usize,
) -> TensorView<'static> {
    TensorView::ABSENT
}

unsafe extern "C" fn test_unshaped_outputs(ctx: *const c_void) -> u64 {
    // SAFETY: the plugin passes back the context it was lent.
    unsafe { host(ctx) }.unshaped
}

unsafe extern "C" fn test_shape_output(
    ctx: *const c_void,
    index: usize,
    shape: RSlice<'_, usize>,
) -> TensorViewMut<'static> {
    // SAFETY: the plugin passes back the context it was lent.
    let values = &unsafe { host(ctx) }.values;
    values::shape_output(values, index, shape.as_slice())
        .unwrap_or_else(|| TensorViewMut::new(DType::UNDEFINED, &[], &mut []))
}

unsafe extern "C" fn test_isa(ctx: *const c_void) -> u32 {
    // SAFETY: the plugin passes back the context it was lent.
    unsafe { host(ctx) }.isa.to_abi()
}

unsafe extern "C" fn test_fusion(ctx: *const c_void, len: *mut usize) -> *const u8 {
    // SAFETY: the plugin passes back the context it was lent.
    let host = unsafe { host(ctx) };
    // SAFETY: the plugin passes a valid place for the length.
    unsafe { *len = host.fusion.len() };
    host.fusion.as_ptr()
}

/// # Safety
/// `ctx` must be the context [`TestHost::run`] lent for the current call.
unsafe fn host<'a>(ctx: *const c_void) -> &'a HostContext {
    // SAFETY: guaranteed by the caller; the context outlives the kernel call.
    unsafe { &*ctx.cast::<HostContext>() }
}

fn layout(size: usize, align: usize) -> Option<Layout> {
    Layout::from_size_align(size.max(1), align.max(ALIGN)).ok()
}

unsafe extern "C" fn test_alloc(ctx: *const c_void, size: usize, align: usize) -> *mut u8 {
    let Some(layout) = layout(size, align) else {
        return std::ptr::null_mut();
    };
    // SAFETY: the layout has a non-zero size.
    let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
    if !ptr.is_null() {
        // SAFETY: the plugin passes back the context it was lent.
        unsafe { host(ctx) }
            .live_allocations
            .fetch_add(1, Ordering::Relaxed);
    }
    ptr
}

unsafe extern "C" fn test_free(ctx: *const c_void, ptr: *mut u8, size: usize, align: usize) {
    let Some(layout) = layout(size, align) else {
        return;
    };
    if ptr.is_null() {
        return;
    }
    // SAFETY: the ABI contract: `ptr` came from `test_alloc` with this size and alignment,
    // which computed the same layout.
    unsafe { std::alloc::dealloc(ptr, layout) };
    // SAFETY: the plugin passes back the context it was lent.
    unsafe { host(ctx) }
        .live_allocations
        .fetch_sub(1, Ordering::Relaxed);
}

unsafe extern "C" fn test_scratch(ctx: *const c_void, size: usize, align: usize) -> *mut u8 {
    if align == 0 || !align.is_power_of_two() || align > ALIGN {
        return std::ptr::null_mut();
    }
    // SAFETY: the plugin passes back the context it was lent.
    let host = unsafe { host(ctx) };
    lock(&host.scratch).alloc(size)
}

/// Unzeroed scratch filled with 0xFF bytes (NaN as f32, -1 as integers), so a kernel that
/// reads before it writes shows in its results.
unsafe extern "C" fn test_scratch_unzeroed(
    ctx: *const c_void,
    size: usize,
    align: usize,
) -> *mut u8 {
    // SAFETY: the plugin passes back the context it was lent.
    let ptr = unsafe { test_scratch(ctx, size, align) };
    if !ptr.is_null() {
        // SAFETY: `test_scratch` returned `size` writable bytes.
        unsafe { ptr.write_bytes(0xFF, size) };
    }
    ptr
}

unsafe extern "C" fn test_parallel_for(
    _ctx: *const c_void,
    n: usize,
    task_ctx: *const c_void,
    task: ParallelTask,
) {
    let pieces = n.min(3);
    for piece in 0..pieces {
        let (start, end) = (piece * n / pieces, (piece + 1) * n / pieces);
        // SAFETY: the ABI contract: `task` accepts `task_ctx` and disjoint ranges of `0..n`,
        // and does not unwind.
        unsafe { (task.run)(task_ctx, start, end) };
    }
}

unsafe extern "C" fn test_threads(ctx: *const c_void) -> usize {
    // SAFETY: the plugin passes back the context it was lent.
    unsafe { host(ctx) }.threads
}

unsafe extern "C" fn test_constant_inputs(ctx: *const c_void) -> u64 {
    // SAFETY: the plugin passes back the context it was lent.
    unsafe { host(ctx) }.constant_inputs
}

unsafe extern "C" fn test_prepared(
    ctx: *const c_void,
    size: usize,
    align: usize,
    fill_ctx: *const c_void,
    fill: PrepareTask,
) -> *const u8 {
    if align == 0 || !align.is_power_of_two() || align > ALIGN {
        return std::ptr::null();
    }
    // SAFETY: the plugin passes back the context it was lent.
    let host = unsafe { host(ctx) };
    let mut prepared = lock(&host.prepared);
    if let Some((kept, blocks)) = prepared.as_ref() {
        return if *kept == size {
            blocks.as_ptr().cast()
        } else {
            std::ptr::null()
        };
    }
    let mut blocks = vec![ZERO_BLOCK; size.div_ceil(ALIGN).max(1)];
    // SAFETY: the ABI contract: `fill` accepts `fill_ctx` and `size` zeroed bytes, and does
    // not unwind; the blocks hold at least `size` bytes.
    let filled = unsafe { (fill.run)(fill_ctx, blocks.as_mut_ptr().cast(), size) };
    if !filled {
        return std::ptr::null();
    }
    let ptr = blocks.as_ptr().cast();
    *prepared = Some((size, blocks));
    ptr
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{KernelContext, KernelResult};

    /// Doubles input 0 using a scratch buffer, a lent allocation and `parallel_for`.
    struct Double;

    impl Operator for Double {
        const OP_TYPE: &'static str = "Double";

        fn compute(cx: &mut KernelContext<'_>) -> KernelResult<()> {
            let x = cx.input(0)?.f32()?;
            let tmp = cx.scratch::<f32>(x.len())?;
            let lent = cx.alloc::<f32>(4)?;
            assert!(lent.iter().all(|&v| v == 0.0));
            tmp.copy_from_slice(x);
            let sums = Mutex::new(0usize);
            cx.parallel_for(x.len(), |range| *lock(&sums) += range.len());
            assert_eq!(*lock(&sums), x.len());
            let y = cx.output(0)?.f32_mut()?;
            for (y, t) in y.iter_mut().zip(tmp.iter()) {
                *y = 2.0 * t;
            }
            Ok(())
        }
    }

    /// Reads an attribute and leaves its output unwritten.
    struct Lazy;

    impl Operator for Lazy {
        const OP_TYPE: &'static str = "Lazy";

        fn compute(cx: &mut KernelContext<'_>) -> KernelResult<()> {
            assert_eq!(cx.attributes().int("axis", 0)?, -1);
            assert_eq!(cx.attributes().ints("perm")?, Some(&[1, 0][..]));
            assert_eq!(cx.attributes().string("mode", "")?, "x");
            Ok(())
        }
    }

    struct Panics;

    impl Operator for Panics {
        const OP_TYPE: &'static str = "Panics";

        fn compute(_: &mut KernelContext<'_>) -> KernelResult<()> {
            panic!("boom")
        }
    }

    #[test]
    fn runs_a_kernel_with_host_services() {
        let x = OwnedTensor::f32(&[2, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        let y = TestHost::new()
            .threads(2)
            .run::<Double>(&[x], &[], 1)
            .unwrap();
        assert_eq!(y[0].shape(), [2, 3]);
        assert_eq!(y[0].to_vec::<f32>(), [2.0, 4.0, 6.0, 8.0, 10.0, 12.0]);
    }

    #[test]
    fn outputs_start_as_nan_and_attributes_arrive() {
        let x = OwnedTensor::f32(&[1], &[1.0]);
        let perm = [1, 0];
        let attributes = [
            int_attr("axis", -1),
            ints_attr("perm", &perm),
            string_attr("mode", "x"),
        ];
        let y = run_operator::<Lazy>(&[x], &attributes, 1).unwrap();
        assert!(y[0].as_slice::<f32>()[0].is_nan());
    }

    #[test]
    fn panics_become_errors() {
        let x = OwnedTensor::f32(&[1], &[1.0]);
        let error = run_operator::<Panics>(&[x], &[], 1).unwrap_err();
        assert!(error.contains("boom"), "{error}");
    }

    #[global_allocator]
    static COUNTING: crate::__private::CountingAllocator = crate::__private::CountingAllocator;

    /// Copies input 0, allocating a vector in one of its parallel pieces on every call.
    struct AllocatesInPiece;

    impl Operator for AllocatesInPiece {
        const OP_TYPE: &'static str = "AllocatesInPiece";

        fn compute(cx: &mut KernelContext<'_>) -> KernelResult<()> {
            let x = cx.input(0)?.f32()?.to_vec();
            cx.parallel_for(x.len(), |range| {
                if range.start == 0 {
                    drop(std::hint::black_box(vec![0u8; 64]));
                }
            });
            cx.output(0)?.f32_mut()?.copy_from_slice(&x);
            Ok(())
        }
    }

    /// Copies input 0 in parallel pieces, allocating nothing.
    struct CopyInPieces;

    impl Operator for CopyInPieces {
        const OP_TYPE: &'static str = "CopyInPieces";

        fn compute(cx: &mut KernelContext<'_>) -> KernelResult<()> {
            let x = cx.input(0)?.f32()?;
            let copied = AtomicUsize::new(0);
            cx.parallel_for(x.len(), |range| {
                copied.fetch_add(range.len(), Ordering::Relaxed);
            });
            assert_eq!(copied.into_inner(), x.len());
            cx.output(0)?.f32_mut()?.copy_from_slice(x);
            Ok(())
        }
    }

    #[test]
    fn the_heap_probe_sees_the_kernels_allocations_but_not_other_threads() {
        let x = OwnedTensor::f32(&[4], &[1.0, 2.0, 3.0, 4.0]);
        let error = TestHost::new()
            .heap_probe(heap_allocations)
            .run::<AllocatesInPiece>(std::slice::from_ref(&x), &[], 1)
            .unwrap_err();
        assert!(error.contains("heap allocations after warm-up"), "{error}");

        // Another thread allocating all the while does not count against the kernel.
        let allocated = AtomicUsize::new(0);
        let stop = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|scope| {
            scope.spawn(|| {
                while !stop.load(Ordering::Relaxed) {
                    drop(std::hint::black_box(vec![0u8; 64]));
                    allocated.fetch_add(1, Ordering::Relaxed);
                }
            });
            while allocated.load(Ordering::Relaxed) == 0 {
                std::hint::spin_loop();
            }
            // Under Miri every run is thousands of times slower; a few still overlap the
            // other thread's allocations.
            let runs = if cfg!(miri) { 20 } else { 1000 };
            let results: Vec<_> = (0..runs)
                .map(|_| {
                    TestHost::new()
                        .heap_probe(heap_allocations)
                        .run::<CopyInPieces>(std::slice::from_ref(&x), &[], 1)
                })
                .collect();
            stop.store(true, Ordering::Relaxed);
            for result in results {
                result.unwrap();
            }
        });
    }

    #[test]
    fn scratch_is_zeroed_aligned_and_reused_after_reset() {
        let mut scratch = Scratch::default();
        let a = scratch.alloc(10);
        let b = scratch.alloc(100_000);
        assert_eq!(a as usize % ALIGN, 0);
        assert_eq!(b as usize % ALIGN, 0);
        assert_eq!(scratch.chunks.len(), 2);
        scratch.reset();
        assert_eq!(scratch.chunks.len(), 1);
        scratch.alloc(10);
        scratch.alloc(100_000);
        assert_eq!(scratch.chunks.len(), 1);
    }
}
