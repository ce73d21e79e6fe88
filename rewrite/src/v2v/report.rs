//! The conversion report (`--report FILE.json`): every edit (file, line, before, after,
//! reason), every warning, what each NIC and initramfs became. Its fields are a stable
//! schema (README): never removed or renamed, new ones may be added.

use super::{Conversion, InitramfsReport};
use crate::edit::{Edit, Warning};
use crate::inspect::Finding;
use crate::net::plan::NicReport;
use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct FileSummary {
    pub path: String,
    /// `replace`, `remove` or `remove-link`.
    pub action: &'static str,
    pub edits: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// `converted`, `converted-with-warnings`, `dry-run` or `refused`.
    pub result: String,
    pub target: String,
    pub input: Vec<String>,
    pub output: Option<String>,
    pub os: Option<String>,
    pub boot_kernel: Option<String>,
    pub files: Vec<FileSummary>,
    pub edits: Vec<Edit>,
    pub warnings: Vec<Warning>,
    pub blockers: Vec<Finding>,
    pub nics: Vec<NicReport>,
    pub initramfs: Vec<InitramfsReport>,
    pub seconds: f64,
}

impl Report {
    pub fn from_conversion(conv: &Conversion, result: &str) -> Report {
        Report {
            result: result.to_string(),
            target: conv.target.name().to_string(),
            input: Vec::new(),
            output: None,
            os: None,
            boot_kernel: conv.boot_kernel.clone(),
            files: conv
                .changes
                .iter()
                .map(|c| FileSummary {
                    path: c.path.clone(),
                    action: match c.action {
                        crate::patch::Action::Replace(_) => "replace",
                        crate::patch::Action::Remove => "remove",
                        crate::patch::Action::RemoveLink => "remove-link",
                    },
                    edits: c.edits.len(),
                })
                .collect(),
            edits: conv.changes.iter().flat_map(|c| c.edits.clone()).collect(),
            warnings: conv.warnings.clone(),
            blockers: conv.blockers.clone(),
            nics: conv.nics.clone(),
            initramfs: conv.initramfs.clone(),
            seconds: 0.0,
        }
    }

    /// A refusal: only the blockers.
    pub fn refused(target: &str, blockers: Vec<Finding>) -> Report {
        Report {
            result: "refused".into(),
            target: target.to_string(),
            input: Vec::new(),
            output: None,
            os: None,
            boot_kernel: None,
            files: Vec::new(),
            edits: Vec::new(),
            warnings: Vec::new(),
            blockers,
            nics: Vec::new(),
            initramfs: Vec::new(),
            seconds: 0.0,
        }
    }
}
