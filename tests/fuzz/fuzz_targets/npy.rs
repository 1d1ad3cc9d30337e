//! Reads arbitrary bytes as a NumPy `.npy` tensor file.
#![no_main]

use libfuzzer_sys::fuzz_target;
use opal_fuzz::bare_engine;
use opal_runtime::tensor_file::read_npy;

fuzz_target!(|data: &[u8]| {
    let owner = bare_engine().tracker().owner("inputs");
    match read_npy(data, &owner) {
        Ok(tensor) => assert_eq!(tensor.allocated_bytes(), owner.current_bytes()),
        Err(e) => assert!(!e.is_empty()),
    }
    assert_eq!(owner.current_bytes(), 0, "a tensor's memory outlived it");
});
