//! `--dry-run` output: a unified diff per changed text file, the form administrators
//! review changes in (and can feed to `patch` inside the guest if they prefer to apply
//! them by hand). Binary files (an initramfs) are summarised by the caller instead.

use similar::TextDiff;

/// A unified diff of one guest file, with `a/` and `b/` prefixes as git writes them and
/// three lines of context. Empty when the texts are equal.
pub fn unified(path: &str, before: &str, after: &str) -> String {
    if before == after {
        return String::new();
    }
    let p = path.trim_start_matches('/');
    TextDiff::from_lines(before, after)
        .unified_diff()
        .context_radius(3)
        .header(&format!("a/{p}"), &format!("b/{p}"))
        .missing_newline_hint(true)
        .to_string()
}

/// The diff header and body for a file that is removed.
pub fn removed(path: &str, before: &str) -> String {
    let p = path.trim_start_matches('/');
    TextDiff::from_lines(before, "")
        .unified_diff()
        .header(&format!("a/{p}"), "/dev/null")
        .to_string()
}

/// The diff for a file that is created.
pub fn created(path: &str, after: &str) -> String {
    let p = path.trim_start_matches('/');
    TextDiff::from_lines("", after)
        .unified_diff()
        .header("/dev/null", &format!("b/{p}"))
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diff_of_an_fstab_edit() {
        let a = "# fstab\n/dev/sda1 / ext4 defaults 0 1\n/dev/sda5 none swap sw 0 0\n";
        let b = "# fstab\nUUID=abc / ext4 defaults 0 1\n/dev/sda5 none swap sw 0 0\n";
        let d = unified("/etc/fstab", a, b);
        assert!(d.starts_with("--- a/etc/fstab\n+++ b/etc/fstab\n"), "{d}");
        assert!(d.contains("-/dev/sda1 / ext4 defaults 0 1\n+UUID=abc / ext4 defaults 0 1\n"));
        assert_eq!(unified("/x", a, a), "");
        assert!(removed("/etc/blkid.tab", "x\n").contains("+++ /dev/null"));
        assert!(created("/etc/dracut.conf.d/t.conf", "y\n").contains("+y"));
    }
}
