//! Partition tables made by sfdisk and sgdisk, read back and compared with what those tools
//! report; damaged and hostile tables.

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use transplant_formats::partition::{read_partitions, PartitionKind, Scheme};
use transplant_formats::{BlockDev, ErrorKind, MemDev, RawFile};

fn disk(dir: &Path, name: &str, mib: u64) -> std::path::PathBuf {
    let p = dir.join(name);
    let f = std::fs::File::create(&p).unwrap();
    f.set_len(mib << 20).unwrap();
    p
}

fn sfdisk(path: &Path, script: &str, extra: &[&str]) {
    use std::io::Write;
    let mut c = Command::new("sfdisk")
        .args(["-q", "--no-reread", "--no-tell-kernel"])
        .args(extra)
        .arg(path)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    c.stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    assert!(c.wait().unwrap().success());
}

struct SfdiskTable {
    parts: Vec<(String, u64, u64, String)>,
    sector_size: u64,
}

fn sfdisk_json(path: &Path) -> SfdiskTable {
    let out = Command::new("sfdisk")
        .arg("--json")
        .arg(path)
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let t = &v["partitiontable"];
    SfdiskTable {
        sector_size: t["sectorsize"].as_u64().unwrap_or(512),
        parts: t["partitions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                (
                    p["node"].as_str().unwrap().to_string(),
                    p["start"].as_u64().unwrap(),
                    p["size"].as_u64().unwrap(),
                    p["type"].as_str().unwrap().to_string(),
                )
            })
            .collect(),
    }
}

fn open(path: &Path) -> Arc<dyn BlockDev> {
    Arc::new(RawFile::open(path, false).unwrap())
}

#[test]
fn mbr_with_logical_partitions_matches_sfdisk() {
    if !common::have("sfdisk") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let p = disk(dir.path(), "mbr.img", 64);
    sfdisk(
        &p,
        "label: dos\n,8M,83,*\n,4M,82\n,,5\n,6M,83\n,6M,8e\n,,83\n",
        &[],
    );
    let t = read_partitions(&*open(&p)).unwrap().unwrap();
    assert_eq!(t.scheme, Scheme::Mbr);
    let reference = sfdisk_json(&p);
    let ours: Vec<_> = t.partitions.iter().collect();
    assert_eq!(ours.len(), reference.parts.len(), "{:?}", t.partitions);
    for (mine, (node, start, size, kind)) in ours.iter().zip(&reference.parts) {
        assert!(
            node.ends_with(&mine.number.to_string()),
            "{node} vs {}",
            mine.number
        );
        assert_eq!(mine.start, start * 512, "{node}");
        if mine.is_extended() {
            // sfdisk shows the extended partition's full size.
            assert_eq!(mine.size, size * 512);
        } else {
            assert_eq!(mine.size, size * 512, "{node}");
        }
        let PartitionKind::Mbr { type_byte, .. } = mine.kind else {
            panic!()
        };
        assert_eq!(format!("{type_byte:x}"), *kind, "{node}");
    }
    assert!(matches!(
        t.partitions[0].kind,
        PartitionKind::Mbr { bootable: true, .. }
    ));
    assert_eq!(t.partitions.iter().filter(|p| p.number >= 5).count(), 3);
    // Partition 5 as a device reads the disk's bytes at its offset.
    let d = open(&p);
    let p5 = t
        .partitions
        .iter()
        .find(|p| p.number == 5)
        .unwrap()
        .open(d, "mbr.img")
        .unwrap();
    assert_eq!(p5.name(), "mbr.img@5");
    assert_eq!(p5.len(), 6 << 20);
}

fn sgdisk(args: &[&str], path: &Path) {
    common::run(Command::new("sgdisk").args(args).arg(path));
}

fn sgdisk_info(path: &Path, n: u32) -> String {
    let out = Command::new("sgdisk")
        .arg("-i")
        .arg(n.to_string())
        .arg(path)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).to_string()
}

#[test]
fn gpt_matches_sgdisk_and_falls_back_to_the_backup() {
    if !common::have("sgdisk") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let p = disk(dir.path(), "gpt.img", 64);
    sgdisk(
        &[
            "-o",
            "-n",
            "1:2048:+1M",
            "-t",
            "1:ef02",
            "-c",
            "1:bios",
            "-n",
            "2:0:+20M",
            "-t",
            "2:ef00",
            "-c",
            "2:EFI system",
            "-n",
            "3:0:0",
            "-t",
            "3:8e00",
            "-c",
            "3:lvm ünïcode",
        ],
        &p,
    );
    let t = read_partitions(&*open(&p)).unwrap().unwrap();
    assert_eq!(t.scheme, Scheme::Gpt);
    assert!(t.warnings.is_empty(), "{:?}", t.warnings);
    assert_eq!(t.partitions.len(), 3);
    for part in &t.partitions {
        let info = sgdisk_info(&p, part.number);
        let PartitionKind::Gpt {
            type_guid,
            unique_guid,
            name,
            ..
        } = &part.kind
        else {
            panic!()
        };
        assert!(
            info.to_lowercase().contains(&type_guid.to_lowercase()),
            "{info}\n{type_guid}"
        );
        assert!(
            info.to_lowercase().contains(&unique_guid.to_lowercase()),
            "{info}\n{unique_guid}"
        );
        assert!(info.contains(&format!("'{name}'")), "{info}\n{name}");
        assert!(
            info.contains(&format!("First sector: {} ", part.start / 512)),
            "{info}"
        );
        assert!(
            info.contains(&format!(
                "Last sector: {} ",
                (part.start + part.size) / 512 - 1
            )),
            "{info}"
        );
    }
    assert_eq!(t.partitions[1].type_name, "EFI System");
    assert_eq!(t.partitions[2].type_name, "Linux LVM");

    // Damage the primary header: the backup is used, with a warning.
    let mut bytes = std::fs::read(&p).unwrap();
    bytes[512 + 40] ^= 0xff; // inside the CRC'd 92 bytes
    let t2 = read_partitions(&MemDev::new("damaged.img", bytes.clone()))
        .unwrap()
        .unwrap();
    assert_eq!(t2.partitions, t.partitions);
    assert!(
        t2.warnings.iter().any(|w| w.contains("backup")),
        "{:?}",
        t2.warnings
    );
    // Damage the backup too: corrupt.
    let n = bytes.len();
    bytes[n - 512 + 40] ^= 0xff;
    let e = read_partitions(&MemDev::new("both.img", bytes)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Corrupt, "{e}");
    assert!(e.to_string().contains("both.img"), "{e}");
}

#[test]
fn gpt_with_4096_byte_sectors() {
    // sfdisk partitions a file with 512-byte sectors only; a loop device with 4096-byte
    // logical sectors gives a real 4Kn layout.
    if !common::have("sfdisk") || !common::have("losetup") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let p = disk(dir.path(), "4k.img", 64);
    let out = Command::new("losetup")
        .args(["-f", "--show", "-b", "4096"])
        .arg(&p)
        .output()
        .unwrap();
    if !out.status.success() {
        assert!(
            std::env::var_os("CI").is_none(),
            "losetup failed under CI: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        eprintln!("skipping: losetup failed");
        return;
    }
    let dev = String::from_utf8_lossy(&out.stdout).trim().to_string();
    struct Detach(String);
    impl Drop for Detach {
        fn drop(&mut self) {
            let _ = Command::new("losetup").args(["-d", &self.0]).status();
        }
    }
    let guard = Detach(dev.clone());
    sfdisk(Path::new(&dev), "label: gpt\n,16M\n,,\n", &[]);
    let reference = sfdisk_json(Path::new(&dev));
    drop(guard);
    assert_eq!(reference.sector_size, 4096);
    let t = read_partitions(&*open(&p)).unwrap().unwrap();
    assert_eq!(t.sector_size, 4096);
    assert_eq!(t.partitions.len(), 2);
    for (mine, (_, start, size, _)) in t.partitions.iter().zip(&reference.parts) {
        assert_eq!(mine.start, start * 4096);
        assert_eq!(mine.size, size * 4096);
    }
}

fn crc32(data: &[u8]) -> u32 {
    let mut c = !0u32;
    for &b in data {
        c ^= b as u32;
        for _ in 0..8 {
            c = if c & 1 != 0 {
                0xedb8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
        }
    }
    !c
}

#[test]
fn hostile_tables_are_clean_errors_or_warnings() {
    if !common::have("sfdisk") || !common::have("sgdisk") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let p = disk(dir.path(), "mbr.img", 16);
    sfdisk(&p, "label: dos\n,4M,83\n,,5\n,4M,83\n,,83\n", &[]);
    let good = std::fs::read(&p).unwrap();
    let ext_start =
        u32::from_le_bytes(good[446 + 16 + 8..446 + 16 + 12].try_into().unwrap()) as usize * 512;
    // The first EBR's "next" entry points back at itself: a loop.
    let mut b = good.clone();
    let next = ext_start + 446 + 16;
    b[next + 8..next + 12].copy_from_slice(&0u32.to_le_bytes());
    let e = read_partitions(&MemDev::new("loop.img", b)).unwrap_err();
    assert!(e.to_string().contains("loops"), "{e}");
    // The next EBR lies past the disk.
    let mut b = good.clone();
    b[next + 8..next + 12].copy_from_slice(&0x00ff_ffffu32.to_le_bytes());
    let e = read_partitions(&MemDev::new("far.img", b)).unwrap_err();
    assert!(e.to_string().contains("past the end"), "{e}");
    // A primary partition past the end of the disk: left out with a warning.
    let mut b = good.clone();
    b[446 + 12..446 + 16].copy_from_slice(&0x00ff_ffffu32.to_le_bytes());
    let t = read_partitions(&MemDev::new("big.img", b))
        .unwrap()
        .unwrap();
    assert!(
        t.warnings.iter().any(|w| w.contains("past the disk")),
        "{:?}",
        t.warnings
    );
    // Truncated disk: the table's partitions past the new end are warned about.
    let t = read_partitions(&MemDev::new("cut.img", good[..3 << 20].to_vec()))
        .unwrap()
        .unwrap();
    assert!(!t.warnings.is_empty());

    let g = disk(dir.path(), "gpt.img", 16);
    sgdisk(&["-o", "-n", "1:0:0"], &g);
    let gpt = std::fs::read(&g).unwrap();
    let patch = |f: &dyn Fn(&mut [u8])| {
        let mut b = gpt.clone();
        let n = b.len();
        for h in [512usize, n - 512] {
            f(&mut b[h..h + 92]);
            b[h + 16..h + 20].fill(0);
            let c = crc32(&b[h..h + 92]);
            b[h + 16..h + 20].copy_from_slice(&c.to_le_bytes());
        }
        b
    };
    for (what, bytes) in [
        (
            "entry count 2^31",
            patch(&|h| h[80..84].copy_from_slice(&(1u32 << 31).to_le_bytes())),
        ),
        (
            "entry size 0",
            patch(&|h| h[84..88].copy_from_slice(&0u32.to_le_bytes())),
        ),
        (
            "entry size 200",
            patch(&|h| h[84..88].copy_from_slice(&200u32.to_le_bytes())),
        ),
        (
            "entries past end",
            patch(&|h| h[72..80].copy_from_slice(&(1u64 << 40).to_le_bytes())),
        ),
    ] {
        let e = read_partitions(&MemDev::new("hostile.img", bytes)).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Corrupt, "{what}: {e}");
        assert!(
            e.to_string().contains("hostile.img") && e.to_string().contains("GPT"),
            "{what}: {e}"
        );
    }
    // A partition entry past the end (entries CRC recomputed).
    let mut b = gpt.clone();
    let n = b.len();
    for (h, arr) in [(512usize, 1024usize), (n - 512, n - 512 - 128 * 128)] {
        b[arr + 40..arr + 48].copy_from_slice(&(1u64 << 40).to_le_bytes());
        let c = crc32(&b[arr..arr + 128 * 128]);
        b[h + 88..h + 92].copy_from_slice(&c.to_le_bytes());
        b[h + 16..h + 20].fill(0);
        let c = crc32(&b[h..h + 92]);
        b[h + 16..h + 20].copy_from_slice(&c.to_le_bytes());
    }
    let e = read_partitions(&MemDev::new("past.img", b)).unwrap_err();
    assert!(e.to_string().contains("outside the disk"), "{e}");
    // A bare filesystem or empty disk has no table.
    assert!(
        read_partitions(&MemDev::new("zero.img", vec![0u8; 1 << 20]))
            .unwrap()
            .is_none()
    );
}
