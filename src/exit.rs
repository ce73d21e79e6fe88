//! Errors at the CLI edge: one line on stderr, and an exit status by kind so scripts can
//! tell "the image is broken" from "you must allow this" without parsing text.

use std::process::ExitCode;
use transplant_formats::{Error, ErrorKind};

pub fn code_for(kind: ErrorKind) -> u8 {
    match kind {
        ErrorKind::Corrupt => 3,
        ErrorKind::Unsupported => 4,
        ErrorKind::Refused => 5,
        ErrorKind::Io => 1,
    }
}

/// Not an error: the command did its work but has warnings to look at (they are printed);
/// the exit status says so (6) without a message.
#[derive(Debug)]
pub struct Warned;

impl std::fmt::Display for Warned {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("done, with warnings")
    }
}

impl std::error::Error for Warned {}

pub fn report(e: &anyhow::Error) -> ExitCode {
    if e.downcast_ref::<Warned>().is_some() {
        return ExitCode::from(crate::v2v::EXIT_WARNINGS);
    }
    let kind = e
        .chain()
        .find_map(|c| c.downcast_ref::<Error>())
        .map(Error::kind)
        .or_else(|| {
            e.chain()
                .find_map(|c| c.downcast_ref::<transplant_fs::Error>())
                .map(transplant_fs::Error::kind)
        });
    let mut msg = format!("transplant: {e}");
    for cause in e.chain().skip(1) {
        let c = cause.to_string();
        if !msg.contains(&c) {
            msg.push_str(": ");
            msg.push_str(&c);
        }
    }
    eprintln!("{msg}");
    ExitCode::from(kind.map(code_for).unwrap_or(1))
}
