//! End-to-end tests of the `transplant` binary: what an administrator types, what they see.

mod common;
use common::have;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_transplant"))
}

fn run(args: &[&str]) -> Output {
    bin().args(args).output().expect("run transplant")
}

fn demo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/demo/guest.qcow2")
}

#[test]
fn info_json_is_stable() {
    let out = run(&["info", "--json", demo().to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for key in [
        "filename",
        "format",
        "subformat",
        "probed_as_raw",
        "virtual_size",
        "file_bytes",
        "allocated_bytes",
        "cluster_size",
        "backing_reference",
        "backing",
        "extents",
        "dirty",
        "notes",
        "details",
    ] {
        assert!(v.get(key).is_some(), "info --json lacks {key}: {v}");
    }
    assert_eq!(v["format"], "qcow2");
    assert_eq!(v["virtual_size"], 16 * 1024 * 1024);
}

#[test]
fn raw_is_said_to_be_probed() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("disk.qcow2");
    std::fs::write(&p, vec![7u8; 4096]).unwrap();
    let out = run(&["info", p.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("probed as raw"), "{text}");
}

#[test]
fn convert_to_raw_matches_qemu_and_keeps_holes() {
    if !have("qemu-img") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let ours = dir.path().join("ours.raw");
    let theirs = dir.path().join("theirs.raw");
    let out = run(&[
        "convert",
        demo().to_str().unwrap(),
        ours.to_str().unwrap(),
        "-O",
        "raw",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let st = Command::new("qemu-img")
        .args(["convert", "-O", "raw"])
        .arg(demo())
        .arg(&theirs)
        .status()
        .unwrap();
    assert!(st.success());
    assert_eq!(
        std::fs::read(&ours).unwrap(),
        std::fs::read(&theirs).unwrap()
    );
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(&ours).unwrap();
    assert!(
        m.blocks() * 512 < m.len() / 2,
        "the output is not sparse: {} of {}",
        m.blocks() * 512,
        m.len()
    );
    // The output exists: a second convert refuses (exit 5) and --overwrite goes ahead.
    let again = run(&["convert", demo().to_str().unwrap(), ours.to_str().unwrap()]);
    assert_eq!(again.status.code(), Some(5));
    let over = run(&[
        "convert",
        "--overwrite",
        "-q",
        demo().to_str().unwrap(),
        ours.to_str().unwrap(),
    ]);
    assert!(over.status.success());
    // Only the two outputs are in the folder: no partial file left anywhere.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
}

#[test]
fn convert_json_reports_summary() {
    let dir = tempfile::tempdir().unwrap();
    let o = dir.path().join("o.raw");
    let out = run(&[
        "convert",
        "--json",
        demo().to_str().unwrap(),
        o.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["virtual_size"], 16 * 1024 * 1024);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.lines().any(|l| l.contains("\"event\":\"progress\"")),
        "{stderr}"
    );
}

#[test]
fn map_lists_runs_covering_the_disk() {
    let out = run(&["map", "--json", demo().to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let runs = v.as_array().unwrap();
    let mut pos = 0;
    for r in runs {
        assert_eq!(r["start"].as_u64().unwrap(), pos);
        pos += r["length"].as_u64().unwrap();
    }
    assert_eq!(pos, 16 * 1024 * 1024);
    assert!(runs.iter().any(|r| r["kind"] == "data"));
    assert!(runs.iter().any(|r| r["kind"] != "data"));
}

#[test]
fn errors_are_one_line_with_a_kind_exit_code() {
    let dir = tempfile::tempdir().unwrap();
    // A qcow2 header cut short.
    let p = dir.path().join("cut.qcow2");
    let full = std::fs::read(demo()).unwrap();
    std::fs::write(&p, &full[..40]).unwrap();
    let out = run(&["info", p.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("cut.qcow2"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    let missing = run(&["info", "/nonexistent/x.qcow2"]);
    assert_eq!(missing.status.code(), Some(1));
}

#[test]
fn convert_to_qcow2_compressed_and_as_overlay() {
    if !have("qemu-img") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("base.raw");
    let data: Vec<u8> = (0..8 << 20).map(|i: u32| (i % 251) as u8).collect();
    std::fs::write(&base, &data).unwrap();
    let q = dir.path().join("c.qcow2");
    let out = run(&[
        "convert",
        "-q",
        "-O",
        "qcow2",
        "-c",
        "-o",
        "compression_type=zstd,cluster_size=128K",
        base.to_str().unwrap(),
        q.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let info = Command::new("qemu-img")
        .args(["info", "--output=json"])
        .arg(&q)
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&info.stdout).unwrap();
    assert_eq!(v["cluster-size"], 131072);
    assert_eq!(v["format-specific"]["data"]["compression-type"], "zstd");
    assert!(Command::new("qemu-img")
        .arg("check")
        .arg(&q)
        .status()
        .unwrap()
        .success());
    // A thin overlay of an edited copy holds only the difference.
    let edited = dir.path().join("edited.raw");
    let mut e = data.clone();
    e[3_000_000..3_000_005].copy_from_slice(b"hello");
    std::fs::write(&edited, &e).unwrap();
    let ov = dir.path().join("delta.qcow2");
    let out = run(&[
        "convert",
        "-q",
        "-O",
        "qcow2",
        "--backing",
        base.to_str().unwrap(),
        edited.to_str().unwrap(),
        ov.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(std::fs::metadata(&ov).unwrap().len() < 1 << 20);
    let back = dir.path().join("back.raw");
    assert!(Command::new("qemu-img")
        .args(["convert", "-O", "raw"])
        .arg(&ov)
        .arg(&back)
        .status()
        .unwrap()
        .success());
    assert!(std::fs::read(&back).unwrap() == e);
    // Options that do not apply are errors.
    let bad = run(&[
        "convert",
        "-q",
        "-O",
        "raw",
        "-o",
        "cluster_size=64K",
        base.to_str().unwrap(),
        dir.path().join("x.raw").to_str().unwrap(),
    ]);
    assert_eq!(bad.status.code(), Some(1));
}

#[test]
fn convert_to_vmdk_and_vhdx_reads_back_in_qemu() {
    if !have("qemu-img") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src.raw");
    let data: Vec<u8> = (0..6 << 20)
        .map(|i: u32| if i < 1 << 20 { 0 } else { (i % 253) as u8 })
        .collect();
    std::fs::write(&src, &data).unwrap();
    for (fmt, extra, subformat) in [
        ("vmdk", "-c", "streamOptimized"),
        ("vmdk", "", "monolithicSparse"),
        ("vhdx", "", ""),
    ] {
        let out = dir.path().join(format!("o-{subformat}.{fmt}"));
        let mut args = vec!["convert", "-q", "-O", fmt];
        if !extra.is_empty() {
            args.push(extra);
        }
        args.push(src.to_str().unwrap());
        args.push(out.to_str().unwrap());
        let r = run(&args);
        assert!(
            r.status.success(),
            "{fmt} {extra}: {}",
            String::from_utf8_lossy(&r.stderr)
        );
        assert!(
            Command::new("qemu-img")
                .arg("check")
                .arg(&out)
                .status()
                .unwrap()
                .success(),
            "{fmt} {extra}"
        );
        let back = dir.path().join("back.raw");
        let _ = std::fs::remove_file(&back);
        assert!(Command::new("qemu-img")
            .args(["convert", "-O", "raw"])
            .arg(&out)
            .arg(&back)
            .status()
            .unwrap()
            .success());
        assert!(std::fs::read(&back).unwrap() == data, "{fmt} {extra}");
        if !subformat.is_empty() {
            let info = Command::new("qemu-img")
                .arg("info")
                .arg(&out)
                .output()
                .unwrap();
            assert!(String::from_utf8_lossy(&info.stdout).contains(subformat));
        }
    }
}
