//! From encoded bytes to RGB pixels: the format is told by the bytes' signature, the header
//! gives the size without decoding, and an image whose pixels would pass [`MAX_DECODED_BYTES`]
//! is refused before anything is decoded. JPEG 2000 goes to `hayro-jpeg2000` ([`jpeg2000`]);
//! every other format to the `image` crate's decoders.

use crate::jpeg2000;
use image::{ImageDecoder, ImageFormat, ImageReader, Limits};
use std::io::Cursor;

/// The most bytes a decoded image may take, in the decoder's own layout or as the output: more
/// is refused as a decompression bomb (a small file that claims a huge image).
pub(crate) const MAX_DECODED_BYTES: u64 = 1 << 30;

/// An image's size, read from its header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Size {
    pub(crate) height: usize,
    pub(crate) width: usize,
}

/// A decoded image: `height × width` pixels of three bytes, red, green and blue.
pub(crate) struct RgbPixels {
    pub(crate) size: Size,
    pub(crate) rgb: Vec<u8>,
}

/// What went wrong with the encoded bytes, in words for the node's error.
pub(crate) type DecodeResult<T> = Result<T, String>;

/// The formats the decoders read, for messages.
const SUPPORTED: &str = "BMP, JPEG, JPEG 2000, PNG, PNM, TIFF or WebP";

/// An encoded image: its bytes and the format their signature names.
enum Encoded<'a> {
    Jpeg2000(&'a [u8]),
    Other(ImageReader<Cursor<&'a [u8]>>, ImageFormat),
}

impl<'a> Encoded<'a> {
    fn recognise(bytes: &'a [u8]) -> DecodeResult<Self> {
        if bytes.is_empty() {
            return Err("the input holds no bytes, so no image".to_owned());
        }
        if jpeg2000::has_signature(bytes) {
            return Ok(Encoded::Jpeg2000(bytes));
        }
        let format = image::guess_format(bytes).map_err(|_| {
            let head: Vec<String> = bytes.iter().take(8).map(|b| format!("{b:02x}")).collect();
            format!(
                "the input is not a {SUPPORTED} image: its first bytes ({}) are no known signature",
                head.join(" ")
            )
        })?;
        if !format.reading_enabled() {
            return Err(format!(
                "the input is a {} image; ImageDecoder reads {SUPPORTED}",
                format_name(format)
            ));
        }
        let mut reader = ImageReader::with_format(Cursor::new(bytes), format);
        reader.limits(decoder_limits());
        Ok(Encoded::Other(reader, format))
    }
}

/// The decoders' own allocation limit: the output buffer and their working memory.
fn decoder_limits() -> Limits {
    let mut limits = Limits::default();
    limits.max_alloc = Some(MAX_DECODED_BYTES);
    limits
}

/// Refuses an image of `size` whose `channels` bytes per pixel (in `layout`) pass the limit.
pub(crate) fn check_decoded_size(
    size: Size,
    bytes_per_pixel: u64,
    layout: &str,
) -> DecodeResult<()> {
    let bytes = (size.height as u64)
        .saturating_mul(size.width as u64)
        .saturating_mul(bytes_per_pixel);
    if bytes > MAX_DECODED_BYTES {
        return Err(format!(
            "the image is {}x{} pixels: decoded as {layout} it would take {bytes} bytes, more \
             than the limit of {MAX_DECODED_BYTES} bytes (1 GiB); a file that small claiming an \
             image that large is refused as a decompression bomb",
            size.width, size.height
        ));
    }
    Ok(())
}

/// The image's size, from its header alone.
pub(crate) fn read_size(bytes: &[u8]) -> DecodeResult<Size> {
    match Encoded::recognise(bytes)? {
        Encoded::Jpeg2000(bytes) => jpeg2000::read_size(bytes),
        Encoded::Other(reader, format) => {
            let (width, height) = reader
                .into_dimensions()
                .map_err(|e| decode_failed(format, e))?;
            Ok(size(width, height))
        }
    }
}

/// Decodes the image to RGB: grey images repeat their value in the three channels, alpha is
/// dropped, palettes are resolved, and samples of more than 8 bits are scaled to 8.
pub(crate) fn decode_rgb(bytes: &[u8]) -> DecodeResult<RgbPixels> {
    match Encoded::recognise(bytes)? {
        Encoded::Jpeg2000(bytes) => jpeg2000::decode_rgb(bytes),
        Encoded::Other(reader, format) => {
            let failed = |e| decode_failed(format, e);
            let decoder = reader.into_decoder().map_err(failed)?;
            let (width, height) = decoder.dimensions();
            let size = size(width, height);
            let native = decoder.color_type();
            check_decoded_size(size, u64::from(native.bytes_per_pixel()), "it is stored")?;
            check_decoded_size(size, 3, "RGB")?;
            let image = image::DynamicImage::from_decoder(decoder).map_err(failed)?;
            Ok(RgbPixels {
                size,
                rgb: image.into_rgb8().into_raw(),
            })
        }
    }
}

fn size(width: u32, height: u32) -> Size {
    Size {
        height: height as usize,
        width: width as usize,
    }
}

fn decode_failed(format: ImageFormat, error: image::ImageError) -> String {
    match error {
        image::ImageError::Limits(_) => format!(
            "the {} image needs more memory to decode than the limit of {MAX_DECODED_BYTES} \
             bytes (1 GiB); it is refused as a decompression bomb",
            format_name(format)
        ),
        error => format!(
            "the {} image could not be decoded (truncated or corrupt?): {error}",
            format_name(format)
        ),
    }
}

/// The format as people write it.
fn format_name(format: ImageFormat) -> &'static str {
    match format {
        ImageFormat::Png => "PNG",
        ImageFormat::Jpeg => "JPEG",
        ImageFormat::Gif => "GIF",
        ImageFormat::WebP => "WebP",
        ImageFormat::Pnm => "PNM",
        ImageFormat::Tiff => "TIFF",
        ImageFormat::Tga => "TGA",
        ImageFormat::Dds => "DDS",
        ImageFormat::Bmp => "BMP",
        ImageFormat::Ico => "ICO",
        ImageFormat::Hdr => "Radiance HDR",
        ImageFormat::OpenExr => "OpenEXR",
        ImageFormat::Farbfeld => "farbfeld",
        ImageFormat::Avif => "AVIF",
        ImageFormat::Qoi => "QOI",
        _ => "unsupported",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{ImageEncoder, RgbImage};

    fn png(width: u32, height: u32, rgb: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        image::codecs::png::PngEncoder::new(&mut out)
            .write_image(rgb, width, height, image::ExtendedColorType::Rgb8)
            .unwrap();
        out
    }

    #[test]
    fn the_header_gives_the_size_and_decoding_the_pixels() {
        let rgb: Vec<u8> = (0..2 * 3 * 3).map(|i| i as u8 * 10).collect();
        let bytes = png(3, 2, &rgb);
        let size = read_size(&bytes).unwrap();
        assert_eq!(
            size,
            Size {
                height: 2,
                width: 3
            }
        );
        let pixels = decode_rgb(&bytes).unwrap();
        assert_eq!((pixels.size, pixels.rgb), (size, rgb));
    }

    #[test]
    fn bytes_that_are_no_image_are_refused_with_their_first_bytes() {
        let message = read_size(b"hello, world").err().unwrap();
        assert!(message.contains("68 65 6c 6c 6f 2c 20 77"), "{message}");
        assert!(decode_rgb(&[]).err().unwrap().contains("no bytes"));
    }

    #[test]
    fn a_truncated_image_is_refused() {
        let image = RgbImage::from_fn(16, 16, |x, y| image::Rgb([x as u8, y as u8, 7]));
        let bytes = png(16, 16, image.as_raw());
        let message = decode_rgb(&bytes[..bytes.len() / 2]).err().unwrap();
        assert!(
            message.starts_with("the PNG image could not be decoded"),
            "{message}"
        );
    }

    #[test]
    fn a_format_without_a_decoder_here_is_named() {
        let message = read_size(b"GIF89a\x01\x00\x01\x00").err().unwrap();
        assert!(message.contains("is a GIF image"), "{message}");
    }

    #[test]
    fn a_huge_image_is_refused_before_decoding() {
        // A PNM header claiming 40000 × 40000 RGB pixels (4.8 GB), with no pixels after it.
        let bytes = b"P6\n40000 40000\n255\n";
        assert_eq!(
            read_size(bytes).unwrap(),
            Size {
                height: 40000,
                width: 40000
            }
        );
        let message = decode_rgb(bytes).err().unwrap();
        assert!(message.contains("decompression bomb"), "{message}");
    }
}
