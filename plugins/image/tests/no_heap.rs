//! ImageDecoder is exempt from the rule that warmed-up kernels make no heap allocations: the
//! decoders (the `image` crate's and `hayro-jpeg2000`) keep their buffers and working memory in
//! the global allocator, and take no allocator of ours. What this test holds to is that those
//! allocations are visible: they go through the plugin's counting allocator (installed by
//! `export_plugin!`, so also this test binary's), which the host reports as this plugin's. If
//! decoding ever stops allocating, this test fails and the exemption can go.

use image::{codecs::png::PngEncoder, ExtendedColorType, ImageEncoder};
use opal_image::ImageDecoder;
use opal_plugin_api::testing::{heap_allocations, OwnedTensor, TestHost};

fn encoded(bytes: &[u8]) -> OwnedTensor {
    OwnedTensor::new(&[bytes.len()], bytes)
}

#[test]
fn warmed_up_decoding_allocates_through_the_counted_allocator() {
    let before = heap_allocations();
    drop(std::hint::black_box(vec![0u8; 16]));
    assert!(
        heap_allocations() > before,
        "the counting allocator is not installed"
    );

    let mut png = Vec::new();
    PngEncoder::new(&mut png)
        .write_image(&[7; 8 * 8 * 3], 8, 8, ExtendedColorType::Rgb8)
        .unwrap();
    let ppm = [b"P6\n2 2\n255\n".as_slice(), &[9; 12]].concat();
    for (name, bytes) in [("PNG", png), ("PPM", ppm)] {
        let error = TestHost::new()
            .heap_probe(heap_allocations)
            .run::<ImageDecoder>(&[encoded(&bytes)], &[], 1)
            .map(|_| ())
            .unwrap_err();
        assert!(
            error.contains("heap allocations after warm-up"),
            "{name}: {error}"
        );
    }
}
