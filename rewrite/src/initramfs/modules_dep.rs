//! The text files depmod writes in /lib/modules/KVER, as the injector needs them:
//! modules.dep ("path: dep-path dep-path ...", dependencies already transitive when
//! depmod wrote them, but a hand-edited file may list only direct ones, so closures are
//! walked), modules.alias and modules.symbols ("alias PATTERN MODULE"), modules.builtin
//! (one path per line), modules.softdep ("softdep MODULE pre: ... post: ...").
//!
//! Module names are compared as kmod does: the file name without ".ko" (and a ".xz",
//! ".zst" or ".gz" after it), with "-" read as "_".

use std::collections::{BTreeSet, HashMap};

/// Suffixes a module file may have.
pub const MODULE_SUFFIXES: [&str; 4] = [".ko", ".ko.xz", ".ko.zst", ".ko.gz"];

/// "nvme-core" and "nvme_core" are one module.
pub fn normalize(name: &str) -> String {
    name.replace('-', "_")
}

/// The module a path names ("kernel/drivers/block/virtio_blk.ko.xz" -> "virtio_blk").
pub fn module_name_of_path(path: &str) -> Option<String> {
    let base = path.rsplit('/').next().unwrap_or(path);
    MODULE_SUFFIXES
        .iter()
        .rev()
        .find_map(|s| base.strip_suffix(s))
        .filter(|n| !n.is_empty())
        .map(normalize)
}

/// One modules.dep line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DepEntry {
    /// Path relative to /lib/modules/KVER (or absolute, for modules elsewhere).
    pub path: String,
    pub name: String,
    /// Paths of the modules this one needs, as listed.
    pub deps: Vec<String>,
}

impl DepEntry {
    /// The line as depmod writes it.
    pub fn line(&self) -> String {
        let mut s = format!("{}:", self.path);
        for d in &self.deps {
            s.push(' ');
            s.push_str(d);
        }
        s
    }
}

/// A parsed modules.dep, in file order (the order is each module's index priority in
/// the binary indexes).
#[derive(Debug, Clone, Default)]
pub struct ModulesDep {
    entries: Vec<DepEntry>,
    by_name: HashMap<String, usize>,
    by_path: HashMap<String, usize>,
}

/// What a dependency walk found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Closure {
    /// Modules to have, each after the modules it needs.
    pub order: Vec<String>,
    /// (module, the module that needs it) for names with no modules.dep entry.
    pub missing: Vec<(String, String)>,
    /// Modules met again while their own dependencies were being walked.
    pub cycles: Vec<String>,
}

impl ModulesDep {
    /// Parses the text; malformed lines are skipped and returned as warnings.
    pub fn parse(text: &str) -> (ModulesDep, Vec<String>) {
        let mut d = ModulesDep::default();
        let mut warnings = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim_end_matches('\r');
            if line.trim().is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((path, deps)) = line.split_once(':') else {
                warnings.push(format!("modules.dep line {}: no ':' in {line:?}", n + 1));
                continue;
            };
            let path = path.trim();
            let Some(name) = module_name_of_path(path) else {
                warnings.push(format!(
                    "modules.dep line {}: {path:?} is not a module",
                    n + 1
                ));
                continue;
            };
            d.push(DepEntry {
                path: path.to_string(),
                name,
                deps: deps.split_whitespace().map(str::to_string).collect(),
            });
        }
        (d, warnings)
    }

    /// Appends an entry; a second entry for a name already present is kept in the list
    /// (as depmod would write it) but lookups keep the first, as libkmod's do.
    pub fn push(&mut self, e: DepEntry) {
        let i = self.entries.len();
        self.by_name.entry(e.name.clone()).or_insert(i);
        self.by_path.entry(e.path.clone()).or_insert(i);
        self.entries.push(e);
    }

    pub fn entries(&self) -> &[DepEntry] {
        &self.entries
    }

    pub fn get(&self, name: &str) -> Option<&DepEntry> {
        self.index_of(name).and_then(|i| self.entries.get(i))
    }

    /// The entry's position: its priority in the binary indexes.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.by_name.get(&normalize(name)).copied()
    }

    pub fn by_path(&self, path: &str) -> Option<&DepEntry> {
        self.by_path.get(path).and_then(|&i| self.entries.get(i))
    }

    /// Every module `names` need, dependencies first.
    pub fn closure(&self, names: &[&str]) -> Closure {
        let mut c = Closure::default();
        let mut state: HashMap<String, bool> = HashMap::new(); // false: walking, true: done
        for n in names {
            self.visit(&normalize(n), "(wanted)", &mut state, &mut c, 0);
        }
        c
    }

    fn visit(
        &self,
        name: &str,
        needed_by: &str,
        state: &mut HashMap<String, bool>,
        c: &mut Closure,
        depth: usize,
    ) {
        match state.get(name) {
            Some(true) => return,
            Some(false) => {
                if !c.cycles.iter().any(|x| x == name) {
                    c.cycles.push(name.to_string());
                }
                return;
            }
            None => {}
        }
        let Some(e) = self.get(name) else {
            c.missing.push((name.to_string(), needed_by.to_string()));
            state.insert(name.to_string(), true);
            return;
        };
        if depth > 256 {
            c.cycles.push(name.to_string());
            return;
        }
        state.insert(name.to_string(), false);
        for d in &e.deps {
            let dn = self
                .by_path(d)
                .map(|x| x.name.clone())
                .or_else(|| module_name_of_path(d));
            match dn {
                Some(dn) => self.visit(&dn, name, state, c, depth + 1),
                None => c.missing.push((d.clone(), name.to_string())),
            }
        }
        state.insert(name.to_string(), true);
        c.order.push(name.to_string());
    }

    /// The file as depmod writes it.
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        for e in &self.entries {
            s.push_str(&e.line());
            s.push('\n');
        }
        s
    }
}

/// Names of the modules in a modules.builtin file.
pub fn parse_builtin(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|l| module_name_of_path(l.trim()))
        .collect()
}

/// "alias PATTERN MODULE" lines of modules.alias or modules.symbols, in order, with the
/// line each came from.
pub fn parse_aliases(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            (w.next() == Some("alias")).then_some(())?;
            let pat = w.next()?;
            let module = w.next()?;
            Some((pat.to_string(), normalize(module)))
        })
        .collect()
}

/// One "softdep" line.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SoftDep {
    pub module: String,
    pub pre: Vec<String>,
    pub post: Vec<String>,
}

/// "softdep MODULE pre: A B post: C" lines (modules.softdep or modprobe.d).
pub fn parse_softdeps(text: &str) -> Vec<SoftDep> {
    let mut out = Vec::new();
    for l in text.lines() {
        let mut w = l.split_whitespace();
        if w.next() != Some("softdep") {
            continue;
        }
        let Some(module) = w.next() else { continue };
        let mut sd = SoftDep {
            module: normalize(module),
            ..SoftDep::default()
        };
        let mut post = None;
        for t in w {
            match t {
                "pre:" => post = Some(false),
                "post:" => post = Some(true),
                m => match post {
                    Some(false) => sd.pre.push(normalize(m)),
                    Some(true) => sd.post.push(normalize(m)),
                    None => {}
                },
            }
        }
        out.push(sd);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEP: &str = "kernel/drivers/virtio/virtio.ko:\n\
kernel/drivers/virtio/virtio_ring.ko:\n\
kernel/drivers/block/virtio_blk.ko: kernel/drivers/virtio/virtio_ring.ko kernel/drivers/virtio/virtio.ko\n\
kernel/drivers/nvme/host/nvme-core.ko.xz:\n\
kernel/drivers/nvme/host/nvme.ko.xz: kernel/drivers/nvme/host/nvme-core.ko.xz\n\
garbage line\n";

    #[test]
    fn names_and_closure() {
        assert_eq!(
            module_name_of_path("kernel/drivers/nvme/host/nvme-core.ko.zst").as_deref(),
            Some("nvme_core")
        );
        assert_eq!(module_name_of_path("modules.dep"), None);
        assert_eq!(module_name_of_path("x/.ko"), None);
        let (d, w) = ModulesDep::parse(DEP);
        assert_eq!(w.len(), 1);
        assert_eq!(d.entries().len(), 5);
        assert_eq!(d.index_of("nvme-core"), Some(3));
        let c = d.closure(&["virtio_blk", "nvme", "nope"]);
        assert_eq!(
            c.order,
            ["virtio_ring", "virtio", "virtio_blk", "nvme_core", "nvme"]
        );
        assert_eq!(c.missing, [("nope".to_string(), "(wanted)".to_string())]);
        assert!(c.cycles.is_empty());
        assert_eq!(d.to_text().lines().count(), 5);
        assert_eq!(d.to_text().lines().nth(2), DEP.lines().nth(2));
    }

    #[test]
    fn cycles_and_missing_deps_are_reported() {
        let (d, _) = ModulesDep::parse("a.ko: b.ko\nb.ko: a.ko c.ko\n");
        let c = d.closure(&["a"]);
        assert_eq!(c.cycles, ["a"]);
        assert_eq!(c.missing, [("c".to_string(), "b".to_string())]);
        assert_eq!(c.order, ["b", "a"]);
    }

    #[test]
    fn aliases_builtin_softdeps() {
        let a = parse_aliases("# x\nalias pci:v00001AF4d00001001sv*sd*bc*sc*i* virtio_blk\nalias symbol:nvme_init nvme-core\nalias short\n");
        assert_eq!(a.len(), 2);
        assert_eq!(a[1].1, "nvme_core");
        let b = parse_builtin("kernel/drivers/virtio/virtio.ko\nkernel/lib/crc-t10dif.ko\n");
        assert!(b.contains("crc_t10dif"));
        let s = parse_softdeps("softdep crc32c pre: crc32c-intel\nsoftdep x post: y z\n");
        assert_eq!(s[0].pre, ["crc32c_intel"]);
        assert_eq!(s[1].post, ["y", "z"]);
    }
}
