//! The patchers: one module per kind of guest file, each a pure function from the file's
//! text (and the conversion [`Context`](crate::Context)) to a [`Patched`](crate::Patched)
//! result, so every rule is testable on a sample and every change carries its reason.
//!
//! [`plan`] is the driver: it finds the files of each kind in a guest, runs the patcher for
//! each, and adds the files to delete (caches) and the links to remove (hypervisor tools).

pub mod caches;
pub mod cmdline;
pub mod console;
pub mod crypttab;
pub mod device_map;
pub mod extlinux;
pub mod fields;
pub mod fstab;
pub mod grub2;
pub mod grub_legacy;
pub mod hypervisor;
pub mod lilo;
pub mod lvm_conf;
pub mod mdadm;
pub mod modprobe;
pub mod plan;
pub mod resume;
pub mod sysconfig_kernel;
pub mod upstart;
pub mod xorg;

pub use plan::{plan, plan_with, Action, FileChange, Plan, PlanOptions, PlanStep, TextKind};

/// How a line is disabled: kept in the file, so an administrator sees what it was and can
/// bring it back by deleting the prefix.
pub const DISABLED_PREFIX: &str = "# disabled by transplant: ";

/// `line` (without its ending) commented out with [`DISABLED_PREFIX`].
pub fn disabled(line: &str) -> String {
    format!("{DISABLED_PREFIX}{line}")
}

/// A device name that would split a whitespace-separated field (a label with a space):
/// the caller escapes it where the format can, and otherwise warns and leaves the line.
pub(crate) fn splits_field(name: &str) -> bool {
    name.contains(char::is_whitespace)
}

/// The warning for a new name that cannot be written in a whitespace-separated field.
pub(crate) fn unwritable(old: &str, new: &str) -> String {
    format!("{old} would become \"{new}\", which holds whitespace and cannot be written here; left as is: give the filesystem a label or UUID without spaces")
}

/// Whether a config line is a comment or blank (`#` after optional whitespace).
pub(crate) fn is_comment_or_blank(body: &str) -> bool {
    let t = body.trim_start();
    t.is_empty() || t.starts_with('#')
}

/// One in-place replacement of a byte range that lies within one line.
pub(crate) struct Splice {
    pub range: std::ops::Range<usize>,
    pub new: String,
    pub reason: String,
}

/// Applies `splices` (in any order; overlapping or line-crossing ones are ignored) and
/// records one [`Edit`](crate::Edit) per changed line, with the reasons of its splices.
pub(crate) fn splice(
    file: &str,
    text: &str,
    mut splices: Vec<Splice>,
    warnings: Vec<crate::Warning>,
) -> crate::Patched {
    use crate::edit::{lines_with_endings, split_ending, LineEditor};
    splices.sort_by_key(|s| s.range.start);
    let mut ed = LineEditor::new(file);
    let mut offset = 0;
    let mut next = splices.into_iter().peekable();
    for (n, raw) in lines_with_endings(text) {
        let body_len = split_ending(raw).0.len();
        let (start, end) = (offset, offset + body_len);
        offset += raw.len();
        let mut out = String::new();
        let mut pos = start;
        let mut reasons: Vec<String> = Vec::new();
        while let Some(s) = next.peek() {
            if s.range.start >= end && !(s.range.start == end && s.range.end == end) {
                break;
            }
            let Some(s) = next.next() else { break };
            if s.range.start < pos || s.range.end > end || s.range.start > s.range.end {
                continue;
            }
            out.push_str(text.get(pos..s.range.start).unwrap_or(""));
            out.push_str(&s.new);
            pos = s.range.end;
            if !reasons.contains(&s.reason) {
                reasons.push(s.reason);
            }
        }
        if reasons.is_empty() {
            ed.keep(raw);
            continue;
        }
        out.push_str(text.get(pos..end).unwrap_or(""));
        ed.replace(n, raw, &out, reasons.join("; "));
    }
    let mut p = ed.finish();
    p.warnings.extend(warnings);
    p
}
