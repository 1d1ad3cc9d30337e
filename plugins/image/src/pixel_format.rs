//! ImageDecoder's `pixel_format`: the channel layout of the output, and the conversion of RGB
//! pixels to it. Grayscale is Pillow's `convert("L")` (ITU-R 601-2 luma in 16-bit fixed
//! point, rounded), which made the ONNX reference outputs.

use opal_plugin_api::prelude::*;

/// The output's channels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PixelFormat {
    Rgb,
    Bgr,
    Grayscale,
}

impl PixelFormat {
    /// The `pixel_format` attribute (default RGB).
    pub(crate) fn from_attributes(attributes: &Attributes<'_>) -> KernelResult<Self> {
        match attributes.string("pixel_format", "RGB")? {
            "RGB" => Ok(PixelFormat::Rgb),
            "BGR" => Ok(PixelFormat::Bgr),
            "Grayscale" => Ok(PixelFormat::Grayscale),
            other => Err(KernelError::new(format!(
                "pixel_format '{other}' is not one of 'RGB', 'BGR' and 'Grayscale' (the names \
                 are case-sensitive)"
            ))),
        }
    }

    /// Channels per output pixel.
    pub(crate) fn channels(self) -> usize {
        match self {
            PixelFormat::Rgb | PixelFormat::Bgr => 3,
            PixelFormat::Grayscale => 1,
        }
    }

    /// Writes `rgb` (three bytes a pixel) into `out` in this format; `out` holds
    /// `channels()` bytes for each pixel of `rgb`.
    pub(crate) fn write(self, rgb: &[u8], out: &mut [u8]) {
        let pixels = rgb.chunks_exact(3);
        match self {
            PixelFormat::Rgb => out.copy_from_slice(rgb),
            PixelFormat::Bgr => {
                for (to, from) in out.chunks_exact_mut(3).zip(pixels) {
                    to.copy_from_slice(&[from[2], from[1], from[0]]);
                }
            }
            PixelFormat::Grayscale => {
                for (to, from) in out.iter_mut().zip(pixels) {
                    *to = luma(from[0], from[1], from[2]);
                }
            }
        }
    }
}

/// Pillow's RGB to L: `(19595 R + 38470 G + 7471 B + 2^15) >> 16`, the weights 0.299, 0.587
/// and 0.114 in 16-bit fixed point (they add up to 2^16, so grey stays grey).
fn luma(r: u8, g: u8, b: u8) -> u8 {
    let weighted = 19595 * u32::from(r) + 38470 * u32::from(g) + 7471 * u32::from(b);
    ((weighted + (1 << 15)) >> 16) as u8
}

#[cfg(test)]
mod tests {
    use super::*;
    use opal_plugin_api::testing::string_attr;

    const RGB: [u8; 6] = [10, 20, 30, 255, 0, 128];

    #[test]
    fn rgb_is_copied_and_bgr_swaps_red_and_blue() {
        let mut out = [0; 6];
        PixelFormat::Rgb.write(&RGB, &mut out);
        assert_eq!(out, RGB);
        PixelFormat::Bgr.write(&RGB, &mut out);
        assert_eq!(out, [30, 20, 10, 128, 0, 255]);
    }

    #[test]
    fn grayscale_is_pillows_luma() {
        let mut out = [0; 2];
        PixelFormat::Grayscale.write(&RGB, &mut out);
        // 0.299·10 + 0.587·20 + 0.114·30 = 18.15; 0.299·255 + 0.114·128 = 90.837.
        assert_eq!(out, [18, 91]);
        for v in [0, 1, 127, 128, 254, 255] {
            assert_eq!(luma(v, v, v), v);
        }
    }

    #[test]
    fn the_attribute_names_the_format() {
        let parse = |value| {
            let attributes = [string_attr("pixel_format", value)];
            PixelFormat::from_attributes(&Attributes::new(&attributes))
        };
        assert_eq!(parse("BGR"), Ok(PixelFormat::Bgr));
        assert_eq!(parse("Grayscale").map(PixelFormat::channels), Ok(1));
        assert_eq!(
            PixelFormat::from_attributes(&Attributes::new(&[])),
            Ok(PixelFormat::Rgb)
        );
        let message = parse("rgb").unwrap_err();
        assert!(
            message.message().contains("pixel_format 'rgb'"),
            "{message:?}"
        );
    }
}
