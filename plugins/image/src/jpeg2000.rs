//! JPEG 2000 (a JP2 file or a bare codestream) through `hayro-jpeg2000`, a pure-Rust decoder:
//! grey and RGB images, with or without alpha, at any bit depth (scaled to 8 bits).

use crate::decode::{check_decoded_size, DecodeResult, RgbPixels, Size};
use hayro_jpeg2000::{ColorSpace, DecodeSettings, DecoderContext, Image};

/// The JP2 file signature box.
const JP2_SIGNATURE: &[u8] = b"\x00\x00\x00\x0cjP  \r\n\x87\n";
/// A bare codestream starts with the SOC and SIZ markers.
const CODESTREAM_SIGNATURE: &[u8] = b"\xff\x4f\xff\x51";

/// Whether `bytes` start as a JP2 file or a JPEG 2000 codestream.
pub(crate) fn has_signature(bytes: &[u8]) -> bool {
    bytes.starts_with(JP2_SIGNATURE) || bytes.starts_with(CODESTREAM_SIGNATURE)
}

fn parse(bytes: &[u8]) -> DecodeResult<Image<'_>> {
    let settings = DecodeSettings {
        strict: true,
        ..DecodeSettings::default()
    };
    Image::new(bytes, &settings).map_err(|e| failed(&e))
}

fn failed(error: &dyn std::fmt::Display) -> String {
    format!("the JPEG 2000 image could not be decoded (truncated or corrupt?): {error}")
}

fn size(image: &Image<'_>) -> Size {
    Size {
        height: image.height() as usize,
        width: image.width() as usize,
    }
}

/// The image's size, from its headers.
pub(crate) fn read_size(bytes: &[u8]) -> DecodeResult<Size> {
    parse(bytes).map(|image| size(&image))
}

/// Decodes the image to RGB, as [`decode_rgb`](crate::decode::decode_rgb) describes.
pub(crate) fn decode_rgb(bytes: &[u8]) -> DecodeResult<RgbPixels> {
    let image = parse(bytes)?;
    let size = size(&image);
    let colours = match image.color_space() {
        ColorSpace::Gray => 1,
        ColorSpace::RGB => 3,
        ColorSpace::Icc { num_channels, .. } if matches!(num_channels, 1 | 3) => {
            usize::from(*num_channels)
        }
        other => {
            return Err(format!(
                "the JPEG 2000 image's colour space ({other:?}) is neither grey nor RGB, which \
                 ImageDecoder reads"
            ))
        }
    };
    let stride = colours + usize::from(image.has_alpha());
    // The decoder holds each component as f32 samples.
    check_decoded_size(size, stride as u64 * 4, "JPEG 2000 components")?;
    check_decoded_size(size, 3, "RGB")?;
    let mut context = DecoderContext::default();
    let decoded = image.decode(&mut context).map_err(|e| failed(&e))?;
    if decoded.components().len() != stride {
        return Err(failed(&format_args!(
            "it decoded to {} components where its colour space has {stride}",
            decoded.components().len()
        )));
    }
    let interleaved = decoded.data_u8();
    let rgb = interleaved
        .chunks_exact(stride)
        .flat_map(|pixel| match colours {
            1 => [pixel[0]; 3],
            _ => [pixel[0], pixel[1], pixel[2]],
        })
        .collect();
    Ok(RgbPixels { size, rgb })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signatures_of_both_containers_are_recognised() {
        assert!(has_signature(b"\x00\x00\x00\x0cjP  \r\n\x87\n\x00\x00"));
        assert!(has_signature(b"\xff\x4f\xff\x51\x00"));
        assert!(!has_signature(b"\xff\xd8\xff\xe0"));
    }

    #[test]
    fn a_codestream_cut_after_its_signature_is_refused() {
        let message = read_size(b"\xff\x4f\xff\x51\x00").err().unwrap();
        assert!(
            message.starts_with("the JPEG 2000 image could not be decoded"),
            "{message}"
        );
    }
}
