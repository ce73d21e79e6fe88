//! Shared helpers for the reader tests: fixture images built by real tools, and the
//! reference digest from `qemu-img convert -O raw`.
#![allow(dead_code)]

use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::Command;
use transplant_formats::BlockDev;

/// True if `tool` can be run. When `CI` is set a missing tool fails the test: CI installs
/// every tool, so a missing one is a broken CI, never a silent skip.
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

/// Builds (once, under a lock) and returns the folder of a fixture set.
pub fn fixtures(set: &str) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures");
    let st = Command::new("bash")
        .arg(root.join("build.sh"))
        .arg(set)
        .status()
        .expect("run fixtures/build.sh");
    assert!(st.success(), "fixtures/build.sh {set} failed");
    root.join("out").join(set)
}

/// SHA-256 of the whole virtual disk as `qemu-img convert -O raw` produces it.
pub fn qemu_raw_sha256(image: &Path, format: Option<&str>) -> String {
    let tmp = tempfile::Builder::new()
        .prefix("qemu-ref")
        .suffix(".raw")
        .tempfile()
        .unwrap();
    let mut cmd = Command::new("qemu-img");
    cmd.arg("convert");
    if let Some(f) = format {
        cmd.args(["-f", f]);
    }
    cmd.args(["-O", "raw"]).arg(image).arg(tmp.path());
    let out = cmd.output().expect("run qemu-img");
    assert!(
        out.status.success(),
        "qemu-img convert {} failed: {}",
        image.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    sha256_file(tmp.path())
}

pub fn sha256_file(path: &Path) -> String {
    let mut f = std::fs::File::open(path).unwrap();
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h).unwrap();
    hex(&h.finalize())
}

/// SHA-256 of a device read through our reader, in 1 MiB reads.
pub fn sha256_dev(dev: &dyn BlockDev) -> String {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut pos = 0u64;
    while pos < dev.len() {
        let n = (dev.len() - pos).min(buf.len() as u64) as usize;
        dev.read_at(&mut buf[..n], pos)
            .unwrap_or_else(|e| panic!("read at {pos:#x}: {e}"));
        h.update(&buf[..n]);
        pos += n as u64;
    }
    hex(&h.finalize())
}

/// SHA-256 of a device read only where `extent_at` says there is data, zeroes elsewhere:
/// proves the extent map never hides data.
pub fn sha256_dev_by_extents(dev: &dyn BlockDev) -> String {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let zeros = vec![0u8; 1 << 20];
    for run in transplant_formats::extents_in(dev, 0, dev.len()) {
        let (start, e) = run.unwrap();
        let mut pos = start;
        while pos < start + e.len {
            let n = (start + e.len - pos).min(buf.len() as u64) as usize;
            if e.kind.has_data() {
                dev.read_at(&mut buf[..n], pos).unwrap();
                h.update(&buf[..n]);
            } else {
                h.update(&zeros[..n]);
            }
            pos += n as u64;
        }
    }
    hex(&h.finalize())
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Opens with our reader and checks both digests (full read, extent-guided read) against
/// qemu-img's.
pub fn assert_same_as_qemu(image: &Path, qemu_format: Option<&str>) {
    let reference = qemu_raw_sha256(image, qemu_format);
    let img = transplant_formats::open_image(image, &Default::default())
        .unwrap_or_else(|e| panic!("open {}: {e}", image.display()));
    assert_eq!(
        sha256_dev(&*img),
        reference,
        "full read of {}",
        image.display()
    );
    assert_eq!(
        sha256_dev_by_extents(&*img),
        reference,
        "extent-guided read of {}",
        image.display()
    );
}

/// Runs a command, panicking with its stderr on failure.
pub fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
