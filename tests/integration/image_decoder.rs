//! ImageDecoder through the real image plugin of the default deployment: an ONNX model whose
//! input is the bytes of an image file, run in a session. Images of one byte length reuse a
//! plan whose output shape is inferred at run time from each image's header. Bad bytes, an
//! unknown `pixel_format`, an input that is not 1-D uint8 and a decompression bomb are each
//! refused with an error naming the model and the node, and the session runs on afterwards.

use opal_plugin_api::DType;
use opal_runtime::{Deployment, Engine, Session, TensorRef};
use opal_tests::{assert_mentions, ModelBuilder};
use std::{collections::BTreeMap, path::Path, sync::Arc};
use tempfile::TempDir;

/// ONNX element types.
const UINT8: i32 = 2;
const FLOAT: i32 = 1;

fn engine() -> Arc<Engine> {
    Engine::new(&Deployment::embedded_default().unwrap()).unwrap()
}

/// A model of one ImageDecoder node, "decode", whose input has element type `input_type` and
/// `dims`.
fn decoder_model(dir: &Path, pixel_format: &str, input_type: i32, dims: &[i64]) -> String {
    ModelBuilder::new(20)
        .input_typed("encoded", input_type, dims)
        .output_typed("pixels", UINT8, &[-1, -2, -3])
        .node("decode", "", "ImageDecoder", &["encoded"], &["pixels"], &[])
        .string_attribute("pixel_format", pixel_format)
        .write(dir, "decode.onnx")
        .display()
        .to_string()
}

fn session(engine: &Arc<Engine>, path: &str) -> Session {
    let model = engine.load_model(Path::new(path)).unwrap();
    Session::new(engine.clone(), model, BTreeMap::new())
}

/// A session of the default deployment on a decoder model for images of any byte length, with
/// the directory holding the model and the model's path.
fn decoder_session(pixel_format: &str) -> (TempDir, String, Session) {
    let dir = tempfile::tempdir().unwrap();
    let path = decoder_model(dir.path(), pixel_format, UINT8, &[-1]);
    let session = session(&engine(), &path);
    (dir, path, session)
}

/// A binary PPM of `width × height` pixels, each `[r, g, b]` from `pixel(x, y)`.
fn ppm(width: usize, height: usize, pixel: impl Fn(usize, usize) -> [u8; 3]) -> Vec<u8> {
    let mut bytes = format!("P6\n{width} {height}\n255\n").into_bytes();
    for y in 0..height {
        for x in 0..width {
            bytes.extend(pixel(x, y));
        }
    }
    bytes
}

/// Runs the session on `bytes`; the output's shape and bytes, or the error.
fn decode(session: &mut Session, bytes: &[u8]) -> Result<(Vec<usize>, Vec<u8>), String> {
    let shape = [bytes.len()];
    let state = session
        .run(&[TensorRef::new(DType::U8, &shape, bytes)])
        .map_err(|e| e.to_string())?;
    let out = state.output(0).unwrap();
    Ok((out.shape.to_vec(), out.data.to_vec()))
}

#[test]
fn images_of_one_byte_length_decode_to_the_size_each_header_gives() {
    let (_dir, _, mut session) = decoder_session("BGR");
    // "P6\n3 2\n255\n" and "P6\n2 3\n255\n" are as long, so both run on one plan.
    let wide = ppm(3, 2, |x, y| [x as u8, y as u8, 100]);
    let tall = ppm(2, 3, |x, y| [10 * x as u8, 10 * y as u8, 200]);
    assert_eq!(wide.len(), tall.len());
    let (shape, pixels) = decode(&mut session, &wide).unwrap();
    assert_eq!(shape, [2, 3, 3]);
    assert_eq!(&pixels[..6], [100, 0, 0, 100, 0, 1]);
    let (shape, pixels) = decode(&mut session, &tall).unwrap();
    assert_eq!(shape, [3, 2, 3]);
    assert_eq!(&pixels[pixels.len() - 3..], [200, 20, 10]);
}

#[test]
fn bytes_that_are_no_image_or_are_cut_short_are_refused_naming_the_node() {
    let (_dir, path, mut session) = decoder_session("RGB");
    let err = decode(&mut session, b"plain text, not an image").unwrap_err();
    assert_mentions(
        &err,
        &[&path, "node 'decode'", "ImageDecoder", "is not a BMP, JPEG"],
    );
    let image = ppm(4, 4, |x, y| [x as u8, y as u8, 0]);
    let err = decode(&mut session, &image[..image.len() - 5]).unwrap_err();
    assert_mentions(
        &err,
        &[&path, "node 'decode'", "PNM image could not be decoded"],
    );
    // Nothing of the failures stays behind: the next image decodes.
    let (shape, pixels) = decode(&mut session, &image).unwrap();
    assert_eq!(shape, [4, 4, 3]);
    assert_eq!(&pixels[..6], [0, 0, 0, 1, 0, 0]);
}

#[test]
fn a_decompression_bomb_is_refused_before_anything_is_allocated() {
    let (_dir, path, mut session) = decoder_session("Grayscale");
    // A header claiming 60000 × 60000 pixels (10.8 GB as RGB) and no pixels.
    let err = decode(&mut session, b"P6\n60000 60000\n255\n").unwrap_err();
    assert_mentions(
        &err,
        &[&path, "node 'decode'", "60000x60000", "decompression bomb"],
    );
    let (shape, pixels) = decode(&mut session, &ppm(1, 1, |_, _| [255, 255, 255])).unwrap();
    assert_eq!((shape, pixels), (vec![1, 1, 1], vec![255]));
}

#[test]
fn an_unknown_pixel_format_or_an_input_not_1d_uint8_is_refused_when_planned() {
    let image = ppm(2, 2, |_, _| [1, 2, 3]);
    let (bytes, matrix) = ([image.len()], [1, image.len()]);
    let floats = [0f32; 4];
    let cases = [
        (
            "RGBA",
            UINT8,
            &[-1][..],
            TensorRef::new(DType::U8, &bytes, &image),
            "pixel_format 'RGBA' is not one of",
        ),
        (
            "RGB",
            FLOAT,
            &[-1],
            TensorRef::from_slice(&[4], &floats),
            "must be a 1-D uint8 tensor (the file's bytes), not f32 of shape [4]",
        ),
        (
            "RGB",
            UINT8,
            &[1, -1],
            TensorRef::new(DType::U8, &matrix, &image),
            "must be a 1-D uint8 tensor (the file's bytes), not u8 of shape [1,",
        ),
    ];
    let engine = engine();
    let dir = tempfile::tempdir().unwrap();
    for (pixel_format, input_type, dims, input, reason) in cases {
        let path = decoder_model(dir.path(), pixel_format, input_type, dims);
        let err = session(&engine, &path)
            .run(&[input])
            .map(|_| ())
            .unwrap_err()
            .to_string();
        assert_mentions(&err, &[&path, "node 'decode' (ImageDecoder)", reason]);
    }
}
