//! StringSplit: each string split at a delimiter (or at runs of whitespace) as Python's
//! `str.split` does, padded with empty strings to the most pieces any element has, with the
//! number of pieces of each element.

use crate::common::expect_strings;
use opal_kernel_support::{broadcast::MAX_RANK, check::error};
use opal_plugin_api::prelude::*;

/// How a string is split: at `delimiter` (or whitespace when it is empty), at most `max_splits`
/// times (`None`: no limit).
#[derive(Clone, Copy)]
struct Splitter<'a> {
    delimiter: &'a str,
    max_splits: Option<usize>,
}

impl Splitter<'_> {
    /// Calls `piece` with each piece of `text`, in order, as Python's `str.split` gives them.
    fn split<'t>(
        &self,
        text: &'t str,
        mut piece: impl FnMut(&'t str) -> KernelResult<()>,
    ) -> KernelResult<()> {
        let limit = self.max_splits.map_or(usize::MAX, |m| m.saturating_add(1));
        if !self.delimiter.is_empty() {
            return text.splitn(limit, self.delimiter).try_for_each(piece);
        }
        // Runs of whitespace separate pieces; leading and trailing whitespace makes none. Once
        // the splits are used up, the rest (its leading whitespace skipped) is the last piece.
        let mut rest = text.trim_start();
        let mut splits = 0;
        while !rest.is_empty() {
            if self.max_splits.is_some_and(|m| splits >= m) {
                return piece(rest);
            }
            let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
            piece(&rest[..end])?;
            splits += 1;
            rest = rest[end..].trim_start();
        }
        Ok(())
    }

    /// How many pieces `text` splits into.
    fn count(&self, text: &str) -> KernelResult<usize> {
        let mut n = 0;
        self.split(text, |_| {
            n += 1;
            Ok(())
        })?;
        Ok(n)
    }
}

fn splitter<'a>(op: &str, attributes: &Attributes<'a>) -> KernelResult<Splitter<'a>> {
    let delimiter = attributes.string("delimiter", "")?;
    let max_splits = match attributes.int("maxsplit", -1)? {
        m if m < 0 => None,
        m => Some(usize::try_from(m).map_err(|_| error(op, "maxsplit is too large"))?),
    };
    Ok(Splitter {
        delimiter,
        max_splits,
    })
}

/// Splits each string into substrings; outputs the padded substrings and their counts.
pub struct StringSplit;

impl Operator for StringSplit {
    const OP_TYPE: &'static str = "StringSplit";
    const SINCE_VERSION: i64 = 20;
    const TAKES_STRINGS: bool = true;

    fn infer(cx: &InferContext<'_>) -> KernelResult<Vec<OutputType>> {
        let op = Self::OP_TYPE;
        expect_strings(op, cx, 0)?;
        splitter(op, &cx.attributes())?;
        let x = cx.input(0)?;
        if x.shape.len() >= MAX_RANK {
            return Err(error(
                op,
                format_args!("rank {} is too high", x.shape.len()),
            ));
        }
        // The substrings' last dim is the most pieces an element splits into, known when the
        // kernel has split them.
        let mut pieces = x.shape.to_vec();
        pieces.push(-1);
        Ok(vec![
            OutputType::new(DType::STRING, pieces),
            OutputType::new(DType::I64, x.shape.to_vec()),
        ])
    }

    fn compute(cx: &mut KernelContext<'_>) -> KernelResult<()> {
        let op = Self::OP_TYPE;
        let split = splitter(op, &cx.attributes())?;
        let x = cx.input(0)?;
        let texts = x.strings()?;
        let counts = cx.output(1)?.as_slice_mut::<i64>()?;
        let mut widest = 0;
        for (count, text) in counts.iter_mut().zip(texts.iter()) {
            let n = split.count(text?)?;
            widest = widest.max(n);
            *count = n as i64;
        }
        let rank = x.shape().len();
        if rank >= MAX_RANK {
            return Err(error(op, format_args!("rank {rank} is too high")));
        }
        let mut shape = [0usize; MAX_RANK];
        shape[..rank].copy_from_slice(x.shape());
        shape[rank] = widest;
        let mut pieces = cx.shaped_output(0, &shape[..=rank])?.strings_mut()?;
        for (i, text) in texts.iter().enumerate() {
            let mut k = 0;
            split.split(text?, |piece| {
                pieces.set(i * widest + k, piece)?;
                k += 1;
                Ok(())
            })?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opal_plugin_api::testing::{int_attr, run_operator, string_attr, OwnedTensor};

    fn split(
        texts: &[&str],
        delimiter: &str,
        maxsplit: i64,
    ) -> (Vec<usize>, Vec<String>, Vec<i64>) {
        let x = OwnedTensor::strings(&[texts.len()], texts);
        let attributes = [
            string_attr("delimiter", delimiter),
            int_attr("maxsplit", maxsplit),
        ];
        let out = run_operator::<StringSplit>(&[x], &attributes, 2).unwrap();
        (
            out[0].shape().to_vec(),
            out[0].to_strings(),
            out[1].to_vec::<i64>(),
        )
    }

    #[test]
    fn a_delimiter_splits_every_occurrence_and_pads_with_empty_strings() {
        let (shape, pieces, counts) = split(&["o-n--x-", "a", ""], "-", -1);
        assert_eq!(shape, [3, 5]);
        assert_eq!(
            pieces,
            ["o", "n", "", "x", "", "a", "", "", "", "", "", "", "", "", ""]
        );
        assert_eq!(counts, [5, 1, 1]);
    }

    #[test]
    fn whitespace_splits_as_python_does_with_and_without_a_limit() {
        let (shape, pieces, counts) = split(&["  hello   world ! ", ""], "", -1);
        assert_eq!(shape, [2, 3]);
        assert_eq!(pieces, ["hello", "world", "!", "", "", ""]);
        assert_eq!(counts, [3, 0]);
        let (_, pieces, counts) = split(&["  the quick  brown fox "], "", 2);
        assert_eq!(pieces, ["the", "quick", "brown fox "]);
        assert_eq!(counts, [3]);
        let (_, pieces, _) = split(&["a.b.c"], ".", 1);
        assert_eq!(pieces, ["a", "b.c"]);
    }

    #[test]
    fn an_empty_tensor_splits_into_nothing() {
        let (shape, pieces, counts) = split(&[], "", -1);
        assert_eq!(shape, [0, 0]);
        assert!(pieces.is_empty() && counts.is_empty());
    }
}
