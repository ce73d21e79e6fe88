//! Filesystem errors: the four kinds of the formats layer (so the CLI treats them alike)
//! plus the path errors a guest lookup can meet.

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}: no such file or directory in the guest")]
    NotFound(String),
    #[error("{0}: not a directory")]
    NotADirectory(String),
    #[error("{0}: is a directory")]
    IsADirectory(String),
    #[error("{0}: not a symbolic link")]
    NotASymlink(String),
    #[error("{0}: too many levels of symbolic links")]
    Loop(String),
    #[error("{dev}: corrupt filesystem: {detail}")]
    Corrupt { dev: String, detail: String },
    #[error("{dev}: unsupported: {feature}")]
    Unsupported { dev: String, feature: String },
    #[error("{dev}: {detail}")]
    Io { dev: String, detail: String },
    #[error("{0}")]
    ReadOnly(String),
    /// A safety policy stopped a write; `reason` says how to proceed.
    #[error("{dev}: refused: {reason}")]
    Refused { dev: String, reason: String },
    #[error("{0}: no space left on the filesystem")]
    NoSpace(String),
    #[error("{0}: already exists")]
    Exists(String),
    #[error("{0}: directory not empty")]
    NotEmpty(String),
    #[error(transparent)]
    Image(#[from] transplant_formats::Error),
}

impl Error {
    /// The formats layer's kind, for exit codes; path errors count as refused input.
    pub fn kind(&self) -> transplant_formats::ErrorKind {
        use transplant_formats::ErrorKind as K;
        match self {
            Error::Corrupt { .. } => K::Corrupt,
            Error::Unsupported { .. } => K::Unsupported,
            Error::Io { .. } | Error::NoSpace(_) => K::Io,
            Error::Image(e) => e.kind(),
            _ => K::Refused,
        }
    }
}
