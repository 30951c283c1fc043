//! The house rules: a module imports only modules on its own floor or below (the "Floors"
//! table of README.md, "Module map"), and modules of one floor import each other without
//! cycles. Reads every `crate::` path in `src/`, so the layering holds on its own.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// Top-level modules of `src/` by floor, as in the README's table.
const FLOORS: &[(&str, u8)] = &[
    // 0 ground: shared leaves, no stage.
    ("route", 0),
    ("redact", 0),
    ("exposure_class", 0),
    ("memo", 0),
    ("severity", 0),
    ("object", 0),
    ("intern", 0),
    ("budget", 0),
    ("secret", 0),
    ("resources", 0),
    // 1 parsers.
    ("capture", 1),
    ("decode", 1),
    ("reassembly", 1),
    ("http", 1),
    ("tls", 1),
    ("grpc", 1),
    // 2 judges.
    ("token", 2),
    ("actor", 2),
    // 3 detection.
    ("rules", 3),
    ("detect", 3),
    // 4 outputs.
    ("output", 4),
    ("enforce", 4),
    ("export", 4),
    // 5 wiring.
    ("telemetry", 5),
    ("runtime", 5),
    ("config", 5),
];

fn floor(module: &str) -> Option<u8> {
    FLOORS.iter().find(|(m, _)| *m == module).map(|(_, f)| *f)
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).expect("src readable") {
        let p = e.expect("entry").path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The top-level module a file belongs to (`src/detect/window.rs` → `detect`).
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).ok()?;
    let first = rel.components().next()?.as_os_str().to_str()?;
    match first.strip_suffix(".rs") {
        Some("lib" | "main") => None,
        Some(stem) => Some(stem.to_string()),
        None => Some(first.to_string()),
    }
}

/// Every `crate::name` the file uses (comments and doc comments left out).
fn imports(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for line in text.lines() {
        let code = line.split("//").next().unwrap_or_default();
        let mut rest = code;
        while let Some(i) = rest.find("crate::") {
            let tail = &rest[i + "crate::".len()..];
            let name: String = tail
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            // `use crate::{a, b}` lists are checked name by name.
            if name.is_empty() && tail.starts_with('{') {
                let list = tail[1..].split('}').next().unwrap_or_default();
                for item in list.split(',') {
                    let n: String = item
                        .trim()
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                        .collect();
                    if !n.is_empty() {
                        out.insert(n);
                    }
                }
            } else if !name.is_empty() {
                out.insert(name);
            }
            rest = tail;
        }
    }
    out
}

#[test]
fn no_module_imports_one_above_it_and_no_floor_has_a_cycle() {
    let src = Path::new(ROOT).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    let mut bad = Vec::new();
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for f in &files {
        let Some(module) = module_of(&src, f) else {
            continue;
        };
        let Some(own) = floor(&module) else {
            bad.push(format!(
                "{}: module `{module}` is not in the floors table",
                f.display()
            ));
            continue;
        };
        let text = std::fs::read_to_string(f).expect("readable");
        for used in imports(&text) {
            if used == module {
                continue;
            }
            match floor(&used) {
                None => bad.push(format!(
                    "{}: uses unknown module `crate::{used}`",
                    f.display()
                )),
                Some(u) if u > own => bad.push(format!(
                    "{}: `{module}` (floor {own}) imports `{used}` (floor {u})",
                    f.strip_prefix(ROOT).unwrap_or(f).display()
                )),
                Some(_) => {
                    graph.entry(module.clone()).or_default().insert(used);
                }
            }
        }
    }
    // Cycles between modules (any floor): depth-first search over the module graph.
    fn visit(
        n: &str,
        g: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
        cycles: &mut Vec<String>,
    ) {
        if let Some(i) = path.iter().position(|p| p == n) {
            cycles.push(format!("{} -> {n}", path[i..].join(" -> ")));
            return;
        }
        if done.contains(n) {
            return;
        }
        path.push(n.to_string());
        for m in g.get(n).into_iter().flatten() {
            visit(m, g, path, done, cycles);
        }
        path.pop();
        done.insert(n.to_string());
    }
    let mut cycles = Vec::new();
    let mut done = BTreeSet::new();
    for n in graph.keys() {
        visit(n, &graph, &mut Vec::new(), &mut done, &mut cycles);
    }
    for c in cycles {
        bad.push(format!("import cycle: {c}"));
    }
    assert!(bad.is_empty(), "layering broken:\n{}", bad.join("\n"));
}

/// Files of one module (siblings, not `mod.rs`) must not import each other in a cycle:
/// `token/config.rs` and `token/keys.rs` once did.
#[test]
fn sibling_files_import_each_other_without_cycles() {
    let src = Path::new(ROOT).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut bad = Vec::new();
    for f in &files {
        let (Some(dir), Some(stem)) = (f.parent(), f.file_stem().and_then(|s| s.to_str())) else {
            continue;
        };
        if matches!(stem, "mod" | "lib" | "main") {
            continue;
        }
        let text = std::fs::read_to_string(f).expect("readable");
        for line in text.lines() {
            let code = line.split("//").next().unwrap_or_default();
            let Some(i) = code.find("super::") else {
                continue;
            };
            let other: String = code[i + "super::".len()..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            let sibling = dir.join(format!("{other}.rs"));
            if other.is_empty() || other == stem || !sibling.exists() {
                continue;
            }
            let back = std::fs::read_to_string(&sibling).expect("readable");
            if back
                .lines()
                .map(|l| l.split("//").next().unwrap_or_default())
                .any(|l| {
                    l.contains(&format!("super::{stem}::"))
                        || l.contains(&format!("super::{stem}::{{"))
                })
            {
                bad.push(format!("{} <-> {}", f.display(), sibling.display()));
            }
        }
    }
    assert!(
        bad.is_empty(),
        "sibling files import each other:\n{}",
        bad.join("\n")
    );
}

#[test]
fn the_floors_table_is_the_readmes() {
    let readme = std::fs::read_to_string(Path::new(ROOT).join("README.md")).expect("README");
    for (m, f) in FLOORS {
        let row = readme
            .lines()
            .find(|l| l.starts_with(&format!("| {f} ")))
            .unwrap_or_else(|| panic!("README floors table has no row for floor {f}"));
        assert!(
            row.contains(&format!("`{m}`")),
            "floor {f} row lacks `{m}`: {row}"
        );
    }
}
