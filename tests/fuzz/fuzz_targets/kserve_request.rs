//! Decodes arbitrary bytes as a KServe v2 inference request (JSON, or JSON and binary tensors) for a fixed model of six inputs.
#![no_main]

use libfuzzer_sys::fuzz_target;
use opal_fuzz::{bare_engine, request_model};
use opal_runtime::kserve::decode_request;

// The input is a mode byte and the rest. `#`: an `Inference-Header-Content-Length` value up to
// the first newline, then the body. `@`: the JSON part up to the first NUL byte and the binary
// part after it, the header giving the JSON part's length (so mutations of the JSON keep it
// right). Any other byte: the rest is the body of a request without that header.
fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let mut joined = Vec::new();
    let length: String;
    let (header, body) = match mode {
        b'#' => match rest.iter().position(|&b| b == b'\n') {
            Some(end) => (Some(&rest[..end]), &rest[end + 1..]),
            None => (Some(rest), &[][..]),
        },
        b'@' => {
            let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
            length = end.to_string();
            joined.extend_from_slice(&rest[..end]);
            joined.extend_from_slice(rest.get(end + 1..).unwrap_or_default());
            (Some(length.as_bytes()), &joined[..])
        }
        _ => (None, rest),
    };
    let (spec, model) = request_model();
    let owner = bare_engine().tracker().owner("requests");
    match decode_request(body, header, spec, model, &owner) {
        Ok(decoded) => {
            assert_eq!(decoded.inputs.len(), model.inputs.len());
            assert_eq!(
                owner.current_bytes(),
                decoded
                    .inputs
                    .iter()
                    .map(|c| c.bytes().len())
                    .sum::<usize>()
            );
        }
        Err(e) => assert!(!e.to_string().is_empty()),
    }
    assert_eq!(owner.current_bytes(), 0, "a request's tensors outlived it");
});
