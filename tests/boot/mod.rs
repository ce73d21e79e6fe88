//! Boot harness: starts a guest disk image in `qemu-system-x86_64` on a chosen disk bus
//! and NIC and reads what its serial console says, so tests can prove that a guest boots
//! (or fails to) on given hardware.
//!
//! The guests are the `guest-debian` fixture set (fixtures/sets/guest-debian.sh) and the
//! RHEL-shaped `guest-rhel` (fixtures/sets/guest-rhel.sh, dracut): real Debian kernels
//! and initramfs images that end their boot with one line
//! `TRANSPLANT-BOOT root=... eth0=... ifaces=... drivers=... macs=... kernel=...` and power
//! off. A boot that cannot find its root filesystem is stopped as soon as the initramfs
//! shows it (waiting for root past a grace period, "Gave up waiting for root", a shell,
//! a panic), so a failing boot costs seconds, not the whole timeout.
//!
//! The image is never written: QEMU opens it with `snapshot=on`, keeping writes in a
//! temporary overlay that is dropped when it exits.
//!
//! Include it from a test file with `#[path = "boot/mod.rs"] mod boot;`.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{mpsc, OnceLock};
use std::time::{Duration, Instant};

/// Disk buses a guest can be given. Each is the controller a platform uses, with the
/// Linux driver its initramfs then needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Disk {
    /// virtio-blk (`virtio_blk`, `/dev/vda`): KVM's usual disk.
    Virtio,
    /// virtio-scsi (`virtio_scsi` + `sd_mod`, `/dev/sda`).
    VirtioScsi,
    /// NVMe (`nvme`, `/dev/nvme0n1`): a current physical machine.
    Nvme,
    /// SATA on the q35 machine's AHCI controller (`ahci`, `/dev/sda`): an older physical
    /// machine, or a VMware VM with a SATA disk.
    Sata,
    /// VMware paravirtual SCSI (`vmw_pvscsi`, `/dev/sda`).
    Pvscsi,
}

impl Disk {
    /// `virtio`, `virtio-scsi`, `nvme`, `sata`, `pvscsi`.
    pub fn from_name(name: &str) -> Option<Disk> {
        Some(match name {
            "virtio" => Disk::Virtio,
            "virtio-scsi" => Disk::VirtioScsi,
            "nvme" => Disk::Nvme,
            "sata" => Disk::Sata,
            "pvscsi" => Disk::Pvscsi,
            _ => return None,
        })
    }
}

/// Network cards a guest can be given.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Nic {
    /// virtio-net (`virtio_net`).
    VirtioNet,
    /// Intel 82540EM (`e1000`): VMware's default virtual NIC for older guests.
    E1000,
    /// Intel 82574L (`e1000e`): a physical Intel NIC.
    E1000e,
    /// VMware vmxnet3 (`vmxnet3`).
    Vmxnet3,
}

impl Nic {
    /// `virtio-net`, `e1000`, `e1000e`, `vmxnet3`.
    pub fn from_name(name: &str) -> Option<Nic> {
        Some(match name {
            "virtio-net" => Nic::VirtioNet,
            "e1000" => Nic::E1000,
            "e1000e" => Nic::E1000e,
            "vmxnet3" => Nic::Vmxnet3,
            _ => return None,
        })
    }
}

/// The firmware a guest starts under.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Firmware {
    /// SeaBIOS, QEMU's default: reads the MBR.
    Bios,
    /// OVMF (Debian's `ovmf`: `OVMF_CODE_4M.fd`) with a fresh copy of `OVMF_VARS_4M.fd`
    /// for each boot, so its NVRAM holds no boot entry, as on a new machine: it can only
    /// find a loader on the removable-media path `\EFI\BOOT\BOOTX64.EFI`.
    Uefi,
    /// OVMF with Secure Boot enforced (`OVMF_CODE_4M.secboot.fd`, SMM) and Microsoft's
    /// keys enrolled (`OVMF_VARS_4M.ms.fd`, again a fresh copy with no boot entry): only a
    /// loader chain signed all the way (shim by Microsoft, GRUB and the kernel by the
    /// vendor) starts.
    UefiSecureBoot,
}

/// OVMF's code and its empty variable store (Debian's `ovmf` package).
pub const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.fd";
pub const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";
/// OVMF built for Secure Boot and a variable store with Microsoft's keys enrolled.
pub const OVMF_CODE_SECBOOT: &str = "/usr/share/OVMF/OVMF_CODE_4M.secboot.fd";
pub const OVMF_VARS_MS: &str = "/usr/share/OVMF/OVMF_VARS_4M.ms.fd";

/// How QEMU runs the guest's CPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Accel {
    Kvm,
    Tcg,
}

/// The two guests of the fixture set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Variant {
    /// VMware-era: `/dev/sda1` root, `/dev/sda5` swap, `console=ttyS0`, initramfs drivers
    /// mptspi, vmw_pvscsi, ahci, ata_piix, sd_mod, ext4; NIC bound by MAC in udev.
    Vmware,
    /// Xen-PV-style: `/dev/xvda1`, `/dev/xvda5`, `console=hvc0`, initramfs with
    /// xen-blkfront and ext4 only.
    Xen,
}

/// One fixture guest image and the facts about it a test compares with.
#[derive(Clone, Debug)]
pub struct Guest {
    /// The qcow2 image (never modified by the harness).
    pub image: PathBuf,
    /// The same disk as a raw file.
    pub raw: PathBuf,
    /// The MAC the guest's udev rule binds to `eth0`.
    pub mac: &'static str,
    /// The root device its fstab and grub.cfg name.
    pub root: &'static str,
    /// The address `/etc/network/interfaces` gives eth0, as `ip -4 addr` prints it.
    pub address: &'static str,
    /// `uname -r` of its one kernel.
    pub kernel: String,
}

/// What a boot showed.
#[derive(Clone, Debug)]
pub struct BootOutcome {
    /// Everything the serial console printed (carriage returns removed), then QEMU's
    /// own stderr after a `--- qemu stderr ---` line.
    pub log: String,
    /// `root=` of the marker: the source of `/` in the guest's /proc/mounts.
    pub root: Option<String>,
    /// `eth0=` of the marker: eth0's IPv4 address with prefix; None if eth0 had none or
    /// no marker was printed.
    pub eth0: Option<String>,
    /// Network interfaces other than `lo`.
    pub ifaces: Vec<String>,
    /// Interface name to kernel driver.
    pub drivers: BTreeMap<String, String>,
    /// Interface name to MAC.
    pub macs: BTreeMap<String, String>,
    /// Every `key=value` of the marker line.
    pub fields: BTreeMap<String, String>,
    /// The initramfs did not find the root filesystem.
    pub gave_up_on_root: bool,
    /// UEFI only: the firmware found no loader on any disk (it fell to its shell or to
    /// network boot, or said no bootable device was found).
    pub no_boot_loader: bool,
    /// Stopped by [`boot_until_silent`]: nothing on the console for that long.
    pub silent: bool,
    /// QEMU exited by itself (the guest powered off or rebooted).
    pub exited: bool,
    /// The timeout ran out.
    pub timed_out: bool,
    pub accel: Accel,
    pub elapsed: Duration,
}

impl BootOutcome {
    /// An outcome holding what a marker line says (nothing for an empty line), with the
    /// other fields empty.
    pub fn from_marker(line: &str) -> BootOutcome {
        let fields = parse_marker(line);
        let value = |key: &str| fields.get(key).filter(|v| *v != "none").cloned();
        let list = |key: &str| -> Vec<String> {
            match value(key) {
                None => Vec::new(),
                Some(v) => v.split(',').map(str::to_string).collect(),
            }
        };
        let pairs = |key: &str| -> BTreeMap<String, String> {
            list(key)
                .iter()
                .filter_map(|p| p.split_once(':'))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        BootOutcome {
            log: String::new(),
            root: value("root"),
            eth0: value("eth0"),
            ifaces: list("ifaces"),
            drivers: pairs("drivers"),
            macs: pairs("macs"),
            gave_up_on_root: false,
            no_boot_loader: false,
            silent: false,
            exited: false,
            timed_out: false,
            accel: Accel::Tcg,
            elapsed: Duration::ZERO,
            fields,
        }
    }

    /// True when the guest printed its marker line.
    pub fn reached_marker(&self) -> bool {
        !self.fields.is_empty()
    }

    /// The last `n` lines of the log, for assertion messages.
    pub fn tail(&self, n: usize) -> String {
        let lines: Vec<&str> = self.log.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Asserts the guest mounted `root` and brought eth0 up with `address`.
    pub fn assert_booted(&self, root: &str, address: &str) {
        assert_eq!(
            self.root.as_deref(),
            Some(root),
            "root filesystem ({:?}, {:?}):\n{}",
            self.accel,
            self.elapsed,
            self.tail(60)
        );
        assert_eq!(
            self.eth0.as_deref(),
            Some(address),
            "eth0 address; interfaces {:?}, drivers {:?}:\n{}",
            self.ifaces,
            self.drivers,
            self.tail(40)
        );
    }
}

/// True if `tool` can be run; when `CI` is set a missing tool fails the test.
pub fn have(tool: &str) -> bool {
    let ok = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !ok {
        if std::env::var_os("CI").is_some() {
            panic!("{tool} is required when CI is set, and it is not installed");
        }
        eprintln!("skipping: {tool} not installed");
    }
    ok
}

fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

/// Builds fixture set `set` once per test process (under build.sh's lock) when `tools`
/// are installed and this runs as root (`needs` says what for), and returns its output
/// folder and its kernel version. None when it cannot be built here and CI is not set;
/// under CI a missing prerequisite fails the test.
fn fixture_set(
    set: &str,
    tools: &[&str],
    needs: &str,
    built: &'static OnceLock<bool>,
) -> Option<(PathBuf, String)> {
    if !tools.iter().all(|t| have(t)) {
        return None;
    }
    let root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false);
    if !root {
        if std::env::var_os("CI").is_some() {
            panic!("the {set} fixtures need root ({needs})");
        }
        eprintln!("skipping: the {set} fixtures need root");
        return None;
    }
    let ok = *built.get_or_init(|| {
        let t = Instant::now();
        let ok = Command::new("bash")
            .arg(fixtures_dir().join("build.sh"))
            .arg(set)
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        eprintln!("boot: {set} fixtures ready in {:?}", t.elapsed());
        ok
    });
    assert!(ok, "fixtures/build.sh {set} failed");
    let dir = fixtures_dir().join("out").join(set);
    let kernel = std::fs::read_to_string(dir.join("kernel-version"))
        .unwrap()
        .trim()
        .to_string();
    Some((dir, kernel))
}

/// Builds the `guest-debian` fixture set (once, under build.sh's lock) and returns one of
/// its guests; None when this machine cannot build or boot it (not root, a tool missing)
/// and CI is not set. Under CI a missing prerequisite fails the test.
pub fn guest(variant: Variant) -> Option<Guest> {
    static BUILT: OnceLock<bool> = OnceLock::new();
    let tools = [
        "qemu-system-x86_64",
        "qemu-img",
        "debootstrap",
        "grub-mkimage",
        "sfdisk",
        "mkfs.ext4",
    ];
    let (dir, kernel) = fixture_set("guest-debian", &tools, "debootstrap, chroot", &BUILT)?;
    let (name, mac, root) = match variant {
        Variant::Vmware => ("vmware", "00:50:56:12:34:56", "/dev/sda1"),
        Variant::Xen => ("xen", "00:16:3e:12:34:56", "/dev/xvda1"),
    };
    Some(Guest {
        image: dir.join(format!("{name}.qcow2")),
        raw: dir.join(format!("{name}.raw")),
        mac,
        root,
        address: "192.0.2.10/24",
        kernel,
    })
}

/// Builds the `guest-rhel` fixture set (fixtures/sets/guest-rhel.sh: a RHEL-shaped guest
/// made of Debian packages — GPT, XFS /boot, LVM VG `rhel` with an XFS root, a host-only
/// dracut initramfs without virtio, ifcfg-eth0 with a VMware HWADDR) and returns it; None
/// when this machine cannot build or boot it and CI is not set, as [`guest`].
pub fn rhel_guest() -> Option<Guest> {
    static BUILT: OnceLock<bool> = OnceLock::new();
    let tools = [
        "qemu-system-x86_64",
        "qemu-img",
        "debootstrap",
        "grub-mkimage",
        "grub-editenv",
        "sgdisk",
        "partx",
        "losetup",
        "lvm",
        "mkfs.xfs",
        "setfattr",
    ];
    let needs = "debootstrap, chroot, loop devices";
    let (dir, kernel) = fixture_set("guest-rhel", &tools, needs, &BUILT)?;
    Some(Guest {
        image: dir.join("rhel.qcow2"),
        raw: dir.join("rhel.raw"),
        mac: "00:50:56:a1:b2:c3",
        root: "/dev/mapper/rhel-root",
        address: "192.0.2.10/24",
        kernel,
    })
}

/// The accelerator boots use: KVM when `/dev/kvm` opens and a kernel really runs under
/// it (nested KVM can open fine and then never get a guest kernel past its first
/// instructions), else TCG. `TRANSPLANT_BOOT_ACCEL=kvm|tcg` forces one. Probed once per
/// test process.
pub fn accel() -> Accel {
    static ACCEL: OnceLock<Accel> = OnceLock::new();
    *ACCEL.get_or_init(|| {
        let forced = std::env::var("TRANSPLANT_BOOT_ACCEL").unwrap_or_default();
        let a = match forced.as_str() {
            "kvm" => Accel::Kvm,
            "tcg" => Accel::Tcg,
            _ => probe_kvm(),
        };
        eprintln!("boot: accelerator {a:?}");
        a
    })
}

fn probe_kvm() -> Accel {
    if std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_err()
    {
        return Accel::Tcg;
    }
    // The fixture's kernel with no root panics at once and, with panic=-1 and
    // -no-reboot, QEMU exits: a second or two under working KVM.
    // Either fixture set's kernel (whichever a test built).
    let Some(kernel) = ["guest-debian", "guest-rhel"]
        .iter()
        .map(|set| fixtures_dir().join("out").join(set).join("vmlinuz"))
        .find(|k| k.exists())
    else {
        return Accel::Tcg;
    };
    let mut cmd = Command::new("qemu-system-x86_64");
    cmd.args(["-machine", "q35,accel=kvm", "-cpu", "host", "-m", "256"])
        .args(["-nodefaults", "-display", "none", "-no-reboot"])
        .args(["-serial", "stdio", "-kernel"])
        .arg(&kernel)
        .args(["-append", "console=ttyS0 panic=-1"]);
    let run = run_qemu(cmd, Duration::from_secs(15), |line, _| {
        if line.contains("Kernel panic") {
            Verdict::Stop
        } else {
            Verdict::Go
        }
    });
    match run {
        Ok(r) if r.log.contains("Kernel panic") => Accel::Kvm,
        _ => {
            eprintln!("boot: /dev/kvm opens but a kernel does not run under it; using TCG");
            Accel::Tcg
        }
    }
}

/// A timeout for one boot on this machine's accelerator (`TRANSPLANT_BOOT_TIMEOUT`
/// seconds overrides it). A good boot takes about 20 s under TCG on an idle core.
pub fn boot_timeout() -> Duration {
    if let Some(s) = std::env::var("TRANSPLANT_BOOT_TIMEOUT")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        return Duration::from_secs(s);
    }
    match accel() {
        Accel::Kvm => Duration::from_secs(60),
        // Generous: on 2 cores shared with builds a TCG boot has taken 160 s.
        Accel::Tcg => Duration::from_secs(400),
    }
}

/// Boots `image` (any format QEMU reads; the harness names qcow2, VMDK, VHDX and raw by
/// their magic) as the only disk on `disk`, with one `nic` carrying `mac`, and returns what
/// its serial console showed. Never panics on a failed boot: the outcome says what happened.
pub fn boot(image: &Path, disk: Disk, nic: Nic, mac: &str, timeout: Duration) -> BootOutcome {
    boot_with(image, disk, nic, mac, timeout, None, Firmware::Bios)
}

/// [`boot`] under the given firmware. With [`Firmware::Uefi`] a boot where the firmware
/// finds no loader stops as soon as OVMF shows it (the outcome's `no_boot_loader`).
pub fn boot_firmware(
    image: &Path,
    disk: Disk,
    nic: Nic,
    mac: &str,
    timeout: Duration,
    firmware: Firmware,
) -> BootOutcome {
    boot_with(image, disk, nic, mac, timeout, None, firmware)
}

/// [`boot`], and also stop once the console has said nothing for `silence` after GRUB
/// handed over to the kernel ("Loading initial ramdisk"): for a guest whose kernel
/// console is not the serial port, where no give-up message can be seen. The outcome's
/// `silent` says whether that is why it stopped.
pub fn boot_until_silent(
    image: &Path,
    disk: Disk,
    nic: Nic,
    mac: &str,
    timeout: Duration,
    silence: Duration,
) -> BootOutcome {
    boot_with(
        image,
        disk,
        nic,
        mac,
        timeout,
        Some(silence),
        Firmware::Bios,
    )
}

fn boot_with(
    image: &Path,
    disk: Disk,
    nic: Nic,
    mac: &str,
    timeout: Duration,
    silence: Option<Duration>,
    firmware: Firmware,
) -> BootOutcome {
    let accel = accel();
    let mut cmd = Command::new("qemu-system-x86_64");
    // Dropped (and the NVRAM copy deleted) when this function returns.
    let _nvram = match firmware {
        Firmware::Bios => None,
        Firmware::Uefi | Firmware::UefiSecureBoot => {
            let (code, vars_src) = if firmware == Firmware::Uefi {
                (OVMF_CODE, OVMF_VARS)
            } else {
                // The secure-boot build keeps its variables behind SMM.
                cmd.args(["-machine", "smm=on"])
                    .args(["-global", "driver=cfi.pflash01,property=secure,value=on"]);
                (OVMF_CODE_SECBOOT, OVMF_VARS_MS)
            };
            let vars = tempfile::Builder::new()
                .prefix("transplant-ovmf-vars-")
                .suffix(".fd")
                .tempfile()
                .unwrap();
            std::fs::copy(vars_src, vars.path()).unwrap();
            cmd.arg("-drive").arg(format!(
                "if=pflash,format=raw,unit=0,readonly=on,file={code}"
            ));
            cmd.arg("-drive").arg(format!(
                "if=pflash,format=raw,unit=1,file={}",
                vars.path().display()
            ));
            Some(vars)
        }
    };
    match accel {
        Accel::Kvm => cmd.args(["-machine", "q35,accel=kvm", "-cpu", "host"]),
        Accel::Tcg => cmd.args(["-machine", "q35,accel=tcg"]),
    };
    cmd.args([
        "-m", "512", "-smp", "1", "-display", "none", "-monitor", "none",
    ])
    .args(["-serial", "stdio", "-no-reboot"]);
    let drive = format!(
        "file={},if=none,id=d0,format={},snapshot=on",
        image.display(),
        image_format(image)
    );
    cmd.arg("-drive").arg(drive);
    let disk_devs: &[&str] = match disk {
        Disk::Virtio => &["virtio-blk-pci,drive=d0,bootindex=0"],
        Disk::VirtioScsi => &[
            "virtio-scsi-pci,id=scsi0",
            "scsi-hd,drive=d0,bus=scsi0.0,bootindex=0",
        ],
        Disk::Nvme => &["nvme,drive=d0,serial=transplant0,bootindex=0"],
        Disk::Sata => &["ide-hd,drive=d0,bus=ide.0,bootindex=0"],
        Disk::Pvscsi => &[
            "pvscsi,id=scsi0",
            "scsi-hd,drive=d0,bus=scsi0.0,bootindex=0",
        ],
    };
    for d in disk_devs {
        cmd.arg("-device").arg(d);
    }
    // A hub with no other port: the NIC has a link and no network at all.
    cmd.args(["-netdev", "hubport,id=n0,hubid=0"]);
    let model = match nic {
        Nic::VirtioNet => "virtio-net-pci",
        Nic::E1000 => "e1000",
        Nic::E1000e => "e1000e",
        Nic::Vmxnet3 => "vmxnet3",
    };
    cmd.arg("-device")
        .arg(format!("{model},netdev=n0,mac={mac},romfile="));

    // Past udev's settle a disk that is not there will not come (the initramfs itself
    // waits 30 s before it gives up); a little grace covers a slow probe.
    let root_grace = match accel {
        Accel::Kvm => Duration::from_secs(5),
        Accel::Tcg => Duration::from_secs(12),
    };
    let mut waiting_since: Option<Instant> = None;
    let mut gave_up = false;
    let mut marker: Option<String> = None;
    let mut marker_seen: Option<Instant> = None;
    let mut handed_over = false;
    let mut last_output = Instant::now();
    let mut silent = false;
    let mut no_loader = false;
    let run = run_qemu(cmd, timeout, |line, now| {
        if !line.is_empty() {
            last_output = now;
        }
        // OVMF once every boot option has failed: its shell (Debian's build has one; its
        // prompt ends no line, the banner does), network boot, or no option at all.
        if firmware != Firmware::Bios
            && (line.contains("No bootable option or device was found")
                || line.contains("EFI Internal Shell")
                || line.contains("UEFI Interactive Shell")
                || line.contains("Start PXE over")
                || line.contains("Start HTTP Boot over"))
        {
            no_loader = true;
            return Verdict::StopSoon;
        }
        if line.contains("Loading initial ramdisk") {
            handed_over = true;
        }
        if let Some(quiet) = silence {
            if handed_over && now.duration_since(last_output) > quiet {
                silent = true;
                return Verdict::Stop;
            }
        }
        if let Some(i) = line.find("TRANSPLANT-BOOT ") {
            if marker.is_none() {
                marker = Some(line[i..].to_string());
                marker_seen = Some(now);
            }
        }
        if line.contains("Gave up waiting for root")
            || line.contains("Dropping to a shell")
            || line.contains("(initramfs)")
            // dracut (guest-rhel) once its rd.retry has run out.
            || line.contains("Could not boot.")
            || line.contains("Dropping to debug shell")
        {
            gave_up = true;
            return Verdict::StopSoon;
        }
        if line.contains("Kernel panic") {
            return Verdict::StopSoon;
        }
        if line.contains("Waiting for root file system") && waiting_since.is_none() {
            waiting_since = Some(now);
        }
        // Once root is there, the initramfs goes on to check and mount it.
        if line.contains("Will now check root file system") || line.contains("local-bottom") {
            waiting_since = None;
        }
        if let Some(t) = waiting_since {
            if now.duration_since(t) > root_grace {
                gave_up = true;
                return Verdict::Stop;
            }
        }
        match marker_seen {
            // The guest powers off right after its marker; do not wait long for it.
            Some(t) if now.duration_since(t) > Duration::from_secs(30) => Verdict::Stop,
            _ => Verdict::Go,
        }
    });
    let run = match run {
        Ok(r) => r,
        Err(e) => panic!("cannot run qemu-system-x86_64: {e}"),
    };
    let mut out = BootOutcome::from_marker(marker.as_deref().unwrap_or(""));
    out.log = run.log;
    out.gave_up_on_root = gave_up;
    out.no_boot_loader = no_loader;
    out.silent = silent;
    out.exited = run.exited;
    out.timed_out = run.timed_out;
    out.accel = accel;
    out.elapsed = run.elapsed;
    if !run.stderr.is_empty() {
        out.log.push_str("\n--- qemu stderr ---\n");
        out.log.push_str(&run.stderr);
    }
    out
}

/// The UEFI fixture guest (fixtures/sets/guest-uefi.sh) and the facts about it a test
/// compares with.
#[derive(Clone, Debug)]
pub struct UefiGuest {
    /// The qcow2 image (never modified by the harness).
    pub image: PathBuf,
    /// The same disk as a raw file.
    pub raw: PathBuf,
    /// Debian's signed shim as the ESP holds it (`EFI/debian/shimx64.efi`).
    pub shim: PathBuf,
    /// The root device the guest's kernel names: virtio's second partition.
    pub root: &'static str,
    /// The ESP's device, mounted on /boot/efi by fstab.
    pub esp: &'static str,
    /// `uname -r` of its one kernel.
    pub kernel: String,
}

/// Builds the `guest-uefi` fixture set (a Debian 12 UEFI guest with its loader only in
/// `EFI/debian`, no `EFI/BOOT`) and returns it; None when this machine cannot build or
/// boot it (not root, a tool or OVMF missing) and CI is not set, as [`guest`].
pub fn uefi_guest() -> Option<UefiGuest> {
    static BUILT: OnceLock<bool> = OnceLock::new();
    for fd in [OVMF_CODE, OVMF_VARS, OVMF_CODE_SECBOOT, OVMF_VARS_MS] {
        if !Path::new(fd).exists() {
            if std::env::var_os("CI").is_some() {
                panic!("{fd} is required when CI is set (Debian package ovmf)");
            }
            eprintln!("skipping: {fd} missing (Debian package ovmf)");
            return None;
        }
    }
    let tools = [
        "qemu-system-x86_64",
        "qemu-img",
        "debootstrap",
        "sfdisk",
        "mkfs.ext4",
        "mkfs.fat",
        "mcopy",
        "apt-get",
        "dpkg-deb",
    ];
    let (dir, kernel) = fixture_set("guest-uefi", &tools, "debootstrap, chroot", &BUILT)?;
    Some(UefiGuest {
        image: dir.join("uefi.qcow2"),
        raw: dir.join("uefi.raw"),
        shim: dir.join("shimx64.efi"),
        root: "/dev/vda2",
        esp: "/dev/vda1",
        kernel,
    })
}

/// `key=value` words of a marker line.
pub fn parse_marker(line: &str) -> BTreeMap<String, String> {
    line.split_whitespace()
        .filter_map(|w| w.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// QEMU's format name for an image file, from its first bytes.
fn image_format(image: &Path) -> &'static str {
    let mut head = [0u8; 64];
    let n = std::fs::File::open(image)
        .and_then(|mut f| f.read(&mut head))
        .unwrap_or(0);
    let head = &head[..n];
    if head.starts_with(b"QFI\xfb") {
        "qcow2"
    } else if head.starts_with(b"KDMV") || head.starts_with(b"# Disk DescriptorFile") {
        "vmdk"
    } else if head.starts_with(b"vhdxfile") {
        "vhdx"
    } else {
        "raw"
    }
}

/// Runs `transplant` with `args` and returns its output, failing the test with its
/// stderr if it does not succeed.
pub fn transplant(args: &[&std::ffi::OsStr]) -> std::process::Output {
    let out = Command::new(env!("CARGO_BIN_EXE_transplant"))
        .args(args)
        .output()
        .unwrap();
    // 6: done, with warnings (printed on stderr).
    assert!(
        matches!(out.status.code(), Some(0) | Some(6)),
        "transplant {:?} failed: {}",
        args,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

enum Verdict {
    Go,
    /// Stop after a short pause, so the lines that explain why are in the log too.
    StopSoon,
    Stop,
}

struct Run {
    log: String,
    stderr: String,
    exited: bool,
    timed_out: bool,
    elapsed: Duration,
}

/// Runs QEMU with its serial console on stdout, feeding each console line (and, every
/// half second, an empty one, so time-based verdicts fire on a silent console) to
/// `watch`, until QEMU exits, `watch` says stop, or `timeout` runs out. QEMU is killed
/// and reaped in every case.
fn run_qemu(
    mut cmd: Command,
    timeout: Duration,
    mut watch: impl FnMut(&str, Instant) -> Verdict,
) -> std::io::Result<Run> {
    let start = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let (tx, rx) = mpsc::channel::<String>();
    let mut stdout = child.stdout.take().expect("piped stdout");
    let reader = std::thread::spawn(move || {
        let mut pending = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match stdout.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    pending.extend_from_slice(&buf[..n]);
                    while let Some(i) = pending.iter().position(|&b| b == b'\n') {
                        let line: Vec<u8> = pending.drain(..=i).collect();
                        let s = String::from_utf8_lossy(&line).replace('\r', "");
                        if tx.send(s).is_err() {
                            return;
                        }
                    }
                }
            }
        }
        if !pending.is_empty() {
            let _ = tx.send(String::from_utf8_lossy(&pending).replace('\r', ""));
        }
    });
    let mut stderr = child.stderr.take().expect("piped stderr");
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let mut log = String::new();
    let mut exited = false;
    let mut timed_out = false;
    let mut stop_at: Option<Instant> = None;
    loop {
        let now = Instant::now();
        if now.duration_since(start) >= timeout {
            timed_out = true;
            break;
        }
        if stop_at.is_some_and(|t| now >= t) {
            break;
        }
        match rx.recv_timeout(Duration::from_millis(500)) {
            Ok(line) => {
                log.push_str(&line);
                match watch(line.trim_end_matches('\n'), Instant::now()) {
                    Verdict::Go => {}
                    Verdict::StopSoon => {
                        stop_at.get_or_insert(Instant::now() + Duration::from_secs(2));
                    }
                    Verdict::Stop => break,
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => match watch("", Instant::now()) {
                Verdict::Go => {}
                Verdict::StopSoon => {
                    stop_at.get_or_insert(Instant::now() + Duration::from_secs(2));
                }
                Verdict::Stop => break,
            },
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                exited = true;
                break;
            }
        }
    }
    if !exited {
        let _ = child.kill();
    }
    let _ = child.wait();
    while let Ok(line) = rx.try_recv() {
        log.push_str(&line);
    }
    let _ = reader.join();
    let stderr = err_reader.join().unwrap_or_default();
    Ok(Run {
        log,
        stderr,
        exited,
        timed_out,
        elapsed: start.elapsed(),
    })
}
