//! ONNX `ImageDecoder` (opset 20): a 1-D uint8 tensor holding an encoded image (BMP, JPEG,
//! JPEG 2000, PNG, PNM, TIFF or WebP) in, its pixels out as uint8 `[H, W, C]`, with `C` 3 for
//! `pixel_format` RGB and BGR and 1 for Grayscale. The output's shape depends on the input's
//! values: inference reads the header when it has them, and otherwise leaves H and W to be
//! inferred at run time.
//!
//! Decoding allocates through the plugin's global allocator (the decoders' buffers and working
//! memory), so ImageDecoder is exempt from the rule that warmed-up kernels make no heap
//! allocations; the host counts those allocations as this plugin's.

use crate::{
    decode::{check_decoded_size, decode_rgb, read_size, Size},
    pixel_format::PixelFormat,
};
use opal_kernel_support::check::Shape;
use opal_plugin_api::prelude::*;

/// Fails unless the encoded input is a 1-D uint8 tensor.
fn check_encoded(dtype: DType, rank: usize, shape: impl std::fmt::Display) -> KernelResult<()> {
    if dtype != DType::U8 || rank != 1 {
        return Err(KernelError::new(format!(
            "the encoded image must be a 1-D uint8 tensor (the file's bytes), not {dtype} of \
             shape {shape}"
        )));
    }
    Ok(())
}

/// The output shape `[H, W, C]` of an image of `size`, refusing one too large to decode.
fn output_shape(size: Size, format: PixelFormat) -> KernelResult<[usize; 3]> {
    check_decoded_size(size, 3, "RGB").map_err(KernelError::new)?;
    Ok([size.height, size.width, format.channels()])
}

/// Decodes an encoded image into pixels.
pub struct ImageDecoder;

impl Operator for ImageDecoder {
    const OP_TYPE: &'static str = "ImageDecoder";
    const SINCE_VERSION: i64 = 20;
    const VALUE_INPUTS: &'static [usize] = &[0];

    fn infer(cx: &InferContext<'_>) -> KernelResult<Vec<OutputType>> {
        let encoded = cx.input(0)?;
        check_encoded(encoded.dtype, encoded.shape.len(), Shape(encoded.shape))?;
        let format = PixelFormat::from_attributes(&cx.attributes())?;
        let shape = match encoded.value() {
            Some(value) => {
                let size = read_size(value.bytes()).map_err(KernelError::new)?;
                output_shape(size, format)?.map(|d| d as i64).to_vec()
            }
            None => vec![-1, -1, format.channels() as i64],
        };
        Ok(vec![OutputType::new(DType::U8, shape)])
    }

    fn compute(cx: &mut KernelContext<'_>) -> KernelResult<()> {
        let encoded = cx.input(0)?;
        check_encoded(
            encoded.dtype(),
            encoded.shape().len(),
            Shape(encoded.shape()),
        )?;
        let format = PixelFormat::from_attributes(&cx.attributes())?;
        let pixels = decode_rgb(encoded.bytes()).map_err(KernelError::new)?;
        let shape = output_shape(pixels.size, format)?;
        let out = cx.output(0)?;
        if out.dtype() != DType::U8 || out.shape() != shape {
            return Err(KernelError::new(format!(
                "the output is {} of shape {} where the decoded image needs uint8 of shape {}",
                out.dtype(),
                Shape(out.shape()),
                Shape(&shape)
            )));
        }
        format.write(&pixels.rgb, out.as_slice_mut::<u8>()?);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{codecs, DynamicImage, ExtendedColorType, ImageEncoder, ImageFormat, RgbImage};
    use opal_plugin_api::{
        testing::{infer_input, infer_operator, run_operator, string_attr, OwnedTensor},
        InferInput,
    };
    use std::io::Cursor;

    /// A 5 × 4 image whose every channel differs.
    fn picture() -> RgbImage {
        RgbImage::from_fn(5, 4, |x, y| {
            image::Rgb([x as u8 * 50, y as u8 * 60, (x + y) as u8 * 20])
        })
    }

    fn encoded(bytes: &[u8]) -> OwnedTensor {
        OwnedTensor::new(&[bytes.len()], bytes)
    }

    /// What inference sees of `tensor` when it has the value.
    fn known(tensor: &OwnedTensor) -> (Vec<i64>, InferInput<'_>) {
        let shape: Vec<i64> = tensor.shape().iter().map(|&d| d as i64).collect();
        let mut input = infer_input(tensor.dtype(), &[]);
        input.value = Some(tensor.view()).into();
        (shape, input)
    }

    fn decode(bytes: &[u8], pixel_format: &str) -> Result<OwnedTensor, String> {
        let attributes = [string_attr("pixel_format", pixel_format)];
        run_operator::<ImageDecoder>(&[encoded(bytes)], &attributes, 1).map(|mut y| y.remove(0))
    }

    /// [`picture`] encoded losslessly as each of the formats that can be.
    fn lossless() -> Vec<(ImageFormat, Vec<u8>)> {
        let formats = [
            ImageFormat::Png,
            ImageFormat::Bmp,
            ImageFormat::Pnm,
            ImageFormat::Tiff,
            ImageFormat::WebP,
        ];
        formats
            .into_iter()
            .map(|format| {
                let mut bytes = Cursor::new(Vec::new());
                DynamicImage::ImageRgb8(picture())
                    .write_to(&mut bytes, format)
                    .unwrap();
                (format, bytes.into_inner())
            })
            .collect()
    }

    #[test]
    fn lossless_formats_decode_to_the_pixels_that_were_encoded() {
        let expected = picture().into_raw();
        for (name, bytes) in lossless() {
            let y = decode(&bytes, "RGB").unwrap_or_else(|e| panic!("{name:?}: {e}"));
            assert_eq!(y.shape(), [4, 5, 3], "{name:?}");
            assert_eq!(y.to_vec::<u8>(), expected, "{name:?}");
        }
    }

    #[test]
    fn bgr_reverses_the_channels_and_grayscale_keeps_one() {
        let bytes = &lossless()[0].1;
        let rgb = decode(bytes, "RGB").unwrap().to_vec::<u8>();
        let bgr = decode(bytes, "BGR").unwrap();
        assert_eq!(bgr.shape(), [4, 5, 3]);
        let reversed: Vec<u8> = rgb.chunks(3).flat_map(|p| [p[2], p[1], p[0]]).collect();
        assert_eq!(bgr.to_vec::<u8>(), reversed);
        let grey = decode(bytes, "Grayscale").unwrap();
        assert_eq!(grey.shape(), [4, 5, 1]);
        // The last pixel: R 200, G 180, B 140 → 0.299·200 + 0.587·180 + 0.114·140 = 181.22.
        assert_eq!(grey.to_vec::<u8>()[19], 181);
    }

    #[test]
    fn a_jpeg_decodes_close_to_what_was_encoded() {
        let image = RgbImage::from_fn(16, 16, |_, _| image::Rgb([200, 100, 50]));
        let mut bytes = Vec::new();
        codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, 95)
            .write_image(image.as_raw(), 16, 16, ExtendedColorType::Rgb8)
            .unwrap();
        let y = decode(&bytes, "RGB").unwrap();
        assert_eq!(y.shape(), [16, 16, 3]);
        for (got, want) in y.to_vec::<u8>().iter().zip(image.as_raw()) {
            assert!(
                got.abs_diff(*want) <= 3,
                "{got} where about {want} was encoded"
            );
        }
    }

    #[test]
    fn inference_reads_the_size_from_the_header_or_waits_for_the_run() {
        let tensor = encoded(&lossless()[0].1);
        let (shape, mut input) = known(&tensor);
        input.shape = shape.as_slice().into();
        let attributes = [string_attr("pixel_format", "Grayscale")];
        let inferred = infer_operator::<ImageDecoder>(&[input], &attributes, 1).unwrap();
        assert_eq!(inferred[0], OutputType::new(DType::U8, vec![4, 5, 1]));
        let unknown = [infer_input(DType::U8, &[-1])];
        let inferred = infer_operator::<ImageDecoder>(&unknown, &attributes, 1).unwrap();
        assert_eq!(inferred[0], OutputType::new(DType::U8, vec![-1, -1, 1]));
    }

    #[test]
    fn bad_input_is_refused_with_the_reason() {
        let message = |result: Result<OwnedTensor, String>| result.unwrap_err();
        let text = message(decode(b"this is not an image", "RGB"));
        assert!(text.starts_with("the input is not a"), "{text}");
        let png = &lossless()[0].1;
        let text = message(decode(&png[..png.len() - 20], "RGB"));
        assert!(text.contains("PNG image could not be decoded"), "{text}");
        let text = message(decode(png, "HSV"));
        assert!(text.contains("pixel_format 'HSV'"), "{text}");
        let floats = OwnedTensor::f32(&[2], &[1.0, 2.0]);
        let text =
            message(run_operator::<ImageDecoder>(&[floats], &[], 1).map(|mut y| y.remove(0)));
        assert!(text.contains("must be a 1-D uint8 tensor"), "{text}");
        assert!(text.contains("not f32 of shape [2]"), "{text}");
        let matrix = OwnedTensor::new(&[1, png.len()], png);
        let text =
            message(run_operator::<ImageDecoder>(&[matrix], &[], 1).map(|mut y| y.remove(0)));
        assert!(text.contains("not u8 of shape [1,"), "{text}");
    }

    #[test]
    fn a_decompression_bomb_is_refused_at_inference() {
        let tensor = encoded(b"P6\n40000 40000\n255\n");
        let (shape, mut input) = known(&tensor);
        input.shape = shape.as_slice().into();
        let text = infer_operator::<ImageDecoder>(&[input], &[], 1).unwrap_err();
        assert!(text.contains("decompression bomb"), "{text}");
    }
}
