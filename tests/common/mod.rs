//! Helpers shared by the end-to-end tests: running the binary and the reference tools.
#![allow(dead_code)]

use std::path::Path;
use std::process::{Command, Output, Stdio};

/// Whether a reference tool is installed; when `CI` is set a missing tool fails the test
/// instead of skipping it silently.
pub fn have(tool: &str) -> bool {
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

/// Runs `transplant ARGS`.
pub fn transplant(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_transplant"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// Runs a shell command line, panicking with its output if it fails.
pub fn sh(cmd: &str) -> String {
    let o = Command::new("sh").arg("-c").arg(cmd).output().unwrap();
    assert!(
        o.status.success(),
        "{cmd}: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn ok(o: &Output) {
    assert!(
        o.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

/// `debugfs -R REQ` on an ext2/3/4 image (read-only), stdout bytes.
pub fn debugfs(img: &Path, req: &str) -> Vec<u8> {
    let o = Command::new("debugfs")
        .arg("-R")
        .arg(req)
        .arg(img)
        .stderr(Stdio::null())
        .output()
        .unwrap();
    o.stdout
}

/// `e2fsck -fn` finds nothing to fix.
pub fn assert_fsck_clean(img: &Path) {
    let o = Command::new("e2fsck").arg("-fn").arg(img).output().unwrap();
    assert!(
        o.status.success(),
        "e2fsck -fn {}: {}{}",
        img.display(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}
