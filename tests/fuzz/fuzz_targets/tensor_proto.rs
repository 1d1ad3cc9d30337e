//! Reads arbitrary bytes as an ONNX `TensorProto` `.pb` tensor file.
#![no_main]

use libfuzzer_sys::fuzz_target;
use opal_fuzz::bare_engine;
use opal_runtime::tensor_file::read_tensor_proto;

fuzz_target!(|data: &[u8]| {
    let owner = bare_engine().tracker().owner("inputs");
    match read_tensor_proto(data, &owner) {
        Ok(tensor) => assert!(owner.current_bytes() <= tensor.allocated_bytes()),
        Err(e) => assert!(!e.is_empty()),
    }
    assert_eq!(owner.current_bytes(), 0, "a tensor's memory outlived it");
});
