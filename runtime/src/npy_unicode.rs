//! String tensors in `.npy` files: NumPy's fixed-width unicode arrays (`<U{n}`), each element
//! `n` UTF-32 little-endian code points padded with zeros. Object arrays (`|O`) are pickles,
//! which opal does not read.

use crate::{memory::Owner, onnx::Constant, tensor::Tensor, tensor::TensorRef};
use std::io::Write;

/// What to tell a user whose `.npy` file holds Python objects.
pub const OBJECT_ARRAY: &str = "it holds Python objects (dtype object), which NumPy stores as pickles and opal does not read; save strings with a fixed-width unicode dtype instead: np.save(path, np.asarray(values, dtype=str)) writes '<U…'";

/// Whether the `.npy` file `bytes` declares an object array (`'descr': '|O'`), which the
/// `.npy` parser does not know.
pub fn holds_objects(bytes: &[u8]) -> bool {
    let header = &bytes[..bytes.len().min(4096)];
    let header = String::from_utf8_lossy(header);
    let Some((_, after)) = header.split_once("'descr':") else {
        return false;
    };
    let descr = after.trim_start().trim_start_matches(['\'', '"']);
    let descr = descr.split(['\'', '"']).next().unwrap_or_default();
    descr.trim_start_matches(['<', '>', '|', '=']) == "O"
}

/// The width in code points of a unicode descr (`<U12`, `=U3`), or `None` if it is not one.
/// Big-endian arrays (`>U`) are refused by the caller as every other big-endian array is.
pub fn unicode_width(descr: &str) -> Option<usize> {
    let rest = descr.strip_prefix(['<', '=', '|'])?;
    rest.strip_prefix('U')?.parse().ok()
}

/// Decodes `data`, the elements of a `<U{width}` array of `shape`, into a string constant.
pub fn read(shape: &[usize], width: usize, data: &[u8], owner: &Owner) -> Result<Constant, String> {
    let count =
        crate::tensor::element_count(shape).ok_or_else(|| format!("shape {shape:?} overflows"))?;
    let stride = width
        .checked_mul(4)
        .ok_or_else(|| format!("width {width} overflows"))?;
    if Some(data.len()) != count.checked_mul(stride) {
        return Err(format!(
            "holds {} data bytes, but {count} strings of {width} code points need {}",
            data.len(),
            count.saturating_mul(stride)
        ));
    }
    let mut texts = Vec::with_capacity(count);
    for i in 0..count {
        let element = &data[i * stride..(i + 1) * stride];
        let mut text = String::new();
        for unit in element.chunks_exact(4) {
            let code = u32::from_le_bytes([unit[0], unit[1], unit[2], unit[3]]);
            if code == 0 {
                break;
            }
            let c = char::from_u32(code).ok_or_else(|| {
                format!("string {i} holds {code:#x}, which is not a Unicode scalar value")
            })?;
            text.push(c);
        }
        texts.push(text);
    }
    Tensor::from_strings(shape, texts.iter().map(|t| t.as_bytes()), owner)
        .map(Constant::from)
        .ok_or_else(|| format!("out of memory reading {count} strings"))
}

/// Writes the string tensor `tensor` as a `<U{n}` array, `n` its longest element in code points
/// (at least 1, as NumPy does).
pub fn write(out: &mut impl Write, tensor: TensorRef<'_>) -> Result<(), String> {
    let texts = tensor.strings()?;
    let width = texts
        .iter()
        .map(|t| t.chars().count())
        .max()
        .unwrap_or(0)
        .max(1);
    let dims: Vec<String> = tensor.shape.iter().map(usize::to_string).collect();
    let shape = match dims.len() {
        1 => format!("({},)", dims[0]),
        _ => format!("({})", dims.join(", ")),
    };
    let mut header =
        format!("{{'descr': '<U{width}', 'fortran_order': False, 'shape': {shape}, }}");
    // Magic (6), version (2) and length (2) come first; the whole header ends in a newline
    // at a multiple of 64 bytes.
    let unpadded = 10 + header.len() + 1;
    header.push_str(&" ".repeat(unpadded.next_multiple_of(64) - unpadded));
    header.push('\n');
    let length = u16::try_from(header.len()).map_err(|_| "the .npy header is too long")?;
    let mut bytes = Vec::with_capacity(10 + header.len() + texts.len() * width * 4);
    bytes.extend_from_slice(b"\x93NUMPY\x01\x00");
    bytes.extend_from_slice(&length.to_le_bytes());
    bytes.extend_from_slice(header.as_bytes());
    for text in &texts {
        let mut written = 0;
        for c in text.chars() {
            bytes.extend_from_slice(&u32::from(c).to_le_bytes());
            written += 1;
        }
        bytes.resize(bytes.len() + (width - written) * 4, 0);
    }
    out.write_all(&bytes).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::MemoryTracker;

    #[test]
    fn unicode_arrays_round_trip_through_their_bytes() {
        let tracker = MemoryTracker::new();
        let owner = tracker.owner("test");
        let tensor = Tensor::from_strings(
            &[2, 2],
            ["a", "", "héllo", "日本"].iter().map(|s| s.as_bytes()),
            &owner,
        )
        .unwrap();
        let mut file = Vec::new();
        write(&mut file, tensor.as_ref()).unwrap();
        assert_eq!(file.len() % 64, 16 * 5 % 64);
        let back = crate::tensor_file::read_npy(&file, &owner).unwrap();
        assert_eq!(back.as_ref().strings().unwrap(), ["a", "", "héllo", "日本"]);
        assert_eq!(back.shape.as_slice(), [2, 2]);
        assert_eq!(unicode_width("<U12"), Some(12));
        assert_eq!(unicode_width("|O"), None);
    }
}
