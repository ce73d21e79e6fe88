//! Every change the rewriter makes is explained: which file, which line, what it was, what
//! it became, and why. Reports (`--report FILE.json`) and `--dry-run` are built from these.

use serde::Serialize;

/// One change to one guest file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Edit {
    /// Guest path of the file ("/etc/fstab").
    pub file: String,
    /// 1-based line in the original file, when the change is to a line (None for a file
    /// created, removed or replaced whole, such as an initramfs).
    pub line: Option<usize>,
    /// The original text (a whole line without its newline, or a summary for binary files).
    pub before: String,
    /// The new text ("" when a line is removed).
    pub after: String,
    /// Why, in words an administrator reads ("/dev/sda1 is sdX on VMware; on KVM the disk
    /// is /dev/vda: named by its filesystem UUID, which survives any bus").
    pub reason: String,
}

/// Something the administrator should know: a name that matches no disk, a setting left
/// alone on purpose, a step to do after first boot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Warning {
    pub file: Option<String>,
    pub line: Option<usize>,
    pub message: String,
}

impl Warning {
    pub fn new(file: Option<&str>, line: Option<usize>, message: impl Into<String>) -> Self {
        Warning {
            file: file.map(str::to_string),
            line,
            message: message.into(),
        }
    }
}

/// What a text patcher returns for one file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Patched {
    /// The new content, or `None` when the file needs no change.
    pub text: Option<String>,
    pub edits: Vec<Edit>,
    pub warnings: Vec<Warning>,
}

impl Patched {
    pub fn unchanged() -> Self {
        Patched::default()
    }

    pub fn changed(&self) -> bool {
        self.text.is_some()
    }
}

/// Builds a file line by line, recording an [`Edit`] for each line that changes, so a
/// patcher only decides what each line becomes. Line endings are kept as found; a missing
/// final newline stays missing.
pub struct LineEditor<'a> {
    file: &'a str,
    out: String,
    edits: Vec<Edit>,
    warnings: Vec<Warning>,
    changed: bool,
}

impl<'a> LineEditor<'a> {
    pub fn new(file: &'a str) -> Self {
        LineEditor {
            file,
            out: String::new(),
            edits: Vec::new(),
            warnings: Vec::new(),
            changed: false,
        }
    }

    /// Keeps a line (with its original ending).
    pub fn keep(&mut self, raw: &str) {
        self.out.push_str(raw);
    }

    /// Replaces line `number` (1-based); `raw` is the original with its ending, `new` the
    /// new content without one. Nothing is recorded if they are equal.
    pub fn replace(&mut self, number: usize, raw: &str, new: &str, reason: impl Into<String>) {
        let (body, ending) = split_ending(raw);
        if body == new {
            self.out.push_str(raw);
            return;
        }
        self.out.push_str(new);
        self.out.push_str(ending);
        self.changed = true;
        self.edits.push(Edit {
            file: self.file.to_string(),
            line: Some(number),
            before: body.to_string(),
            after: new.to_string(),
            reason: reason.into(),
        });
    }

    /// Drops line `number`.
    pub fn remove(&mut self, number: usize, raw: &str, reason: impl Into<String>) {
        self.changed = true;
        self.edits.push(Edit {
            file: self.file.to_string(),
            line: Some(number),
            before: split_ending(raw).0.to_string(),
            after: String::new(),
            reason: reason.into(),
        });
    }

    /// Appends new lines after the current position (`after_line` is the line they follow,
    /// for the report).
    pub fn insert(&mut self, after_line: usize, new: &str, reason: impl Into<String>) {
        if !self.out.is_empty() && !self.out.ends_with('\n') {
            self.out.push('\n');
        }
        self.out.push_str(new);
        self.out.push('\n');
        self.changed = true;
        self.edits.push(Edit {
            file: self.file.to_string(),
            line: Some(after_line),
            before: String::new(),
            after: new.to_string(),
            reason: reason.into(),
        });
    }

    pub fn warn(&mut self, line: Option<usize>, message: impl Into<String>) {
        self.warnings
            .push(Warning::new(Some(self.file), line, message));
    }

    pub fn finish(self) -> Patched {
        Patched {
            text: self.changed.then_some(self.out),
            edits: self.edits,
            warnings: self.warnings,
        }
    }
}

/// Splits a line into its body and its ending ("\n", "\r\n" or "").
pub fn split_ending(raw: &str) -> (&str, &str) {
    if let Some(b) = raw.strip_suffix("\r\n") {
        (b, "\r\n")
    } else if let Some(b) = raw.strip_suffix('\n') {
        (b, "\n")
    } else {
        (raw, "")
    }
}

/// The lines of `text` with their endings, numbered from 1.
pub fn lines_with_endings(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.split_inclusive('\n')
        .enumerate()
        .map(|(i, l)| (i + 1, l))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_editor_keeps_endings_and_records() {
        let text = "a\r\nb\nc";
        let mut ed = LineEditor::new("/etc/x");
        for (n, raw) in lines_with_endings(text) {
            match n {
                1 => ed.replace(n, raw, "A", "up"),
                2 => ed.remove(n, raw, "gone"),
                _ => ed.replace(n, raw, "C", "up"),
            }
        }
        let p = ed.finish();
        assert_eq!(p.text.as_deref(), Some("A\r\nC"));
        assert_eq!(p.edits.len(), 3);
        assert_eq!(p.edits[1].before, "b");
        assert_eq!(p.edits[1].after, "");
    }

    #[test]
    fn unchanged_is_none() {
        let mut ed = LineEditor::new("/f");
        for (n, raw) in lines_with_endings("x\n") {
            ed.replace(n, raw, "x", "same");
        }
        assert_eq!(ed.finish().text, None);
    }
}
