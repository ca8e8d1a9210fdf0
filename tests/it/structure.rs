//! The code's shape, as promised in `src/lib.rs` and the README's Layout: no file in `src/`
//! over 700 lines of code before its tests, no import cycle between top-level modules, `unsafe`
//! only in the leaves that talk to the kernel or to C, and nothing in the repository pointing
//! outside it. (Function length and `// SAFETY:` lines are clippy's: see Cargo.toml `[lints]`.)

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

const MAX_CODE_LINES: usize = 700;
/// Where `unsafe` may appear (and must have a SAFETY line, which clippy checks).
const UNSAFE_LEAVES: [&str; 5] =
    ["src/capture/pipe.rs", "src/capture/v4l2.rs", "src/h264/m2m/sys.rs", "src/jpeg.rs", "src/sys.rs"];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// `src/…` files as (path relative to the root, code lines before the tests module: a
/// `#[cfg(test)]` followed by `mod tests`). Code lines: not blank, not a comment. A file named
/// `tests.rs` is a child tests module (`#[cfg(test)] mod tests;` in its parent).
fn sources() -> Vec<(String, Vec<String>)> {
    let mut files = Vec::new();
    rust_files(&root().join("src"), &mut files);
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let rel = p.strip_prefix(root()).unwrap().to_string_lossy().into_owned();
            let text = fs::read_to_string(&p).unwrap();
            let mut code: Vec<String> = Vec::new();
            for line in text.lines() {
                let t = line.trim();
                if t.is_empty() || t.starts_with("//") {
                    continue;
                }
                // A `#[cfg(test)]` item that is not the tests module (a test-only method) is
                // code like any other.
                // `mod tests` with any visibility (`pub(crate) mod tests`, used by siblings).
                let tests_module = t.split_once("mod tests").is_some_and(|(vis, rest)| {
                    (vis.is_empty() || vis.starts_with("pub")) && (rest.starts_with(';') || rest.starts_with(" {"))
                });
                if tests_module && code.last().is_some_and(|l| l.starts_with("#[cfg(test)]")) {
                    code.pop();
                    break;
                }
                code.push(t.to_string());
            }
            (rel, code)
        })
        .collect()
}

fn is_test_file(rel: &str) -> bool {
    rel.ends_with("/tests.rs")
}

#[test]
fn no_source_file_has_more_than_700_lines_of_code_before_its_tests() {
    let big: Vec<_> = sources()
        .into_iter()
        .filter(|(rel, code)| !is_test_file(rel) && code.len() > MAX_CODE_LINES)
        .map(|(rel, code)| format!("{rel}: {}", code.len()))
        .collect();
    assert!(big.is_empty(), "over {MAX_CODE_LINES} lines of code: {big:?}");
}

/// The top-level module a `src/` path belongs to (`src/http/routes.rs` → `http`).
fn top_module(rel: &str) -> Option<String> {
    let rest = rel.strip_prefix("src/")?;
    let first = rest.split('/').next()?.trim_end_matches(".rs");
    (!matches!(first, "lib" | "main")).then(|| first.to_string())
}

/// Which top-level modules each one names through `crate::…` in its code (tests excluded).
fn module_graph() -> BTreeMap<String, BTreeSet<String>> {
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (rel, code) in sources() {
        let Some(from) = top_module(&rel) else { continue };
        if is_test_file(&rel) {
            continue;
        }
        let deps = g.entry(from.clone()).or_default();
        for name in crate_paths(&code.join("\n")) {
            if name != from {
                deps.insert(name);
            }
        }
    }
    g
}

/// The top-level modules named after `crate::`, also in groups: `crate::{a::X, b}` → a, b.
fn crate_paths(code: &str) -> Vec<String> {
    let ident = |s: &str| s.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect::<String>();
    let mut out = Vec::new();
    let mut rest = code;
    while let Some(i) = rest.find("crate::") {
        rest = &rest[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // Top-level items of the group: split at commas outside nested braces.
            let (mut depth, mut start) = (0usize, 0usize);
            for (j, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => {
                        out.push(ident(group[start..j].trim()));
                        break;
                    }
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        out.push(ident(group[start..j].trim()));
                        start = j + 1;
                    }
                    _ => {}
                }
            }
        } else {
            out.push(ident(rest));
        }
    }
    out.retain(|n| !n.is_empty() && n != "self");
    out
}

#[test]
fn grouped_crate_imports_are_read() {
    assert_eq!(crate_paths("use crate::{a::X, b, c::{d, e}};\nlet x = crate::f::g();"), ["a", "b", "c", "f"]);
}

/// A cycle through `start`, if there is one.
fn cycle_from(g: &BTreeMap<String, BTreeSet<String>>, start: &str) -> Option<Vec<String>> {
    fn walk(
        g: &BTreeMap<String, BTreeSet<String>>,
        at: &str,
        start: &str,
        path: &mut Vec<String>,
        seen: &mut BTreeSet<String>,
    ) -> bool {
        for next in g.get(at).into_iter().flatten() {
            if next == start {
                path.push(next.clone());
                return true;
            }
            if seen.insert(next.clone()) {
                path.push(next.clone());
                if walk(g, next, start, path, seen) {
                    return true;
                }
                path.pop();
            }
        }
        false
    }
    let mut path = vec![start.to_string()];
    walk(g, start, start, &mut path, &mut BTreeSet::new()).then_some(path)
}

#[test]
fn top_level_modules_import_each_other_one_way_only() {
    let g = module_graph();
    assert!(g.contains_key("job") && g["job"].contains("status"), "the graph is read: {g:?}");
    let cycles: Vec<_> = g.keys().filter_map(|m| cycle_from(&g, m)).map(|c| c.join(" → ")).collect();
    assert!(cycles.is_empty(), "import cycles between top-level modules: {cycles:#?}");
    // The leaves src/lib.rs names stay leaves.
    for leaf in ["lifecycle", "frame", "jpeg", "clock", "shutdown", "logging", "notify", "sys", "testhook"] {
        let deps = g.get(leaf).unwrap_or_else(|| panic!("no module {leaf}"));
        assert!(deps.is_empty(), "{leaf} imports {deps:?}");
    }
}

#[test]
fn the_cycle_finder_finds_a_cycle() {
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    g.entry("a".into()).or_default().insert("b".into());
    g.entry("b".into()).or_default().insert("c".into());
    assert_eq!(cycle_from(&g, "a"), None);
    g.entry("c".into()).or_default().insert("a".into());
    assert_eq!(cycle_from(&g, "a"), Some(vec!["a".into(), "b".into(), "c".into(), "a".into()]));
}

#[test]
fn unsafe_lives_only_in_the_kernel_and_c_leaves() {
    let outside: Vec<_> = sources()
        .into_iter()
        .filter(|(rel, _)| !UNSAFE_LEAVES.contains(&rel.as_str()))
        .filter(|(_, code)| code.iter().any(|l| words(l, "unsafe") > 0 || l.contains("extern \"")))
        .map(|(rel, _)| rel)
        .collect();
    assert!(outside.is_empty(), "unsafe outside the leaves: {outside:?}");
}

#[test]
fn nothing_in_the_repository_points_outside_it() {
    let mut files = Vec::new();
    for dir in ["src", "tests", "docs", "board", "scripts", "debian", "fuzz/fuzz_targets", "examples", ".cargo"] {
        let d = root().join(dir);
        if d.is_dir() {
            collect_text(&d, &mut files);
        }
    }
    for f in ["README.md", "Cargo.toml", "clippy.toml", "rustfmt.toml", "fuzz/Cargo.toml"] {
        files.push(root().join(f));
    }
    // Spelled in pieces, so that this file does not name them itself.
    let needles = [concat!("..", "/shared"), concat!("DESIGN", ".md"), concat!("STYLE", ".md")];
    let hits: Vec<_> = files
        .iter()
        .filter_map(|p| {
            let text = fs::read_to_string(p).ok()?;
            needles.iter().find(|n| text.contains(**n)).map(|n| format!("{} names {n}", p.display()))
        })
        .collect();
    assert!(hits.is_empty(), "the contract must live in the repository: {hits:?}");
}

/// The shared test helpers are compiled into several crates (`tests/it`, `tests/alloc.rs`, the
/// fuzz targets, the examples), each of which uses only some of them, so they carry
/// `allow(dead_code)`; this does what that lint cannot: every helper function must be called by
/// some test (or fuzz target), or go.
#[test]
fn every_shared_test_helper_is_used_somewhere() {
    let helpers = ["tests/common/mod.rs", "tests/support/fuzz_checks.rs", "tests/support/capture_harness.rs"];
    let mut users = Vec::new();
    for dir in ["tests", "fuzz/fuzz_targets", "examples"] {
        rust_files(&root().join(dir), &mut users);
    }
    let texts: Vec<String> = users.iter().map(|p| fs::read_to_string(p).unwrap()).collect();
    let mut unused = Vec::new();
    let mut seen = 0;
    for h in helpers {
        for line in fs::read_to_string(root().join(h)).unwrap().lines() {
            let t = line.trim_start();
            let Some(rest) = t.strip_prefix("pub fn ") else { continue };
            let name: String = rest.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
            seen += 1;
            let def = format!("fn {name}(");
            // A call (not a macro of the same name: `json!(`), or a `use … as` rename.
            let uses: usize = texts
                .iter()
                .map(|t| calls(t, &name) + t.matches(&format!("{name} as ")).count() - t.matches(&def).count())
                .sum();
            if uses == 0 {
                unused.push(format!("{h}: {name}"));
            }
        }
    }
    assert!(seen > 20, "the helpers were read ({seen} functions)");
    assert!(unused.is_empty(), "helpers no test calls: {unused:?}");
}

/// How often `name(` stands in `text` with `name` a whole identifier.
fn calls(text: &str, name: &str) -> usize {
    let call = format!("{name}(");
    text.match_indices(&call)
        .filter(|(i, _)| !text[..*i].chars().next_back().is_some_and(|c| c.is_ascii_alphanumeric() || c == '_'))
        .count()
}

/// How often `word` stands in `text` as a whole identifier.
fn words(text: &str, word: &str) -> usize {
    let ident = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
    text.match_indices(word)
        .filter(|(i, _)| !ident(text[..*i].chars().next_back()) && !ident(text[i + word.len()..].chars().next()))
        .count()
}

fn collect_text(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy();
        if p.is_dir() {
            if name != "node_modules" && name != "target" {
                collect_text(&p, out);
            }
        } else if [".rs", ".md", ".sh", ".json", ".service", ".rules", ".py", ".toml", ".html"]
            .iter()
            .any(|x| name.ends_with(x))
        {
            out.push(p);
        }
    }
}
