//! SELinux guests. A file the conversion replaces keeps its `security.selinux` label,
//! because both writers keep its inode and with it its extended attributes. A file the
//! conversion creates has no label at all: which label the guest's policy gives a new
//! path depends on its file_contexts regular expressions and type transitions, which
//! this tool does not evaluate. An enforcing policy denies confined programs (and parts
//! of the boot) access to unlabelled files, so when SELinux is on and anything new is
//! written, `/.autorelabel` is created as well: the guest's first boot then relabels
//! every file from its own policy and reboots once, which is what RHEL documents for
//! files changed from outside the running system.

use crate::edit::Edit;
use crate::guest_files::GuestFiles;
use crate::patch::{Action, FileChange};

pub const CONFIG: &str = "/etc/selinux/config";
pub const AUTORELABEL: &str = "/.autorelabel";

/// The `SELINUX=` mode of the guest's config (`enforcing` or `permissive`); `None` when the
/// file is absent, unreadable, or says `disabled`.
pub fn mode(guest: &dyn GuestFiles) -> Option<String> {
    let text = guest.read_text(CONFIG)?;
    let value = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.strip_prefix("SELINUX="))
        .next_back()?
        .trim()
        .trim_matches(|c| c == '"' || c == '\'')
        .to_ascii_lowercase();
    match value.as_str() {
        "enforcing" | "permissive" => Some(value),
        _ => None,
    }
}

/// The EFI system partition is FAT: no xattrs, its files take the label of the mount's
/// `context=`, so a new file there needs no relabel.
fn on_esp(path: &str) -> bool {
    path.starts_with("/boot/efi/") || path.starts_with("/efi/")
}

/// The change that creates `/.autorelabel`, when SELinux is on and `changes` create a
/// file that does not exist in `guest` yet; `None` otherwise (also when it is already
/// there: a relabel is then pending anyway).
pub fn plan(guest: &dyn GuestFiles, changes: &[FileChange]) -> Option<FileChange> {
    let mode = mode(guest)?;
    if guest.exists(AUTORELABEL) {
        return None;
    }
    let created: Vec<&str> = changes
        .iter()
        .filter(|c| matches!(c.action, Action::Replace(_)) && !guest.exists(&c.path))
        .filter(|c| !on_esp(&c.path))
        .map(|c| c.path.as_str())
        .collect();
    let first = created.first()?;
    let more = match created.len() {
        1 => String::new(),
        n => format!(" and {} more", n - 1),
    };
    Some(FileChange {
        path: AUTORELABEL.to_string(),
        action: Action::Replace(Vec::new()),
        edits: vec![Edit {
            file: AUTORELABEL.to_string(),
            line: None,
            before: String::new(),
            after: "(created, empty)".to_string(),
            reason: format!(
                "SELinux is {mode} in {CONFIG} and this conversion creates {first}{more}, \
                 which get no label offline (replaced files keep theirs): the first boot \
                 relabels the filesystems from the guest's policy and reboots once"
            ),
        }],
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::guest_files::MemGuest;

    fn new_file(path: &str) -> FileChange {
        FileChange {
            path: path.to_string(),
            action: Action::Replace(b"x\n".to_vec()),
            edits: Vec::new(),
        }
    }

    const RHEL_CONFIG: &str = "# This file controls the state of SELinux on the system.\n\
        # SELINUX= can take one of these three values:\n\
        #     enforcing - SELinux security policy is enforced.\n\
        SELINUX=enforcing\n\
        SELINUXTYPE=targeted\n";

    #[test]
    fn reads_the_mode() {
        let g = MemGuest::new().file(CONFIG, RHEL_CONFIG);
        assert_eq!(mode(&g).as_deref(), Some("enforcing"));
        let g = MemGuest::new().file(CONFIG, "SELINUX=\"Permissive\"\n");
        assert_eq!(mode(&g).as_deref(), Some("permissive"));
        let g = MemGuest::new().file(CONFIG, "SELINUX=disabled\n");
        assert_eq!(mode(&g), None);
        let g = MemGuest::new().file(CONFIG, "#SELINUX=enforcing\n");
        assert_eq!(mode(&g), None);
        assert_eq!(mode(&MemGuest::new()), None);
    }

    #[test]
    fn relabels_only_when_something_is_created() {
        let g = MemGuest::new()
            .file(CONFIG, RHEL_CONFIG)
            .file("/etc/fstab", "old\n");
        assert!(
            plan(&g, &[new_file("/etc/fstab")]).is_none(),
            "replaced only"
        );
        let removed = FileChange {
            path: "/etc/fstab".into(),
            action: Action::Remove,
            edits: Vec::new(),
        };
        assert!(plan(&g, &[removed]).is_none(), "removed only");
        let c = plan(
            &g,
            &[
                new_file("/etc/fstab"),
                new_file("/etc/dracut.conf.d/transplant.conf"),
                new_file("/boot/initramfs-5.14.img.pre-transplant"),
            ],
        )
        .expect("a new file on an enforcing guest");
        assert_eq!(c.path, AUTORELABEL);
        assert_eq!(c.action, Action::Replace(Vec::new()));
        let reason = &c.edits[0].reason;
        assert!(
            reason.contains("/etc/dracut.conf.d/transplant.conf and 1 more"),
            "{reason}"
        );
    }

    #[test]
    fn not_without_selinux_or_when_pending() {
        let created = [new_file("/etc/modprobe.d/x.conf")];
        assert!(plan(&MemGuest::new(), &created).is_none());
        let g = MemGuest::new().file(CONFIG, "SELINUX=disabled\n");
        assert!(plan(&g, &created).is_none());
        let g = MemGuest::new()
            .file(CONFIG, RHEL_CONFIG)
            .file(AUTORELABEL, "");
        assert!(plan(&g, &created).is_none());
    }
}
