//! Every kernel, warmed up, makes no heap allocations: the plugin's counting allocator (installed
//! by `export_plugin!`, so also this test binary's) must not move during a second call. The count
//! is the calling thread's, on which the test host runs every parallel piece.

use abi_stable::std_types::RStr;
use opal_ml::*;
use opal_plugin_api::{
    testing::{
        assert_no_heap, float_attr, floats_attr, heap_allocations, int_attr, ints_attr,
        string_attr, OwnedTensor,
    },
    AttrValue, Attribute,
};

fn tensor_attr<'a>(name: &'a str, tensor: &'a OwnedTensor) -> Attribute<'a> {
    Attribute {
        name: RStr::from_str(name),
        value: AttrValue::Tensor(tensor.view()),
    }
}

fn f32s(shape: &[usize]) -> OwnedTensor {
    let len: usize = shape.iter().product();
    let values: Vec<f32> = (0..len).map(|i| (i % 17) as f32 * 0.5 - 4.0).collect();
    OwnedTensor::f32(shape, &values)
}

#[test]
fn warmed_up_kernels_do_not_allocate() {
    let before = heap_allocations();
    drop(std::hint::black_box(vec![0u8; 16]));
    assert!(
        heap_allocations() > before,
        "the counting allocator is not installed"
    );

    assert_no_heap::<ArrayFeatureExtractor>(
        &[f32s(&[50, 8]), OwnedTensor::i64(&[3], &[7, 0, 7])],
        &[],
        1,
    );
    assert_no_heap::<Binarizer>(&[f32s(&[300, 100])], &[float_attr("threshold", 0.5)], 1);
    assert_no_heap::<Binarizer>(&[OwnedTensor::i64(&[4], &[-1, 0, 1, 2])], &[], 1);

    // Two trees over three features, one testing set membership, on many samples.
    let splits = OwnedTensor::f32(&[3], &[0.0, 0.0, 1.5]);
    let modes = OwnedTensor::new::<u8>(&[3], &[2, 6, 0]);
    let weights = OwnedTensor::f32(&[4], &[1.0, -2.0, 3.0, 0.5]);
    let members = OwnedTensor::f32(&[3], &[-4.0, 2.5, f32::NAN]);
    let trees = [
        tensor_attr("nodes_splits", &splits),
        tensor_attr("nodes_modes", &modes),
        tensor_attr("leaf_weights", &weights),
        tensor_attr("membership_values", &members),
        ints_attr("nodes_featureids", &[0, 1, 2]),
        ints_attr("nodes_truenodeids", &[1, 0, 2]),
        ints_attr("nodes_falsenodeids", &[1, 1, 3]),
        ints_attr("nodes_trueleafs", &[0, 1, 1]),
        ints_attr("nodes_falseleafs", &[1, 1, 1]),
        ints_attr("leaf_targetids", &[0, 1, 0, 1]),
        ints_attr("tree_roots", &[0, 2]),
        int_attr("n_targets", 2),
        int_attr("post_transform", 2),
    ];
    assert_no_heap::<TreeEnsemble>(&[f32s(&[500, 3])], &trees, 1);

    let pool = [2, 3, 5, 4, 5, 6, 7, 8, 6, 7];
    let weights = [0.5f32; 7];
    let tfidf = [
        string_attr("mode", "TFIDF"),
        int_attr("min_gram_length", 1),
        int_attr("max_gram_length", 2),
        int_attr("max_skip_count", 3),
        ints_attr("ngram_counts", &[0, 4]),
        ints_attr("ngram_indexes", &[0, 1, 2, 3, 4, 5, 6]),
        ints_attr("pool_int64s", &pool),
        floats_attr("weights", &weights),
    ];
    let tokens: Vec<i64> = (0..400).map(|i| i % 9).collect();
    assert_no_heap::<TfIdfVectorizer>(&[OwnedTensor::i64(&[8, 50], &tokens)], &tfidf, 1);
}
