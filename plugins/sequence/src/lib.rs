//! opal's sequence plugin: ONNX's sequences of tensors and optional values as operators
//! behind the plugin ABI (1.8). Sequence elements and optional values are host memory: kernels
//! read a sequence input's elements as tensor views, append tensors the host allocates to a
//! sequence output, and pass whole values on through the host.

mod common;
mod concat;
mod construct;
mod empty;
mod erase;
mod get_element;
mod has_element;
mod insert;
mod length;
mod map;
mod optional;
mod sequence_at;
mod split;

pub use concat::ConcatFromSequence;
pub use construct::SequenceConstruct;
pub use empty::SequenceEmpty;
pub use erase::SequenceErase;
pub use get_element::OptionalGetElement;
pub use has_element::OptionalHasElement;
pub use insert::SequenceInsert;
pub use length::SequenceLength;
pub use map::SequenceMap;
pub use optional::Optional;
pub use sequence_at::SequenceAt;
pub use split::SplitToSequence;

opal_plugin_api::export_plugin! {
    name: "sequence",
    version: env!("CARGO_PKG_VERSION"),
    operators: [
        SequenceEmpty, SequenceConstruct, SequenceInsert, SequenceErase, SequenceAt,
        SequenceLength, SplitToSequence, ConcatFromSequence, SequenceMap,
        Optional, OptionalHasElement, OptionalGetElement,
    ],
}
