//! The initramfs code against real tools: GNU cpio, the compressors' CLIs, depmod's own
//! index files, initramfs-tools' and dracut's images of a real Debian kernel, and kmod's
//! modprobe/modinfo reading the indexes written here.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use transplant_fs::FileKind;
use transplant_rewrite::initramfs::{
    kmod_index, kmod_index::NodeOrder, modules_dep::ModulesDep, ChangeKind, Compression, Generator,
    Initramfs,
};
use transplant_rewrite::{GuestFiles, Target};

fn have(tool: &str) -> bool {
    let ok = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool} >/dev/null"))
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !ok && std::env::var_os("CI").is_some() {
        panic!("{tool} is required when CI is set");
    }
    ok
}

fn sh(script: &str) -> Vec<u8> {
    let out = Command::new("bash")
        .arg("-c")
        .arg(format!("set -euo pipefail; {script}"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn build_sh() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/initramfs/build.sh")
}

fn cache() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("initramfs-fixtures")
}

/// The unpacked Debian kernel (root with lib/modules/KVER), or None without the tools.
fn kernel() -> Option<&'static (PathBuf, String)> {
    static K: OnceLock<Option<(PathBuf, String)>> = OnceLock::new();
    K.get_or_init(|| {
        if !(have("apt-get") && have("dpkg-deb") && have("depmod") && have("flock")) {
            return None;
        }
        let out = sh(&format!(
            "{} kernel {}",
            build_sh().display(),
            cache().display()
        ));
        let kver = String::from_utf8(out).unwrap().trim().to_string();
        Some((cache().join("kernel"), kver))
    })
    .as_ref()
}

/// An initramfs-tools image (MODULES=list) of the fixture kernel, made once per kind.
fn mkinitramfs_image(comp: &str) -> Option<Vec<u8>> {
    kernel()?;
    if !(have("mkinitramfs") && have("unshare")) {
        return None;
    }
    let out = cache().join(format!("initrd-tools.{comp}"));
    if !out.exists() {
        sh(&format!(
            "{} mkinitramfs {} {o}.tmp {comp} && mv {o}.tmp {o}",
            build_sh().display(),
            cache().display(),
            o = out.display(),
        ));
    }
    Some(std::fs::read(out).unwrap())
}

fn dracut_image() -> Option<Vec<u8>> {
    kernel()?;
    if !(have("dracut") && have("unshare")) {
        return None;
    }
    let out = cache().join("initrd-dracut.xz");
    if !out.exists() {
        sh(&format!(
            "{} dracut {} {o}.tmp && mv {o}.tmp {o}",
            build_sh().display(),
            cache().display(),
            o = out.display(),
        ));
    }
    Some(std::fs::read(out).unwrap())
}

/// A guest tree on the host (the fixture kernel's root), read through the trait.
struct HostDir(PathBuf);

impl HostDir {
    fn p(&self, path: &str) -> PathBuf {
        self.0.join(path.trim_start_matches('/'))
    }
}

impl GuestFiles for HostDir {
    fn read(&self, path: &str, max: u64) -> Result<Vec<u8>, String> {
        let d = std::fs::read(self.p(path)).map_err(|e| e.to_string())?;
        if d.len() as u64 > max {
            return Err("too large".into());
        }
        Ok(d)
    }
    fn kind(&self, path: &str) -> Option<FileKind> {
        let m = std::fs::metadata(self.p(path)).ok()?;
        Some(if m.is_dir() {
            FileKind::Dir
        } else {
            FileKind::File
        })
    }
    fn list(&self, dir: &str) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(self.p(dir))
            .map(|r| {
                r.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }
    fn read_link(&self, path: &str) -> Option<String> {
        std::fs::read_link(self.p(path))
            .ok()
            .map(|p| p.to_string_lossy().into_owned())
    }
    fn size(&self, path: &str) -> Option<u64> {
        std::fs::metadata(self.p(path)).ok().map(|m| m.len())
    }
}

#[test]
fn kmod_indexes_match_depmod_byte_for_byte() {
    let Some((root, kver)) = kernel() else { return };
    let dir = root.join("lib/modules").join(kver);
    let text = |n: &str| std::fs::read_to_string(dir.join(n)).unwrap();
    let bin = |n: &str| std::fs::read(dir.join(n)).unwrap();
    let (dep, warnings) = ModulesDep::parse(&text("modules.dep"));
    assert!(warnings.is_empty(), "{warnings:?}");
    assert!(dep.entries().len() > 500);
    // depmod wrote nodes children-first up to kmod 33, parents-first since 34.
    let version = String::from_utf8(sh("depmod --version | head -1")).unwrap();
    let major: u32 = version
        .split(|c: char| !c.is_ascii_digit())
        .find(|s| !s.is_empty())
        .and_then(|s| s.parse().ok())
        .unwrap();
    let order = if major >= 34 {
        NodeOrder::PreOrder
    } else {
        NodeOrder::PostOrder
    };
    let same = |b: kmod_index::IndexBuilder, file: &str| {
        let ours = b.to_bytes_in(order).unwrap();
        let theirs = bin(file);
        assert!(
            ours == theirs,
            "{file}: {} vs {} bytes",
            ours.len(),
            theirs.len()
        );
    };
    same(kmod_index::dep_index(&dep).unwrap(), "modules.dep.bin");
    same(
        kmod_index::alias_index(&text("modules.alias"), &dep, true).unwrap(),
        "modules.alias.bin",
    );
    same(
        kmod_index::alias_index(&text("modules.symbols"), &dep, false).unwrap(),
        "modules.symbols.bin",
    );
    same(
        kmod_index::builtin_index(&text("modules.builtin")).unwrap(),
        "modules.builtin.bin",
    );
    // And the reader reads depmod's files.
    let b = bin("modules.dep.bin");
    let idx = kmod_index::Index::open(&b).unwrap();
    let v = idx.lookup("virtio_blk").unwrap();
    assert_eq!(v.len(), 1);
    assert!(
        v[0].1.starts_with("kernel/drivers/block/virtio_blk.ko:"),
        "{v:?}"
    );
    assert_eq!(idx.entries(1 << 20).unwrap().len(), dep.entries().len());
}

/// A small tree with the kinds of entries an initramfs holds.
fn sample_tree(dir: &Path) {
    sh(&format!(
        "cd {d} && mkdir -p etc/cmdline.d usr/bin conf kernel/x86/microcode && \
         printf '/dev/sda1 / ext4 defaults 0 1\\n' > etc/fstab && \
         printf 'root=/dev/sda1\\n' > etc/cmdline.d/10-root.conf && \
         printf 'RESUME=/dev/sda2\\n' > conf/param.conf && : > conf/empty && \
         head -c 100003 /dev/urandom > usr/bin/blob && ln usr/bin/blob usr/bin/blob2 && \
         ln -s usr/bin bin && printf '#!/bin/sh\\n' > init && chmod 755 init",
        d = dir.display()
    ));
}

fn cpio_of(dir: &Path, format: &str) -> Vec<u8> {
    sh(&format!(
        "cd {} && find . -mindepth 1 | LC_ALL=C sort | cpio --quiet -o -H {format}",
        dir.display()
    ))
}

/// path -> (kind, content) of an extracted tree.
fn tree(dir: &Path) -> BTreeMap<String, (String, Vec<u8>)> {
    let out = sh(&format!(
        "cd {} && find . -mindepth 1 -printf '%y %P\\n' | LC_ALL=C sort",
        dir.display()
    ));
    let mut m = BTreeMap::new();
    for l in String::from_utf8(out).unwrap().lines() {
        let (k, p) = l.split_once(' ').unwrap();
        let full = dir.join(p);
        let data = match k {
            "f" => std::fs::read(&full).unwrap(),
            "l" => std::fs::read_link(&full)
                .unwrap()
                .to_string_lossy()
                .into_owned()
                .into_bytes(),
            _ => Vec::new(),
        };
        m.insert(p.to_string(), (k.to_string(), data));
    }
    m
}

fn extract(cpio: &[u8], into: &Path) {
    std::fs::create_dir_all(into).unwrap();
    let f = into.with_extension("cpio");
    std::fs::write(&f, cpio).unwrap();
    sh(&format!(
        "cd {} && cpio --quiet -id --no-absolute-filenames < {}",
        into.display(),
        f.display()
    ));
}

fn fstab_to_vda(name: &str, data: &[u8]) -> Option<Vec<u8>> {
    (name.ends_with("etc/fstab") || name.ends_with("param.conf")).then(|| {
        String::from_utf8_lossy(data)
            .replace("/dev/sda", "/dev/vda")
            .into_bytes()
    })
}

#[test]
fn cpio_newc_and_crc_match_gnu_cpio() {
    if !have("cpio") {
        return;
    }
    for format in ["newc", "crc"] {
        let t = tempfile::tempdir().unwrap();
        let src = t.path().join("src");
        std::fs::create_dir(&src).unwrap();
        sample_tree(&src);
        let bytes = cpio_of(&src, format);
        let mut ir = Initramfs::parse(&bytes).unwrap();
        assert_eq!(ir.segments().len(), 1);
        assert_eq!(ir.segments()[0].compression, Compression::None);
        let listing = String::from_utf8(sh(&format!(
            "cd {} && find . -mindepth 1 | LC_ALL=C sort",
            src.display()
        )))
        .unwrap();
        let ours: Vec<String> = ir.member_names();
        let theirs: Vec<&str> = listing.lines().map(|l| &l[2..]).collect();
        assert_eq!(ours, theirs);
        // Unchanged: byte for byte.
        assert!(ir.to_bytes().unwrap() == bytes);
        // Hard link: the data sits on one entry, both read the same.
        assert_eq!(
            ir.file_data("usr/bin/blob").unwrap(),
            ir.file_data("/usr/bin/blob2").unwrap()
        );
        assert_eq!(ir.file_data("usr/bin/blob").unwrap().len(), 100003);
        // Rewrite, write, extract with GNU cpio: everything else is as it was.
        let changed = ir.rewrite_members(&mut fstab_to_vda);
        assert_eq!(changed, ["conf/param.conf", "etc/fstab"]);
        let out = ir.to_bytes().unwrap();
        let a = t.path().join("a");
        extract(&out, &a);
        let mut want = tree(&src);
        want.get_mut("etc/fstab").unwrap().1 = b"/dev/vda1 / ext4 defaults 0 1\n".to_vec();
        want.get_mut("conf/param.conf").unwrap().1 = b"RESUME=/dev/vda2\n".to_vec();
        assert_eq!(tree(&a), want);
        let d = ir.diff(&Initramfs::parse(&bytes).unwrap());
        assert_eq!(d.len(), 2);
        assert!(d.iter().all(|c| c.kind == ChangeKind::Changed));
    }
}

/// Removing a member (RHEL 9's LVM devices file) leaves every other entry as GNU cpio
/// packed it, and hard-linked members are never removed.
#[test]
fn removed_members_are_gone_and_the_rest_kept() {
    if !have("cpio") {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    std::fs::create_dir(&src).unwrap();
    sample_tree(&src);
    sh(&format!(
        "cd {} && mkdir -p etc/lvm/devices && \
         printf 'VERSION=1.1.1\\nIDTYPE=devname IDNAME=/dev/sda3 DEVNAME=/dev/sda3 PVID=x\\n' \
         > etc/lvm/devices/system.devices",
        src.display()
    ));
    let bytes = cpio_of(&src, "newc");
    let mut ir = Initramfs::parse(&bytes).unwrap();
    let removed = ir.remove_members(&|n| n.ends_with("system.devices") || n.ends_with("blob2"));
    assert_eq!(removed, ["etc/lvm/devices/system.devices"]);
    let out = ir.to_bytes().unwrap();
    let a = t.path().join("a");
    extract(&out, &a);
    let mut want = tree(&src);
    want.remove("etc/lvm/devices/system.devices");
    assert_eq!(tree(&a), want);
    let d = ir.diff(&Initramfs::parse(&bytes).unwrap());
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].kind, ChangeKind::Removed);
}

#[test]
fn every_compressor_keeps_the_early_archive_and_round_trips_through_its_cli() {
    if !(have("cpio") && have("lsinitramfs")) {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let early_dir = t.path().join("early");
    std::fs::create_dir_all(early_dir.join("kernel/x86/microcode")).unwrap();
    std::fs::write(
        early_dir.join("kernel/x86/microcode/GenuineIntel.bin"),
        vec![0x5a; 5000],
    )
    .unwrap();
    let early = cpio_of(&early_dir, "newc");
    let src = t.path().join("src");
    std::fs::create_dir(&src).unwrap();
    sample_tree(&src);
    let main = cpio_of(&src, "newc");
    let mainf = t.path().join("main.cpio");
    std::fs::write(&mainf, &main).unwrap();
    for (kind, tool, compress, decompress) in [
        (Compression::Gzip, "gzip", "gzip -9 -n -c", "gzip -dc"),
        (Compression::Xz, "xz", "xz --check=crc32 -c", "xz -dc"),
        (Compression::Zstd, "zstd", "zstd -q -19 -c", "zstd -qdc"),
        (Compression::Lz4Legacy, "lz4", "lz4 -q -9 -l -c", "lz4 -qdc"),
        (Compression::Lzma, "lzma", "lzma -c", "lzma -dc"),
        (Compression::Bzip2, "bzip2", "bzip2 -9 -c", "bzip2 -dc"),
    ] {
        if !have(tool) {
            continue;
        }
        let comp = sh(&format!("{compress} < {}", mainf.display()));
        let mut img = early.clone();
        img.extend_from_slice(&comp);
        let imgf = t.path().join(format!("img.{tool}"));
        std::fs::write(&imgf, &img).unwrap();
        let mut ir = Initramfs::parse(&img).unwrap();
        let segs = ir.segments();
        assert_eq!(segs.len(), 2, "{tool}");
        assert_eq!(segs[0].compression, Compression::None);
        assert_eq!(segs[1].compression, kind);
        assert_eq!(segs[1].offset, early.len() as u64);
        assert!(
            ir.to_bytes().unwrap() == img,
            "{tool}: unchanged image is byte-identical"
        );
        let before = sh(&format!("lsinitramfs {} | LC_ALL=C sort", imgf.display()));
        ir.rewrite_members(&mut fstab_to_vda);
        let out = ir.to_bytes().unwrap();
        assert!(
            out[..early.len()] == early[..],
            "{tool}: early archive kept byte for byte"
        );
        let outf = t.path().join(format!("out.{tool}"));
        std::fs::write(&outf, &out).unwrap();
        // lsinitramfs (initramfs-tools' reader) sees the same listing.
        let after = sh(&format!("lsinitramfs {} | LC_ALL=C sort", outf.display()));
        assert_eq!(
            String::from_utf8_lossy(&after),
            String::from_utf8_lossy(&before),
            "{tool}"
        );
        // The compressor's own CLI decodes the rebuilt segment; cpio extracts it.
        let plain = sh(&format!(
            "tail -c +{} {} | {decompress}",
            early.len() + 1,
            outf.display()
        ));
        let x = t.path().join(format!("x-{tool}"));
        extract(&plain, &x);
        let got = tree(&x);
        assert_eq!(
            got["etc/fstab"].1, b"/dev/vda1 / ext4 defaults 0 1\n",
            "{tool}"
        );
        assert_eq!(
            got["usr/bin/blob"].1,
            tree(&src)["usr/bin/blob"].1,
            "{tool}"
        );
        assert_eq!(got["bin"], ("l".to_string(), b"usr/bin".to_vec()));
        if kind == Compression::Xz {
            let info = String::from_utf8(sh(&format!(
                "tail -c +{} {} > {o}.xz && xz --robot -lvv {o}.xz",
                early.len() + 1,
                outf.display(),
                o = outf.display()
            )))
            .unwrap_or_default();
            assert!(
                info.contains("CRC32"),
                "xz check must be CRC32 for the kernel: {info}"
            );
        }
    }
}

fn modprobe_deps(root: &Path, kver: &str, module: &str) -> String {
    String::from_utf8(sh(&format!(
        "modprobe --dirname={} --set-version={kver} --show-depends {module}",
        root.display()
    )))
    .unwrap()
}

/// Unpacks an image with initramfs-tools' own unpacker.
fn unpack(img: &[u8], dir: &Path) -> PathBuf {
    let f = dir.join("image");
    std::fs::write(&f, img).unwrap();
    let x = dir.join("x");
    sh(&format!("unmkinitramfs {} {}", f.display(), x.display()));
    // With an early archive, unmkinitramfs puts the main one in main/.
    if x.join("main").is_dir() {
        x.join("main")
    } else {
        x
    }
}

#[test]
fn injects_kvm_drivers_into_an_initramfs_tools_image() {
    let Some((root, kver)) = kernel() else { return };
    if !(have("modprobe") && have("modinfo") && have("unmkinitramfs") && have("cpio")) {
        return;
    }
    let Some(image) = mkinitramfs_image("gzip") else {
        return;
    };
    // An early microcode archive in front, as on Intel machines.
    let t = tempfile::tempdir().unwrap();
    let ed = t.path().join("early");
    std::fs::create_dir_all(ed.join("kernel/x86/microcode")).unwrap();
    std::fs::write(ed.join("kernel/x86/microcode/GenuineIntel.bin"), [7u8; 999]).unwrap();
    let early = cpio_of(&ed, "newc");
    let mut img = early.clone();
    img.extend_from_slice(&image);

    let before = Initramfs::parse(&img).unwrap();
    assert_eq!(before.generator(), Generator::InitramfsTools);
    assert_eq!(before.kernel_versions(), vec![kver.to_string()]);
    assert!(!before.module_names().contains(&"virtio_blk".to_string()));
    let mut ir = before.clone();
    let mut wanted: Vec<&str> = Target::Kvm.initramfs_modules().to_vec();
    wanted.extend([
        "virtio_scsi",
        "sd_mod",
        "virtio_net",
        "nvme",
        "ahci",
        "no_such_driver",
    ]);
    let guest = HostDir(root.clone());
    let rep = ir.inject_modules(&guest, kver, &wanted).unwrap();
    let added: Vec<&str> = rep.added.iter().map(|a| a.name.as_str()).collect();
    for m in [
        "virtio",
        "virtio_ring",
        "virtio_pci",
        "virtio_blk",
        "virtio_scsi",
        "sd_mod",
        "scsi_mod",
        "virtio_net",
    ] {
        assert!(added.contains(&m), "{m} not added: {added:?}");
    }
    // The cloud kernel has no AHCI driver at all: reported, not guessed.
    assert!(rep.missing.contains(&"ahci".to_string()), "{rep:?}");
    assert!(rep.missing.contains(&"no_such_driver".to_string()));
    assert!(rep.builtin.contains(&"nvme".to_string()), "{rep:?}");
    let (file, names) = rep.early_load.clone().unwrap();
    assert_eq!(file, "conf/modules");
    assert!(names.contains(&"virtio_blk".to_string()));
    let out = ir.to_bytes().unwrap();
    assert!(out[..early.len()] == early[..], "early archive kept");
    let segs = ir.segments();
    assert!(!segs[0].changed && segs[1].changed);

    // Real tools read the result.
    let x = unpack(&out, t.path());
    let show = modprobe_deps(&x, kver, "virtio_blk");
    for m in ["virtio.ko", "virtio_ring.ko", "virtio_blk.ko"] {
        assert!(show.contains(m), "{show}");
    }
    assert!(show
        .lines()
        .all(|l| l.starts_with("insmod ") || l.starts_with("builtin ")));
    let show = modprobe_deps(&x, kver, "virtio_scsi");
    assert!(
        show.contains("scsi_mod.ko") && show.contains("virtio_scsi.ko"),
        "{show}"
    );
    let show = modprobe_deps(&x, kver, "nvme");
    assert!(show.contains("builtin nvme"), "{show}");
    // By alias too (what udev asks for): virtio PCI block device.
    let show = modprobe_deps(&x, kver, "virtio:d00000002v00001AF4");
    assert!(show.contains("virtio_blk.ko"), "{show}");
    let info = String::from_utf8(sh(&format!(
        "modinfo -b {} -k {kver} -F filename virtio_blk",
        x.display()
    )))
    .unwrap();
    assert!(
        info.trim().ends_with("kernel/drivers/block/virtio_blk.ko"),
        "{info}"
    );
    let conf = std::fs::read_to_string(x.join("conf/modules")).unwrap();
    assert!(conf.lines().any(|l| l == "virtio_blk"), "{conf}");
    // What was there still is.
    let d = ir.diff(&before);
    assert!(d
        .iter()
        .any(|c| c.kind == ChangeKind::Added && c.name.ends_with("virtio_blk.ko")));
    assert!(d.iter().all(|c| c.kind != ChangeKind::Removed));

    // Idempotent: a second pass adds nothing and changes no byte.
    let mut again = Initramfs::parse(&out).unwrap();
    let rep2 = again.inject_modules(&guest, kver, &wanted).unwrap();
    assert!(
        rep2.added.is_empty() && rep2.early_load.is_none(),
        "{rep2:?}"
    );
    assert!(again.to_bytes().unwrap() == out);
}

#[test]
fn compressed_guest_modules_are_decompressed_into_a_plain_image() {
    let Some((root, kver)) = kernel() else { return };
    if !(have("modprobe") && have("xz") && have("unmkinitramfs")) {
        return;
    }
    let Some(image) = mkinitramfs_image("zstd") else {
        return;
    };
    // A guest whose modules are .ko.xz, as Debian 13's are.
    let t = tempfile::tempdir().unwrap();
    let g = t.path().join("guest");
    let m = format!("lib/modules/{kver}");
    sh(&format!(
        "mkdir -p {g}/{m} && cd {r}/{m} && cp --parents kernel/drivers/virtio/virtio.ko \
         kernel/drivers/virtio/virtio_ring.ko kernel/drivers/block/virtio_blk.ko \
         modules.builtin modules.order {g}/{m}/ && find {g}/{m}/kernel -name '*.ko' | xargs xz \
         && depmod -b {g} {kver}",
        g = g.display(),
        r = root.display()
    ));
    let mut ir = Initramfs::parse(&image).unwrap();
    assert_eq!(ir.segments()[0].compression, Compression::Zstd);
    let rep = ir
        .inject_modules(&HostDir(g.clone()), kver, &["virtio_blk"])
        .unwrap();
    assert_eq!(rep.added.len(), 3, "{rep:?}");
    assert!(rep
        .added
        .iter()
        .all(|a| a.decompressed && a.path.ends_with(".ko")));
    let out = ir.to_bytes().unwrap();
    let x = unpack(&out, t.path());
    let show = modprobe_deps(&x, kver, "virtio_blk");
    assert!(show.contains("virtio_ring.ko"), "{show}");
    assert!(!show.contains(".xz"), "{show}");
}

#[test]
fn injects_into_a_dracut_image() {
    let Some((root, kver)) = kernel() else { return };
    if !(have("modprobe") && have("lsinitrd") && have("cpio") && have("xz")) {
        return;
    }
    let Some(image) = dracut_image() else { return };
    let mut ir = Initramfs::parse(&image).unwrap();
    assert_eq!(ir.generator(), Generator::Dracut);
    assert_eq!(ir.segments().last().unwrap().compression, Compression::Xz);
    let rep = ir
        .inject_modules(
            &HostDir(root.clone()),
            kver,
            Target::Kvm.initramfs_modules(),
        )
        .unwrap();
    assert!(rep.added.iter().any(|a| a.name == "virtio_blk"), "{rep:?}");
    let (file, _) = rep.early_load.clone().unwrap();
    assert_eq!(file, "etc/cmdline.d/50-transplant.conf");
    let out = ir.to_bytes().unwrap();
    let t = tempfile::tempdir().unwrap();
    let f = t.path().join("img");
    std::fs::write(&f, &out).unwrap();
    // dracut's own lister reads it and shows the new files.
    let list = String::from_utf8(sh(&format!("lsinitrd {}", f.display()))).unwrap();
    assert!(list.contains("virtio_blk.ko"), "{list}");
    let cmdline = sh(&format!(
        "lsinitrd -f etc/cmdline.d/50-transplant.conf {}",
        f.display()
    ));
    assert_eq!(
        String::from_utf8(cmdline).unwrap(),
        "rd.driver.pre=virtio_pci,virtio_blk\n"
    );
    let x = t.path().join("x");
    std::fs::create_dir(&x).unwrap();
    let plain = sh(&format!("xz -dc < {}", f.display()));
    extract(&plain, &x);
    let show = modprobe_deps(&x, kver, "virtio_pci");
    assert!(show.contains("virtio_pci_modern_dev.ko"), "{show}");
}
