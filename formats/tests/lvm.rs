//! LVM2 read against real lvm2 tools: PVs on loop devices over files whose every 8-byte
//! word encodes (PV, offset), so each byte read through an LV says where it came from;
//! that is checked against the segment map `lvs` reports. No device mapper is used
//! (`--driverloaded n`), as on a machine without it.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use transplant_formats::lvm::{assemble, scan_pv};
use transplant_formats::{BlockDev, ErrorKind, MemDev, RawFile};

struct Loops(Vec<String>);
impl Drop for Loops {
    fn drop(&mut self) {
        for d in &self.0 {
            let _ = Command::new("losetup").args(["-d", d]).status();
        }
    }
}

fn lvm(args: &[&str]) -> String {
    let out = Command::new(args[0])
        .args(&args[1..])
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

fn pattern_file(path: &Path, id: u64, len: usize) {
    let mut b = vec![0u8; len];
    for (i, w) in b.chunks_exact_mut(8).enumerate() {
        w.copy_from_slice(&((id << 48) | i as u64).to_le_bytes());
    }
    std::fs::write(path, b).unwrap();
}

/// Makes a VG of two 64 MiB PV files with a linear LV of two segments and a striped LV.
/// Returns the PV files (detached again) and the JSON reports of `lvs` and `pvs`.
fn make_vg(dir: &Path, vg: &str) -> Option<(Vec<PathBuf>, serde_json::Value, serde_json::Value)> {
    if !common::have("pvcreate") || !common::have("losetup") {
        return None;
    }
    let files: Vec<PathBuf> = (0..2).map(|i| dir.join(format!("pv{i}.img"))).collect();
    for (i, f) in files.iter().enumerate() {
        pattern_file(f, i as u64 + 1, 64 << 20);
    }
    let mut loops = Loops(Vec::new());
    for f in &files {
        let out = Command::new("losetup")
            .args(["-f", "--show"])
            .arg(f)
            .output()
            .unwrap();
        if !out.status.success() {
            assert!(std::env::var_os("CI").is_none(), "losetup failed under CI");
            return None;
        }
        loops
            .0
            .push(String::from_utf8_lossy(&out.stdout).trim().to_string());
    }
    let (a, b) = (loops.0[0].clone(), loops.0[1].clone());
    // Keep this test's VG invisible to others and to the host's LVM cache.
    let filter = format!("devices {{ filter = [ \"a|^{a}$|\", \"a|^{b}$|\", \"r|.*|\" ] }}");
    let cfg = ["--config", filter.as_str()];
    let run = |args: &[&str]| {
        let mut v: Vec<&str> = args.to_vec();
        v.extend_from_slice(&cfg);
        lvm(&v)
    };
    run(&["pvcreate", "-q", "-ff", "-y", &a, &b]);
    run(&["vgcreate", "-q", "-s", "4M", vg, &a, &b]);
    run(&[
        "lvcreate",
        "-q",
        "--driverloaded",
        "n",
        "--activate",
        "n",
        "--zero",
        "n",
        "-L",
        "16M",
        "-n",
        "lin",
        vg,
    ]);
    run(&[
        "lvcreate",
        "-q",
        "--driverloaded",
        "n",
        "--activate",
        "n",
        "--zero",
        "n",
        "-i",
        "2",
        "-I",
        "64k",
        "-L",
        "32M",
        "-n",
        "str",
        vg,
    ]);
    run(&[
        "lvextend",
        "-q",
        "--driverloaded",
        "n",
        "-L",
        "+8M",
        &format!("{vg}/lin"),
    ]);
    let lvs = run(&[
        "lvs",
        "--reportformat",
        "json",
        "--units",
        "b",
        "--nosuffix",
        "--segments",
        "-o",
        "lv_name,lv_uuid,lv_size,seg_start,seg_size,stripes,stripe_size,devices",
        vg,
    ]);
    let pvs = run(&[
        "pvs",
        "--reportformat",
        "json",
        "--units",
        "b",
        "--nosuffix",
        "-o",
        "pv_name,pv_uuid,pe_start",
        "--select",
        &format!("vg_name={vg}"),
    ]);
    // Detaching the loop devices (when `loops` drops) makes the VG vanish from the host;
    // the PV files keep it.
    Some((
        files,
        serde_json::from_str(&lvs).unwrap(),
        serde_json::from_str(&pvs).unwrap(),
    ))
}

fn word(dev: &dyn BlockDev, pos: u64) -> u64 {
    let mut b = [0u8; 8];
    dev.read_at(&mut b, pos).unwrap();
    u64::from_le_bytes(b)
}

#[test]
fn linear_and_striped_lvs_map_like_lvm() {
    let dir = tempfile::tempdir().unwrap();
    let vg = format!("tpvg{}", std::process::id());
    let Some((files, lvs, pvs)) = make_vg(dir.path(), &vg) else {
        return;
    };
    let devs: Vec<Arc<dyn BlockDev>> = files
        .iter()
        .map(|f| Arc::new(RawFile::open(f, false).unwrap()) as Arc<dyn BlockDev>)
        .collect();
    let scanned: Vec<_> = devs
        .iter()
        .map(|d| scan_pv(d.clone()).unwrap().expect("a PV"))
        .collect();
    let vgs = assemble(scanned).unwrap();
    assert_eq!(vgs.len(), 1);
    let g = &vgs[0];
    assert_eq!(g.name, vg);
    assert_eq!(g.extent_size, 4 << 20);
    // PV device name (loop path) -> our file index, and pe_start.
    let pv_rows = pvs["report"][0]["pv"].as_array().unwrap();
    let pe_start: Vec<(String, String, u64)> = pv_rows
        .iter()
        .map(|r| {
            (
                r["pv_name"].as_str().unwrap().into(),
                r["pv_uuid"].as_str().unwrap().into(),
                r["pe_start"].as_str().unwrap().parse().unwrap(),
            )
        })
        .collect();
    let file_of = |loopdev: &str| -> (u64, u64) {
        let row = pe_start.iter().find(|r| r.0 == loopdev).unwrap();
        // The pattern id of the file holding this PV (files were made in order 1, 2).
        let idx = devs
            .iter()
            .position(|d| scan_pv(d.clone()).unwrap().unwrap().uuid == row.1)
            .unwrap();
        (idx as u64 + 1, row.2)
    };
    for seg in lvs["report"][0]["seg"].as_array().unwrap() {
        let name = seg["lv_name"].as_str().unwrap();
        let lv = g.lvs.iter().find(|l| l.name == name).unwrap();
        assert_eq!(lv.uuid, seg["lv_uuid"].as_str().unwrap());
        assert_eq!(lv.size.to_string(), seg["lv_size"].as_str().unwrap());
        let dev = g.open_lv(name).unwrap();
        let start: u64 = seg["seg_start"].as_str().unwrap().parse().unwrap();
        let size: u64 = seg["seg_size"].as_str().unwrap().parse().unwrap();
        let n: u64 = seg["stripes"].as_str().unwrap().parse().unwrap();
        let ss: u64 = seg["stripe_size"].as_str().unwrap().parse().unwrap();
        let devices: Vec<(String, u64)> = seg["devices"]
            .as_str()
            .unwrap()
            .split(',')
            .map(|d| {
                let (p, e) = d.split_once('(').unwrap();
                (p.to_string(), e.trim_end_matches(')').parse().unwrap())
            })
            .collect();
        assert_eq!(devices.len() as u64, n);
        // Check every 4 KiB: the word there must come from where lvs says.
        let mut o = 0;
        while o < size {
            let (stripe, within) = if n == 1 {
                (0, o)
            } else {
                (((o / ss) % n) as usize, (o / ss / n) * ss + o % ss)
            };
            let (pvdev, first_pe) = &devices[stripe];
            let (id, pe0) = file_of(pvdev);
            let expect = (id << 48) | ((pe0 + first_pe * g.extent_size + within) / 8);
            assert_eq!(word(&*dev, start + o), expect, "{name} at {}", start + o);
            o += 4096;
        }
    }
    hostile_variants(&files[0], &files[1], &vg);

    // Only one PV given: LVs on the other are listed but refused, naming it.
    let one = assemble(vec![scan_pv(devs[0].clone()).unwrap().unwrap()]).unwrap();
    let str_lv = one[0].lvs.iter().find(|l| l.name == "str").unwrap();
    assert!(str_lv
        .unsupported
        .as_deref()
        .unwrap_or("")
        .contains("not among the given disks"));
    let e = one[0].open_lv("str").err().unwrap();
    assert_eq!(e.kind(), ErrorKind::Unsupported, "{e}");
}

#[test]
fn hostile_metadata_is_a_clean_error() {
    // A PV label pointing at a metadata area past the device end, built from nothing.
    let mut b = vec![0u8; 1 << 20];
    b[512..520].copy_from_slice(b"LABELONE");
    let e = scan_pv(Arc::new(MemDev::new("bad.img", b))).err().unwrap();
    assert_eq!(e.kind(), ErrorKind::Corrupt, "{e}");
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

/// Rewrites the current metadata text of a PV file (metadata area at 4096, as pvcreate
/// lays it out), fixing both checksums so only the content is hostile.
fn with_text(pv: &[u8], edit: &dyn Fn(&str) -> String) -> Vec<u8> {
    let mut b = pv.to_vec();
    let mda = 4096usize;
    let off = u64::from_le_bytes(b[mda + 40..mda + 48].try_into().unwrap()) as usize;
    let len = u64::from_le_bytes(b[mda + 48..mda + 56].try_into().unwrap()) as usize;
    let text = String::from_utf8_lossy(&b[mda + off..mda + off + len])
        .trim_end_matches('\0')
        .to_string();
    let new = edit(&text).into_bytes();
    b[mda + off..mda + off + new.len()].copy_from_slice(&new);
    b[mda + 48..mda + 56].copy_from_slice(&(new.len() as u64).to_le_bytes());
    let c = calc_crc(&new);
    b[mda + 56..mda + 60].copy_from_slice(&c.to_le_bytes());
    let h = calc_crc(&b[mda + 4..mda + 512]);
    b[mda..mda + 4].copy_from_slice(&h.to_le_bytes());
    b
}

fn hostile_variants(pv0: &Path, pv1: &Path, vg: &str) {
    let a = std::fs::read(pv0).unwrap();
    let b: Arc<dyn BlockDev> = Arc::new(MemDev::new("pv1", std::fs::read(pv1).unwrap()));
    let try_open = |bytes: Vec<u8>| -> Result<(), transplant_formats::Error> {
        let pv = scan_pv(Arc::new(MemDev::new("hostile-pv", bytes)))?.expect("still a PV");
        let other = scan_pv(b.clone())?.expect("a PV");
        for g in assemble(vec![pv, other])? {
            for l in &g.lvs {
                if l.unsupported.is_none() {
                    g.open_lv(&l.name)?;
                }
            }
        }
        Ok(())
    };
    // Unbalanced braces.
    let e = try_open(with_text(&a, &|t| t.replacen('}', "", 1))).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Corrupt, "{e}");
    // A huge extent count: the segment runs past the PV.
    let e = try_open(with_text(&a, &|t| {
        t.replacen("extent_count = 4", "extent_count = 4000000000", 1)
            .replacen("seqno = ", "seqno = 9", 1)
    }))
    .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Corrupt, "{e}");
    // A newer seqno wins: bump it and rename the VG; the new name must be what we see.
    let renamed = with_text(&a, &|t| {
        t.replacen(&format!("{vg} {{"), "renamed {", 1)
            .replacen("seqno = ", "seqno = 9", 1)
    });
    let pv = scan_pv(Arc::new(MemDev::new("newer", renamed)))
        .unwrap()
        .unwrap();
    assert_eq!(pv.metadata.as_ref().unwrap().0, "renamed");
    // The metadata location pointing outside its area.
    let mut bad = a.clone();
    bad[4096 + 40..4096 + 48].copy_from_slice(&(1u64 << 40).to_le_bytes());
    let h = calc_crc(&bad[4096 + 4..4096 + 512]);
    bad[4096..4096 + 4].copy_from_slice(&h.to_le_bytes());
    let e = scan_pv(Arc::new(MemDev::new("outside", bad)))
        .err()
        .unwrap();
    assert_eq!(e.kind(), ErrorKind::Corrupt, "{e}");
}
