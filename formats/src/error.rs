//! One error type for every format, split into the four kinds the CLI must tell apart
//! (see DESIGN.md, "Errors"): the bytes are wrong, the bytes are fine but not handled, a
//! policy stopped us, or the host failed. Every variant names the file it is about, because
//! an administrator converting a chain of eight files needs to know which one is broken.

use std::fmt;

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The four kinds of failure, for callers that decide what to tell the user (exit codes,
/// "run e2fsck" advice) without matching every variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ErrorKind {
    Corrupt,
    Unsupported,
    Refused,
    Io,
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ErrorKind::Corrupt => "corrupt",
            ErrorKind::Unsupported => "unsupported",
            ErrorKind::Refused => "refused",
            ErrorKind::Io => "io",
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The bytes are wrong: "qcow2 L2 table at 0x50000 in web01.qcow2: entry 17 points past
    /// the end of the file".
    #[error("{structure} at {offset:#x} in {file}: {detail}")]
    Corrupt {
        file: String,
        structure: String,
        offset: u64,
        detail: String,
    },
    /// The bytes are fine; this tool does not handle them (yet).
    #[error("{file}: unsupported: {feature}")]
    Unsupported { file: String, feature: String },
    /// A policy stopped the operation; `reason` says how to proceed.
    #[error("{file}: refused: {reason}")]
    Refused { file: String, reason: String },
    /// The host failed.
    #[error("{file}: {source}")]
    Io {
        file: String,
        #[source]
        source: std::io::Error,
    },
    /// A write to a device opened read-only (every input is, unless the user says otherwise).
    #[error("{file}: read-only: writes are not allowed on this device")]
    ReadOnly { file: String },
    /// A caller asked for bytes outside the device: a bug in the caller or a structure above
    /// (a partition larger than its disk), never silently clipped.
    #[error(
        "{file}: access at {offset:#x}+{len:#x} is past the end of the device ({size:#x} bytes)"
    )]
    OutOfRange {
        file: String,
        offset: u64,
        len: u64,
        size: u64,
    },
}

impl Error {
    pub fn corrupt(
        file: impl Into<String>,
        structure: impl Into<String>,
        offset: u64,
        detail: impl Into<String>,
    ) -> Self {
        Error::Corrupt {
            file: file.into(),
            structure: structure.into(),
            offset,
            detail: detail.into(),
        }
    }

    pub fn unsupported(file: impl Into<String>, feature: impl Into<String>) -> Self {
        Error::Unsupported {
            file: file.into(),
            feature: feature.into(),
        }
    }

    pub fn refused(file: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::Refused {
            file: file.into(),
            reason: reason.into(),
        }
    }

    pub fn io(file: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            file: file.into(),
            source,
        }
    }

    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Corrupt { .. } => ErrorKind::Corrupt,
            Error::Unsupported { .. } => ErrorKind::Unsupported,
            Error::Refused { .. } | Error::ReadOnly { .. } => ErrorKind::Refused,
            Error::Io { .. } | Error::OutOfRange { .. } => ErrorKind::Io,
        }
    }
}

/// Checks that `[offset, offset+len)` lies inside a device of `size` bytes, without overflow.
pub fn check_range(file: &str, offset: u64, len: u64, size: u64) -> Result<()> {
    match offset.checked_add(len) {
        Some(end) if end <= size => Ok(()),
        _ => Err(Error::OutOfRange {
            file: file.to_string(),
            offset,
            len,
            size,
        }),
    }
}
