//! Randomized: hundreds of short operation sequences (create, mkdir, symlink, replace,
//! remove, rename, chmod) against a model of the tree. After each sequence the changes are
//! committed, `e2fsck -fn` must find the filesystem clean, and the tree read back (through
//! this crate, and every few sequences through `debugfs rdump`) must equal the model. The
//! filesystem is small, so some operations run out of space: those must fail with NoSpace
//! and change nothing.

mod common;

use common::*;
use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use transplant_fs::{Error, FileKind, Filesystem, NewNode, SetAttrs};

#[derive(Debug, Clone, PartialEq)]
enum Node {
    File(Vec<u8>, u32),
    Dir(u32),
    Link(Vec<u8>),
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

type Model = BTreeMap<Vec<u8>, Node>;
/// How the model changes if the operation is valid (None: it must fail).
type Apply = Box<dyn FnOnce(&mut Model)>;

fn parent(p: &[u8]) -> Vec<u8> {
    match p.iter().rposition(|&c| c == b'/') {
        Some(0) | None => b"/".to_vec(),
        Some(i) => p[..i].to_vec(),
    }
}

fn join(dir: &[u8], name: &[u8]) -> Vec<u8> {
    let mut p = dir.to_vec();
    if p != b"/" {
        p.push(b'/');
    }
    p.extend_from_slice(name);
    p
}

fn children<'a>(m: &'a Model, dir: &'a [u8]) -> impl Iterator<Item = &'a Vec<u8>> + 'a {
    m.keys()
        .filter(move |k| k.as_slice() != b"/" && parent(k) == dir)
}

fn data(r: &mut Rng) -> Vec<u8> {
    let n = match r.below(10) {
        0 => 0,
        1..=4 => r.below(3000),
        5..=6 => r.below(60_000),
        _ => r.below(1_500_000),
    } as usize;
    let seed = r.next() as u8;
    (0..n).map(|i| (i as u8).wrapping_mul(31) ^ seed).collect()
}

/// Runs one random operation on both; returns a description.
fn step(fs: &dyn Filesystem, m: &mut Model, r: &mut Rng) -> String {
    let dirs: Vec<Vec<u8>> = m
        .iter()
        .filter(|(_, n)| matches!(n, Node::Dir(_)))
        .map(|(k, _)| k.clone())
        .collect();
    let all: Vec<Vec<u8>> = m.keys().filter(|k| k.as_slice() != b"/").cloned().collect();
    let names = [
        "a",
        "b",
        "c",
        "dd",
        "long-name-for-a-file.conf",
        "x.txt",
        "y",
    ];
    let dir = dirs[r.below(dirs.len() as u64) as usize].clone();
    let name = names[r.below(names.len() as u64) as usize].as_bytes();
    let path = join(&dir, name);
    let pick = |r: &mut Rng| all.get(r.below(all.len() as u64) as usize).cloned();
    let exists = m.contains_key(&path);
    let op = r.below(8);
    let (what, res, apply): (String, transplant_fs::Result<()>, Option<Apply>) = match op {
        0 | 1 => {
            let d = data(r);
            let res = fs.create(&path, NewNode::File(&d), &SetAttrs::default());
            let p = path.clone();
            (
                format!("create {} ({} bytes)", show(&path), d.len()),
                res,
                (!exists).then(|| {
                    Box::new(move |m: &mut Model| {
                        m.insert(p, Node::File(d, 0o644));
                    }) as Box<dyn FnOnce(&mut Model)>
                }),
            )
        }
        2 => {
            let res = fs.create(&path, NewNode::Dir, &SetAttrs::default());
            let p = path.clone();
            (
                format!("mkdir {}", show(&path)),
                res,
                (!exists).then(|| {
                    Box::new(move |m: &mut Model| {
                        m.insert(p, Node::Dir(0o755));
                    }) as Box<dyn FnOnce(&mut Model)>
                }),
            )
        }
        3 => {
            let n = 1 + r.below(300) as usize;
            let t: Vec<u8> = (0..n).map(|i| b'a' + (i % 26) as u8).collect();
            let res = fs.create(&path, NewNode::Symlink(&t), &SetAttrs::default());
            let p = path.clone();
            (
                format!("symlink {} ({n})", show(&path)),
                res,
                (!exists).then(|| {
                    Box::new(move |m: &mut Model| {
                        m.insert(p, Node::Link(t));
                    }) as Box<dyn FnOnce(&mut Model)>
                }),
            )
        }
        4 => {
            let Some(p) = pick(r) else {
                return "nothing".into();
            };
            let d = data(r);
            let res = fs.write_file(&p, &d);
            let ok = matches!(m.get(&p), Some(Node::File(..)));
            let pp = p.clone();
            (
                format!("write {} ({} bytes)", show(&p), d.len()),
                res,
                ok.then(|| {
                    Box::new(move |m: &mut Model| {
                        if let Some(Node::File(c, _)) = m.get_mut(&pp) {
                            *c = d;
                        }
                    }) as Box<dyn FnOnce(&mut Model)>
                }),
            )
        }
        5 => {
            let Some(p) = pick(r) else {
                return "nothing".into();
            };
            let empty = children(m, &p).next().is_none();
            let ok = !matches!(m.get(&p), Some(Node::Dir(_))) || empty;
            let res = fs.remove(&p);
            let pp = p.clone();
            (
                format!("remove {}", show(&p)),
                res,
                ok.then(|| {
                    Box::new(move |m: &mut Model| {
                        m.remove(&pp);
                    }) as Box<dyn FnOnce(&mut Model)>
                }),
            )
        }
        6 => {
            let Some(from) = pick(r) else {
                return "nothing".into();
            };
            let to = path.clone();
            let src_dir = matches!(m.get(&from), Some(Node::Dir(_)));
            let into_self = to.starts_with(&from) && to.get(from.len()) == Some(&b'/');
            let ok = if from == to {
                true
            } else if into_self {
                false
            } else {
                match m.get(&to) {
                    None => true,
                    Some(Node::Dir(_)) => src_dir && children(m, &to).next().is_none(),
                    Some(_) => !src_dir,
                }
            };
            let res = fs.rename(&from, &to);
            let (f2, t2) = (from.clone(), to.clone());
            (
                format!("rename {} -> {}", show(&from), show(&to)),
                res,
                ok.then(|| {
                    Box::new(move |m: &mut Model| {
                        if f2 == t2 {
                            return;
                        }
                        m.remove(&t2);
                        let moved: Vec<Vec<u8>> = m
                            .keys()
                            .filter(|k| {
                                *k == &f2 || (k.starts_with(&f2) && k.get(f2.len()) == Some(&b'/'))
                            })
                            .cloned()
                            .collect();
                        for k in moved {
                            let v = m.remove(&k).unwrap();
                            let mut n = t2.clone();
                            n.extend_from_slice(&k[f2.len()..]);
                            m.insert(n, v);
                        }
                    }) as Box<dyn FnOnce(&mut Model)>
                }),
            )
        }
        _ => {
            let Some(p) = pick(r) else {
                return "nothing".into();
            };
            let mode = (r.below(0o7777) as u32) | 0o700;
            let res = fs.set_attrs(
                &p,
                &SetAttrs {
                    mode: Some(mode),
                    ..Default::default()
                },
            );
            let is_link = matches!(m.get(&p), Some(Node::Link(_)));
            let pp = p.clone();
            (
                format!("chmod {:o} {}", mode, show(&p)),
                // set_attrs on a symlink changes the link inode here (one fs, no
                // resolution): the model ignores link modes.
                res,
                Some(Box::new(move |m: &mut Model| match m.get_mut(&pp) {
                    Some(Node::File(_, md)) | Some(Node::Dir(md)) if !is_link => *md = mode,
                    _ => {}
                }) as Box<dyn FnOnce(&mut Model)>),
            )
        }
    };
    match (res, apply) {
        (Ok(()), Some(f)) => {
            f(m);
            what
        }
        (Err(Error::NoSpace(_)), Some(_)) => format!("{what}: out of space"),
        (Err(e), Some(_)) => panic!("{what}: unexpected error {e}"),
        (Ok(()), None) => panic!("{what}: succeeded, the model says it must fail"),
        (Err(_), None) => format!("{what}: refused as expected"),
    }
}

fn show(p: &[u8]) -> String {
    String::from_utf8_lossy(p).into_owned()
}

/// Reads the whole tree through the crate.
fn read_tree(fs: &dyn Filesystem) -> Model {
    let mut out = Model::new();
    let mut todo = vec![b"/".to_vec()];
    while let Some(d) = todo.pop() {
        let md = fs.lstat(&d).unwrap();
        out.insert(d.clone(), Node::Dir(md.mode));
        for e in fs.read_dir(&d).unwrap() {
            let p = join(&d, &e.name);
            match e.kind {
                FileKind::Dir => todo.push(p),
                FileKind::Symlink => {
                    out.insert(p.clone(), Node::Link(fs.read_link(&p).unwrap()));
                }
                _ => {
                    let m = fs.lstat(&p).unwrap();
                    let mut b = vec![0u8; m.size as usize];
                    assert_eq!(fs.read(&p, 0, &mut b).unwrap(), b.len());
                    out.insert(p, Node::File(b, m.mode));
                }
            }
        }
    }
    out
}

/// Reads the tree from a `debugfs rdump` of the image (modes as debugfs restores them).
fn read_dump(root: &Path) -> Model {
    let mut out = Model::new();
    let mut todo = vec![(root.to_path_buf(), b"/".to_vec())];
    while let Some((host, guest)) = todo.pop() {
        let md = std::fs::symlink_metadata(&host).unwrap();
        out.insert(guest.clone(), Node::Dir(md.permissions().mode() & 0o7777));
        for e in std::fs::read_dir(&host).unwrap() {
            let e = e.unwrap();
            use std::os::unix::ffi::OsStrExt;
            let g = join(&guest, e.file_name().as_bytes());
            let t = e.file_type().unwrap();
            if t.is_dir() {
                todo.push((e.path(), g));
            } else if t.is_symlink() {
                let l = std::fs::read_link(e.path()).unwrap();
                out.insert(g, Node::Link(l.as_os_str().as_bytes().to_vec()));
            } else {
                let m = e.metadata().unwrap().permissions().mode() & 0o7777;
                out.insert(g, Node::File(std::fs::read(e.path()).unwrap(), m));
            }
        }
    }
    out
}

/// Model modes of links carry no meaning; compare content and the modes of the rest.
fn normalise(m: &Model, with_modes: bool) -> Model {
    m.iter()
        .filter(|(k, _)| k.as_slice() != b"/lost+found")
        .map(|(k, v)| {
            let v = match v {
                Node::File(c, md) => Node::File(c.clone(), if with_modes { *md } else { 0 }),
                Node::Dir(md) => Node::Dir(if with_modes && k.as_slice() != b"/" {
                    *md
                } else {
                    0
                }),
                l => l.clone(),
            };
            (k.clone(), v)
        })
        .collect()
}

#[test]
fn random_operation_sequences_match_a_model() {
    if !have("mke2fs") || !have("e2fsck") || !have("debugfs") {
        return;
    }
    let configs: &[(&str, &[&str], u64)] = &[
        ("ext4", &["-b", "4096"], 1),
        ("ext2", &["-b", "1024"], 2),
        ("ext4", &["-b", "1024", "-O", "^metadata_csum,uninit_bg"], 3),
        ("ext3", &["-b", "2048"], 4),
    ];
    let sequences = 60;
    for (kind, extra, seed) in configs {
        let img = Image::with_tree(kind, extra, 5, |_| {});
        let label = format!("{kind} {extra:?}");
        let mut model = Model::new();
        model.insert(b"/".to_vec(), Node::Dir(0o755));
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ seed);
        let (mut ok, mut nospace, mut refused) = (0, 0, 0);
        for s in 0..sequences {
            let (ov, fs) = img.open_rw();
            let mut log = Vec::new();
            for _ in 0..8 {
                let w = step(&fs, &mut model, &mut rng);
                if w.ends_with("out of space") {
                    nospace += 1;
                } else if w.ends_with("as expected") {
                    refused += 1;
                } else {
                    ok += 1;
                }
                log.push(w);
            }
            let got = normalise(&read_tree(&fs), true);
            assert!(
                got == normalise(&model, true),
                "{label} seq {s}: crate view differs after {log:#?}"
            );
            fs.sync().unwrap();
            ov.commit().unwrap();
            drop(fs);
            img.fsck(&format!("{label} seq {s} after {log:#?}"));
            if s % 6 == 5 {
                let out = tempfile::tempdir().unwrap();
                let st = std::process::Command::new("debugfs")
                    .arg("-R")
                    .arg(format!("rdump / {}", out.path().display()))
                    .arg(&img.path)
                    .output()
                    .unwrap();
                assert!(st.status.success());
                let dumped = normalise(&read_dump(out.path()), false);
                assert!(
                    dumped == normalise(&model, false),
                    "{label} seq {s}: debugfs rdump differs from the model after {log:#?}"
                );
            }
        }
        eprintln!("{label}: {ok} done, {refused} refused as the model said, {nospace} out of space; {} entries at the end", model.len());
        assert!(
            ok > sequences * 4,
            "{label}: too few operations succeeded ({ok})"
        );
        assert!(model.len() > 10, "{label}: the tree stayed tiny");
        assert!(nospace > 3, "{label}: the filesystem never filled up");
    }
}
