//! opal's text plugin: ONNX's string operators behind the plugin ABI (string tensors since ABI
//! 1.9). Kernels read their inputs' strings in place and write each output string through the
//! host, which keeps the bytes.
//!
//! RegexFullMatch compiles its pattern with the `regex` crate, whose syntax is RE2's apart from
//! a few escapes and classes (see the README); an invalid pattern is refused when the model is
//! compiled, naming the attribute.

mod common;
mod concat;
mod normalizer;
mod regex_full_match;
mod split;

pub use concat::StringConcat;
pub use normalizer::StringNormalizer;
pub use regex_full_match::RegexFullMatch;
pub use split::StringSplit;

opal_plugin_api::export_plugin! {
    name: "text",
    version: env!("CARGO_PKG_VERSION"),
    operators: [
        StringNormalizer,
        StringConcat,
        StringSplit,
        RegexFullMatch,
    ],
}
