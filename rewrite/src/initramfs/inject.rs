//! Adding the drivers a target needs to an initramfs, from the guest's own modules
//! directory, so the new disk controller is found before the root filesystem is mounted.
//!
//! For each wanted module: built in (modules.builtin) — nothing to do; already in the
//! image — nothing to add; otherwise it and every module it needs (modules.dep, walked
//! transitively, plus its modules.softdep "pre:" modules when the guest has them) are
//! copied from /lib/modules/KVER into the image's own modules directory. The image's
//! modules.dep, .alias, .symbols, .devname (and .order) gain the lines of the added
//! modules, and the binary indexes libkmod reads (.dep.bin, .alias.bin, .symbols.bin,
//! and .builtin.bin when missing) are rebuilt from them. Dependency paths are rewritten
//! to where each module sits in the image (initramfs-tools decompresses .ko.xz/.ko.zst
//! modules when it builds an image; added modules are decompressed likewise when the
//! image holds only plain .ko files). Finally the wanted modules are named for early
//! loading: initramfs-tools `conf/modules`, dracut `etc/cmdline.d/50-transplant.conf`
//! with `rd.driver.pre=`.

use super::compression::{self, Compression};
use super::modules_dep::{self, DepEntry, ModulesDep};
use super::newc::{Archive, Member};
use super::{generator, kmod_index, Generator, Initramfs, InitramfsError};
use crate::GuestFiles;
use serde::Serialize;
use std::collections::{BTreeSet, HashMap};

/// Largest module file taken from a guest.
const MAX_MODULE: u64 = 64 << 20;
/// Largest index text file taken from a guest.
const MAX_INDEX: u64 = 64 << 20;
/// Where dracut reads extra kernel command-line options inside the image.
pub const DRACUT_CMDLINE: &str = "etc/cmdline.d/50-transplant.conf";

/// One module copied into the image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AddedModule {
    pub name: String,
    /// Path inside the image.
    pub path: String,
    /// Guest file it came from.
    pub source: String,
    /// The module that needs it (None: it was asked for).
    pub needed_by: Option<String>,
    /// It was stored compressed in the guest and decompressed for the image.
    pub decompressed: bool,
}

/// What `inject_modules` did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct InjectReport {
    pub kver: String,
    pub added: Vec<AddedModule>,
    /// Wanted modules the image already had.
    pub already_present: Vec<String>,
    /// Wanted modules built into the kernel.
    pub builtin: Vec<String>,
    /// Wanted modules (or their dependencies) the guest's modules directory lacks:
    /// a blocker for this kernel when one of the target's essential drivers is here.
    pub missing: Vec<String>,
    /// The file inside the image naming modules for early load, and the names added.
    pub early_load: Option<(String, Vec<String>)>,
    /// Index files written inside the image.
    pub index_files: Vec<String>,
    pub warnings: Vec<String>,
}

impl InjectReport {
    pub fn changed(&self) -> bool {
        !self.added.is_empty() || self.early_load.is_some()
    }
}

fn refused(msg: String) -> InitramfsError {
    InitramfsError::Refused(msg)
}

/// Where the target archive sits: (segment, archive) indexes.
type Loc = (usize, usize);

fn locate(ini: &Initramfs, pred: impl Fn(&Member) -> bool) -> Option<Loc> {
    let mut found = None;
    for (si, s) in ini.layout.segments.iter().enumerate() {
        for (ai, a) in s.archives.iter().enumerate() {
            if a.members.iter().any(&pred) {
                found = Some((si, ai));
            }
        }
    }
    found
}

pub(crate) fn inject(
    ini: &mut Initramfs,
    guest: &dyn GuestFiles,
    kver: &str,
    wanted: &[&str],
) -> Result<InjectReport, InitramfsError> {
    let mut rep = InjectReport {
        kver: kver.to_string(),
        ..InjectReport::default()
    };
    if kver.is_empty() || kver.contains('/') || kver.starts_with('.') {
        return Err(refused(format!("{kver:?} is not a kernel version")));
    }
    // The guest's modules directory and its index files.
    let gdir = [
        format!("/lib/modules/{kver}"),
        format!("/usr/lib/modules/{kver}"),
    ]
    .into_iter()
    .find(|d| guest.exists(&format!("{d}/modules.dep")))
    .ok_or_else(|| {
        refused(format!(
            "the guest has no /lib/modules/{kver}/modules.dep: its modules for kernel \
                 {kver} are missing or depmod never ran; pick another kernel"
        ))
    })?;
    let gtext = |name: &str| -> Result<Option<String>, InitramfsError> {
        let p = format!("{gdir}/{name}");
        if !guest.exists(&p) {
            return Ok(None);
        }
        guest
            .read(&p, MAX_INDEX)
            .map(|b| Some(String::from_utf8_lossy(&b).into_owned()))
            .map_err(|e| refused(format!("reading {p}: {e}")))
    };
    let (gdep, w) = ModulesDep::parse(&gtext("modules.dep")?.unwrap_or_default());
    rep.warnings
        .extend(w.into_iter().map(|w| format!("{gdir}/{w}")));
    let gbuiltin_text = gtext("modules.builtin")?;
    let gbuiltin = modules_dep::parse_builtin(gbuiltin_text.as_deref().unwrap_or(""));
    let gsoft = modules_dep::parse_softdeps(&gtext("modules.softdep")?.unwrap_or_default());

    // The image's modules directory.
    let versions = ini.kernel_versions();
    if !versions.is_empty() && !versions.iter().any(|v| v == kver) {
        return Err(refused(format!(
            "this initramfs holds modules for kernel {} , not {kver}: inject into the image \
             of that kernel",
            versions.join(", ")
        )));
    }
    let usr = format!("usr/lib/modules/{kver}");
    let plain = format!("lib/modules/{kver}");
    let has = |p: &str| ini.find(p).is_some();
    let prefix = if has(&format!("{usr}/modules.dep")) {
        usr.clone()
    } else if has(&format!("{plain}/modules.dep")) || has(&plain) {
        plain.clone()
    } else if has(&usr) || ini.find("lib").is_some_and(|m| m.is_symlink()) {
        usr.clone()
    } else {
        plain.clone()
    };
    let under = |p: &str| -> Option<String> {
        [&usr, &plain]
            .iter()
            .find_map(|pre| {
                p.strip_prefix(pre.as_str())
                    .and_then(|r| r.strip_prefix('/'))
            })
            .map(str::to_string)
    };

    // The image's modules: name -> path relative to its modules directory.
    let mut img_path: HashMap<String, String> = HashMap::new();
    let mut img_plain_only = true;
    let mut img_any = false;
    for m in ini.members() {
        if let Some(rel) = under(m.path()) {
            if let Some(n) = modules_dep::module_name_of_path(&rel) {
                img_any = true;
                img_plain_only &= rel.ends_with(".ko");
                img_path.entry(n).or_insert(rel);
            }
        }
    }
    let decompress = img_any && img_plain_only;

    // What to add.
    let mut to_add: Vec<String> = Vec::new();
    let mut early: Vec<String> = Vec::new();
    for w in wanted {
        let n = modules_dep::normalize(w);
        if gbuiltin.contains(&n) {
            if !rep.builtin.contains(&n) {
                rep.builtin.push(n);
            }
            continue;
        }
        if img_path.contains_key(&n) {
            if !rep.already_present.contains(&n) {
                rep.already_present.push(n.clone());
            }
            if !early.contains(&n) {
                early.push(n);
            }
            continue;
        }
        if gdep.get(&n).is_none() {
            if !rep.missing.contains(&n) {
                rep.missing.push(n);
            }
            continue;
        }
        if !to_add.contains(&n) {
            to_add.push(n.clone());
        }
        if !early.contains(&n) {
            early.push(n);
        }
    }
    // Soft "pre:" dependencies the guest has (crc32c before its users, ...).
    let mut with_soft = to_add.clone();
    for n in &to_add {
        for sd in gsoft.iter().filter(|s| &s.module == n) {
            for p in &sd.pre {
                if gdep.get(p).is_some() && !gbuiltin.contains(p) && !with_soft.contains(p) {
                    with_soft.insert(0, p.clone());
                }
            }
        }
    }
    let refs: Vec<&str> = with_soft.iter().map(String::as_str).collect();
    let closure = gdep.closure(&refs);
    for (m, by) in &closure.missing {
        if gbuiltin.contains(m) {
            continue;
        }
        rep.warnings
            .push(format!("{m}, needed by {by}, is not in {gdir}/modules.dep"));
        if !rep.missing.contains(m) {
            rep.missing.push(m.clone());
        }
    }
    for c in &closure.cycles {
        rep.warnings.push(format!(
            "{gdir}/modules.dep: {c} depends on itself through its dependencies"
        ));
    }
    let needed_by = needed_by_map(&gdep, &to_add);

    // The archive that receives them: the one holding the image's modules.dep, else the
    // last archive of the last segment.
    let target = locate(ini, |m| under(m.path()).is_some_and(|r| r == "modules.dep"))
        .or_else(|| locate(ini, |m| under(m.path()).is_some()))
        .unwrap_or_else(|| {
            let s = ini.layout.segments.len().saturating_sub(1);
            let a = ini
                .layout
                .segments
                .get(s)
                .map_or(0, |x| x.archives.len().saturating_sub(1));
            (s, a)
        });
    let mtime = ini
        .find(&format!("{prefix}/modules.dep"))
        .or_else(|| ini.find(&prefix))
        .map(|m| m.mtime)
        .unwrap_or(0);
    let mut existing_paths: BTreeSet<String> =
        ini.members().map(|m| m.path().to_string()).collect();

    // Copy the modules.
    let mut new_entries: Vec<DepEntry> = Vec::new();
    let mut new_files: Vec<(String, Vec<u8>)> = Vec::new();
    for name in &closure.order {
        if img_path.contains_key(name) || gbuiltin.contains(name) {
            continue;
        }
        let Some(e) = gdep.get(name) else { continue };
        let src = if e.path.starts_with('/') {
            e.path.clone()
        } else {
            format!("{gdir}/{}", e.path)
        };
        let mut data = guest
            .read(&src, MAX_MODULE)
            .map_err(|err| refused(format!("reading {src}: {err}")))?;
        let mut rel = e.path.trim_start_matches('/').to_string();
        if e.path.starts_with('/') {
            rel = rel
                .rsplit('/')
                .next()
                .map(|b| format!("extra/{b}"))
                .unwrap_or(rel);
        }
        let mut was_decompressed = false;
        if decompress {
            if let Some((stem, kind)) = compressed_module(&rel) {
                let (plain_ko, _) = compression::decode(kind, &data, 0, MAX_MODULE * 4)
                    .map_err(|err| refused(format!("decompressing {src}: {err}")))?;
                data = plain_ko;
                rel = stem;
                was_decompressed = true;
            }
        }
        img_path.insert(name.clone(), rel.clone());
        let path = format!("{prefix}/{rel}");
        rep.added.push(AddedModule {
            name: name.clone(),
            path: path.clone(),
            source: src,
            needed_by: needed_by.get(name).cloned(),
            decompressed: was_decompressed,
        });
        new_entries.push(DepEntry {
            path: rel,
            name: name.clone(),
            deps: Vec::new(),
        });
        new_files.push((path, data));
    }
    // Their dependency lines, with paths as they are in the image.
    for e in &mut new_entries {
        let Some(g) = gdep.get(&e.name) else { continue };
        for d in &g.deps {
            let dn = gdep
                .by_path(d)
                .map(|x| x.name.clone())
                .or_else(|| modules_dep::module_name_of_path(d));
            match dn.and_then(|n| img_path.get(&n).cloned()) {
                Some(p) => e.deps.push(p),
                None => e.deps.push(d.clone()),
            }
        }
    }

    let (si, ai) = target;
    let seg_changed;
    {
        let archive = &mut ini.layout.segments[si].archives[ai];
        let mut next_ino = archive.members.iter().map(|m| m.ino).max().unwrap_or(0);
        let mut add = |archive: &mut Archive, m: Member, existing: &mut BTreeSet<String>| {
            next_ino = next_ino.wrapping_add(1);
            existing.insert(m.path().to_string());
            archive.members.push(Member { ino: next_ino, ..m });
        };
        for (path, data) in new_files {
            for d in ancestors(&path) {
                if !existing_paths.contains(d) {
                    add(archive, Member::dir(d, 0o755, mtime), &mut existing_paths);
                }
            }
            add(
                archive,
                Member::file(&path, 0o644, mtime, data),
                &mut existing_paths,
            );
        }
        seg_changed = !rep.added.is_empty();
    }

    // Index files.
    if seg_changed {
        let text_of = |ini: &Initramfs, name: &str| -> Option<String> {
            ini.file_data(&format!("{prefix}/{name}"))
                .map(|b| String::from_utf8_lossy(b).into_owned())
        };
        let added_names: BTreeSet<&str> = rep.added.iter().map(|a| a.name.as_str()).collect();
        let (mut idep, w) = ModulesDep::parse(&text_of(ini, "modules.dep").unwrap_or_default());
        rep.warnings
            .extend(w.into_iter().map(|w| format!("{prefix}/{w}")));
        for e in new_entries {
            idep.push(e);
        }
        let mut files: Vec<(String, Vec<u8>)> =
            vec![("modules.dep".into(), idep.to_text().into_bytes())];
        let append_lines = |base: Option<String>,
                            guest_text: Option<String>,
                            key: &dyn Fn(&str) -> Option<String>| {
            let mut t = base.unwrap_or_default();
            if !t.is_empty() && !t.ends_with('\n') {
                t.push('\n');
            }
            for l in guest_text.unwrap_or_default().lines() {
                if key(l).is_some_and(|m| added_names.contains(m.as_str())) {
                    t.push_str(l);
                    t.push('\n');
                }
            }
            t
        };
        let alias_module = |l: &str| -> Option<String> {
            let mut w = l.split_whitespace();
            (w.next() == Some("alias")).then_some(())?;
            w.next()?;
            w.next().map(modules_dep::normalize)
        };
        let first_word = |l: &str| -> Option<String> {
            (!l.starts_with('#'))
                .then(|| l.split_whitespace().next().map(modules_dep::normalize))
                .flatten()
        };
        let alias = append_lines(
            text_of(ini, "modules.alias"),
            gtext("modules.alias")?,
            &alias_module,
        );
        let symbols = append_lines(
            text_of(ini, "modules.symbols"),
            gtext("modules.symbols")?,
            &alias_module,
        );
        files.push(("modules.dep.bin".into(), kmod_index::dep_bin(&idep)?));
        files.push((
            "modules.alias.bin".into(),
            kmod_index::alias_bin(&alias, &idep, true)?,
        ));
        files.push((
            "modules.symbols.bin".into(),
            kmod_index::alias_bin(&symbols, &idep, false)?,
        ));
        files.push(("modules.alias".into(), alias.into_bytes()));
        files.push(("modules.symbols".into(), symbols.into_bytes()));
        if let Some(devname) = text_of(ini, "modules.devname") {
            let t = append_lines(Some(devname), gtext("modules.devname")?, &first_word);
            files.push(("modules.devname".into(), t.into_bytes()));
        }
        if let Some(mut order) = text_of(ini, "modules.order") {
            if !order.is_empty() && !order.ends_with('\n') {
                order.push('\n');
            }
            for a in &rep.added {
                if let Some(rel) = under(&a.path) {
                    order.push_str(&rel);
                    order.push('\n');
                }
            }
            files.push(("modules.order".into(), order.into_bytes()));
        }
        if text_of(ini, "modules.builtin").is_none() {
            if let Some(b) = &gbuiltin_text {
                files.push(("modules.builtin".into(), b.clone().into_bytes()));
                files.push(("modules.builtin.bin".into(), kmod_index::builtin_bin(b)?));
            }
        }
        if text_of(ini, "modules.softdep").is_none() {
            if let Some(s) = gtext("modules.softdep")? {
                files.push(("modules.softdep".into(), s.into_bytes()));
            }
        }
        for bin in ["modules.builtin.alias.bin", "modules.builtin.modinfo"] {
            if ini.file_data(&format!("{prefix}/{bin}")).is_none() {
                let p = format!("{gdir}/{bin}");
                if guest.exists(&p) {
                    if let Ok(b) = guest.read(&p, MAX_INDEX) {
                        files.push((bin.to_string(), b));
                    }
                }
            }
        }
        for (name, data) in files {
            let path = format!("{prefix}/{name}");
            put_file(ini, (si, ai), &path, data, mtime, &mut existing_paths);
            rep.index_files.push(path);
        }
    }

    // Early load.
    let early: Vec<&str> = early.iter().map(String::as_str).collect();
    if !early.is_empty() {
        match ini.generator() {
            Generator::InitramfsTools => {
                let old = ini
                    .file_data("conf/modules")
                    .map(|b| String::from_utf8_lossy(b).into_owned())
                    .unwrap_or_default();
                let p = generator::patch_initramfs_tools_modules("/conf/modules", &old, &early);
                if let Some(t) = p.text {
                    let names = p.edits.iter().map(|e| e.after.clone()).collect();
                    put_file(
                        ini,
                        (si, ai),
                        "conf/modules",
                        t.into_bytes(),
                        mtime,
                        &mut existing_paths,
                    );
                    rep.early_load = Some(("conf/modules".into(), names));
                }
            }
            Generator::Dracut => {
                let content = format!("rd.driver.pre={}\n", early.join(","));
                if ini.file_data(DRACUT_CMDLINE) != Some(content.as_bytes()) {
                    put_file(
                        ini,
                        (si, ai),
                        DRACUT_CMDLINE,
                        content.into_bytes(),
                        mtime,
                        &mut existing_paths,
                    );
                    rep.early_load = Some((
                        DRACUT_CMDLINE.into(),
                        early.iter().map(|s| s.to_string()).collect(),
                    ));
                }
            }
            g => rep.warnings.push(format!(
                "no early-load list is known for a {g:?} image: the added drivers load only \
                 when something asks for them (udev, the init script)"
            )),
        }
    }
    Ok(rep)
}

/// Replaces (or adds, with its parent folders) a regular file in archive `loc`.
fn put_file(
    ini: &mut Initramfs,
    loc: Loc,
    path: &str,
    data: Vec<u8>,
    mtime: u32,
    existing: &mut BTreeSet<String>,
) {
    let seg = &mut ini.layout.segments[loc.0];
    seg.changed = true;
    let archive = &mut seg.archives[loc.1];
    if let Some(m) = archive
        .members
        .iter_mut()
        .rev()
        .find(|m| m.path() == path && m.is_file())
    {
        m.data = data;
        m.nlink = 1;
        return;
    }
    let mut ino = archive.members.iter().map(|m| m.ino).max().unwrap_or(0);
    for d in ancestors(path) {
        if existing.insert(d.to_string()) {
            ino = ino.wrapping_add(1);
            archive.members.push(Member {
                ino,
                ..Member::dir(d, 0o755, mtime)
            });
        }
    }
    existing.insert(path.to_string());
    archive.members.push(Member {
        ino: ino.wrapping_add(1),
        ..Member::file(path, 0o644, mtime, data)
    });
}

/// "a/b/c.ko" -> ["a", "a/b"].
fn ancestors(path: &str) -> Vec<&str> {
    path.match_indices('/').map(|(i, _)| &path[..i]).collect()
}

/// "x.ko.xz" -> ("x.ko", Xz).
fn compressed_module(rel: &str) -> Option<(String, Compression)> {
    [
        (".ko.xz", Compression::Xz),
        (".ko.zst", Compression::Zstd),
        (".ko.gz", Compression::Gzip),
    ]
    .iter()
    .find_map(|(s, k)| rel.strip_suffix(s).map(|stem| (format!("{stem}.ko"), *k)))
}

/// For each dependency of the wanted modules, the first wanted module that needs it.
fn needed_by_map(dep: &ModulesDep, wanted: &[String]) -> HashMap<String, String> {
    let mut out = HashMap::new();
    for w in wanted {
        let c = dep.closure(&[w.as_str()]);
        for n in c.order {
            if &n != w && !wanted.contains(&n) {
                out.entry(n).or_insert_with(|| w.clone());
            }
        }
    }
    out
}
