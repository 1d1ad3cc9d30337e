//! What RNN, GRU and LSTM share: the `activations` (with activation_alpha and _beta) attribute,
//! the direction and layout, the shapes of the inputs and outputs, and where each (time, batch)
//! row lives in X, Y, Y_h and Y_c.

use crate::float::expect_float;
use opal_kernel_support::{
    check::{error, Shape},
    fast_math,
};
use opal_plugin_api::{prelude::*, AttrValue};

/// The most activation functions a node lists (3 per direction for LSTM).
pub(crate) const MAX_ACTIVATIONS: usize = 6;

/// An activation function of the recurrent operators.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Activation {
    Relu,
    Tanh,
    Sigmoid,
    Affine(f32, f32),
    LeakyRelu(f32),
    ThresholdedRelu(f32),
    ScaledTanh(f32, f32),
    HardSigmoid(f32, f32),
    Elu(f32),
    Softsign,
    Softplus,
}

impl Activation {
    fn parse(op: &str, name: &[u8], alpha: Option<f32>, beta: Option<f32>) -> KernelResult<Self> {
        let a = |default: f32| alpha.unwrap_or(default);
        let b = |default: f32| beta.unwrap_or(default);
        const TABLE: [&[u8]; 11] = [
            b"relu",
            b"tanh",
            b"sigmoid",
            b"affine",
            b"leakyrelu",
            b"thresholdedrelu",
            b"scaledtanh",
            b"hardsigmoid",
            b"elu",
            b"softsign",
            b"softplus",
        ];
        let Some(kind) = TABLE.iter().position(|n| name.eq_ignore_ascii_case(n)) else {
            return Err(error(
                op,
                format_args!("unknown activation '{}'", String::from_utf8_lossy(name)),
            ));
        };
        Ok(match kind {
            0 => Activation::Relu,
            1 => Activation::Tanh,
            2 => Activation::Sigmoid,
            3 => Activation::Affine(a(1.0), b(0.0)),
            4 => Activation::LeakyRelu(a(0.01)),
            5 => Activation::ThresholdedRelu(a(1.0)),
            6 => Activation::ScaledTanh(a(1.0), b(1.0)),
            7 => Activation::HardSigmoid(a(0.2), b(0.5)),
            8 => Activation::Elu(a(1.0)),
            9 => Activation::Softsign,
            _ => Activation::Softplus,
        })
    }

    pub(crate) fn apply(self, x: f32) -> f32 {
        match self {
            Activation::Relu => x.max(0.0),
            Activation::Tanh => fast_math::tanh(x),
            Activation::Sigmoid => fast_math::sigmoid(x),
            Activation::Affine(a, b) => a * x + b,
            Activation::LeakyRelu(a) => {
                if x >= 0.0 {
                    x
                } else {
                    a * x
                }
            }
            Activation::ThresholdedRelu(a) => {
                if x > a {
                    x
                } else {
                    0.0
                }
            }
            Activation::ScaledTanh(a, b) => a * (b * x).tanh(),
            Activation::HardSigmoid(a, b) => (a * x + b).clamp(0.0, 1.0),
            Activation::Elu(a) => {
                if x >= 0.0 {
                    x
                } else {
                    a * (x.exp() - 1.0)
                }
            }
            Activation::Softsign => x / (1.0 + x.abs()),
            Activation::Softplus => x.exp().ln_1p(),
        }
    }
}

/// The direction attribute.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Direction {
    Forward,
    Reverse,
    Bidirectional,
}

impl Direction {
    pub(crate) fn read(op: &str, attributes: &Attributes<'_>) -> KernelResult<Self> {
        match attributes.string("direction", "forward")? {
            "forward" => Ok(Direction::Forward),
            "reverse" => Ok(Direction::Reverse),
            "bidirectional" => Ok(Direction::Bidirectional),
            other => Err(error(op, format_args!("unknown direction '{other}'"))),
        }
    }

    pub(crate) fn count(self) -> usize {
        if self == Direction::Bidirectional {
            2
        } else {
            1
        }
    }

    /// Whether direction `d` of a node runs backwards in time.
    pub(crate) fn is_reverse(self, d: usize) -> bool {
        self == Direction::Reverse || d == 1
    }
}

/// The activations of each direction (`per_direction` of them), from the attribute or
/// `defaults`.
pub(crate) fn activations(
    op: &str,
    attributes: &Attributes<'_>,
    defaults: &[Activation],
    directions: usize,
) -> KernelResult<[Activation; MAX_ACTIVATIONS]> {
    let per_direction = defaults.len();
    let mut out = [Activation::Tanh; MAX_ACTIVATIONS];
    for d in 0..directions {
        out[d * per_direction..][..per_direction].copy_from_slice(defaults);
    }
    let Some(AttrValue::Strings(names)) = attributes.get("activations") else {
        return Ok(out);
    };
    let names = names.as_slice();
    let alphas = attributes.floats("activation_alpha")?.unwrap_or(&[]);
    let betas = attributes.floats("activation_beta")?.unwrap_or(&[]);
    let count = per_direction * directions;
    if names.len() != count && names.len() != per_direction {
        return Err(error(
            op,
            format_args!(
                "{} activations given, {count} expected ({per_direction} per direction)",
                names.len()
            ),
        ));
    }
    for (i, slot) in out.iter_mut().enumerate().take(count) {
        let k = i % names.len();
        *slot = Activation::parse(
            op,
            names[k].as_slice(),
            alphas.get(k).copied(),
            betas.get(k).copied(),
        )?;
    }
    Ok(out)
}

/// The sizes of a recurrent node, and where rows live for its layout.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Layout {
    pub(crate) seq: usize,
    pub(crate) batch: usize,
    pub(crate) input: usize,
    pub(crate) hidden: usize,
    pub(crate) directions: usize,
    /// Layout 1: batch first.
    pub(crate) batch_first: bool,
}

impl Layout {
    /// The row of X (and of X · Wᵀ) holding time `t` of batch entry `b`.
    pub(crate) fn x_row(&self, t: usize, b: usize) -> usize {
        if self.batch_first {
            b * self.seq + t
        } else {
            t * self.batch + b
        }
    }

    /// The offset in Y of the hidden vector of time `t`, direction `d`, batch entry `b`.
    pub(crate) fn y_offset(&self, t: usize, d: usize, b: usize) -> usize {
        let row = if self.batch_first {
            (b * self.seq + t) * self.directions + d
        } else {
            (t * self.directions + d) * self.batch + b
        };
        row * self.hidden
    }

    /// The offset in Y_h, Y_c, initial_h and initial_c of direction `d`, batch entry `b`.
    pub(crate) fn state_offset(&self, d: usize, b: usize) -> usize {
        let row = if self.batch_first {
            b * self.directions + d
        } else {
            d * self.batch + b
        };
        row * self.hidden
    }
}

/// Checks X, W and R of a node with `gates` gates and returns the output types: Y, Y_h and
/// (for `states` of 2) Y_c.
pub(crate) fn infer_recurrent(
    cx: &InferContext<'_>,
    op: &str,
    gates: i64,
    states: usize,
) -> KernelResult<Vec<OutputType>> {
    let (x, w, r) = (cx.input(0)?, cx.input(1)?, cx.input(2)?);
    for (index, input) in [(0, &x), (1, &w), (2, &r)] {
        expect_float(op, index, input)?;
    }
    if x.shape.len() != 3 || w.shape.len() != 3 || r.shape.len() != 3 {
        return Err(error(
            op,
            format_args!(
                "X {}, W {} and R {} must be 3-D",
                Shape(x.shape),
                Shape(w.shape),
                Shape(r.shape)
            ),
        ));
    }
    let attributes = cx.attributes();
    let directions = Direction::read(op, &attributes)?.count() as i64;
    let hidden = attributes.int("hidden_size", r.shape[2])?;
    if (w.shape[0] >= 0 && w.shape[0] != directions)
        || (w.shape[1] >= 0 && hidden >= 0 && w.shape[1] != gates * hidden)
    {
        return Err(error(
            op,
            format_args!(
                "W {} does not hold {gates} gates of {hidden} for {directions} directions",
                Shape(w.shape)
            ),
        ));
    }
    let batch_first = attributes.int("layout", 0)? != 0;
    let (seq, batch) = if batch_first {
        (x.shape[1], x.shape[0])
    } else {
        (x.shape[0], x.shape[1])
    };
    let (y, state) = if batch_first {
        (
            vec![batch, seq, directions, hidden],
            vec![batch, directions, hidden],
        )
    } else {
        (
            vec![seq, directions, batch, hidden],
            vec![directions, batch, hidden],
        )
    };
    let mut outputs = vec![OutputType::new(x.dtype, y)];
    for _ in 0..states.min(cx.output_count().saturating_sub(1)) {
        outputs.push(OutputType::new(x.dtype, state.clone()));
    }
    outputs.truncate(cx.output_count().max(1));
    Ok(outputs)
}
