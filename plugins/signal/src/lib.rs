//! opal's signal plugin: the discrete and short-time Fourier transforms, the Hann, Hamming and
//! Blackman windows, and the mel filter bank, as ONNX operators behind the plugin ABI.
//!
//! Transforms run in f64 whatever the tensors hold: a radix-2 FFT for power-of-two lengths,
//! Bluestein's algorithm for the others. No kernel allocates on the heap: tables and line
//! buffers come from the host's scratch arena.

mod blocks;
mod dft;
mod fft;
mod mel;
mod stft;
mod values;
mod window;

pub use dft::{Dft17, Dft20};
pub use mel::MelWeightMatrix;
pub use stft::Stft;
pub use window::{BlackmanWindow, HammingWindow, HannWindow};

opal_plugin_api::export_plugin! {
    name: "signal",
    version: env!("CARGO_PKG_VERSION"),
    operators: [
        Dft17, Dft20,
        Stft,
        HannWindow, HammingWindow, BlackmanWindow,
        MelWeightMatrix,
    ],
}
