//! The safe view of a kernel call: typed inputs and outputs, attributes, and the host's
//! allocator, scratch arena and `parallel_for`.

use crate::{
    attribute::Attributes,
    operator::KernelCall,
    tensor::{TensorView, TensorViewMut},
    DType, Element, Isa,
};
use std::{
    any::Any,
    ffi::c_void,
    fmt,
    marker::PhantomData,
    ops::Range,
    panic::{catch_unwind, resume_unwind, AssertUnwindSafe},
    sync::Mutex,
};

/// An error a kernel or inference function returns; the host reports it with the plugin,
/// operator and node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelError {
    message: String,
}

impl KernelError {
    pub fn new(message: impl Into<String>) -> Self {
        KernelError {
            message: message.into(),
        }
    }

    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for KernelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for KernelError {}

impl From<String> for KernelError {
    fn from(message: String) -> Self {
        KernelError { message }
    }
}

impl From<&str> for KernelError {
    fn from(message: &str) -> Self {
        KernelError::new(message)
    }
}

pub type KernelResult<T> = Result<T, KernelError>;

/// Whether bit `index` of `mask` is set (false past bit 63).
pub(crate) fn has_bit(mask: u64, index: usize) -> bool {
    u32::try_from(index)
        .ok()
        .and_then(|i| 1u64.checked_shl(i))
        .is_some_and(|bit| mask & bit != 0)
}

/// A read-only tensor lent by the host.
#[derive(Clone, Copy)]
pub struct TensorRef<'a> {
    view: TensorView<'a>,
}

impl<'a> TensorRef<'a> {
    pub fn new(view: TensorView<'a>) -> Self {
        TensorRef { view }
    }

    pub fn dtype(&self) -> DType {
        self.view.dtype
    }

    pub fn shape(&self) -> &'a [usize] {
        self.view.shape.as_slice()
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.shape().iter().product()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn bytes(&self) -> &'a [u8] {
        self.view.data.as_slice()
    }

    /// The elements as `&[T]`; an error if the dtype is not `T`'s.
    pub fn as_slice<T: Element>(&self) -> KernelResult<&'a [T]> {
        cast_slice(self.view.dtype, self.bytes())
    }

    /// Shorthand for `as_slice::<f32>()`.
    pub fn f32(&self) -> KernelResult<&'a [f32]> {
        self.as_slice()
    }

    /// The view as the ABI carries it, to pass on to a subgraph.
    pub fn view(&self) -> TensorView<'a> {
        self.view
    }
}

/// A writable output tensor, allocated by the host with the inferred shape.
pub struct TensorMut<'a> {
    pub(crate) dtype: DType,
    pub(crate) shape: &'a [usize],
    pub(crate) data: &'a mut [u8],
    /// The host of the call and the output's index, through which string elements are
    /// stored; `None` for a sequence's elements.
    pub(crate) output: Option<(crate::host::HostServices, usize)>,
}

impl<'a> TensorMut<'a> {
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    pub fn shape(&self) -> &'a [usize] {
        self.shape
    }

    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn bytes_mut(self) -> &'a mut [u8] {
        self.data
    }

    /// The elements as `&mut [T]`; an error if the dtype is not `T`'s.
    pub fn as_slice_mut<T: Element>(self) -> KernelResult<&'a mut [T]> {
        check_cast::<T>(self.dtype, self.data)?;
        let len = self.data.len() / std::mem::size_of::<T>();
        // SAFETY: `check_cast` verified the dtype is T's (so every byte pattern the host wrote is
        // a valid T), the alignment, and that the length is a whole number of elements.
        Ok(unsafe { std::slice::from_raw_parts_mut(self.data.as_mut_ptr().cast::<T>(), len) })
    }

    /// Shorthand for `as_slice_mut::<f32>()`.
    pub fn f32_mut(self) -> KernelResult<&'a mut [f32]> {
        self.as_slice_mut()
    }
}

fn check_cast<T: Element>(dtype: DType, bytes: &[u8]) -> KernelResult<()> {
    if dtype != T::DTYPE {
        return Err(KernelError::new(format!(
            "tensor has dtype {dtype}, kernel expected {}",
            T::DTYPE
        )));
    }
    if bytes.as_ptr().align_offset(std::mem::align_of::<T>()) != 0
        || !bytes.len().is_multiple_of(std::mem::size_of::<T>())
    {
        return Err(KernelError::new(format!(
            "tensor data of {} bytes at {:p} is not a whole, aligned run of {dtype}",
            bytes.len(),
            bytes.as_ptr()
        )));
    }
    Ok(())
}

fn cast_slice<T: Element>(dtype: DType, bytes: &[u8]) -> KernelResult<&[T]> {
    check_cast::<T>(dtype, bytes)?;
    // SAFETY: `check_cast` verified dtype, alignment and length; the host writes only valid
    // values of the tensor's dtype.
    Ok(unsafe {
        std::slice::from_raw_parts(
            bytes.as_ptr().cast::<T>(),
            bytes.len() / std::mem::size_of::<T>(),
        )
    })
}

/// The arguments of [`Operator::compute`](crate::Operator::compute).
pub struct KernelContext<'a> {
    inputs: &'a [TensorView<'a>],
    outputs: &'a [TensorViewMut<'a>],
    /// Bit `i` set: output `i` was handed out (each is handed out once).
    taken: std::cell::Cell<u64>,
    attributes: Attributes<'a>,
    pub(crate) host: crate::host::HostServices,
}

impl<'a> KernelContext<'a> {
    /// Wraps a call.
    pub fn new(call: &'a mut KernelCall<'_>) -> Self {
        KernelContext {
            inputs: call.inputs.as_slice(),
            outputs: call.outputs.as_slice(),
            taken: std::cell::Cell::new(0),
            attributes: Attributes::new(call.attributes.as_slice()),
            host: call.host,
        }
    }

    /// Number of inputs, optional ones included.
    pub fn input_count(&self) -> usize {
        self.inputs.len()
    }

    pub fn output_count(&self) -> usize {
        self.outputs.len()
    }

    /// Input `index`; an error if it is missing or absent.
    pub fn input(&self, index: usize) -> KernelResult<TensorRef<'a>> {
        self.optional_input(index)
            .ok_or_else(|| KernelError::new(format!("input {index} is required")))
    }

    /// Input `index`, or `None` when the node omits this optional input.
    pub fn optional_input(&self, index: usize) -> Option<TensorRef<'a>> {
        self.inputs
            .get(index)
            .filter(|v| !v.is_absent())
            .map(|v| TensorRef::new(*v))
    }

    /// Output `index`. Each output can be taken once.
    pub fn output(&self, index: usize) -> KernelResult<TensorMut<'a>> {
        let view = self.take_output(index)?;
        let (ptr, len) = (view.data.as_ptr().cast_mut(), view.data.len());
        // SAFETY: the host lends each output's bytes exclusively to this call for `'a` (the view
        // was made from a `&mut [u8]`); the `taken` bit guarantees this is the only reference
        // ever made of output `index`'s data.
        let data = unsafe { std::slice::from_raw_parts_mut(ptr, len) };
        Ok(TensorMut {
            dtype: view.dtype,
            shape: view.shape.as_slice(),
            data,
            output: Some((self.host, index)),
        })
    }

    /// Marks output `index` taken and returns its view; an error if it does not exist or was
    /// taken before.
    pub(crate) fn take_output(&self, index: usize) -> KernelResult<&'a TensorViewMut<'a>> {
        let bit = 1u64.checked_shl(index as u32).unwrap_or(0);
        let taken = self.taken.get();
        if index >= self.outputs.len() || bit == 0 || taken & bit != 0 {
            return Err(KernelError::new(format!(
                "output {index} does not exist or was already taken"
            )));
        }
        self.taken.set(taken | bit);
        Ok(&self.outputs[index])
    }

    pub fn attributes(&self) -> Attributes<'a> {
        self.attributes
    }

    /// How many threads [`parallel_for`](Self::parallel_for) may use.
    pub fn threads(&self) -> usize {
        // SAFETY: the table and context come from the host for the duration of this call.
        unsafe { (self.host.vtable.threads())(self.host.ctx) }
    }

    /// A zeroed temporary of `len` elements from the host's scratch arena, freed by the host
    /// after the call returns.
    pub fn scratch<T: Element>(&self, len: usize) -> KernelResult<&'a mut [T]> {
        // SAFETY: the host's scratch function returns zeroed memory of the size asked for,
        // aligned to 64, or null; zero bytes are a valid value of every Element.
        unsafe { self.lend_scratch(self.host.vtable.scratch(), len) }
    }

    /// `len` elements of scratch from the host's function `lend` (`scratch` or
    /// `scratch_unzeroed`).
    ///
    /// # Safety
    /// `lend` must return null or `size` bytes aligned to 64 that stay valid and unaliased
    /// until the call returns, holding valid values of `T`.
    unsafe fn lend_scratch<T: Element>(
        &self,
        lend: unsafe extern "C" fn(*const c_void, usize, usize) -> *mut u8,
        len: usize,
    ) -> KernelResult<&'a mut [T]> {
        let size = len
            .checked_mul(std::mem::size_of::<T>())
            .ok_or_else(|| KernelError::new("scratch size overflows"))?;
        // SAFETY: guaranteed by the caller; the context comes from the host for this call.
        unsafe {
            let ptr = lend(self.host.ctx, size, 64);
            if ptr.is_null() {
                return Err(KernelError::new(format!(
                    "the host refused {size} bytes of scratch: more than the deployment's engine.scratch_limit or engine.memory_limit allows"
                )));
            }
            Ok(std::slice::from_raw_parts_mut(ptr.cast::<T>(), len))
        }
    }

    /// Whether input `index` is a constant of the compiled model (an initializer or a folded
    /// value), the same data on every call of this node. False when the host does not say
    /// (before ABI 1.3).
    pub fn is_constant(&self, index: usize) -> bool {
        let Some(constant_inputs) = self.host.vtable.constant_inputs() else {
            return false;
        };
        // SAFETY: the table and context come from the host for the duration of this call.
        has_bit(unsafe { constant_inputs(self.host.ctx) }, index)
    }

    /// The description this operator returned from [`Operator::fuse`](crate::Operator::fuse)
    /// for the nodes the host fused into this call; empty when nothing was fused (and before
    /// ABI 1.4). The inputs the absorbed nodes bring follow the node's own.
    pub fn fusion(&self) -> &'a [u8] {
        let Some(fusion) = self.host.vtable.fusion() else {
            return &[];
        };
        let mut len = 0usize;
        // SAFETY: the table and context come from the host for the duration of this call.
        let ptr = unsafe { fusion(self.host.ctx, &mut len) };
        if ptr.is_null() || len == 0 {
            return &[];
        }
        // SAFETY: the host keeps these `len` bytes unchanged with the compiled node, which
        // outlives this call.
        unsafe { std::slice::from_raw_parts(ptr, len) }
    }

    /// The instruction set this call's kernels may use, chosen by the host: the best the CPU
    /// offers unless the deployment or `OPAL_ISA` caps it. A host before ABI 1.5 does not
    /// say; the kernel then uses [`Isa::from_environment`].
    pub fn isa(&self) -> Isa {
        let Some(isa) = self.host.vtable.isa() else {
            return Isa::from_environment();
        };
        // SAFETY: the table and context come from the host for the duration of this call.
        let value = unsafe { isa(self.host.ctx) };
        Isa::from_abi(value).unwrap_or(Isa::Baseline)
    }

    /// Data this node derives once from its constant inputs, such as weights packed for a
    /// matrix product: `len` elements the host keeps with the compiled node, in its tracked
    /// memory. The first call that asks fills them (from zero) with `fill`; later calls and
    /// runs get the same values back without calling it. `Ok(None)` when the host keeps no
    /// data for this call (while folding constants, or a host before ABI 1.3): the kernel then
    /// derives what it needs in scratch. `fill` must only read inputs that
    /// [`is_constant`](Self::is_constant), and every call of the node must ask for the same
    /// `len`. An error from `fill` (or its panic) comes back as this call's.
    pub fn prepared<T: Element, F: FnOnce(&mut [T]) -> KernelResult<()>>(
        &self,
        len: usize,
        fill: F,
    ) -> KernelResult<Option<&'a [T]>> {
        struct Fill<F> {
            fill: std::cell::Cell<Option<F>>,
            error: std::cell::Cell<Option<KernelError>>,
        }
        unsafe extern "C" fn run<T: Element, F: FnOnce(&mut [T]) -> KernelResult<()>>(
            fill_ctx: *const c_void,
            data: *mut u8,
            size: usize,
        ) -> bool {
            // SAFETY: `fill_ctx` is the `Fill<F>` below, alive while the host calls this.
            let task = unsafe { &*fill_ctx.cast::<Fill<F>>() };
            let Some(fill) = task.fill.take() else {
                return false;
            };
            // SAFETY: the host lends `size` zeroed bytes aligned for `T` (asked for below),
            // exclusively until this returns; zero bytes are a valid value of every Element.
            let values = unsafe {
                std::slice::from_raw_parts_mut(data.cast::<T>(), size / std::mem::size_of::<T>())
            };
            let result = catch_unwind(AssertUnwindSafe(|| fill(values))).unwrap_or_else(|_| {
                Err(KernelError::new(
                    "filling the node's prepared data panicked",
                ))
            });
            match result {
                Ok(()) => true,
                Err(error) => {
                    task.error.set(Some(error));
                    false
                }
            }
        }
        let Some(prepared) = self.host.vtable.prepared() else {
            return Ok(None);
        };
        let size = len
            .checked_mul(std::mem::size_of::<T>())
            .ok_or_else(|| KernelError::new("prepared data size overflows"))?;
        let task = Fill {
            fill: std::cell::Cell::new(Some(fill)),
            error: std::cell::Cell::new(None),
        };
        // SAFETY: the table and context come from the host for this call; `run::<T, F>`
        // matches `task`'s type, catches every panic, and `task` outlives the call.
        let ptr = unsafe {
            prepared(
                self.host.ctx,
                size,
                std::mem::align_of::<T>().max(64),
                (&task as *const Fill<F>).cast(),
                crate::host::PrepareTask { run: run::<T, F> },
            )
        };
        if let Some(error) = task.error.take() {
            return Err(error);
        }
        if ptr.is_null() {
            return Ok(None);
        }
        // SAFETY: the host keeps these `size` bytes, filled by `run` with valid `T`s and
        // aligned as asked, unchanged for as long as the compiled node exists, which outlives
        // this call.
        Ok(Some(unsafe {
            std::slice::from_raw_parts(ptr.cast::<T>(), len)
        }))
    }

    /// A temporary of `len` elements from the host's scratch arena, like
    /// [`scratch`](Self::scratch) but not zeroed: the values are whatever earlier calls left
    /// (always valid values of `T`), so the kernel must write every element before reading
    /// it. Saves zeroing large buffers such as packed panels or im2col columns. (`bool`
    /// buffers, and hosts before ABI 1.3, give zeroed scratch.)
    pub fn scratch_unzeroed<T: Element>(&self, len: usize) -> KernelResult<&'a mut [T]> {
        let unzeroed = self.host.vtable.scratch_unzeroed();
        let (Some(unzeroed), false) = (unzeroed, T::DTYPE == DType::BOOL) else {
            return self.scratch(len);
        };
        // SAFETY: the host returns initialised bytes of the size asked for, aligned to 64, or
        // null; every bit pattern is a valid `T` other than `bool`, which is excluded above.
        unsafe { self.lend_scratch(unzeroed, len) }
    }

    /// A zeroed buffer of `len` elements from the host's tracked allocator, counted as this
    /// plugin's memory and freed when dropped.
    pub fn alloc<T: Element>(&self, len: usize) -> KernelResult<ScratchBuffer<'a, T>> {
        ScratchBuffer::new(self.host, len)
    }

    /// Runs `f` over disjoint ranges covering `0..n`, on the host's threads. A panic in `f` is
    /// carried back to this thread.
    pub fn parallel_for<F: Fn(Range<usize>) + Sync>(&self, n: usize, f: F) {
        struct Task<'f, F> {
            f: &'f F,
            panic: Mutex<Option<Box<dyn Any + Send>>>,
        }
        unsafe extern "C" fn run<F: Fn(Range<usize>) + Sync>(
            task: *const c_void,
            start: usize,
            end: usize,
        ) {
            // SAFETY: `task` is the `Task<F>` below, alive until `parallel_for` returns.
            let task = unsafe { &*task.cast::<Task<'_, F>>() };
            if let Err(payload) = catch_unwind(AssertUnwindSafe(|| (task.f)(start..end))) {
                let mut slot = task.panic.lock().unwrap_or_else(|e| e.into_inner());
                slot.get_or_insert(payload);
            }
        }
        if n == 0 {
            return;
        }
        let task = Task {
            f: &f,
            panic: Mutex::new(None),
        };
        // SAFETY: `run::<F>` matches `task`'s type, catches every panic, and `task` outlives
        // the call, which returns only when every range has run.
        unsafe {
            (self.host.vtable.parallel_for())(
                self.host.ctx,
                n,
                (&task as *const Task<'_, F>).cast(),
                crate::host::ParallelTask { run: run::<F> },
            );
        }
        if let Some(payload) = task.panic.into_inner().unwrap_or_else(|e| e.into_inner()) {
            resume_unwind(payload);
        }
    }
}

/// Memory from the host's tracked allocator, accounted to the plugin, freed on drop.
pub struct ScratchBuffer<'a, T: Element> {
    host: crate::host::HostServices,
    ptr: *mut T,
    len: usize,
    _call: PhantomData<&'a ()>,
}

impl<'a, T: Element> ScratchBuffer<'a, T> {
    fn new(host: crate::host::HostServices, len: usize) -> KernelResult<Self> {
        let size = len
            .checked_mul(std::mem::size_of::<T>())
            .ok_or_else(|| KernelError::new("allocation size overflows"))?;
        // SAFETY: the host's alloc returns `size` bytes aligned to 64 or null.
        let ptr = unsafe { (host.vtable.alloc())(host.ctx, size.max(1), 64) };
        if ptr.is_null() {
            return Err(KernelError::new(format!(
                "host refused to allocate {size} bytes"
            )));
        }
        // SAFETY: `ptr` is valid for `size` bytes; zeroed bytes are a valid value of every Element.
        unsafe { ptr.write_bytes(0, size) };
        Ok(ScratchBuffer {
            host,
            ptr: ptr.cast(),
            len,
            _call: PhantomData,
        })
    }
}

impl<T: Element> std::ops::Deref for ScratchBuffer<'_, T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        // SAFETY: `ptr` holds `len` initialised elements owned by this buffer.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

impl<T: Element> std::ops::DerefMut for ScratchBuffer<'_, T> {
    fn deref_mut(&mut self) -> &mut [T] {
        // SAFETY: as in `deref`, and `&mut self` makes the access unique.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }
}

impl<T: Element> Drop for ScratchBuffer<'_, T> {
    fn drop(&mut self) {
        let size = (self.len * std::mem::size_of::<T>()).max(1);
        // SAFETY: the pointer came from the host's alloc with this size and alignment 64.
        unsafe { (self.host.vtable.free())(self.host.ctx, self.ptr.cast(), size, 64) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        testing::{run_operator, OwnedTensor, TestHost},
        Operator,
    };
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn view<'a>(dtype: DType, shape: &'a [usize], bytes: &'a [u8]) -> TensorRef<'a> {
        TensorRef::new(TensorView::new(dtype, shape, bytes))
    }

    /// The error of `result`, whose value has no `Debug`.
    #[track_caller]
    fn error_of<T>(result: KernelResult<T>) -> String {
        match result {
            Ok(_) => panic!("expected an error"),
            Err(error) => error.message().to_owned(),
        }
    }

    /// A count that never moves: makes [`TestHost`] run a kernel twice without checking its
    /// allocations.
    fn two_passes() -> u64 {
        0
    }

    #[test]
    fn typed_views_need_the_dtype_an_aligned_start_and_whole_elements() {
        let tensor = OwnedTensor::f32(&[4], &[1.0, 2.0, 3.0, 4.0]);
        let bytes = tensor.bytes();
        assert_eq!(
            view(DType::F32, &[4], bytes).f32(),
            Ok(&[1.0, 2.0, 3.0, 4.0][..])
        );
        assert_eq!(
            view(DType::F32, &[2], &bytes[8..]).f32(),
            Ok(&[3.0, 4.0][..])
        );
        assert_eq!(view(DType::F32, &[0], &bytes[..0]).f32(), Ok(&[][..]));
        assert_eq!(
            view(DType::U8, &[3], &bytes[1..4]).as_slice::<u8>(),
            Ok(&bytes[1..4])
        );
        let wrong_dtype = view(DType::I32, &[4], bytes).f32().unwrap_err();
        assert_eq!(
            wrong_dtype.message(),
            "tensor has dtype i32, kernel expected f32"
        );
        for (range, shape) in [(1..13, [3]), (0..6, [1])] {
            let error = view(DType::F32, &shape, &bytes[range]).f32().unwrap_err();
            assert!(
                error
                    .message()
                    .contains("is not a whole, aligned run of f32"),
                "{error}"
            );
        }
        let shape = [2, 2];
        let matrix = view(DType::F32, &shape, bytes);
        assert_eq!(
            (matrix.shape(), matrix.len(), matrix.is_empty()),
            (&shape[..], 4, false)
        );
    }

    /// Writes both outputs while both are borrowed, and checks that each is handed out once.
    struct TwoOutputs;

    impl Operator for TwoOutputs {
        const OP_TYPE: &'static str = "TwoOutputs";

        fn compute(cx: &mut KernelContext<'_>) -> KernelResult<()> {
            let x = cx.input(0)?.f32()?;
            let sums = cx.output(0)?;
            assert_eq!(
                (sums.dtype(), sums.shape(), sums.len()),
                (DType::F32, &[3][..], 3)
            );
            let sums = sums.f32_mut()?;
            let products = cx.output(1)?.as_slice_mut::<f32>()?;
            for ((sum, product), &v) in sums.iter_mut().zip(products.iter_mut()).zip(x) {
                *sum = v + 1.0;
                *product = v * 2.0;
            }
            sums[0] += products[0];
            products[2] += sums[2];
            for index in [0, 1, 2, 63, 64, usize::MAX] {
                assert_eq!(
                    error_of(cx.output(index)),
                    format!("output {index} does not exist or was already taken")
                );
            }
            Ok(())
        }
    }

    #[test]
    fn each_output_is_lent_once_and_outputs_are_written_side_by_side() {
        let x = OwnedTensor::f32(&[3], &[1.0, 2.0, 3.0]);
        let y = run_operator::<TwoOutputs>(&[x], &[], 2).unwrap();
        assert_eq!(y[0].to_vec::<f32>(), [4.0, 3.0, 4.0]);
        assert_eq!(y[1].to_vec::<f32>(), [2.0, 4.0, 10.0]);
    }

    /// Checks required, absent and missing inputs, and copies input 2 to the output.
    struct OptionalInputs;

    impl Operator for OptionalInputs {
        const OP_TYPE: &'static str = "OptionalInputs";

        fn compute(cx: &mut KernelContext<'_>) -> KernelResult<()> {
            assert_eq!(cx.input_count(), 3);
            assert_eq!(cx.output_count(), 1);
            assert!(cx.optional_input(1).is_none());
            assert!(cx.optional_input(3).is_none());
            assert_eq!(error_of(cx.input(1)), "input 1 is required");
            assert_eq!(error_of(cx.input(3)), "input 3 is required");
            let counts = cx.optional_input(2).ok_or("input 2 is given")?;
            let counts = counts.as_slice::<i64>()?;
            let y = cx.output(0)?.bytes_mut();
            for (y, &count) in y.iter_mut().zip(counts) {
                *y = u8::try_from(count).map_err(|_| "a count over 255")?;
            }
            Ok(())
        }
    }

    #[test]
    fn absent_and_missing_inputs_are_told_apart_from_given_ones() {
        let inputs = [
            OwnedTensor::new::<u8>(&[2], &[0, 0]),
            OwnedTensor::absent(),
            OwnedTensor::i64(&[2], &[7, 200]),
        ];
        let y = run_operator::<OptionalInputs>(&inputs, &[], 1).unwrap();
        assert_eq!(y[0].to_vec::<u8>(), [7, 200]);
    }

    /// Takes every kind of temporary memory at once, uses it all, then asks for too much.
    struct Temporaries;

    impl Operator for Temporaries {
        const OP_TYPE: &'static str = "Temporaries";

        fn compute(cx: &mut KernelContext<'_>) -> KernelResult<()> {
            let x = cx.input(0)?.f32()?;
            let zeroed = cx.scratch::<f32>(x.len())?;
            assert!(zeroed.iter().all(|&v| v == 0.0));
            let unzeroed = cx.scratch_unzeroed::<u32>(x.len())?;
            let flags = cx.scratch_unzeroed::<bool>(3)?;
            assert_eq!(flags, [false; 3]);
            let mut lent = cx.alloc::<f64>(x.len())?;
            assert!(lent.iter().all(|&v| v == 0.0));
            let nothing = cx.alloc::<u16>(0)?;
            assert!(nothing.is_empty());
            // Larger than the test host's arena chunk (64 KiB): the arena grows while the
            // scratch above is still in use.
            let large = cx.scratch::<u8>(70_000)?;
            assert_eq!((large[0], large[69_999]), (0, 0));
            large[69_999] = 1;
            for (i, &v) in x.iter().enumerate() {
                zeroed[i] = v;
                unzeroed[i] = i as u32;
                lent[i] = f64::from(v) * 2.0;
                flags[i % 3] = true;
            }
            assert_eq!((large[0], large[69_999]), (0, 1));
            let y = cx.output(0)?.f32_mut()?;
            for (i, y) in y.iter_mut().enumerate() {
                *y = zeroed[i] + unzeroed[i] as f32 + lent[i] as f32;
            }
            assert_eq!(
                error_of(cx.scratch::<u64>(usize::MAX / 4)),
                "scratch size overflows"
            );
            assert_eq!(
                error_of(cx.scratch_unzeroed::<u16>(usize::MAX)),
                "scratch size overflows"
            );
            assert_eq!(
                error_of(cx.alloc::<u32>(usize::MAX / 2)),
                "allocation size overflows"
            );
            Ok(())
        }
    }

    #[test]
    fn scratch_and_lent_memory_can_all_be_used_at_once() {
        let x = OwnedTensor::f32(&[4], &[1.0, 2.0, 3.0, 4.0]);
        let y = run_operator::<Temporaries>(&[x], &[], 1).unwrap();
        assert_eq!(y[0].to_vec::<f32>(), [3.0, 7.0, 11.0, 15.0]);
    }

    static FILLS: AtomicUsize = AtomicUsize::new(0);

    /// y = x + 10·w with 10·w kept as prepared data; checks what the host says of the call.
    struct Prepares;

    impl Operator for Prepares {
        const OP_TYPE: &'static str = "Prepares";

        fn compute(cx: &mut KernelContext<'_>) -> KernelResult<()> {
            assert!(!cx.is_constant(0));
            assert!(cx.is_constant(1));
            assert!(!cx.is_constant(64));
            assert!(!cx.is_constant(usize::MAX));
            assert_eq!(cx.fusion(), [7, 8, 9]);
            assert_eq!(cx.threads(), 3);
            let x = cx.input(0)?.f32()?;
            let w = cx.input(1)?.f32()?;
            let scaled = cx
                .prepared::<f32, _>(w.len(), |scaled| {
                    FILLS.fetch_add(1, Ordering::Relaxed);
                    for (s, &w) in scaled.iter_mut().zip(w) {
                        *s = 10.0 * w;
                    }
                    Ok(())
                })?
                .ok_or("the test host keeps prepared data")?;
            let y = cx.output(0)?.f32_mut()?;
            for ((y, &x), &s) in y.iter_mut().zip(x).zip(scaled) {
                *y = x + s;
            }
            Ok(())
        }
    }

    #[test]
    fn prepared_data_is_filled_once_and_lent_back_read_only() {
        let inputs = [
            OwnedTensor::f32(&[3], &[1.0, 2.0, 3.0]),
            OwnedTensor::f32(&[3], &[0.5, -0.5, 0.25]),
        ];
        let y = TestHost::new()
            .threads(3)
            .constant_inputs(0b10)
            .fusion(vec![7, 8, 9])
            .heap_probe(two_passes)
            .run::<Prepares>(&inputs, &[], 1)
            .unwrap();
        assert_eq!(y[0].to_vec::<f32>(), [6.0, -3.0, 5.5]);
        assert_eq!(FILLS.load(Ordering::Relaxed), 1);
    }

    /// Fills prepared data with an error, a panic and an overflowing size.
    struct FillFails;

    impl Operator for FillFails {
        const OP_TYPE: &'static str = "FillFails";

        fn compute(cx: &mut KernelContext<'_>) -> KernelResult<()> {
            let error = cx.prepared::<u8, _>(4, |_| Err(KernelError::new("no weights")));
            assert_eq!(error_of(error), "no weights");
            let panic = cx.prepared::<u8, _>(4, |_| panic!("filling panics"));
            assert_eq!(error_of(panic), "filling the node's prepared data panicked");
            let huge = cx.prepared::<u64, _>(usize::MAX, |_| Ok(()));
            assert_eq!(error_of(huge), "prepared data size overflows");
            cx.output(0)?.bytes_mut().fill(0);
            Ok(())
        }
    }

    #[test]
    fn a_failing_fill_of_prepared_data_is_the_calls_error() {
        let x = OwnedTensor::f32(&[1], &[1.0]);
        run_operator::<FillFails>(&[x], &[], 1).unwrap();
    }

    /// Counts the elements its pieces see, then panics in every piece but the first.
    struct PanicsInAPiece;

    impl Operator for PanicsInAPiece {
        const OP_TYPE: &'static str = "PanicsInAPiece";

        fn compute(cx: &mut KernelContext<'_>) -> KernelResult<()> {
            let seen = AtomicUsize::new(0);
            cx.parallel_for(0, |_| panic!("no range of 0..0 is run"));
            cx.parallel_for(10, |range| {
                seen.fetch_add(range.len(), Ordering::Relaxed);
            });
            assert_eq!(seen.load(Ordering::Relaxed), 10);
            cx.parallel_for(10, |range| {
                if range.start > 0 {
                    panic!("the piece from {} panics", range.start);
                }
            });
            unreachable!("parallel_for carries the panic back")
        }
    }

    #[test]
    fn a_panic_in_a_parallel_piece_reaches_the_kernel_call() {
        let x = OwnedTensor::f32(&[1], &[1.0]);
        let error = run_operator::<PanicsInAPiece>(&[x], &[], 1).unwrap_err();
        assert_eq!(error, "panicked: the piece from 3 panics");
    }
}
