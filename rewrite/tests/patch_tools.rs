//! The patchers' output read back by the tools that read these files in a guest:
//! `grub-editenv` (grubenv), `grub-script-check` (grub.cfg), libmount through `findmnt`
//! (fstab), `lvmconfig` (lvm.conf), `sh` (/etc/default/grub's shell quoting).

use std::path::{Path, PathBuf};
use std::process::Command;
use transplant_rewrite::patch::{fstab, grub2, lvm_conf};
use transplant_rewrite::{Context, GuestVolume, Target};

fn have(tool: &str) -> bool {
    let ok = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !ok && std::env::var_os("CI").is_some() {
        panic!("{tool} is required when CI is set");
    }
    ok
}

struct TempDir(PathBuf);
impl TempDir {
    fn new(name: &str) -> Self {
        let p =
            std::env::temp_dir().join(format!("transplant-patch-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    fn path(&self, f: &str) -> PathBuf {
        self.0.join(f)
    }
}
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

const ROOT: &str = "9e8d7c6b-5a49-4838-a726-151413121110";
const SWAP: &str = "5c1d7e2a-3b4f-4a6e-8d9c-0e1f2a3b4c5d";

fn ctx(target: Target) -> Context {
    let mut c = Context::new(target);
    let vol = |p: Option<u32>, uuid: Option<&str>| GuestVolume {
        disk: Some(0),
        partition: p,
        uuid: uuid.map(str::to_string),
        ..Default::default()
    };
    c.volumes = vec![
        vol(None, None),
        vol(Some(1), Some("0b8a1c2e-7f0d-4f7e-9a55-1d2b3c4d5e6f")),
        vol(Some(2), Some(SWAP)),
        vol(Some(3), Some(ROOT)),
    ];
    c
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn grubenv_read_back_by_grub_editenv() {
    if !have("grub-editenv") {
        return;
    }
    let d = TempDir::new("grubenv");
    let env = d.path("grubenv");
    run(Command::new("grub-editenv").arg(&env).arg("create"));
    run(Command::new("grub-editenv").arg(&env).args([
        "set",
        "saved_entry=ffd8-4.18.0-513.el8.x86_64",
        "kernelopts=root=/dev/sda3 ro resume=/dev/sda2 console=hvc0 rd.lvm.lv=rhel/swap ",
        "boot_success=0",
    ]));
    let text = std::fs::read_to_string(&env).unwrap();
    let p = grub2::patch_grubenv("/boot/grub2/grubenv", &text, &ctx(Target::Kvm));
    let new = p.text.expect("changed");
    assert_eq!(new.len(), 1024);
    std::fs::write(&env, &new).unwrap();
    let list = run(Command::new("grub-editenv").arg(&env).arg("list"));
    assert_eq!(
        list,
        format!(
            "saved_entry=ffd8-4.18.0-513.el8.x86_64\n\
             kernelopts=root=UUID={ROOT} ro resume=UUID={SWAP} console=ttyS0 rd.lvm.lv=rhel/swap \n\
             boot_success=0\n"
        )
    );
    // grub-editenv can still edit the block we wrote.
    run(Command::new("grub-editenv")
        .arg(&env)
        .args(["set", "boot_success=1"]));
    assert_eq!(std::fs::metadata(&env).unwrap().len(), 1024);
}

#[test]
fn grub_cfg_passes_grub_script_check() {
    if !have("grub-script-check") {
        return;
    }
    let cfg = "\
set default=\"0\"
if [ -s $prefix/grubenv ]; then
  load_env
fi
insmod part_msdos
insmod ext2
set root='hd0,msdos1'
search --no-floppy --fs-uuid --set=root 0b8a1c2e-7f0d-4f7e-9a55-1d2b3c4d5e6f
menuentry 'Ubuntu, with Linux 4.15.0-213-generic' --class ubuntu $menuentry_id_option 'gnulinux-4.15.0-213-generic-advanced-9e8d' {
\trecordfail
\tload_video
\tgfxmode $linux_gfx_mode
\tinsmod gzio
\tif [ x$grub_platform = xxen ]; then insmod xzio; insmod lzopio; fi
\tlinux\t/vmlinuz-4.15.0-213-generic root=/dev/xvda3 ro  console=hvc0 xencons=tty quiet splash $vt_handoff
\tinitrd\t/initrd.img-4.15.0-213-generic
}
if [ -z \"${kernelopts}\" ]; then
  set kernelopts=\"root=/dev/sda3 ro resume=/dev/sda2 \"
fi
";
    let p = grub2::patch_cfg("/boot/grub/grub.cfg", cfg, &ctx(Target::Kvm));
    let new = p.text.expect("changed");
    assert_eq!(p.edits.len(), 2);
    let d = TempDir::new("grubcfg");
    std::fs::write(d.path("grub.cfg"), &new).unwrap();
    run(Command::new("grub-script-check").arg(d.path("grub.cfg")));
    assert!(new.contains(&format!(
        "root=UUID={ROOT} ro  console=ttyS0 quiet splash $vt_handoff\n"
    )));
}

#[test]
fn default_grub_quoting_survives_sh() {
    if !have("sh") {
        return;
    }
    let t = "GRUB_DEFAULT=0\n\
             GRUB_CMDLINE_LINUX_DEFAULT='quiet console=hvc0'\n\
             GRUB_CMDLINE_LINUX=\"root=/dev/sda3 \\\"x=a b\\\" resume=/dev/sda2\"\n\
             export GRUB_DEVICE=/dev/xvda3 # set by hand\n\
             GRUB_CMDLINE_LINUX_RECOVERY=root=/dev/sda3\n";
    let p = grub2::patch_defaults("/etc/default/grub", t, &ctx(Target::Kvm));
    let new = p.text.expect("changed");
    let d = TempDir::new("defaults");
    std::fs::write(d.path("grub"), &new).unwrap();
    let script = format!(
        ". {}; printf '%s|' \"$GRUB_CMDLINE_LINUX_DEFAULT\" \"$GRUB_CMDLINE_LINUX\" \"$GRUB_DEVICE\" \"$GRUB_CMDLINE_LINUX_RECOVERY\"",
        d.path("grub").display()
    );
    let out = run(Command::new("sh").arg("-c").arg(script));
    assert_eq!(
        out,
        format!(
            "quiet console=ttyS0|root=UUID={ROOT} \"x=a b\" resume=UUID={SWAP}|UUID={ROOT}|root=UUID={ROOT}|"
        )
    );
}

fn findmnt_sources(file: &Path) -> String {
    run(Command::new("findmnt")
        .arg("--fstab")
        .arg("--tab-file")
        .arg(file)
        .args(["-n", "-r", "-o", "SOURCE,TARGET,FSTYPE,OPTIONS"]))
}

#[test]
fn fstab_parsed_by_libmount() {
    if !have("findmnt") {
        return;
    }
    let t = "# /etc/fstab\n\
             /dev/sda3\t/\text4\terrors=remount-ro\t0\t1\n\
             /dev/sda1       /boot           ext4    defaults,nofail        0       2\n\
             /dev/sda2 none swap sw 0 0\n\
             .host:/ /mnt/hgfs fuse.vmhgfs-fuse allow_other,defaults 0 0\n\
             /dev/sdb1 /data ext4 defaults 0 2\n\
             proc /proc proc defaults 0 0";
    let mut c = ctx(Target::Kvm);
    c.volumes.push(GuestVolume {
        disk: Some(0),
        partition: Some(4),
        label: Some("my data".into()),
        ..Default::default()
    });
    let t = format!("{t}\n/dev/sda4 /srv xfs defaults 0 0\n");
    let p = fstab::patch("/etc/fstab", &t, &c);
    let new = p.text.expect("changed");
    assert_eq!(p.warnings.len(), 1, "sdb1 matches no disk");
    let d = TempDir::new("fstab");
    std::fs::write(d.path("fstab"), &new).unwrap();
    // libmount reports UUID= sources as the tag it was given.
    assert_eq!(
        findmnt_sources(&d.path("fstab")),
        format!(
            "UUID={ROOT} / ext4 errors=remount-ro\n\
             UUID=0b8a1c2e-7f0d-4f7e-9a55-1d2b3c4d5e6f /boot ext4 defaults,nofail\n\
             UUID={SWAP} none swap sw\n\
             /dev/sdb1 /data ext4 defaults\n\
             proc /proc proc defaults\n\
             LABEL=my\\x20data /srv xfs defaults\n"
        )
    );
    // -J prints the decoded value: the label with its space.
    let json = run(Command::new("findmnt")
        .arg("--fstab")
        .arg("--tab-file")
        .arg(d.path("fstab"))
        .args(["-J", "-o", "SOURCE", "/srv"]));
    assert!(json.contains("\"LABEL=my data\""), "{json}");
}

#[test]
fn lvm_conf_read_back_by_lvmconfig() {
    if !have("lvmconfig") {
        return;
    }
    let t = "config {\n    checks = 1\n}\n\
             devices {\n\
             \tdir = \"/dev\"\n\
             \t# filter = [ \"a|sda|\" ]\n\
             \tfilter = [ \"a|^/dev/sda[0-9]*$|\", \"a|/dev/disk/by-id/lvm-pv-uuid-.*|\",\n\
             \t           \"r|.*|\" ]\n\
             \tglobal_filter = \"a/xvdb/\"\n\
             }\n";
    let d = TempDir::new("lvm");
    for (target, filter, global) in [
        (
            Target::Kvm,
            "filter=[\"a|^/dev/vda[0-9]*$|\",\"a|/dev/disk/by-id/lvm-pv-uuid-.*|\",\"r|.*|\"]",
            "global_filter=\"a/vdb/\"",
        ),
        (
            Target::Physical,
            "filter=[\"a|.*|\",\"a|/dev/disk/by-id/lvm-pv-uuid-.*|\",\"r|.*|\"]",
            "global_filter=\"a/.*/\"",
        ),
    ] {
        let p = lvm_conf::patch("/etc/lvm/lvm.conf", t, &ctx(target));
        std::fs::write(d.path("lvm.conf"), p.text.expect("changed")).unwrap();
        let out = run(Command::new("lvmconfig")
            .env("LVM_SYSTEM_DIR", &d.0)
            .args(["devices/filter", "devices/global_filter"]));
        // lvmconfig prints one-element arrays as a plain string.
        assert_eq!(out, format!("{filter}\n{global}\n"), "{target:?}");
    }
}
