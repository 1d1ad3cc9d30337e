//! opal's neural-network plugin: convolutions, pooling, normalisations, resizing, sampling and
//! losses as ONNX operators behind the plugin ABI, computing in f32 (f64, f16 and bf16 tensors
//! are converted through host scratch).
//!
//! No kernel allocates on the heap: temporaries come from the host's scratch arena, index
//! arithmetic uses fixed arrays, and parallel work goes through the host's `parallel_for`.

mod affine_grid;
mod batch_norm;
mod col2im;
mod conv;
mod conv_transpose;
mod deform_conv;
mod depthwise;
mod dropout;
mod float;
mod global_pool;
mod grid_sample;
mod group_norm;
mod im2col;
mod interpolate;
mod layer_norm;
mod loss;
mod lp_norm;
mod lrn;
mod max_unpool;
mod moments;
mod mvn;
mod non_max_suppression;
mod pool;
mod pool_2d;
mod recurrent;
mod resize;
mod rnn;
mod roi_align;
mod window;
mod winograd;

#[cfg(test)]
mod testutil;

pub use affine_grid::AffineGrid;
pub use batch_norm::BatchNormalization;
pub use col2im::Col2Im;
pub use conv::Conv;
pub use conv_transpose::ConvTranspose;
pub use deform_conv::DeformConv;
pub use dropout::{Dropout, DropoutLegacy};
pub use global_pool::{GlobalAveragePool, GlobalLpPool, GlobalMaxPool};
pub use grid_sample::GridSample;
pub use group_norm::{GroupNormalization, InstanceNormalization};
pub use layer_norm::{LayerNormalization, RmsNormalization};
pub use loss::{NegativeLogLikelihoodLoss, SoftmaxCrossEntropyLoss};
pub use lp_norm::LpNormalization;
pub use lrn::Lrn;
pub use max_unpool::MaxUnpool;
pub use mvn::MeanVarianceNormalization;
pub use non_max_suppression::NonMaxSuppression;
pub use pool::{AveragePool, LpPool, MaxPool};
pub use resize::{Resize, ResizeV10, Upsample};
pub use rnn::{Gru, Lstm, Rnn};
pub use roi_align::{RoiAlign, RoiAlignV10};

opal_plugin_api::export_plugin! {
    name: "nn",
    version: env!("CARGO_PKG_VERSION"),
    operators: [
        Conv, ConvTranspose,
        MaxPool, AveragePool, LpPool,
        GlobalAveragePool, GlobalMaxPool, GlobalLpPool,
        BatchNormalization, InstanceNormalization, GroupNormalization,
        LayerNormalization, RmsNormalization, Lrn, LpNormalization, MeanVarianceNormalization,
        DropoutLegacy, Dropout,
        Resize, ResizeV10, Upsample,
        MaxUnpool, NegativeLogLikelihoodLoss, SoftmaxCrossEntropyLoss,
        GridSample, AffineGrid, RoiAlignV10, RoiAlign,
        Rnn, Gru, Lstm,
        NonMaxSuppression, Col2Im, DeformConv,
    ],
}
