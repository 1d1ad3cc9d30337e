//! Every kernel, warmed up, makes no heap allocations: the plugin's counting allocator (installed
//! by `export_plugin!`, so also this test binary's) must not move during a second call. The count
//! is the calling thread's, on which the test host runs every parallel piece.

use opal_nn::*;
use opal_plugin_api::{
    testing::{
        assert_no_heap, float_attr, heap_allocations, int_attr, ints_attr, string_attr, OwnedTensor,
    },
    Attribute, DType, Operator,
};

fn f32s(shape: &[usize]) -> OwnedTensor {
    let len: usize = shape.iter().product();
    let values: Vec<f32> = (0..len).map(|i| (i % 17) as f32 * 0.125 - 1.0).collect();
    OwnedTensor::f32(shape, &values)
}

fn positive(shape: &[usize]) -> OwnedTensor {
    let len: usize = shape.iter().product();
    let values: Vec<f32> = (0..len).map(|i| (i % 7) as f32 * 0.25 + 0.5).collect();
    OwnedTensor::f32(shape, &values)
}

fn check<O: Operator>(inputs: &[OwnedTensor], attributes: &[Attribute<'_>], outputs: usize) {
    assert_no_heap::<O>(inputs, attributes, outputs);
}

#[test]
fn warmed_up_kernels_do_not_allocate() {
    // The probe works: this binary's allocations are counted.
    let before = heap_allocations();
    drop(std::hint::black_box(vec![0u8; 16]));
    assert!(
        heap_allocations() > before,
        "the counting allocator is not installed"
    );

    let image = f32s(&[1, 8, 20, 20]);
    // Conv: im2col, tiled im2col, pointwise, grouped, depthwise, 1-D and 3-D, f64.
    check::<Conv>(
        &[image.clone(), f32s(&[16, 8, 3, 3]), f32s(&[16])],
        &[ints_attr("pads", &[1, 1, 1, 1])],
        1,
    );
    check::<Conv>(&[f32s(&[1, 64, 120, 120]), f32s(&[8, 64, 3, 3])], &[], 1);
    // Winograd: several blocks of tiles per image.
    check::<Conv>(
        &[f32s(&[1, 64, 96, 96]), f32s(&[64, 64, 3, 3]), f32s(&[64])],
        &[ints_attr("pads", &[1, 1, 1, 1])],
        1,
    );
    check::<Conv>(&[image.clone(), f32s(&[12, 8, 1, 1])], &[], 1);
    check::<Conv>(
        &[image.clone(), f32s(&[8, 4, 3, 3])],
        &[int_attr("group", 2)],
        1,
    );
    check::<Conv>(
        &[image.clone(), f32s(&[8, 1, 3, 3]), f32s(&[8])],
        &[int_attr("group", 8), string_attr("auto_pad", "SAME_UPPER")],
        1,
    );
    check::<Conv>(&[f32s(&[2, 3, 30]), f32s(&[4, 3, 5])], &[], 1);
    check::<Conv>(&[f32s(&[1, 2, 6, 7, 8]), f32s(&[3, 2, 3, 3, 3])], &[], 1);
    let x64 = OwnedTensor::new(&[1, 2, 5, 5], &[0.5f64; 50]);
    check::<Conv>(
        &[x64.clone(), OwnedTensor::new(&[3, 2, 3, 3], &[0.25f64; 54])],
        &[],
        1,
    );
    check::<ConvTranspose>(
        &[image.clone(), f32s(&[8, 3, 3, 3]), f32s(&[3])],
        &[
            ints_attr("strides", &[2, 2]),
            ints_attr("output_padding", &[1, 1]),
        ],
        1,
    );

    let window = [
        ints_attr("kernel_shape", &[3, 3]),
        ints_attr("strides", &[2, 2]),
        ints_attr("pads", &[1, 1, 1, 1]),
    ];
    check::<MaxPool>(std::slice::from_ref(&image), &window, 1);
    check::<MaxPool>(std::slice::from_ref(&image), &window, 2);
    check::<MaxPool>(&[OwnedTensor::new(&[1, 1, 4, 4], &[3u8; 16])], &window, 1);
    check::<AveragePool>(std::slice::from_ref(&image), &window, 1);
    check::<LpPool>(std::slice::from_ref(&image), &window, 1);
    check::<GlobalAveragePool>(std::slice::from_ref(&image), &[], 1);
    check::<GlobalMaxPool>(std::slice::from_ref(&image), &[], 1);
    check::<GlobalLpPool>(std::slice::from_ref(&image), &[], 1);

    let channel = |c: usize| positive(&[c]);
    check::<BatchNormalization>(
        &[
            image.clone(),
            channel(8),
            channel(8),
            channel(8),
            channel(8),
        ],
        &[],
        1,
    );
    check::<BatchNormalization>(
        &[
            image.clone(),
            channel(8),
            channel(8),
            channel(8),
            channel(8),
        ],
        &[int_attr("training_mode", 1)],
        3,
    );
    check::<InstanceNormalization>(&[image.clone(), channel(8), channel(8)], &[], 1);
    check::<GroupNormalization>(
        &[image.clone(), channel(8), channel(8)],
        &[int_attr("num_groups", 4)],
        1,
    );
    check::<LayerNormalization>(&[f32s(&[4, 6, 32]), channel(32), channel(32)], &[], 3);
    check::<RmsNormalization>(&[f32s(&[4, 6, 32]), channel(32)], &[], 1);
    check::<Lrn>(std::slice::from_ref(&image), &[int_attr("size", 3)], 1);
    check::<LpNormalization>(std::slice::from_ref(&image), &[int_attr("axis", 1)], 1);
    check::<MeanVarianceNormalization>(std::slice::from_ref(&image), &[], 1);
    check::<Dropout>(std::slice::from_ref(&image), &[], 2);
    check::<Dropout>(
        &[
            image.clone(),
            OwnedTensor::f32(&[], &[0.5]),
            OwnedTensor::new(&[], &[true]),
        ],
        &[],
        2,
    );

    check::<Resize>(
        &[
            image.clone(),
            OwnedTensor::absent(),
            OwnedTensor::f32(&[4], &[1.0, 1.0, 2.0, 2.0]),
        ],
        &[string_attr("mode", "nearest")],
        1,
    );
    check::<Resize>(
        &[
            image.clone(),
            OwnedTensor::absent(),
            OwnedTensor::f32(&[4], &[1.0, 1.0, 0.5, 0.75]),
        ],
        &[string_attr("mode", "cubic"), int_attr("antialias", 1)],
        1,
    );
    check::<Resize>(
        &[
            image.clone(),
            OwnedTensor::absent(),
            OwnedTensor::f32(&[0], &[]),
            OwnedTensor::i64(&[4], &[1, 8, 30, 33]),
        ],
        &[string_attr("mode", "linear")],
        1,
    );
    check::<ResizeV10>(
        &[image.clone(), OwnedTensor::f32(&[4], &[1.0, 1.0, 0.5, 3.0])],
        &[string_attr("mode", "linear")],
        1,
    );
    check::<DropoutLegacy>(std::slice::from_ref(&image), &[], 2);
    check::<Upsample>(
        &[image.clone(), OwnedTensor::f32(&[4], &[1.0, 1.0, 2.0, 2.0])],
        &[],
        1,
    );

    let indices = OwnedTensor::i64(&[1, 1, 2, 2], &[0, 3, 9, 14]);
    check::<MaxUnpool>(
        &[f32s(&[1, 1, 2, 2]), indices],
        &[
            ints_attr("kernel_shape", &[2, 2]),
            ints_attr("strides", &[2, 2]),
        ],
        1,
    );
    let targets = OwnedTensor::i64(&[2, 5], &[0, 1, 2, 3, 4, 4, 3, 2, 1, 0]);
    check::<NegativeLogLikelihoodLoss>(&[f32s(&[2, 5, 5]), targets.clone(), channel(5)], &[], 1);
    check::<SoftmaxCrossEntropyLoss>(
        &[f32s(&[2, 5, 5]), targets],
        &[string_attr("reduction", "none")],
        2,
    );
    check::<GridSample>(
        &[image.clone(), f32s(&[1, 6, 7, 2])],
        &[string_attr("mode", "cubic")],
        1,
    );
    check::<AffineGrid>(
        &[f32s(&[2, 2, 3]), OwnedTensor::i64(&[4], &[2, 3, 5, 6])],
        &[],
        1,
    );
    check::<RoiAlign>(
        &[
            image,
            OwnedTensor::f32(&[2, 4], &[0.0, 0.0, 9.0, 9.0, 2.0, 3.0, 15.0, 18.0]),
            OwnedTensor::i64(&[2], &[0, 0]),
        ],
        &[
            int_attr("output_height", 3),
            int_attr("output_width", 4),
            float_attr("spatial_scale", 1.0),
        ],
        1,
    );
    // Recurrent: batch 2, sequence 5, input 3, hidden 4, both directions, sequence_lens.
    let lengths = OwnedTensor::new(&[2], &[5i32, 3]);
    let recurrent = |gates: usize| {
        vec![
            f32s(&[5, 2, 3]),
            f32s(&[2, gates * 4, 3]),
            f32s(&[2, gates * 4, 4]),
            f32s(&[2, 2 * gates * 4]),
            lengths.clone(),
        ]
    };
    let bidirectional = [
        string_attr("direction", "bidirectional"),
        int_attr("hidden_size", 4),
    ];
    check::<Rnn>(&recurrent(1), &bidirectional, 2);
    check::<Gru>(&recurrent(3), &bidirectional, 2);
    let mut linear_before_reset = bidirectional.to_vec();
    linear_before_reset.push(int_attr("linear_before_reset", 1));
    check::<Gru>(&recurrent(3), &linear_before_reset, 2);
    check::<Lstm>(&recurrent(4), &bidirectional, 3);
    let _ = DType::F32;
}
