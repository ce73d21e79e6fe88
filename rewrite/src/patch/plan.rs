//! The driver over every patcher: which guest files each one applies to, run on the guest,
//! plus the files to delete and the links to remove. The result is a [`Plan`] the caller
//! applies (into an overlay, or as a `--dry-run` diff); nothing here writes.
//!
//! A file reached through several names (RHEL's `/etc/sysconfig/grub` →
//! `/etc/default/grub`, `/etc/grub.conf` → `/boot/grub/grub.conf`, `/boot/grub/menu.lst` →
//! `grub.conf`) is patched once, under its real path, with symlinks resolved inside the
//! guest.

use super::{
    caches, cmdline, console, crypttab, device_map, extlinux, fstab, grub2, grub_legacy,
    hypervisor, lilo, lvm_conf, mdadm, modprobe, resume, sysconfig_kernel, upstart, xorg,
};
use crate::context::Context;
use crate::edit::{Edit, Patched, Warning};
use crate::guest_files::GuestFiles;
use transplant_fs::FileKind;

/// What to do to one guest file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Write these bytes as the file's new content (mode and owner kept).
    Replace(Vec<u8>),
    /// Delete the file.
    Remove,
    /// Delete the symlink itself (not what it points to).
    RemoveLink,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileChange {
    /// The guest path, symlinks resolved (for `RemoveLink`: the link's own path).
    pub path: String,
    pub action: Action,
    pub edits: Vec<Edit>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    pub changes: Vec<FileChange>,
    /// Names left alone because they cannot be placed, settings left alone on purpose,
    /// and what to do after the first boot.
    pub warnings: Vec<Warning>,
}

impl Plan {
    fn has(&self, path: &str) -> bool {
        self.changes.iter().any(|c| c.path == path)
    }

    /// Adds a change unless the path already has one (first one wins).
    pub fn push(&mut self, change: FileChange) {
        if !self.has(&change.path) {
            self.changes.push(change);
        }
    }
}

/// What inspection supplies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanOptions {
    /// Kernel versions (as in `/lib/modules/VERSION`) that can boot the target. GRUB
    /// legacy's default entry moves to one of these; empty means none is known usable (the
    /// default is left and a warning says so).
    pub usable_kernels: Vec<String>,
    /// Whether an X server is installed (None: not known).
    pub x_installed: Option<bool>,
    /// Text files larger than this are not read (a warning names them).
    pub max_text_bytes: u64,
}

impl Default for PlanOptions {
    fn default() -> Self {
        PlanOptions {
            usable_kernels: Vec::new(),
            x_installed: None,
            max_text_bytes: 4 << 20,
        }
    }
}

/// A further planner run after the built-in ones: the slot for the NIC patchers (udev
/// rules, interfaces, ifcfg, NetworkManager, netplan, networkd in `crate::net`). It adds
/// its changes and warnings with [`Plan::push`]; a path already changed by an earlier step
/// keeps the earlier change.
pub trait PlanStep {
    fn plan(&self, guest: &dyn GuestFiles, ctx: &Context, plan: &mut Plan);
}

/// The kinds of text file the patchers handle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextKind {
    Fstab,
    Crypttab,
    Mdadm,
    LvmConf,
    Resume,
    DeviceMap,
    GrubCfg,
    GrubDefaults,
    Bls,
    Grubenv,
    GrubLegacy,
    Xorg,
    Modprobe,
    Inittab,
    Securetty,
    KernelCmdline,
    SysconfigKernel,
    /// SYSLINUX/EXTLINUX/ISOLINUX configs.
    Extlinux,
    /// Their generators' inputs (`/etc/update-extlinux.conf`, `/etc/default/extlinux`).
    ExtlinuxGenerator,
    Lilo,
}

impl TextKind {
    pub const ALL: [TextKind; 20] = [
        TextKind::Fstab,
        TextKind::Crypttab,
        TextKind::Mdadm,
        TextKind::LvmConf,
        TextKind::Resume,
        TextKind::DeviceMap,
        TextKind::GrubCfg,
        TextKind::GrubDefaults,
        TextKind::Bls,
        TextKind::Grubenv,
        TextKind::GrubLegacy,
        TextKind::Xorg,
        TextKind::Modprobe,
        TextKind::Inittab,
        TextKind::Securetty,
        TextKind::KernelCmdline,
        TextKind::SysconfigKernel,
        TextKind::Extlinux,
        TextKind::ExtlinuxGenerator,
        TextKind::Lilo,
    ];

    /// Where files of this kind live; `*` matches within one path component.
    pub fn paths(self) -> &'static [&'static str] {
        match self {
            TextKind::Fstab => &["/etc/fstab"],
            TextKind::Crypttab => &["/etc/crypttab"],
            TextKind::Mdadm => &["/etc/mdadm.conf", "/etc/mdadm/mdadm.conf"],
            TextKind::LvmConf => &["/etc/lvm/lvm.conf", "/etc/lvm/lvmlocal.conf"],
            TextKind::Resume => &[
                "/etc/initramfs-tools/conf.d/*",
                "/etc/initramfs-tools/initramfs.conf",
            ],
            TextKind::DeviceMap => &["/boot/grub/device.map", "/boot/grub2/device.map"],
            TextKind::GrubCfg => &[
                "/boot/grub/grub.cfg",
                "/boot/grub2/grub.cfg",
                "/etc/grub2.cfg",
                "/etc/grub2-efi.cfg",
                "/boot/efi/EFI/*/grub.cfg",
            ],
            TextKind::GrubDefaults => &[
                "/etc/default/grub",
                "/etc/default/grub.d/*.cfg",
                "/etc/sysconfig/grub",
                "/etc/sysconfig/bootloader",
            ],
            TextKind::Bls => &[
                "/boot/loader/entries/*.conf",
                "/boot/efi/loader/entries/*.conf",
            ],
            TextKind::Grubenv => &[
                "/boot/grub2/grubenv",
                "/boot/grub/grubenv",
                "/boot/efi/EFI/*/grubenv",
            ],
            TextKind::GrubLegacy => &[
                "/boot/grub/menu.lst",
                "/boot/grub/grub.conf",
                "/etc/grub.conf",
                "/boot/efi/EFI/*/grub.conf",
            ],
            TextKind::Xorg => &[
                "/etc/X11/xorg.conf",
                "/etc/X11/XF86Config",
                "/etc/X11/XF86Config-4",
                "/etc/X11/xorg.conf.d/*.conf",
            ],
            TextKind::Modprobe => &[
                "/etc/modprobe.conf",
                "/etc/modprobe.conf.local",
                "/etc/modules.conf",
                "/etc/modprobe.d/*",
            ],
            TextKind::Inittab => &["/etc/inittab"],
            TextKind::Securetty => &["/etc/securetty"],
            TextKind::KernelCmdline => &["/etc/kernel/cmdline"],
            TextKind::SysconfigKernel => &["/etc/sysconfig/kernel"],
            TextKind::Extlinux => &EXTLINUX_CONFIGS,
            TextKind::ExtlinuxGenerator => &["/etc/update-extlinux.conf", "/etc/default/extlinux"],
            TextKind::Lilo => &["/etc/lilo.conf"],
        }
    }

    /// Runs this kind's patcher on one file's text.
    pub fn patch(self, file: &str, text: &str, ctx: &Context, opts: &PlanOptions) -> Patched {
        match self {
            TextKind::Fstab => fstab::patch(file, text, ctx),
            TextKind::Crypttab => crypttab::patch(file, text, ctx),
            TextKind::Mdadm => mdadm::patch(file, text, ctx),
            TextKind::LvmConf => lvm_conf::patch(file, text, ctx),
            TextKind::Resume => resume::patch(file, text, ctx),
            TextKind::DeviceMap => device_map::patch(file, text, ctx),
            TextKind::GrubCfg => {
                if grub2::is_wrapper(text) {
                    let mut p = Patched::unchanged();
                    p.warnings.push(Warning::new(
                        Some(file),
                        None,
                        "only hands over to another grub.cfg (configfile); left alone",
                    ));
                    p
                } else {
                    grub2::patch_cfg(file, text, ctx)
                }
            }
            TextKind::GrubDefaults => grub2::patch_defaults(file, text, ctx),
            TextKind::Bls => grub2::patch_bls(file, text, ctx),
            TextKind::Grubenv => grub2::patch_grubenv(file, text, ctx),
            TextKind::GrubLegacy => grub_legacy::patch(file, text, ctx, &opts.usable_kernels),
            TextKind::Xorg => xorg::patch(file, text, ctx),
            TextKind::Modprobe => modprobe::patch(file, text, ctx),
            TextKind::Inittab => console::patch_inittab(file, text, ctx),
            TextKind::Securetty => console::patch_securetty(file, text, ctx),
            TextKind::KernelCmdline => cmdline::patch_file(file, text, ctx),
            TextKind::SysconfigKernel => sysconfig_kernel::patch(file, text, ctx),
            TextKind::Extlinux => extlinux::patch(file, text, ctx, &opts.usable_kernels),
            TextKind::ExtlinuxGenerator => extlinux::patch_generator(file, text, ctx),
            TextKind::Lilo => lilo::patch(file, text, ctx),
        }
    }
}

/// Where SYSLINUX, EXTLINUX and ISOLINUX look for their config (the installer's
/// directory, `/boot` or the partition's root).
pub const EXTLINUX_CONFIGS: [&str; 11] = [
    "/boot/extlinux/extlinux.conf",
    "/boot/extlinux.conf",
    "/extlinux/extlinux.conf",
    "/extlinux.conf",
    "/boot/syslinux/syslinux.cfg",
    "/boot/syslinux/extlinux.conf",
    "/boot/syslinux.cfg",
    "/syslinux/syslinux.cfg",
    "/syslinux.cfg",
    "/boot/isolinux/isolinux.cfg",
    "/isolinux/isolinux.cfg",
];

/// `path` with every symlink resolved inside the guest (absolute targets from the guest's
/// root, `..` never above it), or None for a loop (more than 40 links).
pub fn canonical(guest: &dyn GuestFiles, path: &str) -> Option<String> {
    let mut todo: Vec<String> = path.split('/').rev().map(str::to_string).collect();
    let mut done: Vec<String> = Vec::new();
    let mut hops = 0;
    while let Some(c) = todo.pop() {
        match c.as_str() {
            "" | "." => continue,
            ".." => {
                done.pop();
                continue;
            }
            _ => {}
        }
        let cand = format!(
            "/{}",
            done.iter()
                .chain([&c])
                .cloned()
                .collect::<Vec<_>>()
                .join("/")
        );
        match guest.read_link(&cand) {
            Some(t) => {
                hops += 1;
                if hops > 40 {
                    return None;
                }
                if t.starts_with('/') {
                    done.clear();
                }
                todo.extend(t.split('/').rev().map(str::to_string));
            }
            None => done.push(c),
        }
    }
    Some(format!("/{}", done.join("/")))
}

/// `prefix*suffix` against one name (a pattern without `*` must match exactly).
fn glob_match(pattern: &str, name: &str) -> bool {
    match pattern.split_once('*') {
        Some((pre, suf)) => {
            name.len() >= pre.len() + suf.len() && name.starts_with(pre) && name.ends_with(suf)
        }
        None => pattern == name,
    }
}

/// The guest paths matching `pattern`, sorted within each directory.
pub fn expand(guest: &dyn GuestFiles, pattern: &str) -> Vec<String> {
    let mut cur = vec![String::new()];
    for comp in pattern.split('/').filter(|c| !c.is_empty()) {
        let mut next = Vec::new();
        for base in &cur {
            if comp.contains('*') {
                let dir = if base.is_empty() { "/" } else { base.as_str() };
                for name in guest.list(dir) {
                    if !name.starts_with('.') && glob_match(comp, &name) {
                        next.push(format!("{base}/{name}"));
                    }
                }
            } else {
                next.push(format!("{base}/{comp}"));
            }
        }
        cur = next;
    }
    cur
}

/// Whether the bytes are UTF-8; if not, they are handled as Latin-1 (one char per byte)
/// so that bytes the patchers do not touch are written back exactly.
fn decode(bytes: &[u8]) -> (String, bool) {
    match std::str::from_utf8(bytes) {
        Ok(s) => (s.to_string(), true),
        Err(_) => (bytes.iter().map(|&b| b as char).collect(), false),
    }
}

fn encode(text: &str, utf8: bool) -> Vec<u8> {
    if utf8 {
        text.as_bytes().to_vec()
    } else {
        text.chars()
            .map(|c| u8::try_from(u32::from(c)).unwrap_or(b'?'))
            .collect()
    }
}

/// Upstart jobs on a Xen console: disabled, and on KVM a job for the serial port written
/// beside them (see [`upstart`]).
fn plan_upstart(guest: &dyn GuestFiles, ctx: &Context, opts: &PlanOptions, plan: &mut Plan) {
    let mut jobs: Vec<(String, String, bool)> = Vec::new();
    for path in expand(guest, "/etc/init/*.conf") {
        let Some(real) = canonical(guest, &path) else {
            continue;
        };
        if guest.kind(&real) != Some(FileKind::File) || jobs.iter().any(|j| j.0 == real) {
            continue;
        }
        let Ok(bytes) = guest.read(&real, opts.max_text_bytes) else {
            continue;
        };
        let (text, utf8) = decode(&bytes);
        jobs.push((real, text, utf8));
    }
    let serial = ctx.target.serial_console();
    let mut serial_taken = serial.is_some_and(|s| {
        guest.exists(&format!("/etc/init/{s}.conf"))
            || jobs
                .iter()
                .any(|j| upstart::getty_tty(&j.1).as_deref() == Some(s))
    });
    for (path, text, utf8) in &jobs {
        let jp = upstart::patch_job(path, text, ctx, serial_taken);
        plan.warnings.extend(jp.job.warnings);
        if let Some(new) = jp.job.text {
            plan.push(FileChange {
                path: path.clone(),
                action: Action::Replace(encode(&new, *utf8)),
                edits: jp.job.edits,
            });
        }
        if let Some(j) = jp.new_job {
            serial_taken = true;
            plan.push(FileChange {
                path: j.path,
                action: Action::Replace(encode(&j.text, *utf8)),
                edits: vec![j.edit],
            });
        }
    }
}

/// Every built-in patcher over `guest`.
pub fn plan(guest: &dyn GuestFiles, ctx: &Context, opts: &PlanOptions) -> Plan {
    plan_with(guest, ctx, opts, &[])
}

/// [`plan`], then each of `extra` in order (the NIC patchers' slot).
pub fn plan_with(
    guest: &dyn GuestFiles,
    ctx: &Context,
    opts: &PlanOptions,
    extra: &[&dyn PlanStep],
) -> Plan {
    let mut plan = Plan::default();
    let mut seen: Vec<String> = Vec::new();
    let mut xorg_files = 0;
    // GRUB 2's menu, for grubenv's saved_entry (only when GRUB boots the saved entry).
    let boot = crate::inspect::bootloader::find(guest, false, None);
    let boots_saved = boot
        .default_source
        .as_deref()
        .is_some_and(|s| s.starts_with("saved_entry="));
    for kind in TextKind::ALL {
        for pattern in kind.paths() {
            for path in expand(guest, pattern) {
                let Some(real) = canonical(guest, &path) else {
                    plan.warnings.push(Warning::new(
                        Some(&path),
                        None,
                        "a symlink loop; left alone",
                    ));
                    continue;
                };
                if guest.kind(&real) != Some(FileKind::File) || seen.contains(&real) {
                    continue;
                }
                seen.push(real.clone());
                if kind == TextKind::Xorg {
                    xorg_files += 1;
                }
                let bytes = match guest.read(&real, opts.max_text_bytes) {
                    Ok(b) => b,
                    Err(e) => {
                        plan.warnings.push(Warning::new(
                            Some(&real),
                            None,
                            format!("not read ({e}); left alone: check it by hand"),
                        ));
                        continue;
                    }
                };
                let (text, utf8) = decode(&bytes);
                let mut p = kind.patch(&real, &text, ctx, opts);
                if kind == TextKind::Lilo && boot.kind == crate::inspect::LoaderKind::Lilo {
                    p.warnings.push(lilo::rerun_warning(&real, ctx.target));
                }
                if kind == TextKind::Grubenv && boots_saved {
                    let cur = p.text.clone().unwrap_or_else(|| text.clone());
                    let q = grub2::patch_saved_entry(
                        &real,
                        &cur,
                        ctx,
                        &boot.entries,
                        &opts.usable_kernels,
                    );
                    p.warnings.extend(q.warnings);
                    if let Some(t) = q.text {
                        p.edits.extend(q.edits);
                        p.text = Some(t);
                    }
                }
                plan.warnings.extend(p.warnings);
                let Some(new) = p.text else {
                    continue;
                };
                let out = encode(&new, utf8);
                if kind == TextKind::Grubenv && out.len() != bytes.len() {
                    plan.warnings.push(Warning::new(
                        Some(&real),
                        None,
                        "the environment block would change size; left alone",
                    ));
                    continue;
                }
                plan.push(FileChange {
                    path: real,
                    action: Action::Replace(out),
                    edits: p.edits,
                });
            }
        }
    }

    plan_upstart(guest, ctx, opts, &mut plan);

    // Whether X is installed, and with which configuration, is inspection's to report;
    // without a file to change there is nothing to warn about here (a warning turns a
    // conversion's exit status into "converted with warnings").
    let _ = (opts.x_installed, xorg_files);

    for (path, reason) in caches::CACHES {
        let Some(real) = canonical(guest, path) else {
            continue;
        };
        if guest.kind(&real) == Some(FileKind::File) {
            plan.push(FileChange {
                path: real.clone(),
                action: Action::Remove,
                edits: vec![Edit {
                    file: real,
                    line: None,
                    before: "(cache file)".into(),
                    after: String::new(),
                    reason: reason.to_string(),
                }],
            });
        }
    }

    let wants = hypervisor::systemd_wants_dirs(guest);
    let leftovers = hypervisor::find(guest);
    let links = leftovers
        .links
        .into_iter()
        .chain(console::stale_getty_links(guest, &wants));
    for (path, reason) in links {
        let target = guest.read_link(&path).unwrap_or_default();
        plan.push(FileChange {
            path: path.clone(),
            action: Action::RemoveLink,
            edits: vec![Edit {
                file: path,
                line: None,
                before: format!("-> {target}"),
                after: String::new(),
                reason,
            }],
        });
    }
    for a in leftovers.after_boot {
        plan.warnings.push(Warning::new(None, None, a));
    }

    for step in extra {
        step.plan(guest, ctx, &mut plan);
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::patch::cmdline::tests::ctx;
    use crate::{MemGuest, Target};

    fn grubenv(vars: &str) -> Vec<u8> {
        let mut s = format!("# GRUB Environment Block\n{vars}");
        let pad = 1024 - s.len();
        s.extend(std::iter::repeat_n('#', pad));
        s.into_bytes()
    }

    /// A RHEL 8 guest from VMware: BLS, grubenv on the ESP, sysconfig/grub as a link.
    fn rhel8() -> MemGuest {
        MemGuest::new()
            .file(
                "/etc/fstab",
                "/dev/sda3 / xfs defaults 0 0\n/dev/sda1 /boot xfs defaults 0 0\n",
            )
            .file(
                "/etc/default/grub",
                "GRUB_TIMEOUT=5\nGRUB_CMDLINE_LINUX=\"resume=/dev/sda2 rhgb quiet\"\n",
            )
            .link("/etc/sysconfig/grub", "../default/grub")
            .file(
                "/boot/loader/entries/abc-4.18.0-513.el8.x86_64.conf",
                "title RHEL\nlinux /vmlinuz-4.18.0-513.el8.x86_64\noptions $kernelopts\n",
            )
            .file(
                "/boot/efi/EFI/redhat/grubenv",
                grubenv("kernelopts=root=/dev/sda3 ro resume=/dev/sda2 \n"),
            )
            .link("/boot/grub2/grubenv", "../efi/EFI/redhat/grubenv")
            .file(
                "/boot/efi/EFI/redhat/grub.cfg",
                "set timeout=5\nload_env -f ${config_directory}/grubenv\nblscfg\n",
            )
            .file(
                "/boot/efi/EFI/BOOT/grub.cfg",
                "search --no-floppy --fs-uuid --set=dev 0b8a\nset prefix=($dev)/grub2\nconfigfile $prefix/grub.cfg\n",
            )
            .file("/etc/lvm/devices/system.devices", "VERSION=1.1.2\nIDTYPE=sys_wwid IDNAME=naa.6000c29 DEVNAME=/dev/sda2 PVID=x\n")
            .file("/etc/lvm/lvm.conf", "devices {\n}\n")
            .file("/etc/blkid.tab", "<device DEVNO=\"0x0803\">/dev/sda3</device>\n")
            .file("/etc/X11/xorg.conf.d/00-keyboard.conf", "Section \"InputClass\"\nEndSection\n")
            .link(
                "/etc/systemd/system/multi-user.target.wants/vmtoolsd.service",
                "/usr/lib/systemd/system/vmtoolsd.service",
            )
            .file("/usr/bin/vmtoolsd", "")
    }

    #[test]
    fn rhel8_plan() {
        let g = rhel8();
        let p = plan(&g, &ctx(Target::Kvm), &PlanOptions::default());
        let paths: Vec<(&str, &Action)> = p
            .changes
            .iter()
            .map(|c| (c.path.as_str(), &c.action))
            .collect();
        let names: Vec<&str> = paths.iter().map(|(p, _)| *p).collect();
        assert_eq!(
            names,
            [
                "/etc/fstab",
                "/etc/default/grub",
                "/boot/efi/EFI/redhat/grubenv",
                "/etc/blkid.tab",
                "/etc/lvm/devices/system.devices",
                "/etc/systemd/system/multi-user.target.wants/vmtoolsd.service",
            ]
        );
        let Action::Replace(env) = &p.changes[2].action else {
            panic!("grubenv not replaced");
        };
        assert_eq!(env.len(), 1024);
        assert_eq!(p.changes[5].action, Action::RemoveLink);
        assert_eq!(
            p.changes[5].edits[0].before,
            "-> /usr/lib/systemd/system/vmtoolsd.service"
        );
        let msgs: Vec<&str> = p.warnings.iter().map(|w| w.message.as_str()).collect();
        assert!(msgs.iter().any(|m| m.contains("configfile")), "{msgs:?}");
        assert!(
            msgs.iter().any(|m| m.starts_with("VMware Tools")),
            "{msgs:?}"
        );
    }

    /// Applies a plan to a MemGuest (as the lead's overlay writer will).
    fn apply(g: &MemGuest, p: &Plan) -> MemGuest {
        let mut out = g.clone();
        for c in &p.changes {
            out = match &c.action {
                Action::Replace(b) => out.file(&c.path, b),
                Action::Remove | Action::RemoveLink => out.without(&c.path),
            };
        }
        out
    }

    #[test]
    fn plan_is_idempotent() {
        for t in [Target::Kvm, Target::KvmScsi, Target::Physical] {
            let g = rhel8();
            let c = ctx(t);
            let p = plan(&g, &c, &PlanOptions::default());
            let again = plan(&apply(&g, &p), &c, &PlanOptions::default());
            assert!(again.changes.is_empty(), "{t:?}: {:?}", again.changes);
        }
    }

    struct Net;
    impl PlanStep for Net {
        fn plan(&self, _: &dyn GuestFiles, _: &Context, plan: &mut Plan) {
            plan.push(FileChange {
                path: "/etc/fstab".into(),
                action: Action::Remove,
                edits: vec![],
            });
            plan.push(FileChange {
                path: "/etc/udev/rules.d/70-persistent-net.rules".into(),
                action: Action::Remove,
                edits: vec![],
            });
        }
    }

    #[test]
    fn extra_steps_and_paths() {
        let g = rhel8();
        let p = plan_with(&g, &ctx(Target::Kvm), &PlanOptions::default(), &[&Net]);
        assert_eq!(
            p.changes.iter().filter(|c| c.path == "/etc/fstab").count(),
            1
        );
        assert!(p.changes.iter().any(|c| c.path.contains("70-persistent")));
        assert_eq!(
            canonical(&g, "/etc/sysconfig/grub").as_deref(),
            Some("/etc/default/grub")
        );
        assert_eq!(canonical(&g, "/../etc/./x").as_deref(), Some("/etc/x"));
        let looped = MemGuest::new().link("/a", "/b").link("/b", "/a");
        assert_eq!(canonical(&looped, "/a/x"), None);
        assert_eq!(
            expand(&g, "/boot/efi/EFI/*/grub.cfg"),
            [
                "/boot/efi/EFI/BOOT/grub.cfg",
                "/boot/efi/EFI/redhat/grub.cfg"
            ]
        );
    }

    /// A RHEL 5 Xen PV guest: GRUB legacy reached through two links, a PV kernel as default.
    fn rhel5_xen() -> MemGuest {
        MemGuest::new()
            .file(
                "/etc/fstab",
                "LABEL=/ / ext3 defaults 1 1\n/dev/xvda2 swap swap defaults 0 0\n",
            )
            .file(
                "/boot/grub/grub.conf",
                "default=0\ntimeout=5\n\
                 title CentOS (2.6.18-398.el5xen)\n\troot (hd0,0)\n\
                 \tkernel /vmlinuz-2.6.18-398.el5xen ro root=LABEL=/ console=xvc0\n\
                 \tinitrd /initrd-2.6.18-398.el5xen.img\n\
                 title CentOS (2.6.18-398.el5)\n\troot (hd0,0)\n\
                 \tkernel /vmlinuz-2.6.18-398.el5 ro root=LABEL=/\n\
                 \tinitrd /initrd-2.6.18-398.el5.img\n",
            )
            .link("/boot/grub/menu.lst", "./grub.conf")
            .link("/etc/grub.conf", "../boot/grub/grub.conf")
            .file(
                "/etc/inittab",
                "id:3:initdefault:\nco:2345:respawn:/sbin/agetty xvc0 9600 vt100-nav\n",
            )
            .file("/etc/securetty", "console\ntty1\nxvc0\n")
            .file(
                "/etc/modprobe.conf",
                "alias eth0 xennet\nalias scsi_hostadapter xenblk\n",
            )
            .file("/etc/blkid/blkid.tab", "<device>/dev/xvda1</device>\n")
            .file("/usr/sbin/xe-daemon", "")
            .link(
                "/etc/rc.d/rc3.d/S14xe-linux-distribution",
                "../init.d/xe-linux-distribution",
            )
            .link("/etc/rc3.d", "rc.d/rc3.d")
    }

    #[test]
    fn rhel5_xen_plan() {
        let g = rhel5_xen();
        let opts = PlanOptions {
            usable_kernels: vec!["2.6.18-398.el5".into()],
            ..PlanOptions::default()
        };
        let c = ctx(Target::Kvm);
        let p = plan(&g, &c, &opts);
        let names: Vec<&str> = p.changes.iter().map(|c| c.path.as_str()).collect();
        assert_eq!(
            names,
            [
                "/etc/fstab",
                "/boot/grub/grub.conf",
                "/etc/modprobe.conf",
                "/etc/inittab",
                "/etc/securetty",
                "/etc/blkid/blkid.tab",
                "/etc/rc.d/rc3.d/S14xe-linux-distribution",
            ]
        );
        let grub = &p.changes[1];
        let Action::Replace(b) = &grub.action else {
            panic!()
        };
        let text = String::from_utf8(b.clone()).unwrap();
        assert!(text.starts_with("default=1\n"));
        assert!(text.contains("root=LABEL=/ console=ttyS0\n"));
        assert!(p
            .warnings
            .iter()
            .any(|w| w.message.starts_with("Xen guest utilities")));
        let again = plan(&apply(&g, &p), &c, &opts);
        assert!(again.changes.is_empty(), "{:?}", again.changes);
    }

    /// A Debian 7 Xen PV guest: GRUB 2 with the Xen entry saved as default, an old
    /// extlinux.conf, an Upstart hvc0 job, a leftover lilo.conf.
    fn debian_xen() -> MemGuest {
        MemGuest::new()
            .file(
                "/boot/grub/grub.cfg",
                "set default=\"${saved_entry}\"\n\
                 menuentry 'Debian GNU/Linux, with Linux 3.2.0-4-amd64' --id 'gnulinux-3.2.0-4-amd64' {\n\
                 \tlinux /boot/vmlinuz-3.2.0-4-amd64 root=/dev/xvda3 ro console=hvc0\n}\n\
                 menuentry 'Debian GNU/Linux, with Xen 4.1-amd64' --id 'xen-gnulinux' {\n\
                 \tmultiboot /boot/xen-4.1-amd64.gz\n\
                 \tmodule /boot/vmlinuz-3.2.0-4-amd64 root=/dev/xvda3 ro\n}\n",
            )
            .file("/boot/grub/grubenv", grubenv("saved_entry=xen-gnulinux\n"))
            .file(
                "/boot/extlinux/extlinux.conf",
                "default linux\nlabel linux\n kernel /boot/vmlinuz-3.2.0-4-amd64\n append root=/dev/xvda3 ro console=hvc0\n",
            )
            .file("/etc/lilo.conf", "boot=/dev/xvda\nimage=/boot/vmlinuz-3.2.0-4-amd64\n root=/dev/xvda3\n")
            .file(
                "/etc/init/hvc0.conf",
                "start on stopped rc RUNLEVEL=[2345]\nstop on runlevel [!2345]\nrespawn\nexec /sbin/getty -8 38400 hvc0\n",
            )
            .file("/etc/init/tty1.conf", "start on stopped rc RUNLEVEL=[2345]\nrespawn\nexec /sbin/getty -8 38400 tty1\n")
    }

    #[test]
    fn bootloaders_and_upstart_plan() {
        let g = debian_xen();
        let opts = PlanOptions {
            usable_kernels: vec!["3.2.0-4-amd64".into()],
            ..PlanOptions::default()
        };
        let c = ctx(Target::Kvm);
        let p = plan(&g, &c, &opts);
        let names: Vec<&str> = p.changes.iter().map(|c| c.path.as_str()).collect();
        assert_eq!(
            names,
            [
                "/boot/grub/grub.cfg",
                "/boot/grub/grubenv",
                "/boot/extlinux/extlinux.conf",
                "/etc/lilo.conf",
                "/etc/init/hvc0.conf",
                "/etc/init/ttyS0.conf",
            ]
        );
        let text = |i: usize| match &p.changes[i].action {
            Action::Replace(b) => String::from_utf8(b.clone()).unwrap(),
            a => panic!("{a:?}"),
        };
        let env = text(1);
        assert_eq!(env.len(), 1024);
        assert!(
            env.contains("\nsaved_entry=gnulinux-3.2.0-4-amd64\n#"),
            "{env}"
        );
        assert!(text(2)
            .contains(" append root=UUID=9e8d7c6b-5a49-4838-a726-151413121110 ro console=ttyS0\n"));
        assert!(text(3).starts_with("boot=/dev/vda\n"));
        assert!(text(5).ends_with("exec /sbin/getty -8 38400 ttyS0\n"));
        // lilo.conf is left over beside GRUB: rewritten, but no call to run lilo.
        assert!(!p.warnings.iter().any(|w| w.message.contains("run `lilo`")));
        let again = plan(&apply(&g, &p), &c, &opts);
        assert!(again.changes.is_empty(), "{:?}", again.changes);
        let lilo_only = g
            .clone()
            .without("/boot/grub/grub.cfg")
            .without("/boot/extlinux/extlinux.conf");
        let p = plan(&lilo_only, &c, &opts);
        assert!(p.warnings.iter().any(|w| w.message.contains("run `lilo`")));
        // Physical: the job is disabled, no serial job.
        let p = plan(&g, &ctx(Target::Physical), &opts);
        assert!(!p.changes.iter().any(|c| c.path == "/etc/init/ttyS0.conf"));
        assert!(p.changes.iter().any(|c| c.path == "/etc/init/hvc0.conf"));
    }

    #[test]
    fn latin1_bytes_survive() {
        let g = MemGuest::new().file("/etc/fstab", b"# caf\xe9\n/dev/sda3 / ext4 defaults 0 1\n");
        let p = plan(&g, &ctx(Target::Kvm), &PlanOptions::default());
        let Action::Replace(b) = &p.changes[0].action else {
            panic!()
        };
        assert!(b.starts_with(b"# caf\xe9\nUUID=9e8d"));
    }
}
