//! The safe view of values beyond tensors (ABI 1.8): a kernel reads a sequence input's
//! elements and whether an optional input holds a value, appends host-allocated tensors to a
//! sequence output, makes an optional output none, and passes values on (to its outputs, or to
//! a subgraph) without reading them; inference reads and declares value kinds.

use crate::{
    host::HostServices,
    infer::{InferContext, InferInput, InferTensor},
    kernel::{KernelContext, KernelError, KernelResult, TensorMut, TensorRef},
    value::{Held, ValueKind, ValueSource, ValueType},
    DType,
};
use abi_stable::std_types::{RSlice, RStr, RVec};
use std::marker::PhantomData;

/// What an input of a call holds.
#[derive(Clone, Copy)]
pub enum Value<'a> {
    Tensor(TensorRef<'a>),
    Sequence(SequenceRef<'a>),
    /// An optional input without a value.
    None,
}

/// A sequence input: its elements, lent by the host for the call.
#[derive(Clone, Copy)]
pub struct SequenceRef<'a> {
    host: HostServices,
    input: usize,
    len: usize,
    call: PhantomData<&'a ()>,
}

impl<'a> SequenceRef<'a> {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Element `index`; an error past the end.
    pub fn get(&self, index: usize) -> KernelResult<TensorRef<'a>> {
        let element = self.host.vtable.sequence_element().ok_or_else(too_old)?;
        // SAFETY: the table and context come from the host for the duration of this call, and
        // the host keeps the sequence's elements unchanged until it returns.
        let view = unsafe { element(self.host.ctx, self.input, index) };
        if index >= self.len || view.is_absent() {
            return Err(KernelError::new(format!(
                "element {index} of a sequence of {} is out of range",
                self.len
            )));
        }
        Ok(TensorRef::new(view))
    }

    /// The elements in order.
    pub fn iter(&self) -> impl Iterator<Item = KernelResult<TensorRef<'a>>> + '_ {
        (0..self.len).map(|i| self.get(i))
    }
}

fn too_old() -> KernelError {
    KernelError::new("the host does not pass sequences or optionals (it is older than ABI 1.8)")
}

impl<'a> KernelContext<'a> {
    /// What input `index` holds; an error if it is missing or absent.
    pub fn value(&self, index: usize) -> KernelResult<Value<'a>> {
        self.optional_value(index)?
            .ok_or_else(|| KernelError::new(format!("input {index} is required")))
    }

    /// What input `index` holds, or `None` when the node omits it.
    pub fn optional_value(&self, index: usize) -> KernelResult<Option<Value<'a>>> {
        if index >= self.input_count() {
            return Ok(None);
        }
        let held = match self.host.vtable.input_held() {
            // SAFETY: the table and context come from the host for the duration of this call.
            Some(held) => unsafe { held(self.host.ctx, index) },
            None => Held::TENSOR,
        };
        match held {
            Held::SEQUENCE => {
                let len = self.host.vtable.sequence_len().ok_or_else(too_old)?;
                Ok(Some(Value::Sequence(SequenceRef {
                    host: self.host,
                    input: index,
                    // SAFETY: as above.
                    len: unsafe { len(self.host.ctx, index) },
                    call: PhantomData,
                })))
            }
            Held::NONE => Ok(Some(Value::None)),
            _ => Ok(self.optional_input(index).map(Value::Tensor)),
        }
    }

    /// Sequence input `index`; an error if it holds anything else.
    pub fn sequence(&self, index: usize) -> KernelResult<SequenceRef<'a>> {
        match self.value(index)? {
            Value::Sequence(sequence) => Ok(sequence),
            Value::Tensor(_) => Err(KernelError::new(format!(
                "input {index} is a tensor, not a sequence"
            ))),
            Value::None => Err(KernelError::new(format!(
                "input {index} is none, not a sequence"
            ))),
        }
    }

    /// Appends to sequence output `output` a zeroed tensor of `dtype` and `shape`, allocated
    /// by the host, and returns it to be written. Elements appended earlier stay writable.
    pub fn push_element<'s>(
        &self,
        output: usize,
        dtype: DType,
        shape: &'s [usize],
    ) -> KernelResult<TensorMut<'s>>
    where
        'a: 's,
    {
        let push = self.host.vtable.push_element().ok_or_else(too_old)?;
        // SAFETY: the table and context come from the host for the duration of this call.
        let view = unsafe { push(self.host.ctx, output, dtype, shape.into()) };
        if view.dtype == DType::UNDEFINED {
            return Err(KernelError::new(format!(
                "the host refused an element of {dtype} {shape:?} for output {output}: it is no sequence of {dtype}, or the deployment's engine.memory_limit does not allow it"
            )));
        }
        let (ptr, len) = (view.data.as_ptr().cast_mut(), view.data.len());
        // SAFETY: the host lends each appended element's bytes to this call alone until it
        // returns, and hands each element out once.
        let data = unsafe { std::slice::from_raw_parts_mut(ptr, len) };
        Ok(TensorMut {
            dtype,
            shape,
            data,
            output: None,
        })
    }

    /// Makes optional output `output` none.
    pub fn set_none(&self, output: usize) -> KernelResult<()> {
        let set_none = self.host.vtable.set_none().ok_or_else(too_old)?;
        self.take_output(output)?;
        // SAFETY: the table and context come from the host for the duration of this call.
        if unsafe { set_none(self.host.ctx, output) } {
            Ok(())
        } else {
            Err(KernelError::new(format!(
                "output {output} is not optional, so it cannot be none"
            )))
        }
    }

    /// Gives output `output` (a sequence or optional, or a tensor the host left unshaped) a
    /// copy of the value `source` names: an input of the node, or an output of a subgraph.
    pub fn forward(&self, output: usize, source: ValueSource<'_>) -> KernelResult<()> {
        let forward = self.host.vtable.forward().ok_or_else(too_old)?;
        self.take_output(output)?;
        // SAFETY: the table and context come from the host for the duration of this call.
        unsafe { forward(self.host.ctx, output, source) }
            .into_result()
            .map_err(|e| KernelError::new(e.into_string()))
    }

    /// Runs the node's subgraph in graph attribute `name` on inputs of any kind, as
    /// [`run_subgraph`](Self::run_subgraph) does on tensors. An input naming an output of this
    /// subgraph's last run takes that output from it.
    pub fn run_subgraph_values(
        &mut self,
        name: &str,
        inputs: &[ValueSource<'_>],
    ) -> KernelResult<usize> {
        let run = self.host.vtable.run_subgraph_values().ok_or_else(too_old)?;
        // SAFETY: the table and context come from the host for the duration of this call; the
        // inputs are valid for the call.
        let result = unsafe { run(self.host.ctx, RStr::from_str(name), inputs.into()) };
        result
            .into_result()
            .map_err(|e| KernelError::new(e.into_string()))
    }
}

impl<'a> InferContext<'a> {
    /// The kind of input `index`: a tensor when it is absent, or when the host is older than
    /// ABI 1.8 (which passes nothing else).
    pub fn input_kind(&self, index: usize) -> ValueKind {
        let Some(host) = self.host else {
            return ValueKind::TENSOR;
        };
        let Some(kind) = host.vtable.input_kind() else {
            return ValueKind::TENSOR;
        };
        // SAFETY: the table and context come from the host for the duration of this call.
        unsafe { kind(host.ctx, index) }
    }

    /// Whether the node gives input `index` (a none optional is given; an omitted input is
    /// not).
    pub fn has_input(&self, index: usize) -> bool {
        let given = self
            .call
            .inputs
            .as_slice()
            .get(index)
            .is_some_and(|input| input.dtype != DType::UNDEFINED);
        given || (index < self.input_count() && self.input_kind(index) != ValueKind::TENSOR)
    }

    /// Sequence (or optional sequence) input `index` as inference sees it: its elements'
    /// dtype and the dims they share (-1 where they differ). The dtype is undefined for a
    /// sequence known to be empty.
    pub fn sequence_input(&self, index: usize) -> KernelResult<InferTensor<'a>> {
        let kind = self.input_kind(index);
        if !kind.holds_sequence() {
            return Err(KernelError::new(format!(
                "input {index} must be a sequence, but it is {}",
                kind.described()
            )));
        }
        let input = self
            .call
            .inputs
            .as_slice()
            .get(index)
            .ok_or_else(|| KernelError::new(format!("input {index} is required")))?;
        Ok(InferTensor::from_abi(input))
    }

    /// Input `index`'s kind, or an error naming what it is when it is not `kind`.
    pub fn expect_kind(&self, index: usize, kind: ValueKind) -> KernelResult<()> {
        let given = self.input_kind(index);
        if given == kind {
            return Ok(());
        }
        Err(KernelError::new(format!(
            "input {index} must be {}, but it is {}",
            kind.described(),
            given.described()
        )))
    }

    /// Declares output `index` of kind `kind` (outputs not declared are tensors); the
    /// output's type in what inference returns is its (or its elements') dtype and shape.
    pub fn set_output_kind(&self, index: usize, kind: ValueKind) -> KernelResult<()> {
        let set = self.host.and_then(|h| h.vtable.set_output_kind());
        let (Some(set), Some(host)) = (set, self.host) else {
            return Err(too_old());
        };
        // SAFETY: the table and context come from the host for the duration of this call.
        if unsafe { set(host.ctx, index, kind) } {
            Ok(())
        } else {
            Err(KernelError::new(format!(
                "the host refused kind {kind} for output {index}"
            )))
        }
    }

    /// The kinds and types of the outputs of the node's subgraph in graph attribute `name`,
    /// when its declared inputs have the types `inputs` and kinds `kinds`.
    pub fn subgraph_value_types(
        &self,
        name: &str,
        inputs: &[InferInput<'_>],
        kinds: &[ValueKind],
    ) -> KernelResult<Vec<ValueType>> {
        let types = self.host.and_then(|h| h.vtable.subgraph_value_types());
        let (Some(types), Some(host)) = (types, self.host) else {
            return Err(too_old());
        };
        // SAFETY: the table and context come from the host for the duration of this call.
        let result = unsafe {
            types(
                host.ctx,
                RStr::from_str(name),
                inputs.into(),
                RSlice::from_slice(kinds),
            )
        };
        result
            .into_result()
            .map(RVec::into_vec)
            .map_err(|e| KernelError::new(e.into_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        testing::{OwnedTensor, TestHost, TestValue},
        OutputType,
    };

    /// Reverses a sequence, doubling each f32 element, through the element views and appended
    /// outputs; its second output is the input passed on whole, its third none.
    struct ReverseDoubled;

    impl crate::Operator for ReverseDoubled {
        const OP_TYPE: &'static str = "ReverseDoubled";
        const READS_VALUE_KINDS: bool = true;

        fn infer(cx: &InferContext<'_>) -> KernelResult<Vec<OutputType>> {
            let elements = cx.sequence_input(0)?;
            assert!(cx.has_input(0) && !cx.has_input(1));
            cx.expect_kind(0, ValueKind::SEQUENCE)?;
            cx.set_output_kind(0, ValueKind::SEQUENCE)?;
            cx.set_output_kind(1, ValueKind::SEQUENCE)?;
            cx.set_output_kind(2, ValueKind::OPTIONAL_TENSOR)?;
            assert!(cx.set_output_kind(3, ValueKind::SEQUENCE).is_err());
            let ty = OutputType::new(elements.dtype, elements.shape.to_vec());
            Ok(vec![ty.clone(), ty.clone(), ty])
        }

        fn compute(cx: &mut KernelContext<'_>) -> KernelResult<()> {
            assert!(cx.optional_value(1)?.is_none());
            let sequence = cx.sequence(0)?;
            let mut held = Vec::new();
            for element in sequence.iter().collect::<Vec<_>>().into_iter().rev() {
                let element = element?;
                let out = cx.push_element(0, element.dtype(), element.shape())?;
                let values = out.f32_mut()?;
                for (y, x) in values.iter_mut().zip(element.f32()?) {
                    *y = 2.0 * x;
                }
                held.push(values);
            }
            // Elements appended earlier stay writable while later ones are appended.
            if let Some(first) = held.first_mut() {
                first[0] += 100.0;
            }
            assert!(sequence.get(sequence.len()).is_err());
            assert!(cx.push_element(0, DType::I64, &[1]).is_err());
            cx.forward(1, ValueSource::input(0))?;
            cx.set_none(2)?;
            assert!(cx.set_none(2).is_err(), "an output is taken once");
            Ok(())
        }
    }

    #[test]
    fn sequence_elements_are_read_appended_and_passed_on_through_the_abi() {
        let input = TestValue::Sequence(
            DType::F32,
            vec![
                OwnedTensor::f32(&[1], &[1.0]),
                OwnedTensor::f32(&[1, 2], &[2.0, 3.0]),
            ],
        );
        let out = TestHost::new()
            .run_values::<ReverseDoubled>(&[input], &[], 3)
            .unwrap();
        let reversed = out[0].elements();
        assert_eq!(reversed[0].shape(), [1, 2]);
        assert_eq!(reversed[0].to_vec::<f32>(), [104.0, 6.0]);
        assert_eq!(reversed[1].to_vec::<f32>(), [2.0]);
        assert_eq!(out[1].elements()[1].to_vec::<f32>(), [2.0, 3.0]);
        assert!(matches!(
            out[2],
            TestValue::None(ValueKind::OPTIONAL_TENSOR, _)
        ));
    }

    #[test]
    fn a_tensor_given_where_a_sequence_is_read_is_an_error() {
        let input = TestValue::Tensor(OwnedTensor::f32(&[1], &[1.0]));
        let err = TestHost::new()
            .run_values::<ReverseDoubled>(&[input], &[], 3)
            .unwrap_err();
        assert_eq!(err, "input 0 must be a sequence, but it is a tensor");
    }
}
