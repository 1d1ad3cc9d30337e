//! RegexFullMatch: whether each string matches a regular expression as a whole. Patterns are
//! compiled by the `regex` crate, whose syntax is RE2's (Perl classes, Unicode classes,
//! non-greedy repetition, no look-around nor back-references).

use crate::common::expect_strings;
use opal_kernel_support::check::error;
use opal_plugin_api::prelude::*;
use regex::Regex;

/// The node's `pattern`, anchored at both ends; an error naming the attribute when it is
/// missing or not a valid expression.
fn full_match_pattern(op: &str, attributes: &Attributes<'_>) -> KernelResult<Regex> {
    let pattern = attributes.string("pattern", "")?;
    if attributes.get("pattern").is_none() {
        return Err(error(op, "attribute 'pattern' is required"));
    }
    Regex::new(&format!("^(?:{pattern})$")).map_err(|e| {
        let reason = e.to_string();
        let reason = reason.lines().last().unwrap_or_default().trim().to_owned();
        error(
            op,
            format_args!(
                "attribute 'pattern' ({pattern:?}) is not a regular expression the regex crate (RE2 syntax) accepts: {reason}"
            ),
        )
    })
}

/// Whether each string matches `pattern` in full.
pub struct RegexFullMatch;

impl Operator for RegexFullMatch {
    const OP_TYPE: &'static str = "RegexFullMatch";
    const SINCE_VERSION: i64 = 20;
    const TAKES_STRINGS: bool = true;

    fn infer(cx: &InferContext<'_>) -> KernelResult<Vec<OutputType>> {
        let op = Self::OP_TYPE;
        expect_strings(op, cx, 0)?;
        full_match_pattern(op, &cx.attributes())?;
        Ok(vec![OutputType::new(
            DType::BOOL,
            cx.input(0)?.shape.to_vec(),
        )])
    }

    fn compute(cx: &mut KernelContext<'_>) -> KernelResult<()> {
        let regex = full_match_pattern(Self::OP_TYPE, &cx.attributes())?;
        let texts = cx.input(0)?.strings()?;
        let y = cx.output(0)?.as_slice_mut::<bool>()?;
        for (y, text) in y.iter_mut().zip(texts.iter()) {
            *y = regex.is_match(text?);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opal_plugin_api::testing::{run_operator, string_attr, OwnedTensor};

    #[test]
    fn whole_strings_must_match() {
        let x = OwnedTensor::strings(
            &[2, 2],
            &["www.google.com", "www.bbc.co.uk", "a www.x.com", ""],
        );
        let pattern = string_attr("pattern", r"www\.[\w.-]+\.\bcom\b");
        let y = run_operator::<RegexFullMatch>(&[x], &[pattern], 1).unwrap();
        assert_eq!(y[0].to_vec::<bool>(), [true, false, false, false]);
        let empty = OwnedTensor::strings(&[1], &[""]);
        let anything = string_attr("pattern", ".*");
        let y = run_operator::<RegexFullMatch>(&[empty], &[anything], 1).unwrap();
        assert_eq!(y[0].to_vec::<bool>(), [true]);
    }

    #[test]
    fn an_invalid_pattern_names_the_attribute() {
        let x = OwnedTensor::strings(&[1], &["a"]);
        let pattern = string_attr("pattern", "(unclosed");
        let error =
            run_operator::<RegexFullMatch>(std::slice::from_ref(&x), &[pattern], 1).unwrap_err();
        assert!(
            error.starts_with(
                "RegexFullMatch: attribute 'pattern' (\"(unclosed\") is not a regular expression"
            ),
            "{error}"
        );
        let error = run_operator::<RegexFullMatch>(&[x], &[], 1).unwrap_err();
        assert_eq!(error, "RegexFullMatch: attribute 'pattern' is required");
    }
}
