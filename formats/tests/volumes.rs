//! The volume layer end to end: a PV inside an MBR partition, read through the partition
//! table, as `disk.img@2` and `VG/LV`; LV types that must be refused (thin, snapshot COW
//! stores), written by real lvm2 tools through `vgcfgrestore`; a metadata area that wraps
//! around its buffer end; a damaged second metadata copy; 4Kn MBR disks; a GPT whose
//! protective MBR was wiped. No device mapper is used, as on a machine without it.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use transplant_formats::lvm::{assemble, scan_pv, VolumeGroup};
use transplant_formats::partition::{read_partitions, read_partitions_with, PartitionKind, Scheme};
use transplant_formats::{BlockDev, ErrorKind, MemDev, RawFile};

/// Loop devices detached whatever happens to the test.
struct Loops(Vec<String>);
impl Drop for Loops {
    fn drop(&mut self) {
        for d in &self.0 {
            let _ = Command::new("losetup").args(["-d", d]).status();
        }
    }
}

impl Loops {
    /// Attaches `[offset, offset+size)` of `file`; `None` where loop devices do not work
    /// (never under CI).
    fn attach(&mut self, file: &Path, offset: u64, size: u64) -> Option<String> {
        let out = Command::new("losetup")
            .args(["-f", "--show", "-o", &offset.to_string()])
            .args(["--sizelimit", &size.to_string()])
            .arg(file)
            .output()
            .unwrap();
        if !out.status.success() {
            assert!(std::env::var_os("CI").is_none(), "losetup failed under CI");
            return None;
        }
        let d = String::from_utf8_lossy(&out.stdout).trim().to_string();
        self.0.push(d.clone());
        Some(d)
    }
}

/// Runs an lvm2 command seeing only `devs`, so the host's VGs and other tests stay apart.
fn lvm(devs: &[String], args: &[&str]) -> String {
    let accept: Vec<String> = devs.iter().map(|d| format!("\"a|^{d}$|\"")).collect();
    let filter = format!(
        "devices {{ filter = [ {}, \"r|.*|\" ] }}",
        accept.join(", ")
    );
    let out = Command::new(args[0])
        .args(&args[1..])
        .args(["--config", &filter])
        .env("LVM_SUPPRESS_FD_WARNINGS", "1")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn have_lvm() -> bool {
    common::have("pvcreate") && common::have("losetup") && common::have("sfdisk")
}

fn sfdisk(path: &Path, script: &str, extra: &[&str]) {
    use std::io::Write;
    let mut c = Command::new("sfdisk")
        .args(["-q", "--no-reread", "--no-tell-kernel"])
        .args(extra)
        .arg(path)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    c.stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    assert!(c.wait().unwrap().success());
}

fn sized_file(path: &Path, len: u64) {
    std::fs::File::create(path).unwrap().set_len(len).unwrap();
}

fn raw(path: &Path) -> Arc<dyn BlockDev> {
    Arc::new(RawFile::open(path, false).unwrap())
}

fn one_vg(devs: Vec<Arc<dyn BlockDev>>) -> VolumeGroup {
    let pvs = devs
        .into_iter()
        .map(|d| scan_pv(d).unwrap().expect("a PV"))
        .collect();
    let mut vgs = assemble(pvs).unwrap();
    assert_eq!(vgs.len(), 1);
    vgs.remove(0)
}

/// A disk image with an MBR, a small Linux partition and an LVM partition holding VG `vg`
/// with LVs `root` (linear, two segments) and `lin`, `snap`, `ptdata`, `ptmeta` (to be
/// turned into a snapshot and a thin pool). Known bytes are written at every LV extent
/// through the loop device. Returns the image, `lvs` JSON, and the PV's pe_start.
struct LvmDisk {
    image: PathBuf,
    lvs_json: serde_json::Value,
}

const PART2_START: u64 = 9 << 20;

fn lvm_disk(dir: &Path, vg: &str) -> Option<LvmDisk> {
    let image = dir.join("disk.img");
    sized_file(&image, 96 << 20);
    sfdisk(
        &image,
        "label: dos\nstart=2048,size=8M,type=83\n,,8e\n",
        &[],
    );
    let mut loops = Loops(Vec::new());
    let dev = loops.attach(&image, PART2_START, (96 << 20) - PART2_START)?;
    let devs = [dev.clone()];
    lvm(
        &devs,
        &[
            "pvcreate",
            "-q",
            "-ff",
            "-y",
            "--pvmetadatacopies",
            "2",
            &dev,
        ],
    );
    lvm(&devs, &["vgcreate", "-q", "-s", "4M", vg, &dev]);
    let create = |name: &str, size: &str| {
        lvm(
            &devs,
            &[
                "lvcreate",
                "-q",
                "--driverloaded",
                "n",
                "--activate",
                "n",
                "--zero",
                "n",
                "-L",
                size,
                "-n",
                name,
                vg,
            ],
        );
    };
    create("root", "8M");
    create("lin", "8M");
    create("snap", "8M");
    create("ptdata", "16M");
    create("ptmeta", "4M");
    lvm(
        &devs,
        &[
            "lvextend",
            "-q",
            "--driverloaded",
            "n",
            "-L",
            "+4M",
            &format!("{vg}/root"),
        ],
    );
    // Snapshots and thin pools cannot be created without device mapper: write their
    // metadata as LVM itself does and let `vgcfgrestore` check and store it.
    let backup = dir.join("backup.txt");
    lvm(
        &devs,
        &["vgcfgbackup", "-q", "-f", backup.to_str().unwrap(), vg],
    );
    let text = std::fs::read_to_string(&backup).unwrap();
    std::fs::write(&backup, with_snapshot_and_thin(&text)).unwrap();
    lvm(
        &devs,
        &[
            "vgcfgrestore",
            "-q",
            "--force",
            "-f",
            backup.to_str().unwrap(),
            vg,
        ],
    );
    let lvs = lvm(
        &devs,
        &[
            "lvs",
            "-a",
            "--reportformat",
            "json",
            "--units",
            "b",
            "--nosuffix",
            "--segments",
            "-o",
            "lv_name,lv_uuid,lv_size,lv_attr,seg_start,seg_size,seg_pe_ranges",
            vg,
        ],
    );
    let pvs = lvm(
        &devs,
        &[
            "pvs",
            "--reportformat",
            "json",
            "--units",
            "b",
            "--nosuffix",
            "-o",
            "pe_start",
            &dev,
        ],
    );
    let pvs: serde_json::Value = serde_json::from_str(&pvs).unwrap();
    let pe_start: u64 = pvs["report"][0]["pv"][0]["pe_start"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let lvs_json: serde_json::Value = serde_json::from_str(&lvs).unwrap();
    // Stamp every 4 KiB of each linear segment with (LV name, LV offset), through the loop
    // device at the PV extents `lvs` reports.
    {
        use std::io::{Seek, SeekFrom, Write};
        let mut f = std::fs::OpenOptions::new().write(true).open(&dev).unwrap();
        for seg in lvs_json["report"][0]["seg"].as_array().unwrap() {
            let name = seg["lv_name"].as_str().unwrap().trim_matches(['[', ']']);
            let ranges = seg["seg_pe_ranges"].as_str().unwrap();
            // Only segments on the PV itself (a thin pool's range names its sub-LV).
            if !ranges.starts_with("/dev/") {
                continue;
            }
            let start: u64 = seg["seg_start"].as_str().unwrap().parse().unwrap();
            let size: u64 = seg["seg_size"].as_str().unwrap().parse().unwrap();
            // "/dev/loopN:3-5"
            let (_, r) = ranges.rsplit_once(':').unwrap();
            let first_pe: u64 = r.split('-').next().unwrap().parse().unwrap();
            let mut o = 0;
            while o < size {
                f.seek(SeekFrom::Start(pe_start + first_pe * (4 << 20) + o))
                    .unwrap();
                f.write_all(&stamp(name, start + o)).unwrap();
                o += 4096;
            }
        }
        f.sync_all().unwrap();
    }
    Some(LvmDisk { image, lvs_json })
}

fn stamp(lv: &str, off: u64) -> [u8; 32] {
    let mut b = [0u8; 32];
    let s = format!("{lv}@{off}");
    b[..s.len()].copy_from_slice(s.as_bytes());
    b
}

/// Hides `ptdata`/`ptmeta` as a thin pool's sub-LVs, makes `snap` the COW store of a
/// snapshot of `lin`, and adds a thin pool and a thin LV.
fn with_snapshot_and_thin(t: &str) -> String {
    let mut t = t.to_string();
    for n in ["ptdata", "ptmeta"] {
        let i = t.find(&format!("\t\t{n} {{")).unwrap();
        let j = i + t[i..].find(", \"VISIBLE\"").unwrap();
        t.replace_range(j..j + ", \"VISIBLE\"".len(), "");
    }
    t = t
        .replace("\t\tptdata {", "\t\tpool_tdata {")
        .replace("\t\tptmeta {", "\t\tpool_tmeta {");
    let extra = r#"
		snapshot0 {
			id = "aaaaaa-aaaa-aaaa-aaaa-aaaa-aaaa-aaaaaa"
			status = ["READ"]
			flags = []
			segment_count = 1
			segment1 {
				start_extent = 0
				extent_count = 2
				type = "snapshot"
				chunk_size = 8
				origin = "lin"
				cow_store = "snap"
			}
		}
		pool {
			id = "bbbbbb-aaaa-aaaa-aaaa-aaaa-aaaa-aaaaaa"
			status = ["READ", "WRITE", "VISIBLE"]
			flags = []
			segment_count = 1
			segment1 {
				start_extent = 0
				extent_count = 4
				type = "thin-pool"
				metadata = "pool_tmeta"
				pool = "pool_tdata"
				transaction_id = 1
				chunk_size = 128
				discards = "passdown"
				zero_new_blocks = 1
			}
		}
		thin1 {
			id = "cccccc-aaaa-aaaa-aaaa-aaaa-aaaa-aaaaaa"
			status = ["READ", "WRITE", "VISIBLE"]
			flags = []
			segment_count = 1
			segment1 {
				start_extent = 0
				extent_count = 8
				type = "thin"
				thin_pool = "pool"
				transaction_id = 0
				device_id = 1
			}
		}
"#;
    let i = t.rfind("\t}\n\n}").unwrap();
    t.insert_str(i, extra);
    t
}

#[test]
fn pv_in_an_mbr_partition_with_refused_lv_types() {
    if !have_lvm() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let vg = format!("tvvg{}", std::process::id());
    let Some(d) = lvm_disk(dir.path(), &vg) else {
        return;
    };
    // Through the partition table, as the CLI does.
    let disk = raw(&d.image);
    let table = read_partitions(&*disk).unwrap().unwrap();
    assert_eq!(table.scheme, Scheme::Mbr);
    let p2 = table.partitions.iter().find(|p| p.number == 2).unwrap();
    assert_eq!(p2.start, PART2_START);
    assert_eq!(p2.type_name, "Linux LVM");
    let part: Arc<dyn BlockDev> = Arc::new(p2.open(disk.clone(), "disk.img").unwrap());
    assert_eq!(part.name(), "disk.img@2");
    let pv = scan_pv(part.clone()).unwrap().expect("a PV");
    assert!(pv.warnings.is_empty(), "{:?}", pv.warnings);
    let g = one_vg(vec![part.clone()]);
    assert_eq!(g.name, vg);
    assert_eq!(g.pvs[0].device.as_deref(), Some("disk.img@2"));

    let report = d.lvs_json["report"][0]["seg"].as_array().unwrap();
    let mut names: Vec<&str> = report
        .iter()
        .map(|s| s["lv_name"].as_str().unwrap().trim_matches(['[', ']']))
        .collect();
    names.dedup();
    // `lvs -a` leaves out the snapshot segment's own hidden LV.
    let mut ours: Vec<&str> = g
        .lvs
        .iter()
        .map(|l| l.name.as_str())
        .filter(|n| *n != "snapshot0")
        .collect();
    ours.sort();
    names.sort();
    assert_eq!(ours, names);
    for seg in report {
        let name = seg["lv_name"].as_str().unwrap().trim_matches(['[', ']']);
        let lv = g.lv(name).unwrap();
        assert_eq!(lv.uuid, seg["lv_uuid"].as_str().unwrap(), "{name}");
        assert_eq!(
            lv.size.to_string(),
            seg["lv_size"].as_str().unwrap(),
            "{name}"
        );
        // Hidden in `lvs` (shown in brackets with -a) exactly when hidden for us.
        assert_eq!(
            lv.visible,
            !seg["lv_name"].as_str().unwrap().starts_with('['),
            "{name}"
        );
    }
    // Readable: plain LVs (the snapshot's origin too), and the pool's hidden sub-LVs raw.
    for name in ["root", "lin", "pool_tdata"] {
        let lv = g.open_lv(name).unwrap();
        assert_eq!(lv.name(), format!("{vg}/{name}"));
        let mut o = 0;
        while o < lv.len() {
            let mut b = [0u8; 32];
            lv.read_at(&mut b, o).unwrap();
            assert_eq!(b, stamp(name, o), "{name} at {o}");
            o += 4096;
        }
        assert!(lv.read_at(&mut [0u8; 1], lv.len()).is_err());
    }
    assert_eq!(g.lv("root").unwrap().segments.len(), 2);
    // Refused, with the reason, never misread.
    for (name, why) in [
        ("snap", "copy-on-write"),
        ("snapshot0", "snapshot"),
        ("pool", "thin-pool"),
        ("thin1", "thin"),
    ] {
        let lv = g.lv(name).unwrap();
        let u = lv.unsupported.as_deref().unwrap_or("");
        assert!(u.contains(why), "{name}: {u}");
        let e = g.open_lv(name).err().unwrap();
        assert_eq!(e.kind(), ErrorKind::Unsupported, "{name}: {e}");
        assert!(e.to_string().contains(&format!("{vg}/{name}")), "{e}");
    }
    assert_eq!(g.lv("snap").unwrap().kind, "snapshot");
    assert!(!g.lv("snapshot0").unwrap().visible);

    metadata_area_variants(&std::fs::read(&d.image).unwrap(), &vg);
}

fn calc_crc(data: &[u8]) -> u32 {
    let mut crc = 0xf597_a6cfu32;
    for &b in data {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    crc
}

fn le64(b: &[u8], o: usize) -> u64 {
    u64::from_le_bytes(b[o..o + 8].try_into().unwrap())
}

/// The (start, size) of each metadata area of the PV at `pv` (label in sector 1).
fn mdas(pv: &[u8]) -> Vec<(usize, usize)> {
    let l = 512;
    assert_eq!(&pv[l..l + 8], b"LABELONE");
    let mut p = l + 32 + 40;
    let mut lists = vec![Vec::new(), Vec::new()];
    for list in lists.iter_mut() {
        loop {
            let (o, s) = (le64(pv, p), le64(pv, p + 8));
            p += 16;
            if o == 0 && s == 0 {
                break;
            }
            list.push((o as usize, s as usize));
        }
    }
    lists.pop().unwrap()
}

/// Stores `text` in the metadata area at `mda` (of `size` bytes) at buffer offset `off`,
/// wrapping to just after the header when it reaches the end, with both checksums right.
fn put_text(pv: &mut [u8], mda: usize, size: usize, off: usize, text: &[u8]) {
    let first = text.len().min(size - off);
    pv[mda + off..mda + off + first].copy_from_slice(&text[..first]);
    let rest = &text[first..];
    pv[mda + 512..mda + 512 + rest.len()].copy_from_slice(rest);
    pv[mda + 40..mda + 48].copy_from_slice(&(off as u64).to_le_bytes());
    pv[mda + 48..mda + 56].copy_from_slice(&(text.len() as u64).to_le_bytes());
    pv[mda + 56..mda + 60].copy_from_slice(&calc_crc(text).to_le_bytes());
    let h = calc_crc(&pv[mda + 4..mda + 512]);
    pv[mda..mda + 4].copy_from_slice(&h.to_le_bytes());
}

fn current_text(pv: &[u8], mda: usize) -> Vec<u8> {
    let off = le64(pv, mda + 40) as usize;
    let len = le64(pv, mda + 48) as usize;
    pv[mda + off..mda + off + len].to_vec()
}

fn scan(name: &str, pv: Vec<u8>) -> transplant_formats::Result<Vec<VolumeGroup>> {
    let pv = scan_pv(Arc::new(MemDev::new(name, pv)))?.expect("a PV");
    assemble(vec![pv])
}

/// Edits the metadata text of the first area (bumping seqno so it wins).
fn edited(pv: &[u8], edit: &dyn Fn(&str) -> String) -> Vec<u8> {
    let mut pv = pv.to_vec();
    let (mda, size) = mdas(&pv)[0];
    let old = String::from_utf8(current_text(&pv, mda)).unwrap();
    let old = old.trim_end_matches('\0');
    let seq_at = old.find("seqno = ").unwrap() + "seqno = ".len();
    let mut new = old.to_string();
    new.insert_str(seq_at, "10");
    let new = edit(&new);
    put_text(&mut pv, mda, size, 512, new.as_bytes());
    pv
}

/// A named edit of the metadata text.
type Edit = Box<dyn Fn(&str) -> String>;

fn metadata_area_variants(image: &[u8], vg: &str) {
    let pv = image[PART2_START as usize..].to_vec();
    let areas = mdas(&pv);
    assert_eq!(areas.len(), 2, "pvcreate --pvmetadatacopies 2");
    let (mda, size) = areas[0];

    // The text wrapping around the end of the circular buffer reads the same.
    let text = current_text(&pv, mda);
    let mut wrapped = pv.clone();
    let off = size - text.len() / 3;
    // Newer than the second area's copy, so the wrapped one is the one used.
    let t = String::from_utf8(text.clone()).unwrap();
    let t = t.replacen("seqno = ", "seqno = 10", 1);
    put_text(&mut wrapped, mda, size, off, t.as_bytes());
    let g = scan("wrapped", wrapped).unwrap().remove(0);
    assert_eq!(g.name, vg);
    assert!(g.seqno >= 100, "{}", g.seqno);
    assert!(g.open_lv("root").is_ok());

    // A damaged first area: the second copy is used, with a warning.
    let mut damaged = pv.clone();
    damaged[mda + 100] ^= 0xff;
    let p = scan_pv(Arc::new(MemDev::new("damaged", damaged.clone())))
        .unwrap()
        .unwrap();
    assert_eq!(p.warnings.len(), 1, "{:?}", p.warnings);
    assert!(p.warnings[0].contains("checksum"), "{:?}", p.warnings);
    assert_eq!(assemble(vec![p]).unwrap()[0].name, vg);
    // Both damaged: corrupt.
    let (mda2, _) = areas[1];
    damaged[mda2 + 100] ^= 0xff;
    let e = scan("both", damaged).err().unwrap();
    assert_eq!(e.kind(), ErrorKind::Corrupt, "{e}");

    // Hostile segments: each LV problem is listed on that LV, the others stay readable.
    let root_seg = |t: &str, from: &str, to: &str| -> String {
        let i = t.find("\nroot {").unwrap();
        let j = i + t[i..].find(from).unwrap();
        let mut t = t.to_string();
        t.replace_range(j..j + from.len(), to);
        t
    };
    let cases: Vec<(&str, Edit, &str)> = vec![
        (
            "stripe_count 2 with one stripe",
            Box::new(move |t| root_seg(t, "stripe_count = 1", "stripe_count = 2")),
            "stripe_count",
        ),
        (
            "a gap between segments",
            Box::new(move |t| root_seg(t, "start_extent = 2", "start_extent = 3")),
            "gap",
        ),
        (
            "a huge extent count",
            Box::new(move |t| root_seg(t, "extent_count = 2", "extent_count = 4000000000")),
            "extent",
        ),
        (
            "a stripe on an extent past the PV",
            Box::new(move |t| {
                let i = t.find("\nroot {").unwrap();
                let j = i + t[i..].find("\"pv0\", ").unwrap() + "\"pv0\", ".len();
                let mut t = t.to_string();
                t.insert_str(j, "99999");
                t
            }),
            "past",
        ),
        (
            "a stripes entry that is not a pair",
            Box::new(move |t| {
                let i = t.find("\nroot {").unwrap();
                let j = i + t[i..].find("\"pv0\", ").unwrap();
                let mut t = t.to_string();
                t.replace_range(j..j + 7, "7, ");
                t
            }),
            "pair",
        ),
    ];
    for (what, edit, expect) in cases {
        let g = scan("hostile", edited(&pv, &*edit))
            .unwrap_or_else(|e| panic!("{what}: {e}"))
            .remove(0);
        let root = g.lv("root").unwrap();
        let c = root.corrupt.as_deref().unwrap_or("");
        assert!(c.contains(expect), "{what}: {c:?}");
        let e = g.open_lv("root").err().unwrap();
        assert_eq!(e.kind(), ErrorKind::Corrupt, "{what}: {e}");
        assert!(g.open_lv("lin").is_ok(), "{what}");
    }
    // Unbalanced braces, deep nesting: that area's text is corrupt, the other copy is used;
    // with both copies bad, the PV is corrupt.
    for (what, edit, expect) in [
        (
            "braces",
            &(|t: &str| t.replacen('}', "", 1)) as &dyn Fn(&str) -> String,
            "not closed",
        ),
        (
            "deep",
            &|t: &str| format!("{}{t}", "x {".repeat(10_000)),
            "nested",
        ),
    ] {
        let bad = edited(&pv, edit);
        let p = scan_pv(Arc::new(MemDev::new(what, bad.clone())))
            .unwrap()
            .unwrap();
        assert!(
            p.warnings.first().is_some_and(|w| w.contains(expect)),
            "{what}: {:?}",
            p.warnings
        );
        let mut both = bad;
        both[areas[1].0 + 100] ^= 0xff;
        let e = scan(what, both).err().unwrap();
        assert_eq!(e.kind(), ErrorKind::Corrupt, "{what}: {e}");
        assert!(e.to_string().contains(expect), "{what}: {e}");
    }
    // An ignored metadata area (pvchange --metadataignore) is not read.
    let mut ignored = edited(&pv, &|t| t.replacen(vg, "stale", 1));
    ignored[mda + 60] |= 1;
    let h = calc_crc(&ignored[mda + 4..mda + 512]);
    ignored[mda..mda + 4].copy_from_slice(&h.to_le_bytes());
    assert_eq!(scan("ignored", ignored).unwrap()[0].name, vg);
    // A metadata area header claiming another start.
    let mut moved = pv.clone();
    moved[mda + 24..mda + 32].copy_from_slice(&12345u64.to_le_bytes());
    let h = calc_crc(&moved[mda + 4..mda + 512]);
    moved[mda..mda + 4].copy_from_slice(&h.to_le_bytes());
    let p = scan_pv(Arc::new(MemDev::new("moved", moved)))
        .unwrap()
        .unwrap();
    assert!(p.warnings[0].contains("starts at"), "{:?}", p.warnings);
}

#[test]
fn vg_across_two_images() {
    if !have_lvm() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let vg = format!("tv2vg{}", std::process::id());
    let files: Vec<PathBuf> = (0..2)
        .map(|i| dir.path().join(format!("d{i}.img")))
        .collect();
    let mut loops = Loops(Vec::new());
    let mut devs = Vec::new();
    for f in &files {
        sized_file(f, 32 << 20);
        let Some(d) = loops.attach(f, 0, 32 << 20) else {
            return;
        };
        devs.push(d);
    }
    lvm(&devs, &["pvcreate", "-q", "-ff", "-y", &devs[0], &devs[1]]);
    lvm(
        &devs,
        &["vgcreate", "-q", "-s", "1M", &vg, &devs[0], &devs[1]],
    );
    // Longer than one PV: it must span both.
    lvm(
        &devs,
        &[
            "lvcreate",
            "-q",
            "--driverloaded",
            "n",
            "--activate",
            "n",
            "--zero",
            "n",
            "-L",
            "40M",
            "-n",
            "big",
            &vg,
        ],
    );
    let pvs = lvm(
        &devs,
        &["pvs", "--reportformat", "json", "-o", "pv_name,pv_uuid"],
    );
    drop(loops);
    let pvs: serde_json::Value = serde_json::from_str(&pvs).unwrap();
    let uuid_of = |dev: &str| -> String {
        pvs["report"][0]["pv"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["pv_name"] == dev)
            .unwrap()["pv_uuid"]
            .as_str()
            .unwrap()
            .to_string()
    };
    // Both images: readable across the PV boundary.
    let g = one_vg(files.iter().map(|f| raw(f)).collect());
    let big = g.open_lv("big").unwrap();
    assert_eq!(big.len(), 40 << 20);
    let mut b = vec![0u8; 2 << 20];
    big.read_at(&mut b, 30 << 20).unwrap();
    // One image: incomplete, naming the missing PV's UUID.
    let g = one_vg(vec![raw(&files[0])]);
    let lv = g.lv("big").unwrap();
    let u = lv.unsupported.as_deref().unwrap_or("");
    assert!(u.contains(&uuid_of(&devs[1])), "{u}");
    let e = g.open_lv("big").err().unwrap();
    assert_eq!(e.kind(), ErrorKind::Unsupported, "{e}");
    assert!(e.to_string().contains(&uuid_of(&devs[1])), "{e}");
    assert!(g.pvs.iter().any(|p| !p.present));
}

#[test]
fn mbr_on_a_4096_byte_sector_disk() {
    if !common::have("sfdisk") || !common::have("losetup") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("4kn.img");
    sized_file(&p, 64 << 20);
    // sfdisk of util-linux < 2.39 has no --sector-size: partition a 4Kn loop device.
    let mut loops = Loops(Vec::new());
    let out = Command::new("losetup")
        .args(["-f", "--show", "-b", "4096"])
        .arg(&p)
        .output()
        .unwrap();
    if !out.status.success() {
        assert!(std::env::var_os("CI").is_none(), "losetup failed under CI");
        return;
    }
    let l = String::from_utf8_lossy(&out.stdout).trim().to_string();
    loops.0.push(l.clone());
    sfdisk(
        Path::new(&l),
        "label: dos\n,8M,83,*\n,16M,8e\n,,5\n,4M,82\n,,83\n",
        &[],
    );
    let out = Command::new("sfdisk")
        .arg("--json")
        .arg(&l)
        .output()
        .unwrap();
    drop(loops);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["partitiontable"]["sectorsize"], 4096);
    let want = v["partitiontable"]["partitions"].as_array().unwrap();
    let dev = raw(&p);
    let t = read_partitions_with(&*dev, Some(4096)).unwrap().unwrap();
    assert_eq!(t.sector_size, 4096);
    assert!(t.warnings.is_empty(), "{:?}", t.warnings);
    assert_eq!(t.partitions.len(), want.len());
    for (ours, w) in t.partitions.iter().zip(want) {
        let node = w["node"].as_str().unwrap();
        assert!(node.ends_with(&ours.number.to_string()), "{node}");
        assert_eq!(ours.start, w["start"].as_u64().unwrap() * 4096, "{node}");
        assert_eq!(ours.size, w["size"].as_u64().unwrap() * 4096, "{node}");
        let PartitionKind::Mbr {
            type_byte,
            bootable,
            ..
        } = ours.kind
        else {
            panic!("not MBR")
        };
        assert_eq!(
            format!("{type_byte:x}"),
            w["type"].as_str().unwrap(),
            "{node}"
        );
        assert_eq!(bootable, w["bootable"].as_bool().unwrap_or(false));
    }
    // Read as 512-byte sectors, the same table is eight times smaller but still inside
    // the disk: only the caller can know. An odd size is refused.
    let t512 = read_partitions(&*dev).unwrap().unwrap();
    assert_eq!(t512.partitions[0].size * 8, t.partitions[0].size);
    let e = read_partitions_with(&*dev, Some(1024)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unsupported);
}

#[test]
fn gpt_behind_a_wiped_protective_mbr() {
    if !common::have("sgdisk") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("gpt.img");
    sized_file(&p, 16 << 20);
    common::run(
        Command::new("sgdisk")
            .args(["-n", "1:2048:+4M", "-t", "1:8e00", "-c", "1:pv"])
            .arg(&p),
    );
    let mut b = std::fs::read(&p).unwrap();
    // Truncated inside the partition: the backup is gone and the entry runs past the end.
    let e = read_partitions(&MemDev::new("cut.img", b[..3 << 20].to_vec())).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Corrupt, "{e}");
    assert!(e.to_string().contains("cut.img"), "{e}");
    b[..512].fill(0);
    let t = read_partitions(&MemDev::new("wiped.img", b))
        .unwrap()
        .unwrap();
    assert_eq!(t.scheme, Scheme::Gpt);
    assert_eq!(t.partitions.len(), 1);
    assert_eq!(t.partitions[0].type_name, "Linux LVM");
    assert!(
        t.warnings.iter().any(|w| w.contains("protective MBR")),
        "{:?}",
        t.warnings
    );
}
