//! StringNormalizer: accents stripped, stop words removed (case-sensitively or not), case
//! changed, and elements left empty dropped, of a `[C]` or `[1, C]` string tensor.

use crate::common::expect_strings;
use opal_kernel_support::check::error;
use opal_plugin_api::{prelude::*, StringList};
use unicode_normalization::{char::canonical_combining_class, UnicodeNormalization};

#[derive(Clone, Copy, PartialEq, Eq)]
enum CaseChange {
    None,
    Lower,
    Upper,
}

impl CaseChange {
    fn apply(self, text: &str) -> String {
        match self {
            CaseChange::None => text.to_owned(),
            CaseChange::Lower => text.to_lowercase(),
            CaseChange::Upper => text.to_uppercase(),
        }
    }
}

/// The node's attributes.
struct Normalizer<'a> {
    case: CaseChange,
    case_sensitive: bool,
    stopwords: Option<StringList<'a>>,
}

impl<'a> Normalizer<'a> {
    fn new(op: &str, attributes: &Attributes<'a>) -> KernelResult<Self> {
        let case = match attributes.string("case_change_action", "NONE")? {
            "NONE" => CaseChange::None,
            "LOWER" => CaseChange::Lower,
            "UPPER" => CaseChange::Upper,
            other => {
                return Err(error(
                    op,
                    format_args!(
                        "case_change_action is '{other}'; it must be NONE, LOWER or UPPER"
                    ),
                ))
            }
        };
        let stopwords = attributes.strings("stopwords")?.filter(|s| !s.is_empty());
        if let Some(words) = stopwords {
            words.iter().try_for_each(|w| w.map(drop))?;
        }
        // Case changes follow Unicode's default mappings whatever `locale` names.
        attributes.string("locale", "")?;
        Ok(Normalizer {
            case,
            case_sensitive: attributes.int("is_case_sensitive", 0)? != 0,
            stopwords,
        })
    }

    /// Whether `word` is a stop word: exactly, or ignoring case.
    fn is_stopword(&self, word: &str) -> bool {
        let Some(words) = self.stopwords else {
            return false;
        };
        words.iter().flatten().any(|stop| {
            if self.case_sensitive {
                stop == word
            } else {
                stop.to_lowercase() == word.to_lowercase()
            }
        })
    }

    /// `text` with its space-separated stop words removed.
    fn without_stopwords(&self, text: &str) -> String {
        let kept: Vec<&str> = text.split(' ').filter(|w| !self.is_stopword(w)).collect();
        kept.join(" ")
    }

    /// One element normalized; empty when nothing of it is kept.
    fn normalize(&self, text: &str) -> String {
        let stripped = strip_accents(text);
        let kept = match self.stopwords {
            Some(_) => self.without_stopwords(&stripped),
            None => stripped,
        };
        self.case.apply(&kept)
    }
}

/// `text` decomposed (NFKD) without its combining marks, as scikit-learn's
/// `strip_accents_unicode` (which the ONNX reference uses) does; ASCII text is left alone.
fn strip_accents(text: &str) -> String {
    if text.is_ascii() {
        return text.to_owned();
    }
    text.nfkd()
        .filter(|&c| canonical_combining_class(c) == 0)
        .collect()
}

/// Normalizes strings for basic cleaning.
pub struct StringNormalizer;

impl Operator for StringNormalizer {
    const OP_TYPE: &'static str = "StringNormalizer";
    const SINCE_VERSION: i64 = 10;
    const TAKES_STRINGS: bool = true;

    fn infer(cx: &InferContext<'_>) -> KernelResult<Vec<OutputType>> {
        let op = Self::OP_TYPE;
        expect_strings(op, cx, 0)?;
        Normalizer::new(op, &cx.attributes())?;
        let x = cx.input(0)?;
        // How many elements are kept is known once they are normalized.
        let shape = match x.shape {
            [_] => vec![-1],
            [rows, _] if *rows == 1 || *rows < 0 => vec![1, -1],
            other => {
                return Err(error(
                    op,
                    format_args!("the input has shape {other:?}; it takes [C] or [1, C]"),
                ))
            }
        };
        Ok(vec![OutputType::new(DType::STRING, shape)])
    }

    fn compute(cx: &mut KernelContext<'_>) -> KernelResult<()> {
        let op = Self::OP_TYPE;
        let normalizer = Normalizer::new(op, &cx.attributes())?;
        let x = cx.input(0)?;
        if !matches!(x.shape(), [_] | [1, _]) {
            return Err(error(
                op,
                format_args!(
                    "the input has shape {:?}; it takes [C] or [1, C]",
                    x.shape()
                ),
            ));
        }
        let mut kept = Vec::new();
        for text in x.strings()?.iter() {
            let normalized = normalizer.normalize(text?);
            if !normalized.is_empty() {
                kept.push(normalized);
            }
        }
        // When every element is dropped, one empty string is left.
        let count = kept.len().max(1);
        let shape = [1, count];
        let shape = &shape[2 - x.shape().len()..];
        let mut y = cx.shaped_output(0, shape)?.strings_mut()?;
        for (i, text) in kept.iter().enumerate() {
            y.set(i, text)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opal_plugin_api::{
        attribute::Attribute,
        testing::{int_attr, run_operator, string_attr, string_slices, strings_attr, OwnedTensor},
    };

    fn normalize(
        shape: &[usize],
        texts: &[&str],
        attributes: &[Attribute<'_>],
    ) -> (Vec<usize>, Vec<String>) {
        let x = OwnedTensor::strings(shape, texts);
        let out = run_operator::<StringNormalizer>(&[x], attributes, 1).unwrap();
        (out[0].shape().to_vec(), out[0].to_strings())
    }

    #[test]
    fn stopwords_are_dropped_accents_stripped_and_case_changed() {
        let stops = string_slices(&["monday"]);
        let stopwords = strings_attr("stopwords", &stops);
        let upper = string_attr("case_change_action", "UPPER");
        let (shape, texts) = normalize(
            &[1, 4],
            &["Monday", "tuesday", "monday is here", "café"],
            &[stopwords, upper],
        );
        assert_eq!(shape, [1, 3]);
        assert_eq!(texts, ["TUESDAY", "IS HERE", "CAFE"]);
        let sensitive = int_attr("is_case_sensitive", 1);
        let (shape, texts) = normalize(&[2], &["Monday", "monday"], &[stopwords, sensitive]);
        assert_eq!((shape, texts), (vec![1], vec!["Monday".to_owned()]));
        let (shape, texts) = normalize(&[2], &["monday", "monday"], &[stopwords, upper]);
        assert_eq!((shape, texts), (vec![1], vec![String::new()]));
        let (shape, texts) = normalize(&[1, 1], &["monday"], &[stopwords]);
        assert_eq!((shape, texts), (vec![1, 1], vec![String::new()]));
    }

    #[test]
    fn other_shapes_and_case_actions_are_refused() {
        let x = OwnedTensor::strings(&[2, 1], &["a", "b"]);
        let error = run_operator::<StringNormalizer>(&[x], &[], 1).unwrap_err();
        assert_eq!(
            error,
            "StringNormalizer: the input has shape [2, 1]; it takes [C] or [1, C]"
        );
        let title = string_attr("case_change_action", "TITLE");
        let x = OwnedTensor::strings(&[1], &["a"]);
        let error = run_operator::<StringNormalizer>(&[x], &[title], 1).unwrap_err();
        assert_eq!(
            error,
            "StringNormalizer: case_change_action is 'TITLE'; it must be NONE, LOWER or UPPER"
        );
    }
}
