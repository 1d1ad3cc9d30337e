//! RNN, GRU and LSTM: for each direction, the input projections `X · Wᵀ + biases` of every time
//! step in one [`sgemm`], then per step the recurrent projection `H · Rᵀ` (another product) and
//! the gates, elementwise per batch entry. sequence_lens shortens a batch entry's sequence (its
//! later outputs are 0 and its state stops changing).

use crate::{
    float::{input_f32, optional_input_f32, output_f32},
    recurrent::{activations, infer_recurrent, Activation, Direction, Layout},
};
use opal_kernel_support::{
    check::error,
    isa,
    sgemm::{pack_b_whole, packed_b_len, sgemm, single_batch, Operand, PackedB, Product},
};
use opal_plugin_api::prelude::*;

/// RNN of every opset.
pub struct Rnn;
/// GRU of every opset.
pub struct Gru;
/// LSTM of every opset.
pub struct Lstm;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Cell {
    Rnn,
    Gru { linear_before_reset: bool },
    Lstm { input_forget: bool },
}

impl Cell {
    fn gates(self) -> usize {
        match self {
            Cell::Rnn => 1,
            Cell::Gru { .. } => 3,
            Cell::Lstm { .. } => 4,
        }
    }

    fn default_activations(self) -> &'static [Activation] {
        match self {
            Cell::Rnn => &[Activation::Tanh],
            Cell::Gru { .. } => &[Activation::Sigmoid, Activation::Tanh],
            Cell::Lstm { .. } => &[Activation::Sigmoid, Activation::Tanh, Activation::Tanh],
        }
    }
}

/// `b` (`cols x depth` row-major) as the `depth x cols` right operand of a product.
fn transposed(b: &[f32], depth: usize) -> Operand<'_> {
    Operand {
        data: b,
        row_stride: 1,
        col_stride: depth,
    }
}

/// `out (rows x cols) = a (rows x depth) · bᵀ`, `b` being `cols x depth` row-major, or
/// `packed` when the caller packed `bᵀ` ahead.
#[allow(clippy::too_many_arguments)]
fn times_transposed(
    cx: &KernelContext<'_>,
    a: &[f32],
    b: &[f32],
    packed: Option<PackedB<'_>>,
    rows: usize,
    cols: usize,
    depth: usize,
    out: &mut [f32],
) -> KernelResult<()> {
    let product = Product {
        m: rows,
        n: cols,
        k: depth,
        alpha: 1.0,
        beta: 0.0,
        a: Operand {
            data: a,
            row_stride: depth,
            col_stride: 1,
        },
        b: transposed(b, depth),
        batches: 1,
        batch_offsets: &single_batch,
        packed_a: None,
        packed_b: packed,
    };
    sgemm(cx, &product, &mut out[..rows * cols])
}

/// Constant W and R packed once for the call's instruction set, direction after direction,
/// for each direction's two products: the input projection's `Wᵀ` (`input x gates`), then the
/// recurrent projection's `Rᵀ` (`hidden x recurrent_cols`: the first rows of R).
#[derive(Clone, Copy)]
struct PackedWeights<'a> {
    data: &'a [f32],
    w_len: usize,
    r_len: usize,
    isa: isa::Isa,
}

impl<'a> PackedWeights<'a> {
    /// Direction `d`'s packed `Wᵀ` and `Rᵀ`.
    fn direction(&self, d: usize) -> (PackedB<'a>, PackedB<'a>) {
        let at = d * (self.w_len + self.r_len);
        let packed = |data| PackedB {
            data,
            batch_stride: 0,
            isa: self.isa,
        };
        (
            packed(&self.data[at..at + self.w_len]),
            packed(&self.data[at + self.w_len..at + self.w_len + self.r_len]),
        )
    }
}

/// The sizes of one direction's weights as their products read them.
#[derive(Clone, Copy)]
struct WeightShapes {
    input: usize,
    gates: usize,
    hidden: usize,
    recurrent_cols: usize,
}

/// W and R packed ([`PackedWeights`]) and kept by the host with the node; `None` when either
/// varies or the host keeps none.
fn prepared_weights<'a>(
    cx: &KernelContext<'a>,
    w: &[f32],
    r: &[f32],
    directions: usize,
    shapes: WeightShapes,
) -> KernelResult<Option<PackedWeights<'a>>> {
    if !(cx.is_constant(1) && cx.is_constant(2)) {
        return Ok(None);
    }
    let WeightShapes {
        input,
        gates,
        hidden,
        recurrent_cols,
    } = shapes;
    let isa = isa::current(cx);
    let (w_len, r_len) = (
        packed_b_len(isa, input, gates),
        packed_b_len(isa, hidden, recurrent_cols),
    );
    let data = cx.prepared(directions * (w_len + r_len), |out| {
        for (d, out) in out.chunks_exact_mut((w_len + r_len).max(1)).enumerate() {
            let (w_out, r_out) = out.split_at_mut(w_len);
            let w_d = &w[d * gates * input..][..gates * input];
            let r_d = &r[d * gates * hidden..][..recurrent_cols * hidden];
            pack_b_whole(isa, &transposed(w_d, input), input, gates, w_out);
            pack_b_whole(isa, &transposed(r_d, hidden), hidden, recurrent_cols, r_out);
        }
        Ok(())
    })?;
    Ok(data.map(|data| PackedWeights {
        data,
        w_len,
        r_len,
        isa,
    }))
}

/// Scratch space of one run.
struct State<'a> {
    xw: &'a mut [f32],
    hr: &'a mut [f32],
    h: &'a mut [f32],
    c: &'a mut [f32],
    z: &'a mut [f32],
    rh: &'a mut [f32],
}

fn run(cx: &mut KernelContext<'_>, op: &str, cell: Cell) -> KernelResult<()> {
    let attributes = cx.attributes();
    let direction = Direction::read(op, &attributes)?;
    let (x_shape, r_shape) = (cx.input(0)?.shape(), cx.input(2)?.shape());
    let batch_first = attributes.int("layout", 0)? != 0;
    let (seq, batch) = if batch_first {
        (x_shape[1], x_shape[0])
    } else {
        (x_shape[0], x_shape[1])
    };
    let l = Layout {
        seq,
        batch,
        input: x_shape[2],
        hidden: r_shape[2],
        directions: direction.count(),
        batch_first,
    };
    let per_direction = cell.default_activations().len();
    let acts = activations(op, &attributes, cell.default_activations(), l.directions)?;
    let clip = match attributes.get("clip") {
        Some(_) => attributes.float("clip", f32::INFINITY)?,
        None => f32::INFINITY,
    };
    let clip = |v: f32| v.clamp(-clip, clip);
    let (gates, hidden) = (cell.gates(), l.hidden);
    let gh = gates * hidden;
    let x = input_f32(cx, op, 0)?;
    let w = input_f32(cx, op, 1)?;
    let r = input_f32(cx, op, 2)?;
    let bias = optional_input_f32(cx, op, 3)?;
    let lengths = match cx.optional_input(4) {
        Some(t) => Some(t.as_slice::<i32>()?),
        None => None,
    };
    let initial_h = optional_input_f32(cx, op, 5)?;
    let lstm = matches!(cell, Cell::Lstm { .. });
    let initial_c = if lstm {
        optional_input_f32(cx, op, 6)?
    } else {
        None
    };
    let peepholes = if lstm {
        optional_input_f32(cx, op, 7)?
    } else {
        None
    };
    let sizes_ok = w.len() == l.directions * gh * l.input
        && r.len() == l.directions * gh * hidden
        && bias.is_none_or(|b| b.len() == l.directions * 2 * gh)
        && lengths.is_none_or(|s| s.len() == batch)
        && peepholes.is_none_or(|p| p.len() == l.directions * 3 * hidden)
        && [initial_h, initial_c]
            .iter()
            .all(|s| s.is_none_or(|s| s.len() == l.directions * batch * hidden));
    if !sizes_ok {
        return Err(error(
            op,
            "W, R, B, sequence_lens, initial_h, initial_c or P do not match X and hidden_size",
        ));
    }
    let s = State {
        xw: cx.scratch::<f32>(seq * batch * gh)?,
        hr: cx.scratch::<f32>(batch * gh)?,
        h: cx.scratch::<f32>(batch * hidden)?,
        c: cx.scratch::<f32>(batch * hidden)?,
        z: cx.scratch::<f32>(batch * hidden)?,
        rh: cx.scratch::<f32>(batch * hidden)?,
    };
    let outputs = cx.output_count();
    let (y, y_sink) = output_f32(cx, 0)?;
    y.fill(0.0);
    let mut y_h = if outputs > 1 {
        Some(output_f32(cx, 1)?)
    } else {
        None
    };
    let mut y_c = if lstm && outputs > 2 {
        Some(output_f32(cx, 2)?)
    } else {
        None
    };
    let length = |b: usize| lengths.map_or(seq, |s| (s[b].max(0) as usize).min(seq));
    let lbr = cell
        == Cell::Gru {
            linear_before_reset: true,
        };
    let recurrent_cols = if cell
        == (Cell::Gru {
            linear_before_reset: false,
        }) {
        2 * hidden
    } else {
        gh
    };
    let shapes = WeightShapes {
        input: l.input,
        gates: gh,
        hidden,
        recurrent_cols,
    };
    let packed = prepared_weights(cx, w, r, l.directions, shapes)?;
    for d in 0..l.directions {
        let f = |k: usize| acts[d * per_direction + k];
        let w_d = &w[d * gh * l.input..][..gh * l.input];
        let r_d = &r[d * gh * hidden..][..gh * hidden];
        let (w_packed, r_packed) = packed.map(|p| p.direction(d)).unzip();
        times_transposed(cx, x, w_d, w_packed, seq * batch, gh, l.input, s.xw)?;
        if let Some(bias) = bias {
            let (wb, rb) = bias[d * 2 * gh..][..2 * gh].split_at(gh);
            for row in s.xw.chunks_exact_mut(gh) {
                for (k, v) in row.iter_mut().enumerate() {
                    let recurrent = if lbr && k >= 2 * hidden { 0.0 } else { rb[k] };
                    *v += wb[k] + recurrent;
                }
            }
        }
        for b in 0..batch {
            let at = l.state_offset(d, b);
            let h = &mut s.h[b * hidden..][..hidden];
            let c = &mut s.c[b * hidden..][..hidden];
            match initial_h {
                Some(init) => h.copy_from_slice(&init[at..at + hidden]),
                None => h.fill(0.0),
            }
            match initial_c {
                Some(init) => c.copy_from_slice(&init[at..at + hidden]),
                None => c.fill(0.0),
            }
        }
        let rb_h = bias
            .filter(|_| lbr)
            .map(|b| &b[d * 2 * gh + gh + 2 * hidden..][..hidden]);
        let peep = peepholes.map(|p| &p[d * 3 * hidden..][..3 * hidden]);
        for step in 0..seq {
            times_transposed(cx, s.h, r_d, r_packed, batch, recurrent_cols, hidden, s.hr)?;
            let hr = &s.hr[..batch * recurrent_cols];
            for b in 0..batch {
                let len = length(b);
                if step >= len {
                    continue;
                }
                let t = if direction.is_reverse(d) {
                    len - 1 - step
                } else {
                    step
                };
                let xw = &s.xw[l.x_row(t, b) * gh..][..gh];
                let hr = &hr[b * recurrent_cols..][..recurrent_cols];
                let h = &mut s.h[b * hidden..][..hidden];
                match cell {
                    Cell::Rnn => {
                        for j in 0..hidden {
                            h[j] = f(0).apply(clip(xw[j] + hr[j]));
                        }
                    }
                    Cell::Lstm { input_forget } => {
                        let c = &mut s.c[b * hidden..][..hidden];
                        let p = |k: usize, j: usize| peep.map_or(0.0, |p| p[k * hidden + j]);
                        for j in 0..hidden {
                            let gate = |k: usize| xw[k * hidden + j] + hr[k * hidden + j];
                            let i = f(0).apply(clip(gate(0) + p(0, j) * c[j]));
                            let forget = if input_forget {
                                1.0 - i
                            } else {
                                f(0).apply(clip(gate(2) + p(2, j) * c[j]))
                            };
                            let candidate = f(1).apply(clip(gate(3)));
                            c[j] = forget * c[j] + i * candidate;
                            let o = f(0).apply(clip(gate(1) + p(1, j) * c[j]));
                            h[j] = o * f(2).apply(c[j]);
                        }
                    }
                    Cell::Gru {
                        linear_before_reset,
                    } => {
                        let z = &mut s.z[b * hidden..][..hidden];
                        let rh = &mut s.rh[b * hidden..][..hidden];
                        for j in 0..hidden {
                            z[j] = f(0).apply(clip(xw[j] + hr[j]));
                            let reset = f(0).apply(clip(xw[hidden + j] + hr[hidden + j]));
                            if linear_before_reset {
                                let recurrent = hr[2 * hidden + j] + rb_h.map_or(0.0, |rb| rb[j]);
                                let candidate =
                                    f(1).apply(clip(xw[2 * hidden + j] + reset * recurrent));
                                h[j] = (1.0 - z[j]) * candidate + z[j] * h[j];
                            } else {
                                rh[j] = reset * h[j];
                            }
                        }
                    }
                }
            }
            if cell
                == (Cell::Gru {
                    linear_before_reset: false,
                })
            {
                // The candidate's recurrent term needs every entry's r * H first.
                times_transposed(
                    cx,
                    s.rh,
                    &r_d[2 * hidden * hidden..],
                    None,
                    batch,
                    hidden,
                    hidden,
                    s.hr,
                )?;
                for b in 0..batch {
                    let len = length(b);
                    if step >= len {
                        continue;
                    }
                    let t = if direction.is_reverse(d) {
                        len - 1 - step
                    } else {
                        step
                    };
                    let xw = &s.xw[l.x_row(t, b) * gh..][..gh];
                    let recurrent = &s.hr[b * hidden..][..hidden];
                    let z = &s.z[b * hidden..][..hidden];
                    let h = &mut s.h[b * hidden..][..hidden];
                    for j in 0..hidden {
                        let candidate = f(1).apply(clip(xw[2 * hidden + j] + recurrent[j]));
                        h[j] = (1.0 - z[j]) * candidate + z[j] * h[j];
                    }
                }
            }
            for b in 0..batch {
                let len = length(b);
                if step < len {
                    let t = if direction.is_reverse(d) {
                        len - 1 - step
                    } else {
                        step
                    };
                    y[l.y_offset(t, d, b)..][..hidden]
                        .copy_from_slice(&s.h[b * hidden..][..hidden]);
                }
            }
        }
        for b in 0..batch {
            let at = l.state_offset(d, b);
            if let Some((y_h, _)) = y_h.as_mut() {
                y_h[at..at + hidden].copy_from_slice(&s.h[b * hidden..][..hidden]);
            }
            if let Some((y_c, _)) = y_c.as_mut() {
                y_c[at..at + hidden].copy_from_slice(&s.c[b * hidden..][..hidden]);
            }
        }
    }
    y_sink.finish(op, y)?;
    if let Some((values, sink)) = y_h {
        sink.finish(op, values)?;
    }
    if let Some((values, sink)) = y_c {
        sink.finish(op, values)?;
    }
    Ok(())
}

impl Operator for Rnn {
    const OP_TYPE: &'static str = "RNN";

    fn infer(cx: &InferContext<'_>) -> KernelResult<Vec<OutputType>> {
        infer_recurrent(cx, Self::OP_TYPE, 1, 1)
    }

    fn compute(cx: &mut KernelContext<'_>) -> KernelResult<()> {
        run(cx, Self::OP_TYPE, Cell::Rnn)
    }
}

impl Operator for Gru {
    const OP_TYPE: &'static str = "GRU";

    fn infer(cx: &InferContext<'_>) -> KernelResult<Vec<OutputType>> {
        infer_recurrent(cx, Self::OP_TYPE, 3, 1)
    }

    fn compute(cx: &mut KernelContext<'_>) -> KernelResult<()> {
        let linear_before_reset = cx.attributes().int("linear_before_reset", 0)? != 0;
        run(
            cx,
            Self::OP_TYPE,
            Cell::Gru {
                linear_before_reset,
            },
        )
    }
}

impl Operator for Lstm {
    const OP_TYPE: &'static str = "LSTM";

    fn infer(cx: &InferContext<'_>) -> KernelResult<Vec<OutputType>> {
        infer_recurrent(cx, Self::OP_TYPE, 4, 2)
    }

    fn compute(cx: &mut KernelContext<'_>) -> KernelResult<()> {
        let input_forget = cx.attributes().int("input_forget", 0)? != 0;
        run(cx, Self::OP_TYPE, Cell::Lstm { input_forget })
    }
}
