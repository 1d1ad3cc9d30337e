//! opal's image plugin: ONNX `ImageDecoder`, which turns an encoded image (BMP, JPEG, JPEG 2000,
//! PNG, PNM, TIFF or WebP) into pixels, with pure-Rust decoders: the `image` crate's, and
//! `hayro-jpeg2000` for JPEG 2000.
//!
//! Unlike the other plugins' kernels, ImageDecoder allocates on the heap while it runs: the
//! decoders keep their buffers in the plugin's global allocator, which the host counts as this
//! plugin's allocations.

mod decode;
mod image_decoder;
mod jpeg2000;
mod pixel_format;

pub use image_decoder::ImageDecoder;

opal_plugin_api::export_plugin! {
    name: "image",
    version: env!("CARGO_PKG_VERSION"),
    operators: [ImageDecoder],
}
