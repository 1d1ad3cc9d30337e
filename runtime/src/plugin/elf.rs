//! A look at a plugin file's ELF header before the dynamic loader opens it, so that a file that
//! is not a shared library, or one built for another CPU architecture, is refused with a message
//! that says so (the loader's own message for a foreign architecture is often "No such file").

use super::error::PluginError;
use std::{io::Read as _, path::Path};

/// The `e_machine` of the architecture this host was built for, if it is one opal knows.
const HOST_MACHINE: Option<u16> = match std::env::consts::ARCH.as_bytes() {
    b"x86_64" => Some(62),
    b"aarch64" => Some(183),
    _ => None,
};

/// A readable name for an ELF `e_machine` value.
fn machine_name(machine: u16) -> String {
    match machine {
        3 => "x86 (32-bit)".to_owned(),
        8 => "mips".to_owned(),
        20 => "powerpc".to_owned(),
        21 => "powerpc64".to_owned(),
        22 => "s390x".to_owned(),
        40 => "arm (32-bit)".to_owned(),
        62 => "x86_64".to_owned(),
        183 => "aarch64".to_owned(),
        243 => "riscv".to_owned(),
        other => format!("machine {other}"),
    }
}

/// Checks that `path` (a copy of `source`, which errors name) starts with an ELF header for
/// this host's architecture.
pub(crate) fn check_header(path: &Path, source: &Path) -> Result<(), PluginError> {
    let mut header = [0u8; 20];
    let read = std::fs::File::open(path).and_then(|mut file| file.read_exact(&mut header));
    if read.is_err() || header[..4] != *b"\x7fELF" {
        return Err(PluginError::NotALibrary {
            path: source.to_owned(),
            reason: "it is not an ELF file; a plugin is a shared library built with cargo \
                     (crate-type = [\"cdylib\"])"
                .to_owned(),
        });
    }
    let bytes = [header[18], header[19]];
    // Byte 5 is the data encoding: 2 for big-endian.
    let machine = if header[5] == 2 {
        u16::from_be_bytes(bytes)
    } else {
        u16::from_le_bytes(bytes)
    };
    match HOST_MACHINE {
        Some(host) if host != machine => Err(PluginError::WrongArchitecture {
            path: source.to_owned(),
            found: machine_name(machine),
            host: machine_name(host),
        }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_common_architectures() {
        assert_eq!(machine_name(62), "x86_64");
        assert_eq!(machine_name(183), "aarch64");
        assert_eq!(machine_name(9999), "machine 9999");
    }
}
