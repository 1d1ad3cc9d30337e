//! opal's ml plugin: classical machine learning and text features as ONNX operators behind the
//! plugin ABI — the `ai.onnx.ml` operators ArrayFeatureExtractor, Binarizer, LabelEncoder (over
//! numbers and strings) and TreeEnsemble, and TfIdfVectorizer's n-gram counts over integer
//! tokens.
//!
//! Tree ensembles and weights compute in f64 whatever the tensors hold. No kernel allocates on
//! the heap: temporaries come from the host's scratch arena.

mod array_feature_extractor;
mod attributes;
mod binarizer;
mod label_encoder;
mod ngram_pool;
mod post_transform;
mod tfidf_vectorizer;
mod tree;
mod tree_ensemble;

pub use array_feature_extractor::ArrayFeatureExtractor;
pub use binarizer::Binarizer;
pub use label_encoder::LabelEncoder;
pub use tfidf_vectorizer::TfIdfVectorizer;
pub use tree_ensemble::TreeEnsemble;

/// The domain of the classical machine-learning operators.
const ML_DOMAIN: &str = "ai.onnx.ml";

opal_plugin_api::export_plugin! {
    name: "ml",
    version: env!("CARGO_PKG_VERSION"),
    operators: [
        ArrayFeatureExtractor,
        Binarizer,
        LabelEncoder,
        TreeEnsemble,
        TfIdfVectorizer,
    ],
}
