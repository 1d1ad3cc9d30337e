//! Values beyond tensors: a run's inputs, intermediates and outputs are tensors, sequences of
//! tensors (each element a tensor from the engine's pool), or none (an optional without a
//! value). Optional-ness is a type, known to the plan; at run time a value is one of these.

use crate::{
    engine::Engine,
    memory::AllocError,
    tensor::{Tensor, TensorRef},
};
use opal_plugin_api::{value::Held, DType, ValueKind};

/// A value the host owns.
#[derive(Debug)]
pub enum Value {
    Tensor(Tensor),
    Sequence(Vec<Tensor>),
    None,
}

/// A borrowed value.
#[derive(Debug, Clone, Copy)]
pub enum ValueView<'a> {
    Tensor(TensorRef<'a>),
    Sequence(&'a [Tensor]),
    None,
}

impl Value {
    pub fn view(&self) -> ValueView<'_> {
        match self {
            Value::Tensor(t) => ValueView::Tensor(t.as_ref()),
            Value::Sequence(elements) => ValueView::Sequence(elements),
            Value::None => ValueView::None,
        }
    }

    /// Returns its tensors to the engine's pool.
    pub fn release(self, engine: &Engine) {
        match self {
            Value::Tensor(t) => engine.pool().put(t),
            Value::Sequence(elements) => elements.into_iter().for_each(|t| engine.pool().put(t)),
            Value::None => {}
        }
    }
}

impl<'a> ValueView<'a> {
    /// What it holds, as the ABI says.
    pub fn held(&self) -> Held {
        match self {
            ValueView::Tensor(_) => Held::TENSOR,
            ValueView::Sequence(_) => Held::SEQUENCE,
            ValueView::None => Held::NONE,
        }
    }

    /// The tensor, when it is one.
    pub fn tensor(&self) -> Option<TensorRef<'a>> {
        match self {
            ValueView::Tensor(t) => Some(*t),
            _ => None,
        }
    }

    /// How errors name what it holds: `tensor`, `sequence`, `none`.
    pub fn describe(&self) -> &'static str {
        match self {
            ValueView::Tensor(_) => "tensor",
            ValueView::Sequence(_) => "sequence",
            ValueView::None => "none",
        }
    }

    /// Whether a value of declared kind `kind` may hold this.
    pub fn fits(&self, kind: ValueKind) -> bool {
        match self {
            ValueView::Tensor(_) => !kind.holds_sequence(),
            ValueView::Sequence(_) => kind.holds_sequence(),
            ValueView::None => kind.is_optional(),
        }
    }

    /// The dtype and dims inference sees: a tensor's, or a sequence's elements' (-1 where they
    /// differ, `UNDEFINED` and no dims for an empty one); none has neither.
    pub fn infer_type(&self) -> (DType, Vec<i64>) {
        match self {
            ValueView::Tensor(t) => (t.dtype, t.shape.iter().map(|&d| d as i64).collect()),
            ValueView::Sequence(elements) => sequence_type(elements),
            ValueView::None => (DType::UNDEFINED, Vec::new()),
        }
    }

    /// Whether its dtype and dims are `dtype` and `dims` ([`infer_type`](Self::infer_type)),
    /// compared without allocating.
    pub fn has_type(&self, dtype: DType, dims: &[i64]) -> bool {
        match self {
            ValueView::Tensor(t) => {
                t.dtype == dtype
                    && t.shape.len() == dims.len()
                    && t.shape.iter().zip(dims).all(|(&n, &d)| n as i64 == d)
            }
            ValueView::Sequence(elements) => {
                let (given, given_dims) = sequence_type(elements);
                given == dtype && given_dims == dims
            }
            ValueView::None => dtype == DType::UNDEFINED && dims.is_empty(),
        }
    }

    /// A copy whose tensors come from the engine's pool.
    pub fn to_owned(&self, engine: &Engine) -> Result<Value, AllocError> {
        let copy = |t: TensorRef<'_>| engine.pool().copy_of(t);
        Ok(match self {
            ValueView::Tensor(t) => Value::Tensor(copy(*t)?),
            ValueView::Sequence(elements) => Value::Sequence(
                elements
                    .iter()
                    .map(|t| copy(t.as_ref()))
                    .collect::<Result<_, _>>()?,
            ),
            ValueView::None => Value::None,
        })
    }
}

/// The dtype of a sequence's elements and the dims they share (-1 where they differ, and for
/// every dim when their ranks differ).
fn sequence_type(elements: &[Tensor]) -> (DType, Vec<i64>) {
    let Some(first) = elements.first() else {
        return (DType::UNDEFINED, Vec::new());
    };
    let mut dims: Vec<i64> = first.shape().iter().map(|&d| d as i64).collect();
    for e in &elements[1..] {
        if e.shape().len() != dims.len() {
            dims.iter_mut().for_each(|d| *d = -1);
            continue;
        }
        for (d, &n) in dims.iter_mut().zip(e.shape()) {
            if *d != n as i64 {
                *d = -1;
            }
        }
    }
    (first.dtype(), dims)
}

/// Something a run takes as an input: a tensor view, or any value.
pub trait RunInput {
    fn value(&self) -> ValueView<'_>;
}

impl RunInput for TensorRef<'_> {
    fn value(&self) -> ValueView<'_> {
        ValueView::Tensor(*self)
    }
}

impl RunInput for ValueView<'_> {
    fn value(&self) -> ValueView<'_> {
        *self
    }
}

impl RunInput for Value {
    fn value(&self) -> ValueView<'_> {
        self.view()
    }
}

impl RunInput for crate::onnx::Constant {
    fn value(&self) -> ValueView<'_> {
        ValueView::Tensor(self.as_ref())
    }
}
