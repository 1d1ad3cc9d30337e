//! opal's tensor operators: shape queries, constants, joining and splitting, slicing,
//! gathering and scattering, padding, and the other ONNX operators that move elements rather
//! than compute with them, for every fixed-size dtype.
//!
//! Kernels dispatch on the element size and copy whole elements; the few that look at values
//! (TopK, Unique, Range, NonZero, scatter reductions) dispatch on the dtype. No kernel allocates
//! on the heap: index arithmetic uses fixed arrays (rank ≤ `MAX_RANK`), temporaries come from
//! the host's scratch arena, and large copies go through the host's `parallel_for`.

mod concat;
mod constant;
mod depth_space;
mod expand;
mod gather;
mod layout;
mod nonzero;
mod number;
mod one_hot;
mod pad;
mod params;
mod range;
mod reverse_sequence;
mod scatter;
mod select;
mod shape_of;
mod slice;
mod split;
mod squeeze;
mod top_k;
mod triangle;
mod unique;

use opal_kernel_support::{broadcast, check, parallel};

pub use concat::{Concat, ConcatV1};
pub use constant::{Constant, ConstantOfShape};
pub use depth_space::{DepthToSpace, SpaceToDepth};
pub use expand::{Expand, Tile};
pub use gather::{Gather, GatherElements, GatherND};
pub use nonzero::NonZero;
pub use one_hot::OneHot;
pub use pad::{CenterCropPad, Pad};
pub use range::Range;
pub use reverse_sequence::ReverseSequence;
pub use scatter::{Scatter, ScatterElements, ScatterND};
pub use select::{Compress, Where};
pub use shape_of::{Shape, Size};
pub use slice::{Slice, SliceV1};
pub use split::Split;
pub use squeeze::{Flatten, Squeeze, Unsqueeze};
pub use top_k::{TopK, TopKV1};
pub use triangle::{EyeLike, Trilu};
pub use unique::Unique;

opal_plugin_api::export_plugin! {
    name: "tensor-ops",
    version: env!("CARGO_PKG_VERSION"),
    operators: [
        Constant, ConstantOfShape, Shape, Size,
        Concat, ConcatV1, Split, Slice, SliceV1,
        Squeeze, Unsqueeze, Flatten, Expand, Tile, Pad, CenterCropPad,
        Gather, GatherElements, GatherND, ScatterND, ScatterElements, Scatter,
        Where, Compress, NonZero, TopK, TopKV1, Unique,
        Range, OneHot, Trilu, EyeLike, DepthToSpace, SpaceToDepth, ReverseSequence,
    ],
}
