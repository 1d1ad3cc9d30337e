//! External data: initializers whose bytes live in files beside the model (`location`, `offset`,
//! `length` in `TensorProto.external_data`), memory-mapped like the model and used in place.

use super::proto::TensorProto;
use crate::memory::map_file;
use bytes::Bytes;
use std::{
    collections::HashMap,
    path::{Component, Path, PathBuf},
};

/// The external-data files of one model, each mapped once.
pub(crate) struct ExternalFiles {
    dir: PathBuf,
    mapped: HashMap<String, Bytes>,
}

impl ExternalFiles {
    /// Files are found relative to `dir`, the model's directory.
    pub(crate) fn new(dir: &Path) -> Self {
        ExternalFiles {
            dir: dir.to_owned(),
            mapped: HashMap::new(),
        }
    }

    /// The bytes `proto` keeps in an external file.
    pub(crate) fn bytes(&mut self, proto: &TensorProto) -> Result<Bytes, String> {
        let (mut location, mut offset, mut length) = (None, 0usize, None);
        for entry in &proto.external_data {
            let number = |v: &str| {
                v.parse::<usize>()
                    .map_err(|_| format!("external_data {} = '{v}' is not a byte count", entry.key))
            };
            match entry.key.as_str() {
                "location" => location = Some(entry.value.as_str()),
                "offset" => offset = number(&entry.value)?,
                "length" => length = Some(number(&entry.value)?),
                _ => {}
            }
        }
        let location = location.ok_or("external_data has no location")?;
        let relative = Path::new(location);
        if relative.is_absolute()
            || relative
                .components()
                .any(|c| matches!(c, Component::ParentDir))
        {
            return Err(format!(
                "external data location '{location}' must be a path inside the model's directory"
            ));
        }
        if !self.mapped.contains_key(location) {
            let path = self.dir.join(relative);
            let bytes = map_file(&path)
                .map_err(|e| format!("cannot map external data file {}: {e}", path.display()))?;
            self.mapped.insert(location.to_owned(), bytes);
        }
        let file = &self.mapped[location];
        let end = match length {
            Some(length) => offset.checked_add(length),
            None => Some(file.len()),
        };
        match end {
            Some(end) if offset <= end && end <= file.len() => Ok(file.slice(offset..end)),
            _ => Err(format!(
                "external data at offset {offset} (length {length:?}) runs past the end of '{location}' ({} bytes)",
                file.len()
            )),
        }
    }
}
