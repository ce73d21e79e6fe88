//! How the guest boots: GRUB 2 (with or without BLS entries), GRUB legacy, and the EFI
//! layout (vendor folders under `/boot/efi/EFI`, shim, and the removable-media fallback
//! `EFI/BOOT/BOOTX64.EFI`, which is what firmware runs when the NVRAM boot entries stay
//! behind on the old host). The default entry and its command line tell which kernel
//! comes up after the move.

use crate::guest_files::GuestFiles;
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum LoaderKind {
    Grub2,
    GrubLegacy,
    /// SYSLINUX or ISOLINUX (`syslinux.cfg`, `isolinux.cfg`).
    Syslinux,
    /// EXTLINUX (`extlinux.conf`), the SYSLINUX variant for ext2/3/4 and btrfs.
    Extlinux,
    /// LILO: boots from a map `/sbin/lilo` wrote, so a move needs `lilo` run again.
    Lilo,
    None,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BootEntry {
    pub title: String,
    /// The kernel as the config names it (`/vmlinuz-6.1.0-18-amd64` when /boot is its own
    /// partition).
    pub kernel: Option<String>,
    pub initrd: Vec<String>,
    pub cmdline: Option<String>,
    /// Boots the Xen hypervisor with the kernel as a module (dom0 or PV-era entries).
    pub xen_hypervisor: bool,
    pub file: String,
    pub line: Option<usize>,
    /// GRUB 2 `--id`, or the BLS entry's file name without `.conf`.
    pub id: Option<String>,
}

impl BootEntry {
    /// The kernel version the entry boots, from its file name.
    pub fn kernel_version(&self) -> Option<String> {
        let k = self.kernel.as_deref()?;
        let base = k.rsplit('/').next().unwrap_or(k);
        base.strip_prefix("vmlinuz-")
            .or_else(|| base.strip_prefix("vmlinux-"))
            .map(|v| v.trim_end_matches(".gz").to_string())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EfiVendor {
    /// The folder name under `EFI/` (`debian`, `redhat`, `sles`, `BOOT`).
    pub name: String,
    pub files: Vec<String>,
    pub grub_cfg: Option<String>,
    pub shim: bool,
    pub grub: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EfiLayout {
    /// The EFI system partition's folder was found and listed.
    pub readable: bool,
    /// Why it is believed to be a UEFI guest.
    pub evidence: Vec<String>,
    pub vendors: Vec<EfiVendor>,
    /// `EFI/BOOT/BOOTX64.EFI` (or the architecture's name) exists.
    pub fallback_loader: bool,
    pub fallback_path: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Bootloader {
    pub kind: LoaderKind,
    /// The main config read (`/boot/grub2/grub.cfg`, `/boot/grub/menu.lst`).
    pub config: Option<String>,
    /// Entries come from `/boot/loader/entries/*.conf` (`blscfg`).
    pub bls: bool,
    pub entries: Vec<BootEntry>,
    /// Index into `entries`.
    pub default_entry: Option<usize>,
    /// How the default was found (`set default="0"`, `saved_entry in grubenv`, ...).
    pub default_source: Option<String>,
    pub efi: Option<EfiLayout>,
    /// Every bootloader file the guest has (configs, generator inputs, grubenv,
    /// device.map).
    pub files: Vec<String>,
    pub notes: Vec<String>,
}

/// The words of a GRUB line with shell-like quoting (`menuentry 'Debian GNU/Linux' {`).
fn words(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quote: Option<char> = None;
    let mut any = false;
    for c in line.chars() {
        match (quote, c) {
            (None, '\'' | '"') => {
                quote = Some(c);
                any = true;
            }
            (Some(q), c) if c == q => quote = None,
            (None, c) if c.is_whitespace() => {
                if any {
                    out.push(std::mem::take(&mut cur));
                    any = false;
                }
            }
            (_, c) => {
                cur.push(c);
                any = true;
            }
        }
    }
    if any {
        out.push(cur);
    }
    out
}

/// `set default="0"` etc.: variables set at top level.
fn grub_var(text: &str, var: &str) -> Option<String> {
    let mut last = None;
    for l in text.lines() {
        let t = l.trim();
        let Some(rest) = t.strip_prefix("set ") else {
            continue;
        };
        if let Some(v) = rest
            .trim()
            .strip_prefix(var)
            .and_then(|r| r.strip_prefix('='))
        {
            last = Some(crate::net::unquote(v).0.to_string());
        }
    }
    last
}

/// `KEY=value` of grubenv (`saved_entry`, `kernelopts`).
pub fn grubenv_get(text: &str, key: &str) -> Option<String> {
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix('=').map(str::to_string))
}

/// GRUB 2 menu entries, submenus flattened with `>` in their path titles.
pub fn parse_grub2(file: &str, text: &str) -> Vec<BootEntry> {
    let mut out = Vec::new();
    enum Block {
        Submenu(String),
        Entry,
        Other,
    }
    let mut stack: Vec<Block> = Vec::new();
    let mut cur: Option<BootEntry> = None;
    for (i, l) in text.lines().enumerate() {
        let t = l.trim();
        if t.starts_with('#') || t.is_empty() {
            continue;
        }
        let w = words(t);
        let first = w.first().map(String::as_str).unwrap_or("");
        match first {
            "menuentry" | "submenu" => {
                let title = w.get(1).cloned().unwrap_or_default();
                let id = w
                    .iter()
                    .position(|x| x == "--id" || x == "$menuentry_id_option")
                    .and_then(|p| w.get(p + 1).cloned());
                if first == "submenu" {
                    stack.push(Block::Submenu(title));
                } else {
                    let path: Vec<&str> = stack
                        .iter()
                        .filter_map(|b| match b {
                            Block::Submenu(t) => Some(t.as_str()),
                            _ => None,
                        })
                        .chain(std::iter::once(title.as_str()))
                        .collect();
                    cur = Some(BootEntry {
                        title: path.join(">"),
                        kernel: None,
                        initrd: Vec::new(),
                        cmdline: None,
                        xen_hypervisor: false,
                        file: file.to_string(),
                        line: Some(i + 1),
                        id,
                    });
                    stack.push(Block::Entry);
                }
            }
            "}" => {
                if let Some(Block::Entry) = stack.pop() {
                    if let Some(e) = cur.take() {
                        out.push(e);
                    }
                }
            }
            "linux" | "linux16" | "linuxefi" | "kernel" => {
                if let Some(e) = cur.as_mut() {
                    if !e.xen_hypervisor || e.kernel.is_none() {
                        e.kernel = w.get(1).cloned();
                        e.cmdline = Some(w.get(2..).unwrap_or(&[]).join(" "));
                    }
                }
            }
            "multiboot" | "multiboot2" => {
                if let Some(e) = cur.as_mut() {
                    if w.get(1).is_some_and(|p| p.contains("xen")) {
                        e.xen_hypervisor = true;
                    }
                }
            }
            "module" | "module2" => {
                if let Some(e) = cur.as_mut() {
                    let args: Vec<&String> =
                        w.iter().skip(1).filter(|a| !a.starts_with("--")).collect();
                    let path = args.first().map(|s| s.to_string());
                    if e.kernel.is_none() && path.as_deref().is_some_and(|p| p.contains("vmlinu")) {
                        e.kernel = path;
                        e.cmdline = Some(
                            args.iter()
                                .skip(1)
                                .map(|s| s.as_str())
                                .collect::<Vec<_>>()
                                .join(" "),
                        );
                    } else if let Some(p) = path {
                        e.initrd.push(p);
                    }
                }
            }
            "initrd" | "initrd16" | "initrdefi" => {
                if let Some(e) = cur.as_mut() {
                    e.initrd.extend(w.iter().skip(1).cloned());
                }
            }
            _ => {
                if t.ends_with('{') {
                    stack.push(Block::Other);
                }
            }
        }
    }
    out
}

/// GRUB legacy `menu.lst` / `grub.conf`: entries and the `default` line.
pub fn parse_legacy(file: &str, text: &str) -> (Vec<BootEntry>, Option<String>) {
    let mut out: Vec<BootEntry> = Vec::new();
    let mut default = None;
    for (i, l) in text.lines().enumerate() {
        let t = l.trim();
        if t.starts_with('#') || t.is_empty() {
            continue;
        }
        let (key, rest) = match t.find(|c: char| c.is_whitespace() || c == '=') {
            Some(p) => (
                t.get(..p).unwrap_or(t),
                t.get(p + 1..)
                    .unwrap_or("")
                    .trim_start_matches(['=', ' ', '\t']),
            ),
            None => (t, ""),
        };
        match key {
            "default" if out.is_empty() => default = Some(rest.trim().to_string()),
            "title" => out.push(BootEntry {
                title: rest.trim().to_string(),
                kernel: None,
                initrd: Vec::new(),
                cmdline: None,
                xen_hypervisor: false,
                file: file.to_string(),
                line: Some(i + 1),
                id: None,
            }),
            "kernel" => {
                if let Some(e) = out.last_mut() {
                    let mut p = rest.split_whitespace();
                    let k = p.next().map(str::to_string);
                    if k.as_deref()
                        .is_some_and(|k| k.contains("xen") && k.ends_with(".gz"))
                    {
                        e.xen_hypervisor = true;
                    } else {
                        e.kernel = k;
                        e.cmdline = Some(p.collect::<Vec<_>>().join(" "));
                    }
                }
            }
            "module" => {
                if let Some(e) = out.last_mut() {
                    let mut p = rest.split_whitespace();
                    let m = p.next().map(str::to_string);
                    if e.kernel.is_none() {
                        e.kernel = m;
                        e.cmdline = Some(p.collect::<Vec<_>>().join(" "));
                    } else if let Some(m) = m {
                        e.initrd.push(m);
                    }
                }
            }
            "initrd" => {
                if let Some(e) = out.last_mut() {
                    e.initrd
                        .extend(rest.split_whitespace().next().map(str::to_string));
                }
            }
            _ => {}
        }
    }
    for e in &mut out {
        // A legacy root like (hd0,0) before the path.
        if let Some(k) = e.kernel.as_mut() {
            if let Some(p) = k.find(')') {
                *k = k.get(p + 1..).unwrap_or("").to_string();
            }
        }
    }
    (out, default)
}

/// BLS entries, sorted as GRUB's blscfg sorts them (newest version first).
pub fn parse_bls(guest: &dyn GuestFiles, kernelopts: Option<&str>) -> Vec<BootEntry> {
    let dir = "/boot/loader/entries";
    let mut out = Vec::new();
    for n in guest.list(dir) {
        let Some(id) = n.strip_suffix(".conf") else {
            continue;
        };
        let path = format!("{dir}/{n}");
        let Some(t) = guest.read_text(&path) else {
            continue;
        };
        let mut e = BootEntry {
            title: id.to_string(),
            kernel: None,
            initrd: Vec::new(),
            cmdline: None,
            xen_hypervisor: false,
            file: path.clone(),
            line: None,
            id: Some(id.to_string()),
        };
        let mut version = None;
        for l in t.lines() {
            let (k, v) = match l.trim().split_once(char::is_whitespace) {
                Some((k, v)) => (k, v.trim()),
                None => continue,
            };
            match k {
                "title" => e.title = v.to_string(),
                "version" => version = Some(v.to_string()),
                "linux" => e.kernel = Some(v.to_string()),
                "initrd" => e.initrd.extend(v.split_whitespace().map(str::to_string)),
                "options" => {
                    let o = match kernelopts {
                        Some(ko) => v.replace("$kernelopts", ko),
                        None => v.to_string(),
                    };
                    e.cmdline = Some(o);
                }
                _ => {}
            }
        }
        out.push((version.unwrap_or_else(|| id.to_string()), e));
    }
    out.sort_by(|a, b| super::kernels::version_cmp(&b.0, &a.0));
    out.into_iter().map(|(_, e)| e).collect()
}

/// Finds the entry a GRUB default names: an index (`0`, `1>2`), a title or an id.
pub fn resolve_default(entries: &[BootEntry], d: &str) -> Option<usize> {
    let d = d.trim();
    if let Ok(n) = d.parse::<usize>() {
        // Top-level position: entries inside one submenu count once.
        let mut tops: Vec<&str> = Vec::new();
        for e in entries {
            let top = e.title.split('>').next().unwrap_or("");
            if !e.title.contains('>') || tops.last() != Some(&top) {
                tops.push(top);
            }
        }
        let top = *tops.get(n)?;
        return entries
            .iter()
            .position(|e| e.title == top || e.title.starts_with(&format!("{top}>")));
    }
    if let Some((a, b)) = d.split_once('>') {
        if let (Ok(_), Ok(j)) = (a.parse::<usize>(), b.parse::<usize>()) {
            let first = resolve_default(entries, a)?;
            let sub = entries.get(first)?.title.split('>').next()?.to_string();
            let idx: Vec<usize> = (0..entries.len())
                .filter(|i| {
                    entries
                        .get(*i)
                        .is_some_and(|e| e.title.starts_with(&format!("{sub}>")))
                })
                .collect();
            return idx.get(j).copied();
        }
        // ID>ID or title>title: the last part names the entry.
        let last = d.rsplit('>').next().unwrap_or(d);
        return entries.iter().position(|e| {
            e.id.as_deref() == Some(last) || e.title == d || e.title.ends_with(&format!(">{last}"))
        });
    }
    entries
        .iter()
        .position(|e| e.id.as_deref() == Some(d) || e.title == d)
}

fn efi_layout(
    guest: &dyn GuestFiles,
    fstab_has_esp: bool,
    arch: Option<&str>,
) -> Option<EfiLayout> {
    let base = "/boot/efi/EFI";
    let names = guest.list(base);
    let mut evidence = Vec::new();
    if fstab_has_esp {
        evidence.push("/etc/fstab mounts /boot/efi".to_string());
    }
    if !names.is_empty() {
        evidence.push(format!("{base} exists"));
    }
    for p in [
        "/usr/lib/grub/x86_64-efi",
        "/usr/lib/grub/arm64-efi",
        "/boot/grub2/x86_64-efi",
    ] {
        if guest.exists(p) {
            evidence.push(format!("{p} exists"));
        }
    }
    if evidence.is_empty() {
        return None;
    }
    let fallback_name = match arch {
        Some("aarch64") => "BOOTAA64.EFI",
        Some("i386") => "BOOTIA32.EFI",
        _ => "BOOTX64.EFI",
    };
    let mut vendors = Vec::new();
    let mut fallback_loader = false;
    for v in &names {
        let dir = format!("{base}/{v}");
        let files = guest.list(&dir);
        let has = |f: &str| files.iter().any(|x| x.eq_ignore_ascii_case(f));
        if v.eq_ignore_ascii_case("BOOT") && has(fallback_name) {
            fallback_loader = true;
        }
        vendors.push(EfiVendor {
            name: v.clone(),
            grub_cfg: files
                .iter()
                .find(|x| x.eq_ignore_ascii_case("grub.cfg"))
                .map(|x| format!("{dir}/{x}")),
            shim: files
                .iter()
                .any(|x| x.to_ascii_lowercase().starts_with("shim")),
            grub: files.iter().any(|x| {
                x.to_ascii_lowercase().starts_with("grub")
                    && x.to_ascii_lowercase().ends_with(".efi")
            }),
            files,
        });
    }
    Some(EfiLayout {
        readable: !names.is_empty(),
        evidence,
        vendors,
        fallback_loader,
        fallback_path: format!("/boot/efi/EFI/BOOT/{fallback_name}"),
    })
}

/// Bootloader files any patcher or reference scan looks at.
pub fn bootloader_files(guest: &dyn GuestFiles) -> Vec<String> {
    let mut out: Vec<String> = [
        "/boot/grub2/grub.cfg",
        "/boot/grub/grub.cfg",
        "/boot/grub/menu.lst",
        "/boot/grub/grub.conf",
        "/etc/grub.conf",
        "/boot/grub2/grubenv",
        "/boot/grub/grubenv",
        "/boot/grub/device.map",
        "/boot/grub2/device.map",
        "/etc/default/grub",
        "/etc/sysconfig/grub",
        "/etc/sysconfig/bootloader",
        "/etc/lilo.conf",
        "/etc/update-extlinux.conf",
        "/etc/default/extlinux",
    ]
    .iter()
    .chain(crate::patch::plan::EXTLINUX_CONFIGS.iter())
    .filter(|p| guest.exists(p))
    .map(|p| p.to_string())
    .collect();
    for d in ["/etc/default/grub.d"] {
        for n in guest.list(d) {
            if n.ends_with(".cfg") {
                out.push(format!("{d}/{n}"));
            }
        }
    }
    for n in guest.list("/boot/loader/entries") {
        if n.ends_with(".conf") {
            out.push(format!("/boot/loader/entries/{n}"));
        }
    }
    for v in guest.list("/boot/efi/EFI") {
        let p = format!("/boot/efi/EFI/{v}/grub.cfg");
        if guest.exists(&p) {
            out.push(p);
        }
    }
    out
}

pub fn find(guest: &dyn GuestFiles, fstab_has_esp: bool, arch: Option<&str>) -> Bootloader {
    let files = bootloader_files(guest);
    let mut notes = Vec::new();
    if guest.exists("/etc/lilo.conf") {
        notes.push(
            "/etc/lilo.conf exists: LILO is taken as the loader only when no GRUB or \
             SYSLINUX config is found (the boot sector is not read)"
                .to_string(),
        );
    }
    let mut b = Bootloader {
        kind: LoaderKind::None,
        config: None,
        bls: false,
        entries: Vec::new(),
        default_entry: None,
        default_source: None,
        efi: efi_layout(guest, fstab_has_esp, arch),
        files: files.clone(),
        notes,
    };
    let grubenv = ["/boot/grub2/grubenv", "/boot/grub/grubenv"]
        .iter()
        .find_map(|p| guest.read_text(p));
    // The real grub.cfg: /boot's, or the one in the ESP when it is not a wrapper.
    let mut cfgs: Vec<String> = vec!["/boot/grub2/grub.cfg".into(), "/boot/grub/grub.cfg".into()];
    cfgs.extend(
        files
            .iter()
            .filter(|f| f.starts_with("/boot/efi/"))
            .cloned(),
    );
    for path in &cfgs {
        let Some(text) = guest.read_text(path) else {
            continue;
        };
        let wrapper =
            !text.contains("menuentry") && !text.contains("blscfg") && text.contains("configfile");
        if wrapper {
            b.notes
                .push(format!("{path} only loads another config (configfile)"));
            continue;
        }
        b.kind = LoaderKind::Grub2;
        b.config = Some(path.clone());
        b.entries = parse_grub2(path, &text);
        if text
            .lines()
            .any(|l| l.trim() == "blscfg" || l.trim().starts_with("blscfg "))
        {
            b.bls = true;
            let ko = grubenv
                .as_deref()
                .and_then(|g| grubenv_get(g, "kernelopts"));
            b.entries.extend(parse_bls(guest, ko.as_deref()));
        }
        let mut d = grub_var(&text, "default");
        let mut src = d.as_ref().map(|v| format!("set default=\"{v}\" in {path}"));
        if d.as_deref().is_none_or(|v| v.contains("saved_entry")) {
            if let Some(s) = grubenv
                .as_deref()
                .and_then(|g| grubenv_get(g, "saved_entry"))
            {
                src = Some(format!("saved_entry={s} in grubenv"));
                d = Some(s);
            } else if d.is_some() {
                d = Some("0".into());
                src = Some("no saved_entry: the first entry".into());
            }
        }
        let d = d.unwrap_or_else(|| "0".into());
        b.default_entry = resolve_default(&b.entries, &d).or((!b.entries.is_empty()).then_some(0));
        b.default_source = src.or(Some("the first entry".into()));
        return b;
    }
    for path in [
        "/boot/grub/menu.lst",
        "/boot/grub/grub.conf",
        "/etc/grub.conf",
    ] {
        let Some(text) = guest.read_text(path) else {
            continue;
        };
        let (entries, default) = parse_legacy(path, &text);
        b.kind = LoaderKind::GrubLegacy;
        b.config = Some(path.to_string());
        b.entries = entries;
        let d = match default.as_deref() {
            Some("saved") => {
                let saved = guest
                    .read_text("/boot/grub/default")
                    .and_then(|t| t.lines().next().map(|l| l.trim().to_string()));
                b.default_source = Some("default saved (/boot/grub/default)".into());
                saved.unwrap_or_else(|| "0".into())
            }
            Some(v) => {
                b.default_source = Some(format!("default {v} in {path}"));
                v.to_string()
            }
            None => {
                b.default_source = Some("the first entry".into());
                "0".into()
            }
        };
        b.default_entry = d
            .parse::<usize>()
            .ok()
            .filter(|i| *i < b.entries.len())
            .or((!b.entries.is_empty()).then_some(0));
        return b;
    }
    for path in crate::patch::plan::EXTLINUX_CONFIGS {
        let Some(text) = guest.read_text(path) else {
            continue;
        };
        b.kind = if path.ends_with("extlinux.conf") {
            LoaderKind::Extlinux
        } else {
            LoaderKind::Syslinux
        };
        b.config = Some(path.to_string());
        let (entries, default) = parse_extlinux(path, &text);
        b.entries = entries;
        b.default_entry = default.or((!b.entries.is_empty()).then_some(0));
        b.default_source = Some(match default {
            Some(_) => format!("DEFAULT (or MENU DEFAULT) in {path}"),
            None => "the first label".into(),
        });
        return b;
    }
    if let Some(text) = guest.read_text("/etc/lilo.conf") {
        let (entries, default) = parse_lilo("/etc/lilo.conf", &text);
        if !entries.is_empty() || text.lines().any(|l| l.trim_start().starts_with("boot")) {
            b.kind = LoaderKind::Lilo;
            b.config = Some("/etc/lilo.conf".into());
            b.entries = entries;
            b.default_entry = default.or((!b.entries.is_empty()).then_some(0));
            b.default_source = Some(match default {
                Some(_) => "default= in /etc/lilo.conf".into(),
                None => "the first image".into(),
            });
            b.notes.push(
                "LILO boots from the map /sbin/lilo last wrote, not from /etc/lilo.conf: \
                 after any change lilo must run again"
                    .into(),
            );
        }
    }
    b
}

/// SYSLINUX/EXTLINUX labels and the index of the default one (`DEFAULT label`, or the
/// label holding `MENU DEFAULT` when DEFAULT names a menu module).
pub fn parse_extlinux(file: &str, text: &str) -> (Vec<BootEntry>, Option<usize>) {
    let mut out: Vec<BootEntry> = Vec::new();
    let mut default: Option<String> = None;
    let mut menu_default: Option<usize> = None;
    let mut global_append: Option<String> = None;
    let mut mboot = false;
    for (i, l) in text.lines().enumerate() {
        let t = l.trim();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        let (kw, arg) = match t.split_once(char::is_whitespace) {
            Some((k, a)) => (k.to_ascii_lowercase(), a.trim()),
            None => (t.to_ascii_lowercase(), ""),
        };
        match kw.as_str() {
            "label" => {
                mboot = false;
                out.push(BootEntry {
                    title: arg.to_string(),
                    kernel: None,
                    initrd: Vec::new(),
                    cmdline: global_append.clone(),
                    xen_hypervisor: false,
                    file: file.to_string(),
                    line: Some(i + 1),
                    id: Some(arg.to_string()),
                });
            }
            "default" if out.is_empty() => default = Some(arg.to_string()),
            "menu" if arg.eq_ignore_ascii_case("default") => {
                menu_default = out.len().checked_sub(1);
            }
            "kernel" | "linux" => {
                if let Some(e) = out.last_mut() {
                    let img = arg.split_whitespace().next().unwrap_or("");
                    mboot = img.rsplit('/').next().unwrap_or(img) == "mboot.c32";
                    e.xen_hypervisor = mboot;
                    e.kernel = (!mboot).then(|| img.to_string());
                }
            }
            "initrd" => {
                if let Some(e) = out.last_mut() {
                    e.initrd.extend(arg.split(',').map(str::to_string));
                }
            }
            "append" => match out.last_mut() {
                None => global_append = Some(arg.to_string()),
                Some(e) if mboot => {
                    // xen.gz OPTS --- vmlinuz OPTS --- initrd
                    let mut parts = arg.split(" --- ");
                    parts.next();
                    if let Some(k) = parts.next() {
                        let mut w = k.split_whitespace();
                        e.kernel = w.next().map(str::to_string);
                        e.cmdline = Some(w.collect::<Vec<_>>().join(" "));
                    }
                    e.initrd.extend(parts.map(|p| p.trim().to_string()));
                }
                Some(e) => {
                    let mut opts = Vec::new();
                    for w in arg.split_whitespace() {
                        match w.strip_prefix("initrd=") {
                            Some(i) => e.initrd.extend(i.split(',').map(str::to_string)),
                            None => opts.push(w),
                        }
                    }
                    e.cmdline = Some(opts.join(" "));
                }
            },
            _ => {}
        }
    }
    let d = match default.as_deref() {
        Some(d) if !d.ends_with(".c32") => out.iter().position(|e| e.title == d),
        _ => menu_default,
    };
    (out, d)
}

/// LILO `image=` sections and the default one (`default=label`, else the first).
pub fn parse_lilo(file: &str, text: &str) -> (Vec<BootEntry>, Option<usize>) {
    let mut out: Vec<BootEntry> = Vec::new();
    let mut default: Option<String> = None;
    let mut global_root: Option<String> = None;
    let mut global_append: Option<String> = None;
    for (i, l) in text.lines().enumerate() {
        for it in crate::patch::lilo::items(l) {
            let v = it
                .value
                .and_then(|(r, _)| l.get(r))
                .unwrap_or("")
                .to_string();
            let in_image = !out.is_empty();
            match it.name.as_str() {
                "image" => out.push(BootEntry {
                    title: v.clone(),
                    kernel: Some(v),
                    initrd: Vec::new(),
                    cmdline: None,
                    xen_hypervisor: false,
                    file: file.to_string(),
                    line: Some(i + 1),
                    id: None,
                }),
                // `other=` chain-loads another system: not a Linux entry.
                "other" => out.push(BootEntry {
                    title: v.clone(),
                    kernel: None,
                    initrd: Vec::new(),
                    cmdline: None,
                    xen_hypervisor: false,
                    file: file.to_string(),
                    line: Some(i + 1),
                    id: None,
                }),
                "label" => {
                    if let Some(e) = out.last_mut() {
                        e.title = v.clone();
                        e.id = Some(v);
                    }
                }
                "default" if !in_image => default = Some(v),
                "root" if !in_image => global_root = Some(v),
                "append" if !in_image => global_append = Some(v),
                "root" => {
                    if let Some(e) = out.last_mut() {
                        let rest = e.cmdline.take().unwrap_or_default();
                        e.cmdline = Some(format!("root={v} {rest}").trim().to_string());
                    }
                }
                "append" => {
                    if let Some(e) = out.last_mut() {
                        let cur = e.cmdline.take().unwrap_or_default();
                        e.cmdline = Some(format!("{cur} {v}").trim().to_string());
                    }
                }
                "initrd" => {
                    if let Some(e) = out.last_mut() {
                        e.initrd.push(v);
                    }
                }
                _ => {}
            }
        }
    }
    // Sections without their own root=/append= use the global ones.
    for e in out.iter_mut().filter(|e| e.kernel.is_some()) {
        let cl = e.cmdline.take().unwrap_or_default();
        let mut parts: Vec<String> = Vec::new();
        if !cl.contains("root=") {
            if let Some(r) = &global_root {
                parts.push(format!("root={r}"));
            }
        }
        if !cl.is_empty() {
            parts.push(cl);
        } else if let Some(a) = &global_append {
            parts.push(a.clone());
        }
        e.cmdline = Some(parts.join(" "));
    }
    let d = default.and_then(|d| out.iter().position(|e| e.title == d));
    (out, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::guest_files::MemGuest;

    const DEB_CFG: &str = r#"set default="0"
if [ x"${feature_menuentry_id}" = xy ]; then
  menuentry_id_option="--id"
else
  menuentry_id_option=""
fi
menuentry 'Debian GNU/Linux' --class debian $menuentry_id_option 'gnulinux-simple-6f1c' {
	insmod ext2
	linux	/boot/vmlinuz-6.1.0-18-amd64 root=UUID=6f1c ro quiet
	initrd	/boot/initrd.img-6.1.0-18-amd64
}
submenu 'Advanced options for Debian GNU/Linux' $menuentry_id_option 'gnulinux-advanced-6f1c' {
	menuentry 'Debian GNU/Linux, with Linux 6.1.0-18-amd64' $menuentry_id_option 'gnulinux-6.1.0-18-amd64-advanced-6f1c' {
		linux	/boot/vmlinuz-6.1.0-18-amd64 root=UUID=6f1c ro quiet
	}
	menuentry 'Debian GNU/Linux, with Linux 5.10.0-9-amd64' $menuentry_id_option 'gnulinux-5.10.0-9-amd64-advanced-6f1c' {
		linux	/boot/vmlinuz-5.10.0-9-amd64 root=UUID=6f1c ro quiet
	}
}
"#;

    #[test]
    fn grub2_entries_and_default() {
        let e = parse_grub2("/boot/grub/grub.cfg", DEB_CFG);
        assert_eq!(e.len(), 3);
        assert_eq!(e[0].title, "Debian GNU/Linux");
        assert_eq!(e[0].kernel_version().as_deref(), Some("6.1.0-18-amd64"));
        assert_eq!(e[0].cmdline.as_deref(), Some("root=UUID=6f1c ro quiet"));
        assert_eq!(
            e[2].title,
            "Advanced options for Debian GNU/Linux>Debian GNU/Linux, with Linux 5.10.0-9-amd64"
        );
        assert_eq!(resolve_default(&e, "0"), Some(0));
        assert_eq!(resolve_default(&e, "1>1"), Some(2));
        assert_eq!(
            resolve_default(
                &e,
                "gnulinux-advanced-6f1c>gnulinux-5.10.0-9-amd64-advanced-6f1c"
            ),
            Some(2)
        );
        let g = MemGuest::new()
            .file("/boot/grub/grub.cfg", DEB_CFG.replace("set default=\"0\"", "set default=\"${saved_entry}\""))
            .file("/boot/grub/grubenv", "# GRUB Environment Block\nsaved_entry=gnulinux-advanced-6f1c>gnulinux-5.10.0-9-amd64-advanced-6f1c\n#####");
        let b = find(&g, false, None);
        assert_eq!(b.kind, LoaderKind::Grub2);
        assert_eq!(b.default_entry, Some(2));
        assert!(b.efi.is_none());
    }

    #[test]
    fn bls_and_efi() {
        let g = MemGuest::new()
            .file("/boot/grub2/grub.cfg", "set default=\"${saved_entry}\"\nblscfg\n")
            .file("/boot/grub2/grubenv", "saved_entry=abc-4.18.0-513.el8.x86_64\nkernelopts=root=/dev/mapper/rhel-root ro crashkernel=auto\n")
            .file("/boot/loader/entries/abc-4.18.0-513.el8.x86_64.conf", "title Red Hat Enterprise Linux (4.18.0-513.el8.x86_64) 8.9\nversion 4.18.0-513.el8.x86_64\nlinux /vmlinuz-4.18.0-513.el8.x86_64\ninitrd /initramfs-4.18.0-513.el8.x86_64.img $tuned_initrd\noptions $kernelopts $tuned_params\n")
            .file("/boot/loader/entries/abc-0-rescue.conf", "title rescue\nversion 0-rescue\nlinux /vmlinuz-0-rescue-abc\noptions $kernelopts\n")
            .file("/boot/efi/EFI/redhat/grub.cfg", "x")
            .file("/boot/efi/EFI/redhat/shimx64.efi", "x")
            .file("/boot/efi/EFI/redhat/grubx64.efi", "x");
        let b = find(&g, true, Some("x86_64"));
        assert!(b.bls);
        assert_eq!(b.entries.len(), 2);
        let d = &b.entries[b.default_entry.unwrap()];
        assert_eq!(d.kernel_version().as_deref(), Some("4.18.0-513.el8.x86_64"));
        assert!(d
            .cmdline
            .as_deref()
            .unwrap()
            .starts_with("root=/dev/mapper/rhel-root ro"));
        let efi = b.efi.unwrap();
        assert!(efi.readable);
        assert!(!efi.fallback_loader);
        assert!(efi.vendors[0].shim && efi.vendors[0].grub);
    }

    #[test]
    fn extlinux_and_lilo() {
        let t = "DEFAULT menu.c32\nAPPEND ro\nLABEL virt\n  MENU LABEL Linux virt\n  LINUX vmlinuz-6.6.1-virt\n  INITRD initramfs-virt\n  APPEND root=/dev/vda3 initrd=/boot/ucode.img quiet\nLABEL lts\n  MENU DEFAULT\n  KERNEL vmlinuz-6.6.1-lts\nLABEL xen\n  KERNEL mboot.c32\n  APPEND xen.gz dom0_mem=1G --- vmlinuz-6.6.1-lts root=/dev/xvda3 --- initramfs-lts\n";
        let (e, d) = parse_extlinux("/boot/extlinux.conf", t);
        assert_eq!(e.len(), 3);
        assert_eq!(d, Some(1));
        assert_eq!(e[0].cmdline.as_deref(), Some("root=/dev/vda3 quiet"));
        assert_eq!(e[0].initrd, ["initramfs-virt", "/boot/ucode.img"]);
        assert_eq!(e[0].kernel_version().as_deref(), Some("6.6.1-virt"));
        assert_eq!(e[1].cmdline.as_deref(), Some("ro"));
        assert!(e[2].xen_hypervisor);
        assert_eq!(e[2].kernel.as_deref(), Some("vmlinuz-6.6.1-lts"));
        assert_eq!(e[2].cmdline.as_deref(), Some("root=/dev/xvda3"));
        let g = MemGuest::new().file("/boot/extlinux.conf", t);
        let b = find(&g, false, None);
        assert_eq!(b.kind, LoaderKind::Extlinux);
        assert_eq!(b.default_entry, Some(1));
        assert!(b.files.contains(&"/boot/extlinux.conf".to_string()));

        let t = "boot = /dev/sda\nroot = /dev/sda3\ndefault = old\nappend=\"console=hvc0\"\nimage = /boot/vmlinuz-2.6.32-5-686\n  label = Linux\n  initrd = /boot/initrd.img-2.6.32-5-686\n  read-only\nimage = /boot/vmlinuz-2.6.26-2-686\n  label = old\n  root = \"UUID=18843936\"\n  append = \"quiet\"\nother = /dev/sda4\n  label = Windows\n";
        let (e, d) = parse_lilo("/etc/lilo.conf", t);
        assert_eq!(e.len(), 3);
        assert_eq!(d, Some(1));
        assert_eq!(e[0].cmdline.as_deref(), Some("root=/dev/sda3 console=hvc0"));
        assert_eq!(e[1].cmdline.as_deref(), Some("root=UUID=18843936 quiet"));
        assert_eq!(e[1].kernel_version().as_deref(), Some("2.6.26-2-686"));
        assert_eq!(e[2].kernel, None);
        let g = MemGuest::new().file("/etc/lilo.conf", t);
        let b = find(&g, false, None);
        assert_eq!(b.kind, LoaderKind::Lilo);
        assert_eq!(b.default_entry, Some(1));
        // A leftover lilo.conf beside GRUB: GRUB is the loader.
        let g = g.file("/boot/grub/grub.cfg", DEB_CFG);
        assert_eq!(find(&g, false, None).kind, LoaderKind::Grub2);
    }

    /// A LILO guest is refused for every target, with the reason and the way out.
    #[test]
    fn lilo_is_a_blocker() {
        let d = "/lib/modules/2.6.32-5-686";
        let g = MemGuest::new()
            .file("/etc/fstab", "/dev/sda1 / ext3 defaults 0 1\n")
            .file("/etc/lilo.conf", "boot=/dev/sda\nimage=/boot/vmlinuz-2.6.32-5-686\n label=Linux\n root=/dev/sda1\n")
            .file("/boot/vmlinuz-2.6.32-5-686", "k")
            .file(&format!("{d}/modules.dep"), "")
            .file(&format!("{d}/modules.builtin"), "kernel/drivers/virtio/virtio_pci.ko\nkernel/drivers/block/virtio_blk.ko\nkernel/drivers/virtio/virtio_scsi.ko\nkernel/drivers/scsi/sd_mod.ko\nkernel/drivers/ata/ahci.ko\nkernel/drivers/nvme/host/nvme.ko\n");
        let vols = vec![crate::context::GuestVolume {
            disk: Some(0),
            partition: Some(1),
            fs_kind: Some("ext3".into()),
            uuid: Some("u1".into()),
            ..Default::default()
        }];
        let list = |_: &[u8]| -> Result<Vec<String>, String> { Ok(Vec::new()) };
        let i = crate::inspect::inspect(&g, &vols, &list);
        assert_eq!(i.bootloader.kind, LoaderKind::Lilo);
        assert_eq!(i.default_kernel.as_deref(), Some("2.6.32-5-686"));
        for v in &i.targets {
            assert!(!v.convertible, "{v:?}");
            let b = &v.blockers[0];
            assert_eq!(b.code, "lilo-needs-rerun");
            assert_eq!(b.file.as_deref(), Some("/etc/lilo.conf"));
            assert!(b.message.contains("run `lilo`") && b.message.contains("--force"));
            assert!(b.message.contains(v.target.name()));
        }
        let j = serde_json::to_value(&i.bootloader).unwrap();
        assert_eq!(j["kind"], "lilo");
    }

    #[test]
    fn legacy_with_xen() {
        let t = "default 1\ntimeout 8\ntitle SUSE Linux Enterprise Server 10 SP4 - Xen\n    root (hd0,1)\n    kernel /boot/xen.gz\n    module /boot/vmlinuz-2.6.16.60-0.85.1-xen root=/dev/xvda2 console=xvc0\n    module /boot/initrd-2.6.16.60-0.85.1-xen\ntitle Plain\n    kernel (hd0,1)/boot/vmlinuz-2.6.16.60-0.85.1-xen root=/dev/xvda2\n    initrd /boot/initrd-2.6.16.60-0.85.1-xen\n";
        let (e, d) = parse_legacy("/boot/grub/menu.lst", t);
        assert_eq!(d.as_deref(), Some("1"));
        assert_eq!(e.len(), 2);
        assert!(e[0].xen_hypervisor);
        assert_eq!(
            e[0].kernel.as_deref(),
            Some("/boot/vmlinuz-2.6.16.60-0.85.1-xen")
        );
        assert_eq!(
            e[0].cmdline.as_deref(),
            Some("root=/dev/xvda2 console=xvc0")
        );
        assert_eq!(e[0].initrd, ["/boot/initrd-2.6.16.60-0.85.1-xen"]);
        assert_eq!(
            e[1].kernel.as_deref(),
            Some("/boot/vmlinuz-2.6.16.60-0.85.1-xen")
        );
    }
}
