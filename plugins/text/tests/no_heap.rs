//! StringConcat and StringSplit, warmed up, make no heap allocations: the plugin's counting
//! allocator (installed by `export_plugin!`, so also this test binary's) must not move during a
//! second call. Their strings are built in scratch and stored by the host. StringNormalizer
//! (case mappings and Unicode decomposition build new strings) and RegexFullMatch (the pattern
//! is compiled per call) allocate, as ImageDecoder does.

use opal_plugin_api::testing::{
    assert_no_heap, heap_allocations, int_attr, string_attr, OwnedTensor,
};
use opal_text::*;

#[test]
fn warmed_up_concat_and_split_do_not_allocate() {
    let before = heap_allocations();
    drop(std::hint::black_box(vec![0u8; 16]));
    assert!(
        heap_allocations() > before,
        "the counting allocator is not installed"
    );

    let words = OwnedTensor::strings(&[2, 3], &["cat", "dog", "", "的", "snake", "bird"]);
    let suffix = OwnedTensor::strings(&[3], &["s", "", "!"]);
    assert_no_heap::<StringConcat>(&[words, suffix], &[], 1);

    let texts = OwnedTensor::strings(&[3], &["a b  c", "", " the quick brown fox "]);
    assert_no_heap::<StringSplit>(std::slice::from_ref(&texts), &[], 2);
    assert_no_heap::<StringSplit>(
        std::slice::from_ref(&texts),
        &[string_attr("delimiter", " "), int_attr("maxsplit", 2)],
        2,
    );
}
