//! An elementwise epilogue that a kernel with an `[N, C, …]` f32 output applies to it in one
//! pass: the nodes the host fused into the call (see `opal_plugin_api::fusion`), such as a
//! BatchNormalization, a Relu, a SiLU's `x * sigmoid(x)` or a residual Add.
//!
//! [`absorb`] answers the host's offers and encodes the accepted nodes as the call's fusion
//! description; [`Epilogue::from_call`] reads it back in the kernel and [`Epilogue::apply`]
//! runs it over the output, channel plane by channel plane, in chunks that stay in L1.

use crate::{fast_math, simd::vectorized};
use opal_plugin_api::{prelude::*, FusedOperand};

/// The most nodes one call absorbs.
pub const MAX_OPS: usize = 8;
/// Elements per chunk: every value of the epilogue has one chunk on the stack.
const CHUNK: usize = 128;
/// Elements below which the epilogue runs on one thread: splitting costs a few microseconds.
const GRAIN: usize = 1 << 12;
/// Bytes of one encoded op.
const OP_BYTES: usize = 20;
/// Bytes before the ops: how many inputs the kernel's own node has.
const HEADER_BYTES: usize = 1;

/// What an absorbed node computes.
#[derive(Clone, Copy, Debug, PartialEq)]
#[repr(u8)]
enum Kind {
    Relu = 1,
    LeakyRelu,
    Clip,
    Sigmoid,
    Tanh,
    HardSigmoid,
    HardSwish,
    Add,
    Sub,
    Mul,
    Div,
    /// Inference-mode BatchNormalization: `(x - mean) / sqrt(var + epsilon) * scale + bias`,
    /// with scale, bias, mean and var in `inputs`.
    BatchNorm,
    /// `x * clip(x + b, min, max) / d`, the hard-swish that exporters spell as Add, Clip, Mul
    /// and Div, with `d` in `inputs[0]`: never encoded, made from those four ops when the
    /// epilogue is read back ([`collapse_clip_gates`]).
    ClipGate,
}

impl Kind {
    fn from_u8(byte: u8) -> Option<Kind> {
        use Kind::*;
        [
            Relu,
            LeakyRelu,
            Clip,
            Sigmoid,
            Tanh,
            HardSigmoid,
            HardSwish,
            Add,
            Sub,
            Mul,
            Div,
            BatchNorm,
        ]
        .into_iter()
        .find(|k| *k as u8 == byte)
    }

    fn is_binary(self) -> bool {
        matches!(self, Kind::Add | Kind::Sub | Kind::Mul | Kind::Div)
    }
}

/// How an input operand lines up with the output.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
enum Broadcast {
    /// One value for all elements.
    Scalar = 1,
    /// One value per channel (axis 1).
    PerChannel,
    /// The output's shape.
    Full,
}

/// An operand of an absorbed node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Source {
    /// Value `k` of the call (0: the kernel's own result, `k`: the `k`-th op's).
    Value(u8),
    /// Input `i` of the call.
    Input(u8, Broadcast),
}

/// One absorbed node.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Op {
    kind: Kind,
    a: Source,
    /// The second operand of binary ops.
    b: Source,
    /// LeakyRelu's alpha; Clip's min and max; HardSigmoid's alpha and beta; BatchNorm's epsilon.
    params: [f32; 2],
    /// BatchNorm's scale, bias, mean and var inputs.
    inputs: [u8; 4],
}

impl Op {
    fn unary(kind: Kind, a: Source, params: [f32; 2]) -> Op {
        Op {
            kind,
            a,
            b: a,
            params,
            inputs: [0; 4],
        }
    }

    fn encode(&self, out: &mut Vec<u8>) {
        let source = |s: Source| match s {
            Source::Value(k) => [0, k, 0],
            Source::Input(i, b) => [1, i, b as u8],
        };
        out.push(self.kind as u8);
        out.extend(source(self.a));
        out.extend(source(self.b));
        out.push(0);
        out.extend(self.inputs);
        out.extend(self.params[0].to_le_bytes());
        out.extend(self.params[1].to_le_bytes());
    }

    fn decode(bytes: &[u8]) -> Option<Op> {
        let source = |s: &[u8]| match s[0] {
            0 => Some(Source::Value(s[1])),
            1 => {
                let b = [Broadcast::Scalar, Broadcast::PerChannel, Broadcast::Full]
                    .into_iter()
                    .find(|b| *b as u8 == s[2])?;
                Some(Source::Input(s[1], b))
            }
            _ => None,
        };
        let float = |at: usize| {
            f32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
        };
        Some(Op {
            kind: Kind::from_u8(bytes[0])?,
            a: source(&bytes[1..4])?,
            b: source(&bytes[4..7])?,
            inputs: [bytes[8], bytes[9], bytes[10], bytes[11]],
            params: [float(12), float(16)],
        })
    }
}

/// Answers a fusion offer for a kernel whose f32 output has channels on axis 1: the
/// description with the candidate appended, or `None` when it cannot be absorbed (not
/// elementwise over the output, another dtype, an operand that broadcasts otherwise, or
/// [`MAX_OPS`] reached).
pub fn absorb(query: &FuseQuery<'_>) -> Option<Vec<u8>> {
    let state = query.state();
    let output = query.value(0)?;
    let candidate = query.candidate_output();
    let ops_so_far = state.len().saturating_sub(HEADER_BYTES) / OP_BYTES;
    if ops_so_far >= MAX_OPS
        || output.dtype != DType::F32
        || candidate.dtype != DType::F32
        || candidate.shape != output.shape
        || output.shape.len() < 2
    {
        return None;
    }
    let op = candidate_op(query, &output.shape)?;
    let mut description = if state.is_empty() {
        vec![u8::try_from(query.node_input_count()).ok()?]
    } else {
        state.to_vec()
    };
    op.encode(&mut description);
    Some(description)
}

/// The candidate as an op, if it is one this epilogue computes.
fn candidate_op(query: &FuseQuery<'_>, shape: &[i64]) -> Option<Op> {
    let (domain, op_type) = query.candidate_op();
    if !domain.is_empty() && domain != "ai.onnx" {
        return None;
    }
    let operands = query.operands();
    let source = |k: usize| operand_source(query, *operands.get(k)?, shape);
    let attributes = query.candidate_attributes();
    let float = |name: &str, default: f32| attributes.float(name, default).ok();
    let unary = |kind: Kind, params: [f32; 2]| {
        (operands.len() == 1).then_some(())?;
        Some(Op::unary(kind, source(0)?, params))
    };
    match op_type {
        "Relu" => unary(Kind::Relu, [0.0; 2]),
        "LeakyRelu" => unary(Kind::LeakyRelu, [float("alpha", 0.01)?, 0.0]),
        "Sigmoid" => unary(Kind::Sigmoid, [0.0; 2]),
        "Tanh" => unary(Kind::Tanh, [0.0; 2]),
        "HardSigmoid" => unary(
            Kind::HardSigmoid,
            [float("alpha", 0.2)?, float("beta", 0.5)?],
        ),
        "HardSwish" => unary(Kind::HardSwish, [0.0; 2]),
        "Clip" => clip(query, shape),
        "Add" | "Sub" | "Mul" | "Div" | "Sum" => {
            let kind = match op_type {
                "Sub" => Kind::Sub,
                "Mul" => Kind::Mul,
                "Div" => Kind::Div,
                _ => Kind::Add,
            };
            if operands.len() != 2 {
                return None;
            }
            Some(Op {
                kind,
                a: source(0)?,
                b: source(1)?,
                params: [0.0; 2],
                inputs: [0; 4],
            })
        }
        "BatchNormalization" => batch_norm(query, shape),
        _ => None,
    }
}

/// Clip with bounds known now: attributes before opset 11, constant inputs after.
fn clip(query: &FuseQuery<'_>, shape: &[i64]) -> Option<Op> {
    let operands = query.operands();
    let a = operand_source(query, *operands.first()?, shape)?;
    let attributes = query.candidate_attributes();
    if query.candidate_opset() < 11 {
        let min = attributes.float("min", f32::NEG_INFINITY).ok()?;
        let max = attributes.float("max", f32::INFINITY).ok()?;
        return Some(Op::unary(Kind::Clip, a, [min, max]));
    }
    let bound = |k: usize, default: f32| match operands.get(k) {
        None | Some(FusedOperand::Absent) => Some(default),
        Some(FusedOperand::Input(i)) => {
            let value = query.input(*i)?.value_as::<f32>().ok()??;
            (value.len() == 1).then(|| value[0])
        }
        Some(FusedOperand::Value(_)) => None,
    };
    Some(Op::unary(
        Kind::Clip,
        a,
        [bound(1, f32::NEG_INFINITY)?, bound(2, f32::INFINITY)?],
    ))
}

/// Inference-mode BatchNormalization on a value, with per-channel inputs.
fn batch_norm(query: &FuseQuery<'_>, shape: &[i64]) -> Option<Op> {
    let operands = query.operands();
    let attributes = query.candidate_attributes();
    if operands.len() != 5
        || attributes.int("training_mode", 0).ok()? != 0
        || attributes.int("spatial", 1).ok()? != 1
    {
        return None;
    }
    let a @ Source::Value(_) = operand_source(query, operands[0], shape)? else {
        return None;
    };
    let mut inputs = [0u8; 4];
    for (slot, operand) in inputs.iter_mut().zip(&operands[1..]) {
        let FusedOperand::Input(i) = *operand else {
            return None;
        };
        let input = query.input(i)?;
        if input.dtype != DType::F32 || input.shape != [shape[1]] {
            return None;
        }
        *slot = u8::try_from(i).ok()?;
    }
    let epsilon = attributes.float("epsilon", 1e-5).ok()?;
    Some(Op {
        kind: Kind::BatchNorm,
        a,
        b: a,
        params: [epsilon, 0.0],
        inputs,
    })
}

/// Where an operand comes from, if the epilogue can read it: a value of the call, or an f32
/// input that is a scalar, per-channel, or of the output's shape.
fn operand_source(query: &FuseQuery<'_>, operand: FusedOperand, shape: &[i64]) -> Option<Source> {
    match operand {
        FusedOperand::Absent => None,
        FusedOperand::Value(k) => Some(Source::Value(u8::try_from(k).ok()?)),
        FusedOperand::Input(i) => {
            let input = query.input(i)?;
            if input.dtype != DType::F32 || input.shape.iter().any(|&d| d < 0) {
                return None;
            }
            let index = u8::try_from(i).ok()?;
            broadcast(input.shape, shape).map(|b| Source::Input(index, b))
        }
    }
}

/// How an input of `dims` broadcasts against the output's `shape`, if it is one of the kinds
/// the epilogue reads.
fn broadcast(dims: &[i64], shape: &[i64]) -> Option<Broadcast> {
    if dims.iter().product::<i64>() == 1 && dims.len() <= shape.len() {
        return Some(Broadcast::Scalar);
    }
    if dims == shape {
        return Some(Broadcast::Full);
    }
    // Right-aligned against the output, only the channel axis may differ from 1.
    let offset = shape.len().checked_sub(dims.len())?;
    let per_channel = dims.iter().enumerate().all(|(k, &d)| {
        let axis = k + offset;
        d == 1 || (axis == 1 && d == shape[1])
    });
    (per_channel && offset <= 1).then_some(Broadcast::PerChannel)
}

/// Where a value lives while a chunk is computed: in the output itself, or in a temporary.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Loc {
    Output,
    Temp(usize),
}

/// The operand that is not updated in place.
#[derive(Clone, Copy)]
enum Other<'a> {
    Scalar(f32),
    PerChannel(&'a [f32]),
    Full(&'a [f32]),
    At(Loc),
    /// The updated value itself (as in `x * x`).
    Same,
}

/// What one op does to the value it updates in place.
#[derive(Clone, Copy)]
enum Action<'a> {
    Unary(Kind, [f32; 2]),
    /// BatchNormalization as a per-channel `x * factor + shift`.
    Affine(&'a [f32], &'a [f32]),
    /// `acc = acc op other`, or `other op acc` when `acc_is_left` is false.
    Binary(Kind, Other<'a>, bool),
    /// `acc = acc * clip(acc + add, min, max) / divisor`, as `[add, min, max, divisor]`.
    ClipGate([f32; 4]),
}

/// One op: optionally copy a value into `acc` first, then update `acc` in place.
#[derive(Clone, Copy)]
struct Step<'a> {
    acc: Loc,
    copy_from: Option<Loc>,
    action: Action<'a>,
}

/// The epilogue of one call, bound to its inputs, with each value given a place so that most
/// ops update a value in place and nothing is copied in the common chains.
pub struct Epilogue<'a> {
    steps: [Option<Step<'a>>; MAX_OPS],
    len: usize,
    /// Where the last value is, when it is not already in the output.
    result: Loc,
}

/// Inference-mode BatchNormalization of one channel as `x * factor + shift`: the same
/// arithmetic fused or not, so fused results match.
pub fn batch_norm_affine(scale: f32, bias: f32, mean: f32, var: f32, epsilon: f32) -> (f32, f32) {
    let factor = scale / (var + epsilon).sqrt();
    (factor, bias - mean * factor)
}

/// How many inputs of the call are the kernel's node's own (the rest are fused nodes'), so a
/// kernel does not mistake them for optional inputs its node omitted.
pub fn node_input_count(cx: &KernelContext<'_>) -> usize {
    match cx.fusion().first() {
        Some(&count) => (count as usize).min(cx.input_count()),
        None => cx.input_count(),
    }
}

impl<'a> Epilogue<'a> {
    /// The call's epilogue (`None` when nothing was fused), for an output of `output_len`
    /// elements with `channels` channels.
    pub fn from_call(
        cx: &KernelContext<'a>,
        op: &str,
        channels: usize,
        output_len: usize,
    ) -> KernelResult<Option<Epilogue<'a>>> {
        let description = cx.fusion();
        if description.is_empty() {
            return Ok(None);
        }
        let bad = || {
            KernelError::new(format!(
                "{op}: the fusion description is not one this plugin wrote"
            ))
        };
        let Some(encoded) = description.get(HEADER_BYTES..) else {
            return Err(bad());
        };
        if encoded.len() % OP_BYTES != 0 || encoded.len() / OP_BYTES > MAX_OPS {
            return Err(bad());
        }
        let mut ops = [None; MAX_OPS];
        let count = encoded.len() / OP_BYTES;
        for (k, bytes) in encoded.chunks_exact(OP_BYTES).enumerate() {
            let op = Op::decode(bytes).ok_or_else(bad)?;
            let valid = |s: Source| !matches!(s, Source::Value(v) if v as usize > k);
            if !valid(op.a) || !valid(op.b) {
                return Err(bad());
            }
            ops[k] = Some(op);
        }
        let skipped = collapse_clip_gates(&mut ops, count);
        // The last op reading each value.
        let mut last_use = [0usize; MAX_OPS + 1];
        for (k, op) in ops.iter().flatten().enumerate() {
            for source in [op.a, op.b] {
                if let Source::Value(v) = source {
                    last_use[v as usize] = k;
                }
            }
        }
        let input = |i: u8, expected: usize| -> KernelResult<&'a [f32]> {
            let values = cx.input(i as usize)?.f32()?;
            if values.len() != expected {
                return Err(KernelError::new(format!(
                    "{op}: fused input {i} has {} values, expected {expected}",
                    values.len()
                )));
            }
            Ok(values)
        };
        let mut places = [Loc::Output; MAX_OPS + 1];
        let mut epilogue = Epilogue {
            steps: [None; MAX_OPS],
            len: count,
            result: Loc::Output,
        };
        for (k, op) in ops.iter().flatten().enumerate() {
            if skipped[k] {
                // Its value is read by no op that runs.
                continue;
            }
            let dead = |s: Source| matches!(s, Source::Value(v) if last_use[v as usize] == k);
            // The value updated in place: an operand read for the last time here, else a copy
            // of the first value operand in a free temporary.
            let (acc_source, acc_is_left) = if dead(op.a) {
                (op.a, true)
            } else if op.kind.is_binary() && dead(op.b) {
                (op.b, false)
            } else if matches!(op.a, Source::Value(_)) {
                (op.a, true)
            } else {
                (op.b, false)
            };
            let Source::Value(acc_value) = acc_source else {
                return Err(bad());
            };
            let from = places[acc_value as usize];
            let (acc, copy_from) = if dead(acc_source) {
                (from, None)
            } else {
                let busy =
                    |t: usize| (0..=k).any(|v| places[v] == Loc::Temp(t) && last_use[v] >= k);
                let free = (0..MAX_OPS).find(|&t| !busy(t)).ok_or_else(bad)?;
                (Loc::Temp(free), Some(from))
            };
            let other_source = if acc_is_left { op.b } else { op.a };
            let action = match op.kind {
                Kind::BatchNorm => {
                    let [scale, bias, mean, var] = op.inputs.map(|i| input(i, channels));
                    let (scale, bias, mean, var) = (scale?, bias?, mean?, var?);
                    let factor = cx.scratch::<f32>(channels)?;
                    let shift = cx.scratch::<f32>(channels)?;
                    for c in 0..channels {
                        (factor[c], shift[c]) =
                            batch_norm_affine(scale[c], bias[c], mean[c], var[c], op.params[0]);
                    }
                    Action::Affine(factor, shift)
                }
                Kind::ClipGate => {
                    let (Source::Input(add, Broadcast::Scalar), [min, max]) = (op.b, op.params)
                    else {
                        return Err(bad());
                    };
                    let (add, divisor) = (input(add, 1)?[0], input(op.inputs[0], 1)?[0]);
                    Action::ClipGate([add, min, max, divisor])
                }
                kind if kind.is_binary() => {
                    let other = match other_source {
                        Source::Value(v) if v == acc_value => Other::Same,
                        Source::Value(v) => Other::At(places[v as usize]),
                        Source::Input(i, Broadcast::Scalar) => Other::Scalar(input(i, 1)?[0]),
                        Source::Input(i, Broadcast::PerChannel) => {
                            Other::PerChannel(input(i, channels)?)
                        }
                        Source::Input(i, Broadcast::Full) => Other::Full(input(i, output_len)?),
                    };
                    Action::Binary(kind, other, acc_is_left)
                }
                kind => Action::Unary(kind, op.params),
            };
            epilogue.steps[k] = Some(Step {
                acc,
                copy_from,
                action,
            });
            places[k + 1] = acc;
        }
        epilogue.result = places[count];
        Ok(Some(epilogue))
    }

    /// Applies the epilogue to `y`, `channels` planes of `plane` elements per batch item, on
    /// the host's threads.
    pub fn apply(&self, cx: &KernelContext<'_>, y: &mut [f32], channels: usize, plane: usize) {
        if plane == 0 || channels == 0 {
            return;
        }
        let isa = crate::isa::current(cx);
        crate::parallel::for_each_chunk(cx, y, plane, GRAIN, |start, chunk| {
            // Entered here, and not only by `for_each_chunk`, so that the fused multiply-adds
            // the instruction set has are sure to be compiled as instructions, never library
            // calls.
            vectorized(
                isa,
                #[inline(always)]
                || {
                    let mut temps = PlaneTemps::default();
                    for (p, y_plane) in chunk.chunks_mut(plane).enumerate() {
                        self.apply_to_plane(isa, y_plane, start / plane + p, channels, &mut temps);
                    }
                },
            )
        });
    }

    /// Applies the epilogue to one channel plane of the output while it is still in cache, for a
    /// kernel that finishes its output a plane at a time: `y` is plane `index` (batch item
    /// times `channels` plus channel). The caller runs it compiled for `isa` (in a loop handed to
    /// [`crate::parallel`], or inside [`vectorized`]), with `temps` made once for its piece of
    /// work.
    #[inline(always)]
    pub fn apply_to_plane(
        &self,
        isa: crate::isa::Isa,
        y: &mut [f32],
        index: usize,
        channels: usize,
        temps: &mut PlaneTemps,
    ) {
        let fma = crate::isa::has_fma(isa);
        self.apply_plane(y, index % channels, index * y.len(), fma, &mut temps.0);
    }

    /// One channel plane, starting at element `offset` of the output; `fma` when the code runs
    /// compiled for an instruction set with fused multiply-adds.
    #[inline(always)]
    fn apply_plane(
        &self,
        y: &mut [f32],
        channel: usize,
        offset: usize,
        fma: bool,
        temps: &mut [[f32; CHUNK]; MAX_OPS],
    ) {
        for (c, y) in y.chunks_mut(CHUNK).enumerate() {
            let n = y.len();
            let at = offset + c * CHUNK;
            for step in self.steps[..self.len].iter().flatten() {
                if let Some(from) = step.copy_from {
                    let (to, from) = split(y, temps, step.acc, from);
                    to[..n].copy_from_slice(&from[..n]);
                }
                match step.action {
                    Action::Unary(kind, params) => {
                        unary(kind, params, fma, &mut place(y, temps, step.acc)[..n])
                    }
                    Action::ClipGate([add, min, max, divisor]) => {
                        // The four ops' arithmetic in their order, so results are the same.
                        for x in &mut place(y, temps, step.acc)[..n] {
                            *x = *x * clamp_as_clip(*x + add, min, max) / divisor;
                        }
                    }
                    Action::Affine(factor, shift) => {
                        let (f, s) = (factor[channel], shift[channel]);
                        for x in &mut place(y, temps, step.acc)[..n] {
                            *x = *x * f + s;
                        }
                    }
                    Action::Binary(kind, other, acc_is_left) => {
                        let (acc, other): (&mut [f32], Operand<'_>) = match other {
                            Other::Scalar(v) => (place(y, temps, step.acc), Operand::Constant(v)),
                            Other::PerChannel(v) => {
                                (place(y, temps, step.acc), Operand::Constant(v[channel]))
                            }
                            Other::Full(v) => {
                                (place(y, temps, step.acc), Operand::Slice(&v[at..at + n]))
                            }
                            Other::Same => (place(y, temps, step.acc), Operand::Same),
                            Other::At(loc) => {
                                let (acc, other) = split(y, temps, step.acc, loc);
                                (acc, Operand::Slice(&other[..n]))
                            }
                        };
                        binary(kind, &mut acc[..n], other, acc_is_left);
                    }
                }
            }
            if let Loc::Temp(t) = self.result {
                y.copy_from_slice(&temps[t][..n]);
            }
        }
    }
}

/// Rewrites each `x * clip(x + a, min, max) / d` in the first `count` ops (Add, Clip, Mul and
/// Div of scalars, in a row, whose intermediate values nothing else reads) into one
/// [`Kind::ClipGate`] op in the Div's place, and answers which ops that leaves skipped: one pass
/// over the values instead of four.
fn collapse_clip_gates(ops: &mut [Option<Op>; MAX_OPS], count: usize) -> [bool; MAX_OPS] {
    let mut skipped = [false; MAX_OPS];
    for k in 0..count.saturating_sub(3) {
        let Some(gate) = clip_gate(&ops[k..k + 4], k) else {
            continue;
        };
        // Op `k + j`'s value is `Value(k + j + 1)`; the first three are read only by the next.
        let read_elsewhere = |j: usize| {
            let value = Source::Value((k + j + 1) as u8);
            ops[..count].iter().enumerate().any(|(m, op)| {
                m != k + j + 1 && op.is_some_and(|op| op.a == value || op.b == value)
            })
        };
        if (0..3).any(read_elsewhere) || skipped[k..k + 4].contains(&true) {
            continue;
        }
        ops[k + 3] = Some(gate);
        skipped[k..k + 3].fill(true);
    }
    skipped
}

/// The [`Kind::ClipGate`] op that `ops` (four, the first being op `k`) compute, if they are
/// `x + a`, its clip, `x` times that, and that divided by `d`, with scalar `a` and `d`.
fn clip_gate(ops: &[Option<Op>], k: usize) -> Option<Op> {
    let [Some(add), Some(clip), Some(mul), Some(div)] = *ops else {
        return None;
    };
    let value = |j: usize| Source::Value((k + j) as u8);
    let (x, a) = match (add.kind, add.a, add.b) {
        (Kind::Add, x @ Source::Value(_), a @ Source::Input(_, Broadcast::Scalar))
        | (Kind::Add, a @ Source::Input(_, Broadcast::Scalar), x @ Source::Value(_)) => (x, a),
        _ => return None,
    };
    let Source::Input(d, Broadcast::Scalar) = div.b else {
        return None;
    };
    let matches = clip.kind == Kind::Clip
        && clip.a == value(1)
        && mul.kind == Kind::Mul
        && ((mul.a, mul.b) == (x, value(2)) || (mul.a, mul.b) == (value(2), x))
        && div.kind == Kind::Div
        && div.a == value(3);
    matches.then_some(Op {
        kind: Kind::ClipGate,
        a: x,
        b: a,
        params: clip.params,
        inputs: [d, 0, 0, 0],
    })
}

/// Clip's arithmetic: `min` below it, `max` above it, NaN kept.
#[inline(always)]
fn clamp_as_clip(x: f32, min: f32, max: f32) -> f32 {
    if x < min {
        min
    } else if x > max {
        max
    } else {
        x
    }
}

/// The epilogue's temporaries for [`Epilogue::apply_to_plane`]: made once per piece of a
/// kernel's work rather than per plane.
pub struct PlaneTemps([[f32; CHUNK]; MAX_OPS]);

impl Default for PlaneTemps {
    fn default() -> Self {
        PlaneTemps([[0.0; CHUNK]; MAX_OPS])
    }
}

/// The storage of `loc`.
fn place<'t>(y: &'t mut [f32], temps: &'t mut [[f32; CHUNK]; MAX_OPS], loc: Loc) -> &'t mut [f32] {
    match loc {
        Loc::Output => y,
        Loc::Temp(t) => &mut temps[t],
    }
}

/// The storage of `to`, mutable, and of `from` (a different place), shared.
fn split<'t>(
    y: &'t mut [f32],
    temps: &'t mut [[f32; CHUNK]; MAX_OPS],
    to: Loc,
    from: Loc,
) -> (&'t mut [f32], &'t [f32]) {
    match (to, from) {
        (Loc::Output, Loc::Temp(t)) => (y, &temps[t]),
        (Loc::Temp(t), Loc::Output) => (&mut temps[t], y),
        (Loc::Temp(t), Loc::Temp(u)) if t < u => {
            let (low, high) = temps.split_at_mut(u);
            (&mut low[t], &high[0])
        }
        (Loc::Temp(t), Loc::Temp(u)) if t > u => {
            let (low, high) = temps.split_at_mut(t);
            (&mut high[0], &low[u])
        }
        // Places are distinct by construction; an equal pair cannot be split.
        (Loc::Output, Loc::Output) | (Loc::Temp(_), Loc::Temp(_)) => (y, &[]),
    }
}

/// The second operand of a binary op, as the chunk loop reads it.
enum Operand<'s> {
    Constant(f32),
    Slice(&'s [f32]),
    Same,
}

#[inline(always)]
fn unary(kind: Kind, [p, q]: [f32; 2], fma: bool, x: &mut [f32]) {
    match kind {
        Kind::Relu => x.iter_mut().for_each(|x| *x = x.max(0.0)),
        Kind::LeakyRelu => x.iter_mut().for_each(|x| {
            if *x < 0.0 {
                *x *= p
            }
        }),
        Kind::Clip => x.iter_mut().for_each(|x| *x = clamp_as_clip(*x, p, q)),
        Kind::Sigmoid if fma => x
            .iter_mut()
            .for_each(|x| *x = fast_math::sigmoid_on::<true>(*x)),
        Kind::Sigmoid => x
            .iter_mut()
            .for_each(|x| *x = fast_math::sigmoid_on::<false>(*x)),
        Kind::Tanh if fma => x
            .iter_mut()
            .for_each(|x| *x = fast_math::tanh_on::<true>(*x)),
        Kind::Tanh => x
            .iter_mut()
            .for_each(|x| *x = fast_math::tanh_on::<false>(*x)),
        Kind::HardSigmoid => x.iter_mut().for_each(|x| *x = (*x * p + q).clamp(0.0, 1.0)),
        Kind::HardSwish => x
            .iter_mut()
            .for_each(|x| *x *= (*x / 6.0 + 0.5).clamp(0.0, 1.0)),
        _ => {}
    }
}

/// `acc = acc op other` (or `other op acc` when `acc_is_left` is false).
#[inline(always)]
fn binary(kind: Kind, acc: &mut [f32], other: Operand<'_>, acc_is_left: bool) {
    macro_rules! each {
        ($op:expr) => {
            match other {
                Operand::Constant(b) if acc_is_left => acc.iter_mut().for_each(|a| *a = $op(*a, b)),
                Operand::Constant(b) => acc.iter_mut().for_each(|a| *a = $op(b, *a)),
                Operand::Slice(b) if acc_is_left => {
                    acc.iter_mut().zip(b).for_each(|(a, &b)| *a = $op(*a, b))
                }
                Operand::Slice(b) => acc.iter_mut().zip(b).for_each(|(a, &b)| *a = $op(b, *a)),
                Operand::Same => acc.iter_mut().for_each(|a| *a = $op(*a, *a)),
            }
        };
    }
    match kind {
        Kind::Add => each!(|a: f32, b: f32| a + b),
        Kind::Sub => each!(|a: f32, b: f32| a - b),
        Kind::Mul => each!(|a: f32, b: f32| a * b),
        Kind::Div => each!(|a: f32, b: f32| a / b),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::values;
    use opal_plugin_api::testing::{assert_close, OwnedTensor, TestHost};

    /// Copies input 0 to the output and applies the call's epilogue: channels on axis 1.
    struct Apply;

    impl Operator for Apply {
        const OP_TYPE: &'static str = "Apply";

        fn compute(cx: &mut KernelContext<'_>) -> KernelResult<()> {
            let x = cx.input(0)?;
            let (shape, x) = (x.shape(), x.f32()?);
            let (channels, plane) = (shape[1], shape[2..].iter().product());
            let epilogue = Epilogue::from_call(cx, "Apply", channels, x.len())?;
            let y = cx.output(0)?.f32_mut()?;
            y.copy_from_slice(x);
            if let Some(epilogue) = epilogue {
                epilogue.apply(cx, y, channels, plane);
            }
            Ok(())
        }
    }

    fn value(k: u8) -> Source {
        Source::Value(k)
    }

    fn binary(kind: Kind, a: Source, b: Source) -> Op {
        Op {
            kind,
            a,
            b,
            params: [0.0; 2],
            inputs: [0; 4],
        }
    }

    /// What the ops compute at element `i` of channel `c`, one value after another.
    fn reference(ops: &[Op], inputs: &[Vec<f32>], x: f32, i: usize, c: usize) -> f32 {
        let mut values = vec![x];
        for op in ops {
            let read = |s: Source| match s {
                Source::Value(k) => values[k as usize],
                Source::Input(k, Broadcast::Scalar) => inputs[k as usize][0],
                Source::Input(k, Broadcast::PerChannel) => inputs[k as usize][c],
                Source::Input(k, Broadcast::Full) => inputs[k as usize][i],
            };
            let (a, b) = (read(op.a), read(op.b));
            let [p, q] = op.params;
            let input = |k: usize| inputs[op.inputs[k] as usize][c];
            values.push(match op.kind {
                Kind::Relu => a.max(0.0),
                Kind::LeakyRelu => {
                    if a < 0.0 {
                        a * p
                    } else {
                        a
                    }
                }
                Kind::Clip => a.clamp(p, q),
                Kind::Sigmoid => 1.0 / (1.0 + (-a).exp()),
                Kind::Tanh => a.tanh(),
                Kind::HardSigmoid => (a * p + q).clamp(0.0, 1.0),
                Kind::HardSwish => a * (a / 6.0 + 0.5).clamp(0.0, 1.0),
                Kind::Add => a + b,
                Kind::Sub => a - b,
                Kind::Mul => a * b,
                Kind::Div => a / b,
                Kind::BatchNorm => (a - input(2)) / (input(3) + p).sqrt() * input(0) + input(1),
                Kind::ClipGate => a * (a + b).clamp(p, q) / inputs[op.inputs[0] as usize][0],
            });
        }
        *values.last().unwrap()
    }

    /// Runs `ops` over a [2, 3, 5, 41] input (planes longer than a chunk are not needed to
    /// split values; 41 leaves a partial chunk) with `extra` inputs after it.
    fn check(ops: &[Op], extra: &[Vec<f32>]) {
        let shape = [2, 3, 5, 41];
        let len: usize = shape.iter().product();
        let x = values(len, 1);
        let mut description = vec![1u8];
        for op in ops {
            op.encode(&mut description);
        }
        let mut inputs = vec![OwnedTensor::f32(&shape, &x)];
        let mut all = vec![x.clone()];
        for values in extra {
            inputs.push(OwnedTensor::f32(&[values.len()], values));
            all.push(values.clone());
        }
        for threads in [1, 2] {
            let y = TestHost::new()
                .threads(threads)
                .fusion(description.clone())
                .run::<Apply>(&inputs, &[], 1)
                .unwrap();
            let plane = 5 * 41;
            let expected: Vec<f32> = (0..len)
                .map(|i| reference(ops, &all, x[i], i, (i / plane) % 3))
                .collect();
            assert_close(y[0].as_slice(), &expected, 1e-5);
        }
    }

    #[test]
    fn chains_update_in_place() {
        check(
            &[
                Op::unary(Kind::Relu, value(0), [0.0; 2]),
                Op::unary(Kind::Clip, value(1), [0.1, 0.4]),
                Op::unary(Kind::LeakyRelu, value(2), [0.3, 0.0]),
            ],
            &[],
        );
    }

    #[test]
    fn values_read_again_later_are_kept() {
        // SiLU, then hard-swish of it: x * clip(x + 3, 0, 6) / 6.
        check(
            &[
                Op::unary(Kind::Sigmoid, value(0), [0.0; 2]),
                binary(Kind::Mul, value(0), value(1)),
                binary(Kind::Add, value(2), Source::Input(1, Broadcast::Scalar)),
                Op::unary(Kind::Clip, value(3), [0.0, 6.0]),
                binary(Kind::Mul, value(2), value(4)),
                binary(Kind::Div, value(5), Source::Input(2, Broadcast::Scalar)),
            ],
            &[vec![3.0], vec![6.0]],
        );
        // One value read by three later ops, the first value read last.
        check(
            &[
                Op::unary(Kind::Tanh, value(0), [0.0; 2]),
                binary(Kind::Mul, value(1), value(0)),
                binary(Kind::Sub, value(1), value(2)),
                binary(Kind::Mul, value(3), value(1)),
                binary(Kind::Sub, value(0), value(4)),
            ],
            &[],
        );
    }

    #[test]
    fn hard_swish_spelled_out_runs_as_one_op_when_nothing_else_reads_its_parts() {
        let (three, six) = (
            Source::Input(1, Broadcast::Scalar),
            Source::Input(2, Broadcast::Scalar),
        );
        let scalars = [vec![3.0], vec![6.0]];
        let collapsed = |ops: &[Op]| {
            let mut table = [None; MAX_OPS];
            for (slot, op) in table.iter_mut().zip(ops) {
                *slot = Some(*op);
            }
            let skipped = collapse_clip_gates(&mut table, ops.len());
            let kinds: Vec<Kind> = table.iter().flatten().map(|op| op.kind).collect();
            (skipped[..ops.len()].to_vec(), kinds)
        };
        // After a Relu; then with the operands of Add and Mul the other way round.
        let after_relu = [
            Op::unary(Kind::Relu, value(0), [0.0; 2]),
            binary(Kind::Add, value(1), three),
            Op::unary(Kind::Clip, value(2), [0.0, 6.0]),
            binary(Kind::Mul, value(1), value(3)),
            binary(Kind::Div, value(4), six),
        ];
        let swapped = [
            binary(Kind::Add, three, value(0)),
            Op::unary(Kind::Clip, value(1), [0.0, 6.0]),
            binary(Kind::Mul, value(2), value(0)),
            binary(Kind::Div, value(3), six),
        ];
        for ops in [&after_relu[..], &swapped[..]] {
            let (skipped, kinds) = collapsed(ops);
            let first = ops.len() - 4;
            assert_eq!(skipped[first..], [true, true, true, false]);
            assert_eq!(kinds.last(), Some(&Kind::ClipGate));
            check(ops, &scalars);
        }
        // The clipped value read again later: the ops stay as they are.
        let mut read_again = after_relu.to_vec();
        read_again.push(binary(Kind::Add, value(5), value(3)));
        let (skipped, kinds) = collapsed(&read_again);
        assert!(!skipped.contains(&true));
        assert!(!kinds.contains(&Kind::ClipGate));
        check(&read_again, &scalars);
    }

    #[test]
    fn operands_on_either_side_and_broadcast() {
        let per_channel = vec![0.5, -1.5, 2.0];
        let full = values(2 * 3 * 5 * 41, 4);
        check(
            &[
                binary(Kind::Sub, Source::Input(1, Broadcast::PerChannel), value(0)),
                binary(Kind::Div, Source::Input(2, Broadcast::Full), value(1)),
                binary(Kind::Mul, value(2), value(2)),
                Op::unary(Kind::HardSigmoid, value(3), [0.2, 0.5]),
                Op::unary(Kind::HardSwish, value(4), [0.0; 2]),
            ],
            &[per_channel, full],
        );
    }

    #[test]
    fn batch_norm_is_a_per_channel_affine() {
        let stats = [
            vec![1.5, -0.5, 2.0],
            vec![0.1, 0.2, -0.3],
            vec![0.0, 0.5, -1.0],
            vec![1.0, 0.25, 4.0],
        ];
        let mut op = Op::unary(Kind::BatchNorm, value(0), [1e-3, 0.0]);
        op.inputs = [1, 2, 3, 4];
        check(&[op, Op::unary(Kind::Relu, value(1), [0.0; 2])], &stats);
    }

    #[test]
    fn a_description_from_elsewhere_is_an_error() {
        let x = OwnedTensor::f32(&[1, 1, 2], &[1.0, 2.0]);
        for description in [
            vec![1u8, 99],
            vec![1u8; 21],
            vec![
                1, 200, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
            ],
        ] {
            let error = TestHost::new()
                .fusion(description)
                .run::<Apply>(std::slice::from_ref(&x), &[], 1)
                .unwrap_err();
            assert!(error.contains("fusion description"), "{error}");
        }
    }
}
