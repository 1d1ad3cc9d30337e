//! Parses arbitrary bytes (lossily as UTF-8 when they are not) as a deployment file.
#![no_main]

use libfuzzer_sys::fuzz_target;
use opal_fuzz::fuzz_path;
use opal_runtime::Deployment;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    match Deployment::parse(&text, &fuzz_path("deployment.toml")) {
        Ok(deployment) => {
            let _ = deployment.default_model();
        }
        Err(e) => assert!(!e.to_string().is_empty()),
    }
});
