//! Einsum: sums of products over the labels of an Einstein-summation equation (explicit or
//! implicit output, repeated labels as diagonals, `...` as broadcast dims), for numeric inputs.
//! Computed by plain loops over every label: no matrix-product fast path.

use crate::{
    broadcast::MAX_RANK,
    check::{check_rank, error},
    half::{widened, Narrow},
    numeric::{is_numeric, with_numeric, Accumulator, Num},
};
use opal_plugin_api::prelude::*;

/// Letters take ids 0 to 51; the dims an ellipsis covers take ids from here on.
const ELLIPSIS: usize = 52;
/// Every label id is below this.
const MAX_LABELS: usize = ELLIPSIS + MAX_RANK;
/// The most operands an equation may have.
const MAX_OPERANDS: usize = 8;

/// A parsed equation: each operand's and the output's dims as label ids.
struct Equation {
    operands: [[usize; MAX_RANK]; MAX_OPERANDS],
    ranks: [usize; MAX_OPERANDS],
    count: usize,
    output: [usize; MAX_RANK],
    output_rank: usize,
}

fn letter_id(c: u8) -> Option<usize> {
    match c {
        b'a'..=b'z' => Some(usize::from(c - b'a')),
        b'A'..=b'Z' => Some(26 + usize::from(c - b'A')),
        _ => None,
    }
}

/// The ASCII code of a letter id, which orders the implicit output.
fn ascii(id: usize) -> u8 {
    if id < 26 {
        b'a' + id as u8
    } else {
        b'A' + (id - 26) as u8
    }
}

/// One term's letters (ids) and whether it holds an ellipsis, checking its syntax.
fn scan_term(op: &str, term: &str, mut f: impl FnMut(Option<usize>)) -> KernelResult<bool> {
    let bytes = term.as_bytes();
    let mut i = 0;
    let mut ellipsis = false;
    while i < bytes.len() {
        match bytes[i] {
            b' ' => i += 1,
            b'.' if bytes[i..].starts_with(b"...") && !ellipsis => {
                ellipsis = true;
                f(None);
                i += 3;
            }
            c => {
                let id = letter_id(c).ok_or_else(|| {
                    error(
                        op,
                        format_args!("invalid character '{}' in the equation", c as char),
                    )
                })?;
                f(Some(id));
                i += 1;
            }
        }
    }
    Ok(ellipsis)
}

impl Equation {
    /// Parses `equation` for operands of the given ranks.
    fn parse(op: &str, equation: &str, ranks: &[usize]) -> KernelResult<Self> {
        let (lhs, rhs) = match equation.find("->") {
            Some(at) => (&equation[..at], Some(&equation[at + 2..])),
            None => (equation, None),
        };
        if ranks.len() > MAX_OPERANDS {
            return Err(error(
                op,
                format_args!("at most {MAX_OPERANDS} operands are supported"),
            ));
        }
        let mut eq = Equation {
            operands: [[0; MAX_RANK]; MAX_OPERANDS],
            ranks: [0; MAX_OPERANDS],
            count: 0,
            output: [0; MAX_RANK],
            output_rank: 0,
        };
        // First pass: how many dims the ellipsis covers (the most over the operands).
        let mut ellipsis_rank = 0;
        for (k, term) in lhs.split(',').enumerate() {
            let rank = *ranks.get(k).ok_or_else(|| {
                error(
                    op,
                    format_args!(
                        "the equation has more terms than the {} inputs",
                        ranks.len()
                    ),
                )
            })?;
            check_rank(op, rank)?;
            let mut letters = 0;
            let has_ellipsis = scan_term(op, term, |id| letters += usize::from(id.is_some()))?;
            let covered = rank
                .checked_sub(letters)
                .filter(|&c| has_ellipsis || c == 0);
            let covered = covered.ok_or_else(|| {
                error(
                    op,
                    format_args!("term {k} '{term}' does not match input rank {rank}"),
                )
            })?;
            ellipsis_rank = ellipsis_rank.max(covered);
            eq.ranks[k] = rank;
            eq.count = k + 1;
        }
        if eq.count != ranks.len() {
            return Err(error(
                op,
                format_args!(
                    "the equation has {} terms for {} inputs",
                    eq.count,
                    ranks.len()
                ),
            ));
        }
        // Second pass: the label of every dim; ellipsis dims align at the right.
        let mut occurrences = [0usize; MAX_LABELS];
        for (k, term) in lhs.split(',').enumerate() {
            let rank = eq.ranks[k];
            let mut letters = 0;
            scan_term(op, term, |id| letters += usize::from(id.is_some()))?;
            let covered = rank - letters;
            let mut d = 0;
            let labels = &mut eq.operands[k];
            scan_term(op, term, |id| match id {
                Some(id) => {
                    labels[d] = id;
                    occurrences[id] += 1;
                    d += 1;
                }
                None => {
                    for j in 0..covered {
                        labels[d] = ELLIPSIS + ellipsis_rank - covered + j;
                        d += 1;
                    }
                }
            })?;
        }
        let push = |eq: &mut Equation, id: usize| -> KernelResult<()> {
            if eq.output_rank == MAX_RANK {
                return Err(error(
                    op,
                    format_args!("the output rank exceeds {MAX_RANK}"),
                ));
            }
            eq.output[eq.output_rank] = id;
            eq.output_rank += 1;
            Ok(())
        };
        match rhs {
            Some(rhs) => {
                let mut failure = None;
                let mut labels = [0usize; MAX_RANK + 1];
                let mut count = 0;
                scan_term(op, rhs, |id| {
                    if count <= MAX_RANK {
                        labels[count] = id.map_or(usize::MAX, |id| id);
                        count += 1;
                    } else {
                        failure = Some(());
                    }
                })?;
                if failure.is_some() {
                    return Err(error(
                        op,
                        format_args!("the output rank exceeds {MAX_RANK}"),
                    ));
                }
                for &id in &labels[..count] {
                    if id == usize::MAX {
                        for j in 0..ellipsis_rank {
                            push(&mut eq, ELLIPSIS + j)?;
                        }
                    } else if occurrences[id] == 0 {
                        return Err(error(
                            op,
                            format_args!("output label '{}' is in no input", ascii(id) as char),
                        ));
                    } else {
                        push(&mut eq, id)?;
                    }
                }
            }
            None => {
                for j in 0..ellipsis_rank {
                    push(&mut eq, ELLIPSIS + j)?;
                }
                for code in (b'A'..=b'Z').chain(b'a'..=b'z') {
                    if let Some(id) = letter_id(code) {
                        if occurrences[id] == 1 {
                            push(&mut eq, id)?;
                        }
                    }
                }
            }
        }
        Ok(eq)
    }

    fn labels(&self, k: usize) -> &[usize] {
        &self.operands[k][..self.ranks[k]]
    }

    /// Every label's size from the operands' shapes (`-1` unknown, sizes of 1 broadcast).
    fn sizes(
        &self,
        op: &str,
        shape: impl Fn(usize, usize) -> i64,
    ) -> KernelResult<[i64; MAX_LABELS]> {
        let mut sizes = [1i64; MAX_LABELS];
        let mut seen = [false; MAX_LABELS];
        for k in 0..self.count {
            for (d, &id) in self.labels(k).iter().enumerate() {
                let dim = shape(k, d);
                let size = &mut sizes[id];
                if !seen[id] || *size == 1 || (*size < 0 && dim != 1) {
                    *size = dim;
                } else if dim != *size && dim != 1 && dim >= 0 {
                    return Err(error(
                        op,
                        format_args!("a label has sizes {size} and {dim} in different places"),
                    ));
                }
                seen[id] = true;
            }
        }
        Ok(sizes)
    }
}

fn equation<'a>(attributes: Attributes<'a>) -> KernelResult<&'a str> {
    attributes.string("equation", "")
}

/// The sums of products into `y`; `operand(k)` gives operand `k`'s elements and shape.
fn contract<'a, T: Num>(
    eq: &Equation,
    sizes: &[i64; MAX_LABELS],
    operand: impl Fn(usize) -> KernelResult<(&'a [T], &'a [usize])>,
    y: &mut [T],
) -> KernelResult<()> {
    // The loop labels: the output's, then the summed ones.
    let mut loops = [0usize; MAX_LABELS];
    let mut is_loop = [false; MAX_LABELS];
    let mut count = 0;
    for &id in &eq.output[..eq.output_rank] {
        loops[count] = id;
        is_loop[id] = true;
        count += 1;
    }
    let outer = count;
    for k in 0..eq.count {
        for &id in eq.labels(k) {
            if !is_loop[id] {
                loops[count] = id;
                is_loop[id] = true;
                count += 1;
            }
        }
    }
    // Each operand's element stride along each loop label (repeated labels add up: diagonals;
    // dims of 1 under a larger label broadcast with stride 0).
    let mut strides = [[0usize; MAX_LABELS]; MAX_OPERANDS];
    let mut data: [&[T]; MAX_OPERANDS] = [&[]; MAX_OPERANDS];
    for (k, operand_strides) in strides.iter_mut().enumerate().take(eq.count) {
        let (values, shape) = operand(k)?;
        data[k] = values;
        let mut stride = 1;
        for (d, &id) in eq.labels(k).iter().enumerate().rev() {
            if shape[d] != 1 {
                let slot = loops[..count].iter().position(|&l| l == id).unwrap_or(0);
                operand_strides[slot] += stride;
            }
            stride *= shape[d];
        }
    }
    let size = |slot: usize| sizes[loops[slot]].max(0) as usize;
    let inner: usize = (outer..count).map(size).product();
    let mut index = [0usize; MAX_LABELS];
    for out in y.iter_mut() {
        let mut acc = T::ZERO.to_acc();
        if inner > 0 {
            index[outer..count].fill(0);
            loop {
                let mut product = T::ONE.to_acc();
                for (values, operand_strides) in data.iter().zip(&strides).take(eq.count) {
                    let offset: usize = (0..count).map(|s| index[s] * operand_strides[s]).sum();
                    product = product.times(values[offset].to_acc());
                }
                acc = acc.plus(product);
                if !advance(&mut index, outer..count, size) {
                    break;
                }
            }
        }
        *out = T::from_acc(acc);
        advance(&mut index, 0..outer, size);
    }
    Ok(())
}

/// Steps the odometer `index` over the slots in `range` (last fastest); false once it wraps.
fn advance(
    index: &mut [usize],
    range: std::ops::Range<usize>,
    size: impl Fn(usize) -> usize,
) -> bool {
    for slot in range.rev() {
        index[slot] += 1;
        if index[slot] < size(slot) {
            return true;
        }
        index[slot] = 0;
    }
    false
}

/// The Einstein summation of the inputs under attribute `equation`.
pub struct Einsum;

impl Operator for Einsum {
    const OP_TYPE: &'static str = "Einsum";
    const SINCE_VERSION: i64 = 12;

    fn infer(cx: &InferContext<'_>) -> KernelResult<Vec<OutputType>> {
        let op = Self::OP_TYPE;
        let inputs: Vec<_> = (0..cx.input_count())
            .map(|i| cx.input(i))
            .collect::<Result<_, _>>()?;
        let dtype = inputs.first().map(|x| x.dtype).unwrap_or(DType::F32);
        if !is_numeric(dtype) || inputs.iter().any(|x| x.dtype != dtype) {
            return Err(error(op, "the inputs must share one numeric dtype"));
        }
        let ranks: Vec<usize> = inputs.iter().map(|x| x.shape.len()).collect();
        let eq = Equation::parse(op, equation(cx.attributes())?, &ranks)?;
        let sizes = eq.sizes(op, |k, d| inputs[k].shape[d])?;
        let shape = eq.output[..eq.output_rank]
            .iter()
            .map(|&id| sizes[id])
            .collect();
        Ok(vec![OutputType::new(dtype, shape)])
    }

    fn compute(cx: &mut KernelContext<'_>) -> KernelResult<()> {
        let op = Self::OP_TYPE;
        let count = cx.input_count().min(MAX_OPERANDS + 1);
        let mut ranks = [0usize; MAX_OPERANDS + 1];
        for (k, rank) in ranks.iter_mut().enumerate().take(count) {
            *rank = cx.input(k)?.shape().len();
        }
        let eq = Equation::parse(op, equation(cx.attributes())?, &ranks[..count])?;
        let shapes = |k: usize, d: usize| cx.input(k).map_or(0, |x| x.shape()[d] as i64);
        let sizes = eq.sizes(op, shapes)?;
        let dtype = cx.input(0)?.dtype();
        let out = cx.output(0)?;
        let cx = &*cx;
        with_numeric!(dtype, T => {
            let operand = |k: usize| {
                let x = cx.input(k)?;
                Ok((x.as_slice::<T>()?, x.shape()))
            };
            contract(&eq, &sizes, operand, out.as_slice_mut::<T>()?)
        }, _ => {
            let narrow = Narrow::new(cx, out)?;
            let operand = |k: usize| {
                let x = cx.input(k)?;
                Ok((widened(op, cx, x)?, x.shape()))
            };
            contract(&eq, &sizes, operand, &mut *narrow.values)?;
            narrow.finish();
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opal_plugin_api::testing::{run_operator, string_attr, OwnedTensor};

    fn einsum(equation: &str, inputs: &[OwnedTensor]) -> OwnedTensor {
        run_operator::<Einsum>(inputs, &[string_attr("equation", equation)], 1)
            .unwrap()
            .remove(0)
    }

    #[test]
    fn products_transposes_traces_and_sums() {
        let a = OwnedTensor::f32(&[2, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        let b = OwnedTensor::f32(&[3, 2], &[1.0, 0.0, 0.0, 1.0, 1.0, 1.0]);
        let y = einsum("ij,jk->ik", &[a.clone(), b.clone()]);
        assert_eq!(y.shape(), [2, 2]);
        assert_eq!(y.to_vec::<f32>(), [4.0, 5.0, 10.0, 11.0]);
        let t = einsum("ij->ji", std::slice::from_ref(&a));
        assert_eq!(t.to_vec::<f32>(), [1.0, 4.0, 2.0, 5.0, 3.0, 6.0]);
        let s = einsum("ij->i", std::slice::from_ref(&a));
        assert_eq!(s.to_vec::<f32>(), [6.0, 15.0]);
        let implicit = einsum("ij,jk", &[a, b]);
        assert_eq!(implicit.to_vec::<f32>(), [4.0, 5.0, 10.0, 11.0]);
        let square = OwnedTensor::f32(&[2, 2], &[1.0, 2.0, 3.0, 4.0]);
        let trace = einsum("ii", std::slice::from_ref(&square));
        assert_eq!(trace.shape(), [] as [usize; 0]);
        assert_eq!(trace.to_vec::<f32>(), [5.0]);
        let diagonal = einsum("...ii->...i", &[square]);
        assert_eq!(diagonal.to_vec::<f32>(), [1.0, 4.0]);
    }

    #[test]
    fn ellipsis_and_scalars() {
        let a = OwnedTensor::new::<f64>(&[2, 1, 2], &[1.0, 2.0, 3.0, 4.0]);
        let b = OwnedTensor::new::<f64>(&[2, 2, 1], &[1.0, 1.0, 2.0, 0.0]);
        let y = einsum("...ij,...jk->...ik", &[a, b]);
        assert_eq!(y.shape(), [2, 1, 1]);
        assert_eq!(y.to_vec::<f64>(), [3.0, 6.0]);
        let x = OwnedTensor::new::<i32>(&[], &[3]);
        let y = einsum(",->", &[x.clone(), x]);
        assert_eq!(y.to_vec::<i32>(), [9]);
        let v = OwnedTensor::f32(&[3], &[1.0, 2.0, 3.0]);
        assert_eq!(einsum("i,i", &[v.clone(), v]).to_vec::<f32>(), [14.0]);
    }
}
