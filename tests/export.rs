//! VMware exports end to end: OVAs (plain, pax with a long name, gzip), an OVF folder, VMX
//! folders (a split twoGbMaxExtentSparse disk, a snapshot chain), a wrong manifest digest
//! and a hostile member name, built by fixtures/sets/ova.sh with qemu-img, mkfs.ext4,
//! sfdisk and tar; converted one by one and in batch. Disks are compared with the sources
//! by `qemu-img compare`, checked by `qemu-img check`, and the domain XML is validated by
//! `virt-xml-validate` and defined by `virsh -c test:///default`.

mod common;
use common::have;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_transplant"))
}

fn run(args: &[&str], cwd: &Path) -> Output {
    bin().args(args).current_dir(cwd).output().unwrap()
}

fn tools() -> bool {
    [
        "qemu-img",
        "qemu-io",
        "mkfs.ext4",
        "sfdisk",
        "tar",
        "gzip",
        "python3",
    ]
    .iter()
    .all(|t| have(t))
}

fn fixtures() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures");
    let st = Command::new("bash")
        .arg(root.join("build.sh"))
        .arg("ova")
        .status()
        .unwrap();
    assert!(st.success(), "fixtures/build.sh ova failed");
    root.join("out/ova")
}

fn text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn info_json(f: &Path, input: &str) -> serde_json::Value {
    let o = run(&["info", "--json", input], f);
    assert!(o.status.success(), "{}", text(&o));
    serde_json::from_slice(&o.stdout).unwrap()
}

/// A root disk converted --to a KVM target: qemu-img finds it clean, and its fstab names
/// the root by UUID.
fn rewritten_root(disk: &Path) {
    let o = Command::new("qemu-img")
        .arg("check")
        .arg(disk)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}: {}", disk.display(), text(&o));
    let o = Command::new(env!("CARGO_BIN_EXE_transplant"))
        .arg("cat")
        .arg(format!("{}:/etc/fstab", disk.display()))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let fstab = String::from_utf8_lossy(&o.stdout);
    assert!(fstab.starts_with("UUID="), "{}: {fstab}", disk.display());
}

fn qemu_same(a: &Path, b: &Path) {
    let o = Command::new("qemu-img")
        .arg("compare")
        .arg(a)
        .arg(b)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "qemu-img compare {} {}: {}",
        a.display(),
        b.display(),
        text(&o)
    );
    if b.extension().is_some_and(|e| e == "qcow2") {
        let o = Command::new("qemu-img")
            .arg("check")
            .arg(b)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "qemu-img check {}: {}",
            b.display(),
            text(&o)
        );
    }
}

fn check_xml(xml: &Path) {
    if have("virt-xml-validate") && have("xmllint") {
        let o = Command::new("virt-xml-validate")
            .arg(xml)
            .arg("domain")
            .output()
            .unwrap();
        assert!(o.status.success(), "virt-xml-validate: {}", text(&o));
    }
    if have("virsh") {
        let o = Command::new("virsh")
            .args(["-c", "test:///default", "define"])
            .arg(xml)
            .output()
            .unwrap();
        assert!(o.status.success(), "virsh define: {}", text(&o));
    }
}

#[test]
fn info_describes_every_kind_of_export() {
    if !tools() {
        return;
    }
    let f = fixtures();
    let v = info_json(&f, "web01.ova");
    assert_eq!(v["guest"]["name"], "web01");
    assert_eq!(v["guest"]["source"], "ova");
    assert_eq!(v["guest"]["firmware"], "efi");
    assert_eq!(v["guest"]["memory_mib"], 1536);
    assert_eq!(v["guest"]["cpus"], 2);
    assert_eq!(v["guest"]["nics"][0]["mac"], "00:50:56:ab:00:01");
    assert_eq!(v["guest"]["nics"][0]["virtual_dev"], "vmxnet3");
    assert_eq!(v["guest"]["nics"][1]["mac"], "00:50:56:ab:00:02");
    assert_eq!(v["ovf_version"], 1);
    assert_eq!(v["disks"].as_array().unwrap().len(), 2);
    assert_eq!(v["disks"][0]["info"]["subformat"], "streamOptimized");
    assert_eq!(v["disks"][0]["info"]["virtual_size"], 24 << 20);
    assert_eq!(v["disks"][0]["filesystems"][0]["label"], "web01-root");
    assert_eq!(v["disks"][1]["filesystems"][0]["label"], "web01-data");
    assert_eq!(v["digests_checked"][0], "web01.ovf");

    // OVF 2.0, SHA1, a pax member name over 100 bytes.
    let v = info_json(&f, "db02.ova");
    assert_eq!(v["ovf_version"], 2);
    assert_eq!(v["guest"]["firmware"], "bios");
    assert!(v["disks"][0]["source"].as_str().unwrap().len() > 100);
    assert!(v["disks"][0]["digest"]
        .as_str()
        .unwrap()
        .starts_with("SHA1"));

    // gzip-compressed: unpacked and hashed while streaming.
    let v = info_json(&f, "web01gz.ova");
    let checked: Vec<&str> = v["digests_checked"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_str().unwrap())
        .collect();
    assert_eq!(
        checked,
        ["web01.ovf", "web01-disk1.vmdk", "web01-disk2.vmdk"]
    );

    // Members inside a folder of the archive.
    let v = info_json(&f, "infolder.ova");
    assert_eq!(v["disks"][1]["source"], "web01/web01-disk2.vmdk");
    assert!(
        v["disks"][1]["digest"]
            .as_str()
            .unwrap()
            .starts_with("SHA256"),
        "{v}"
    );
    assert_eq!(v["digests_checked"][0], "web01/web01.ovf");
    assert!(!v["warnings"].to_string().contains("manifest"), "{v}");

    let v = info_json(&f, "exp05");
    assert_eq!(v["guest"]["source"], "ovf");
    assert_eq!(v["disks"][0]["filesystems"][0]["label"], "exp05-root");

    let v = info_json(&f, "app03/app03.vmx");
    assert_eq!(v["guest"]["source"], "vmx");
    assert_eq!(v["guest"]["memory_mib"], 2048);
    assert_eq!(v["guest"]["nics"][0]["mac"], "00:0c:29:3a:4b:5c");
    assert_eq!(v["guest"]["disks"][0]["controller_model"], "pvscsi");
    assert_eq!(v["disks"][0]["info"]["subformat"], "twoGbMaxExtentSparse");
    assert_eq!(
        v["disks"][0]["info"]["extents"].as_array().unwrap().len(),
        2
    );

    let v = info_json(&f, "snap04");
    assert_eq!(v["guest"]["firmware"], "efi");
    assert_eq!(v["disks"][0]["source"], "snap04-000002.vmdk");
    assert!(v["disks"][0]["info"]["backing"]["backing"]["filename"]
        .as_str()
        .unwrap()
        .ends_with("snap04.vmdk"));

    let v = info_json(&f, "partialmf.ova");
    let w = v["warnings"].to_string();
    assert!(w.contains("no digest for 'web01-disk2.vmdk'"), "{w}");

    // A member named with '..' is refused (exit 5) before anything is read.
    let o = run(&["info", "hostile.ova"], &f);
    assert_eq!(o.status.code(), Some(5), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("'..'"),
        "{}",
        text(&o)
    );
}

#[test]
fn convert_an_ova_into_a_guest_folder() {
    if !tools() {
        return;
    }
    let f = fixtures();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("web01");
    let o = run(
        &[
            "convert",
            "web01.ova",
            out.to_str().unwrap(),
            "--to",
            "kvm-scsi",
            "-q",
        ],
        &f,
    );
    assert!(o.status.success(), "{}", text(&o));
    // The root disk is rewritten for the target (fstab by UUID, the initramfs with the
    // virtio-scsi drivers); the NIC keeps the source's MAC, which the domain XML gives, so
    // its udev binding stays as it was. The data disk is copied unchanged.
    let disk1 = out.join("disk1.qcow2");
    let o = Command::new("qemu-img")
        .arg("check")
        .arg(&disk1)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let cat = |p: &str| {
        let o = Command::new(env!("CARGO_BIN_EXE_transplant"))
            .arg("cat")
            .arg(format!("{}:{p}", disk1.display()))
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", text(&o));
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    assert!(
        cat("/etc/fstab").starts_with("UUID="),
        "{}",
        cat("/etc/fstab")
    );
    let mac = "00:50:56:00:00:05";
    assert!(
        cat("/etc/udev/rules.d/70-persistent-net.rules").contains(mac),
        "{}",
        cat("/etc/udev/rules.d/70-persistent-net.rules")
    );
    qemu_same(&f.join("web01-disk2.raw"), &out.join("disk2.qcow2"));
    let xml = std::fs::read_to_string(out.join("web01.xml")).unwrap();
    assert!(xml.contains("model='virtio-scsi'"), "{xml}");
    assert!(xml.contains("<target dev='sda' bus='scsi'/>"), "{xml}");
    assert!(xml.contains("<target dev='sdb' bus='scsi'/>"), "{xml}");
    assert!(xml.contains("<mac address='00:50:56:ab:00:01'/>"), "{xml}");
    assert!(xml.contains("<os firmware='efi'>"), "{xml}");
    assert!(xml.contains("<memory unit='MiB'>1536</memory>"), "{xml}");
    assert!(xml.contains(&format!(
        "<source file='{}'/>",
        out.join("disk1.qcow2").display()
    )));
    check_xml(&out.join("web01.xml"));
    let rep: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("transplant-guest.json")).unwrap()).unwrap();
    assert_eq!(rep["digests_checked"].as_array().unwrap().len(), 3, "{rep}");

    // The folder exists: refused without --overwrite, replaced with it (-O raw this time).
    let o = run(&["convert", "web01.ova", out.to_str().unwrap(), "-q"], &f);
    assert!(!o.status.success(), "{}", text(&o));
    let o = run(
        &[
            "convert",
            "web01.ova",
            out.to_str().unwrap(),
            "-q",
            "--overwrite",
            "-O",
            "raw",
        ],
        &f,
    );
    assert!(o.status.success(), "{}", text(&o));
    assert!(!out.join("disk1.qcow2").exists());
    qemu_same(&f.join("web01-disk1.raw"), &out.join("disk1.raw"));
    let left: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, ["web01"], "staging folders left behind");

    // --to physical: SATA disks, a stand-in NIC model, still a valid domain.
    let phys = tmp.path().join("db02");
    let o = run(
        &[
            "convert",
            "db02.ova",
            phys.to_str().unwrap(),
            "--to",
            "physical",
            "-q",
        ],
        &f,
    );
    assert!(o.status.success(), "{}", text(&o));
    let xml = std::fs::read_to_string(phys.join("db02.xml")).unwrap();
    assert!(xml.contains("<target dev='sda' bus='sata'/>"), "{xml}");
    check_xml(&phys.join("db02.xml"));
    std::fs::remove_dir_all(&phys).unwrap();

    // A wrong digest: corrupt (exit 3), and no output at all.
    let bad = tmp.path().join("bad");
    let o = run(&["convert", "badhash.ova", bad.to_str().unwrap()], &f);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("does not match the manifest"));
    let left: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, ["web01"], "a failed guest left output");
}

#[test]
fn batch_converts_the_good_and_isolates_the_bad() {
    if !tools() {
        return;
    }
    let f = fixtures();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let report = tmp.path().join("report.json");
    // A list file naming two of the inputs, next to plain arguments.
    let list = tmp.path().join("list.txt");
    std::fs::write(
        &list,
        format!(
            "# VMX folders\n{}\n{}\n",
            f.join("app03").display(),
            f.join("snap04/snap04.vmx").display()
        ),
    )
    .unwrap();
    let args = [
        "batch",
        "web01.ova",
        "web01gz.ova",
        "db02.ova",
        "exp05",
        list.to_str().unwrap(),
        "hostile.ova",
        "badhash.ova",
        "partialmf.ova",
        "--out",
        out.to_str().unwrap(),
        "-j",
        "2",
        "--to",
        "kvm",
        "--report",
        report.to_str().unwrap(),
    ];
    let o = run(&args, &f);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let table = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(table.starts_with("GUEST"), "{table}");
    assert!(
        table.contains("9 guest(s): 7 ok, 2 failed, 0 skipped"),
        "{table}"
    );
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    let result = |name: &str| {
        r["guests"]
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["name"] == name)
            .unwrap_or_else(|| panic!("{name} not in report"))
            .clone()
    };
    for g in [
        "web01",
        "web01gz",
        "db02",
        "exp05",
        "app03",
        "snap04",
        "partialmf",
    ] {
        assert_eq!(result(g)["result"], "ok", "{g}: {}", result(g));
        check_xml(&out.join(g).join(format!("{g}.xml")));
    }
    assert_eq!(result("hostile")["result"], "failed");
    assert_eq!(result("hostile")["error_kind"], "refused");
    assert_eq!(result("badhash")["result"], "failed");
    assert_eq!(result("badhash")["error_kind"], "corrupt");
    assert!(!out.join("hostile").exists() && !out.join("badhash").exists());
    assert!(result("partialmf")["warnings"]
        .to_string()
        .contains("web01-disk2.vmdk"));

    // Root disks are rewritten for KVM (checked by qemu-img and by reading the guest's
    // fstab back); data disks are copied unchanged.
    for g in ["web01", "web01gz", "db02", "exp05", "app03", "snap04"] {
        rewritten_root(&out.join(g).join("disk1.qcow2"));
    }
    qemu_same(&f.join("web01-disk2.raw"), &out.join("web01gz/disk2.qcow2"));
    let xml = std::fs::read_to_string(out.join("app03/app03.xml")).unwrap();
    assert!(xml.contains("<mac address='00:0c:29:3a:4b:5c'/>"), "{xml}");
    assert!(xml.contains("<target dev='vda' bus='virtio'/>"), "{xml}");
    assert!(!xml.contains("firmware='efi'"), "{xml}");
    assert!(std::fs::read_to_string(out.join("snap04/snap04.xml"))
        .unwrap()
        .contains("firmware='efi'"));
    let names: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        names.iter().all(|n| !n.starts_with('.')),
        "staging left: {names:?}"
    );

    // Re-run with --resume: the done guests are skipped, the bad ones fail again.
    let mut again: Vec<&str> = args.to_vec();
    again.push("--resume");
    let o = run(&again, &f);
    let table = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(
        table.contains("9 guest(s): 0 ok, 2 failed, 7 skipped"),
        "{}",
        text(&o)
    );
}

#[test]
fn an_interrupted_guest_leaves_no_output() {
    let tmp = tempfile::tempdir().unwrap();
    // A bare disk of random bytes: compressing it on one thread takes seconds, long
    // enough to interrupt the guest in the middle.
    let disk = tmp.path().join("big.raw");
    {
        let mut src = std::fs::File::open("/dev/urandom").unwrap();
        let mut dst = std::fs::File::create(&disk).unwrap();
        std::io::copy(&mut std::io::Read::take(&mut src, 192 << 20), &mut dst).unwrap();
    }
    let out = tmp.path().join("out");
    let mut child = bin()
        .args([
            "batch",
            disk.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ])
        .args(["-j", "1", "--threads", "1", "-c", "-q"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let start = std::time::Instant::now();
    let staged = loop {
        let found = std::fs::read_dir(&out).ok().and_then(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .find(|n| n.starts_with(".big.transplant-partial-"))
        });
        if found.is_some() || start.elapsed().as_secs() > 30 {
            break found;
        }
        if child.try_wait().unwrap().is_some() {
            break None;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    };
    assert!(staged.is_some(), "the guest was never staged");
    std::thread::sleep(std::time::Duration::from_millis(200));
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let o = child.wait_with_output().unwrap();
    assert!(!o.status.success(), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("interrupted"),
        "{}",
        text(&o)
    );
    let left: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[test]
fn vmx_disks_named_by_datastore_path_are_found_beside_it() {
    if !tools() {
        return;
    }
    let f = fixtures();
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("app03");
    std::fs::create_dir(&d).unwrap();
    for e in std::fs::read_dir(f.join("app03")).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), d.join(e.file_name())).unwrap();
    }
    let vmx = std::fs::read_to_string(d.join("app03.vmx")).unwrap();
    std::fs::write(
        d.join("app03.vmx"),
        vmx.replace(
            "scsi0:0.fileName = \"app03.vmdk\"",
            "scsi0:0.fileName = \"/vmfs/volumes/ds1/app03/app03.vmdk\"",
        ),
    )
    .unwrap();
    let v = info_json(tmp.path(), "app03");
    assert_eq!(v["disks"][0]["info"]["subformat"], "twoGbMaxExtentSparse");
    assert!(v["warnings"].to_string().contains("beside the .vmx"), "{v}");
    // A name that climbs out is still refused when nothing of that name is beside it.
    std::fs::write(
        d.join("app03.vmx"),
        vmx.replace(
            "scsi0:0.fileName = \"app03.vmdk\"",
            "scsi0:0.fileName = \"../../etc/passwd.vmdk\"",
        ),
    )
    .unwrap();
    let o = run(&["info", "app03"], tmp.path());
    assert_eq!(o.status.code(), Some(5), "{}", text(&o));
}

/// The newest distribution kernel in /boot with its initramfs (CI installs
/// linux-image-cloud-amd64, whose virtio drivers are modules in that initramfs).
fn kernel() -> Option<(PathBuf, PathBuf)> {
    let mut found: Vec<(PathBuf, PathBuf)> = std::fs::read_dir("/boot")
        .ok()?
        .flatten()
        .filter_map(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            let ver = n.strip_prefix("vmlinuz-")?.to_string();
            let initrd = Path::new("/boot").join(format!("initrd.img-{ver}"));
            initrd.exists().then(|| (e.path(), initrd))
        })
        .collect();
    found.sort();
    let k = found.pop();
    if k.is_none() && std::env::var_os("CI").is_some() {
        panic!(
            "a kernel and initramfs in /boot (linux-image-cloud-amd64) are required when CI is set"
        );
    }
    k
}

#[test]
fn a_converted_guest_boots() {
    if !tools() || !have("qemu-system-x86_64") || !have("busybox") {
        return;
    }
    let Some((vmlinuz, initrd)) = kernel() else {
        return;
    };
    let f = fixtures();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("web01");
    let o = run(
        &[
            "convert",
            "web01.ova",
            out.to_str().unwrap(),
            "--to",
            "kvm",
            "-q",
        ],
        &f,
    );
    assert!(o.status.success(), "{}", text(&o));
    // The disks on virtio in the domain's order, as libvirt would attach them. TCG: KVM
    // is not dependable inside this workplace's VMs.
    let o = Command::new("timeout")
        .arg("300")
        .arg("qemu-system-x86_64")
        .args([
            "-accel",
            "tcg",
            "-m",
            "512",
            "-nographic",
            "-no-reboot",
            "-nic",
            "none",
        ])
        .arg("-kernel")
        .arg(&vmlinuz)
        .arg("-initrd")
        .arg(&initrd)
        .args(["-append", "root=/dev/vda1 ro console=ttyS0 panic=-1 quiet"])
        .arg("-drive")
        .arg(format!(
            "file={},if=virtio,format=qcow2",
            out.join("disk1.qcow2").display()
        ))
        .arg("-drive")
        .arg(format!(
            "file={},if=virtio,format=qcow2",
            out.join("disk2.qcow2").display()
        ))
        .output()
        .unwrap();
    let console = String::from_utf8_lossy(&o.stdout);
    assert!(
        console.contains("TRANSPLANT-BOOT-OK web01 /dev/vda1 / ext4"),
        "the guest did not boot from its converted disk:\n{}",
        text(&o)
    );
}
