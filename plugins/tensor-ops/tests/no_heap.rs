//! Every kernel, warmed up, makes no heap allocations: the plugin's counting allocator (installed
//! by `export_plugin!`, so also this test binary's) must not move during a second call. The count
//! is the calling thread's, on which the test host runs every parallel piece.

use opal_plugin_api::{
    testing::{assert_no_heap, heap_allocations, int_attr, ints_attr, string_attr, OwnedTensor},
    Attribute, Operator,
};
use opal_tensor_ops::*;

fn f32s(shape: &[usize]) -> OwnedTensor {
    let len: usize = shape.iter().product();
    let values: Vec<f32> = (0..len).map(|i| (i % 17) as f32 * 0.125 - 1.0).collect();
    OwnedTensor::f32(shape, &values)
}

fn i64s(values: &[i64]) -> OwnedTensor {
    OwnedTensor::i64(&[values.len()], values)
}

fn scalar_i64(value: i64) -> OwnedTensor {
    OwnedTensor::i64(&[], &[value])
}

fn check_outputs<O: Operator>(
    inputs: &[OwnedTensor],
    attributes: &[Attribute<'_>],
    outputs: usize,
) {
    assert_no_heap::<O>(inputs, attributes, outputs);
}

fn check<O: Operator>(inputs: &[OwnedTensor], attributes: &[Attribute<'_>]) {
    check_outputs::<O>(inputs, attributes, 1);
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

    let big = f32s(&[4, 64, 300]);
    let matrix = f32s(&[256, 300]);

    check::<Constant>(&[], &[ints_attr("value_ints", &[1, 2, 3])]);
    check::<ConstantOfShape>(&[i64s(&[64, 300])], &[]);
    check::<Shape>(std::slice::from_ref(&big), &[int_attr("start", 1)]);
    check::<Size>(std::slice::from_ref(&big), &[]);

    check::<Concat>(
        &[big.clone(), f32s(&[4, 10, 300]), big.clone()],
        &[int_attr("axis", 1)],
    );
    check::<ConcatV1>(&[matrix.clone(), matrix.clone()], &[]);
    check_outputs::<Split>(&[big.clone(), i64s(&[10, 54])], &[int_attr("axis", 1)], 2);
    check_outputs::<Split>(
        std::slice::from_ref(&big),
        &[int_attr("axis", -1), int_attr("num_outputs", 7)],
        7,
    );
    check::<Slice>(
        &[
            big.clone(),
            i64s(&[-1, 2]),
            i64s(&[i64::MIN, 250]),
            i64s(&[2, 1]),
            i64s(&[-2, 3]),
        ],
        &[],
    );
    check::<SliceV1>(
        std::slice::from_ref(&big),
        &[
            ints_attr("starts", &[1]),
            ints_attr("ends", &[3]),
            ints_attr("axes", &[0]),
        ],
    );

    check::<Squeeze>(&[f32s(&[1, 64, 1, 300]), i64s(&[0, 2])], &[]);
    check::<Unsqueeze>(&[matrix.clone(), i64s(&[0, -1])], &[]);
    check::<Flatten>(std::slice::from_ref(&big), &[int_attr("axis", 2)]);
    check::<Expand>(&[f32s(&[64, 1]), i64s(&[4, 64, 300])], &[]);
    check::<Tile>(&[f32s(&[2, 64, 30]), i64s(&[2, 1, 10])], &[]);
    for mode in ["constant", "reflect", "edge", "wrap"] {
        check::<Pad>(
            &[big.clone(), i64s(&[0, 3, 2, 1, 4, 5])],
            &[string_attr("mode", mode)],
        );
    }
    check::<CenterCropPad>(
        &[big.clone(), i64s(&[70, 200])],
        &[ints_attr("axes", &[1, 2])],
    );

    let indices = OwnedTensor::i64(&[3, 5], &[0, -1, 2, 3, 1, 0, 0, 1, 2, 3, -4, -3, -2, -1, 0]);
    check::<Gather>(&[big.clone(), indices.clone()], &[int_attr("axis", 0)]);
    check::<GatherElements>(
        &[matrix.clone(), OwnedTensor::i64(&[2, 300], &vec![-3; 600])],
        &[],
    );
    check::<GatherND>(
        &[
            big.clone(),
            OwnedTensor::i64(&[3, 2], &[0, 1, 3, 63, -1, 0]),
        ],
        &[],
    );
    let updates = f32s(&[2, 300]);
    let scatter_indices = OwnedTensor::i64(&[2, 300], &vec![5; 600]);
    for reduction in ["none", "add", "max"] {
        check::<ScatterElements>(
            &[matrix.clone(), scatter_indices.clone(), updates.clone()],
            &[string_attr("reduction", reduction)],
        );
        check::<ScatterND>(
            &[
                matrix.clone(),
                OwnedTensor::i64(&[2, 1], &[3, -1]),
                updates.clone(),
            ],
            &[string_attr("reduction", reduction)],
        );
    }
    check::<Scatter>(&[matrix.clone(), scatter_indices, updates], &[]);

    let condition: Vec<bool> = (0..300).map(|i| i % 3 == 0).collect();
    let condition = OwnedTensor::new(&[300], &condition);
    check::<Where>(&[condition.clone(), big.clone(), f32s(&[64, 1])], &[]);
    check::<Compress>(&[matrix.clone(), condition.clone()], &[int_attr("axis", 1)]);
    check::<NonZero>(std::slice::from_ref(&condition), &[]);
    check_outputs::<TopK>(&[matrix.clone(), i64s(&[7])], &[], 2);
    check_outputs::<TopK>(
        &[matrix.clone(), i64s(&[5])],
        &[int_attr("axis", 0), int_attr("largest", 0)],
        2,
    );
    check_outputs::<TopKV1>(std::slice::from_ref(&matrix), &[int_attr("k", 300)], 2);
    check_outputs::<Unique>(std::slice::from_ref(&matrix), &[], 4);
    check_outputs::<Unique>(
        std::slice::from_ref(&matrix),
        &[int_attr("axis", 1), int_attr("sorted", 0)],
        4,
    );

    check::<Range>(&[scalar_i64(3), scalar_i64(10_000), scalar_i64(7)], &[]);
    check::<OneHot>(
        &[
            i64s(&[1, 5, -1, 9]),
            OwnedTensor::f32(&[], &[500.0]),
            OwnedTensor::new(&[2], &[0i32, 1]),
        ],
        &[],
    );
    check::<Trilu>(&[big.clone(), scalar_i64(-2)], &[int_attr("upper", 0)]);
    check::<EyeLike>(std::slice::from_ref(&matrix), &[int_attr("k", 3)]);
    check::<DepthToSpace>(
        &[f32s(&[2, 64, 12, 10])],
        &[int_attr("blocksize", 4), string_attr("mode", "CRD")],
    );
    check::<SpaceToDepth>(&[f32s(&[2, 4, 48, 40])], &[int_attr("blocksize", 4)]);
    check::<ReverseSequence>(
        &[big, i64s(&[3, 64, 0, 20])],
        &[int_attr("batch_axis", 0), int_attr("time_axis", 1)],
    );
}
