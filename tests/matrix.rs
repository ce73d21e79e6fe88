//! Every reader format × every writer format, judged by qemu-img: one small patterned raw
//! disk with holes is turned by `qemu-img convert` into each input format, each input is
//! converted by `transplant convert --verify` into each output format, and the output
//! read back by `qemu-img convert -O raw` must equal the input as qemu reads it.
//! `qemu-img check` must pass on qcow2 and VMDK outputs (no errors, no leaks), and
//! `qemu-img info` must report the input's virtual size.

mod common;
use common::have;

use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::Command;

fn run(cmd: &mut Command) -> String {
    let o = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        o.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// 4 MiB + 67.5 KiB: not a whole number of clusters, grains or blocks. Data runs of
/// several shapes (text-like, random-like, a run of one byte), whole holes, a zero run
/// inside data, and data in the last sector.
fn source(dir: &Path) -> PathBuf {
    let size = (4 << 20) + 64 * 1024 + 3 * 512;
    let mut d = vec![0u8; size];
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for (i, b) in d.iter_mut().enumerate() {
        let region = i / (128 * 1024);
        *b = match region % 4 {
            0 => b"the quick brown fox jumps over the lazy dog\n"[i % 44],
            1 => {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            }
            2 => 0,
            _ => 0xa5,
        };
    }
    d[300_000..330_000].fill(0);
    let n = d.len();
    d[n - 100..].fill(0x5a);
    let p = dir.join("source.raw");
    std::fs::write(&p, &d).unwrap();
    // Holes in the host file too, so raw input has SEEK_HOLE runs.
    let st = Command::new("fallocate")
        .args(["--dig-holes"])
        .arg(&p)
        .status();
    let _ = st;
    p
}

fn qemu_raw(img: &Path, fmt: &str, dir: &Path) -> (String, u64) {
    let out = dir.join(format!(
        "readback-{}.raw",
        img.file_name().unwrap().to_string_lossy()
    ));
    run(Command::new("qemu-img")
        .args(["convert", "-f", fmt, "-O", "raw"])
        .arg(img)
        .arg(&out));
    let bytes = std::fs::read(&out).unwrap();
    std::fs::remove_file(&out).unwrap();
    (hex(&Sha256::digest(&bytes)), bytes.len() as u64)
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn virtual_size(img: &Path, fmt: &str) -> u64 {
    let j = run(Command::new("qemu-img")
        .args(["info", "--output=json", "-f", fmt])
        .arg(img));
    let v: serde_json::Value = serde_json::from_str(&j).unwrap();
    v["virtual-size"].as_u64().unwrap()
}

const INPUTS: &[(&str, &str, &[&str])] = &[
    // name, qemu format, qemu-img convert options
    ("raw", "raw", &[]),
    ("qcow2-v2", "qcow2", &["-O", "qcow2", "-o", "compat=0.10"]),
    ("qcow2-v3", "qcow2", &["-O", "qcow2"]),
    ("qcow2-zlib", "qcow2", &["-c", "-O", "qcow2"]),
    (
        "qcow2-zstd",
        "qcow2",
        &["-c", "-O", "qcow2", "-o", "compression_type=zstd"],
    ),
    ("vmdk-sparse", "vmdk", &["-O", "vmdk"]),
    (
        "vmdk-stream",
        "vmdk",
        &["-O", "vmdk", "-o", "subformat=streamOptimized"],
    ),
    (
        "vmdk-2gb",
        "vmdk",
        &["-O", "vmdk", "-o", "subformat=twoGbMaxExtentSparse"],
    ),
    ("vhdx", "vhdx", &["-O", "vhdx"]),
    ("vhd-dynamic", "vpc", &["-O", "vpc"]),
    ("vhd-fixed", "vpc", &["-O", "vpc", "-o", "subformat=fixed"]),
];

const OUTPUTS: &[(&str, &str, &[&str])] = &[
    // name, qemu format, transplant options
    ("raw", "raw", &["-O", "raw"]),
    ("qcow2", "qcow2", &["-O", "qcow2"]),
    ("qcow2-zlib", "qcow2", &["-O", "qcow2", "-c"]),
    (
        "qcow2-zstd",
        "qcow2",
        &[
            "-O",
            "qcow2",
            "-c",
            "-o",
            "compression_type=zstd,cluster_size=16K",
        ],
    ),
    ("vmdk-sparse", "vmdk", &["-O", "vmdk"]),
    ("vmdk-stream", "vmdk", &["-O", "vmdk", "-c"]),
    ("vhdx", "vhdx", &["-O", "vhdx", "-o", "block_size=1M"]),
];

#[test]
fn every_reader_into_every_writer() {
    if !have("qemu-img") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let src = source(dir.path());
    let mut failures = Vec::new();
    let mut count = 0;
    for (iname, ifmt, iopts) in INPUTS {
        let idir = dir.path().join(iname);
        std::fs::create_dir(&idir).unwrap();
        let input = if *iname == "raw" {
            src.clone()
        } else {
            let p = idir.join(format!("in.{ifmt}"));
            run(Command::new("qemu-img")
                .args(["convert", "-f", "raw"])
                .args(*iopts)
                .arg(&src)
                .arg(&p));
            p
        };
        let (want, want_len) = qemu_raw(&input, ifmt, &idir);
        let want_size = virtual_size(&input, ifmt);
        for (oname, ofmt, oopts) in OUTPUTS {
            count += 1;
            let out = idir.join(format!("out-{oname}.{ofmt}"));
            let o = Command::new(env!("CARGO_BIN_EXE_transplant"))
                .arg("convert")
                .arg(&input)
                .arg(&out)
                .args(*oopts)
                .args(["--verify", "-q"])
                .output()
                .unwrap();
            let case = format!("{iname} -> {oname}");
            if !o.status.success() {
                failures.push(format!(
                    "{case}: transplant failed: {}",
                    String::from_utf8_lossy(&o.stderr)
                ));
                continue;
            }
            let (got, got_len) = qemu_raw(&out, ofmt, &idir);
            // qemu keeps a raw file's size as it is, we too; other outputs count whole
            // sectors, and the input did as well.
            if got != want || got_len != want_len {
                failures.push(format!(
                    "{case}: qemu reads other bytes ({got_len} vs {want_len} bytes)"
                ));
            }
            let size = virtual_size(&out, ofmt);
            if size != want_size {
                failures.push(format!(
                    "{case}: virtual size {size}, the input has {want_size}"
                ));
            }
            if *ofmt == "qcow2" || *ofmt == "vmdk" {
                let c = Command::new("qemu-img")
                    .args(["check", "-f", ofmt])
                    .arg(&out)
                    .output()
                    .unwrap();
                let t = String::from_utf8_lossy(&c.stdout);
                if !c.status.success() || !t.contains("No errors") || t.contains("leaked") {
                    failures.push(format!("{case}: qemu-img check: {t}"));
                }
            }
            std::fs::remove_file(&out).unwrap();
        }
    }
    assert_eq!(count, INPUTS.len() * OUTPUTS.len());
    assert!(
        failures.is_empty(),
        "{} of {count} conversions wrong:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
