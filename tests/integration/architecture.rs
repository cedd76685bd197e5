//! ARCHITECTURE.md's code map held against the code: every source file has an entry,
//! every entry names a file that exists, no module imports one its entry forbids, and the
//! invariants marked "Checked" hold. A module added without a line, or an arrow that runs
//! back up, fails here.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// One entry of the code map: the files it covers and the modules they must not import.
#[derive(Debug, Default)]
struct Entry {
    files: BTreeSet<String>,
    never: Vec<String>,
}

/// The `## Code map` section, read as entries keyed by their heading's path.
fn code_map(text: &str) -> BTreeMap<String, Entry> {
    let start = text
        .find("\n## Code map")
        .expect("ARCHITECTURE.md has a `## Code map`");
    let section = &text[start + 1..];
    let section = &section[..section[3..].find("\n## ").map_or(section.len(), |i| i + 3)];
    let mut entries: BTreeMap<String, Entry> = BTreeMap::new();
    let mut current: Option<String> = None;
    let mut in_never = false;
    for line in section.lines() {
        if let Some(rest) = line.strip_prefix("### `") {
            let path = rest.split('`').next().unwrap_or("").to_owned();
            let entry = entries.entry(path.clone()).or_default();
            if !path.ends_with('/') {
                entry.files.insert(path.clone());
            }
            current = Some(path);
            in_never = false;
            continue;
        }
        let Some(path) = current.clone() else {
            continue;
        };
        let entry = entries.get_mut(&path).unwrap();
        if line.trim().is_empty() {
            in_never = false;
        } else if line.starts_with("Never imports:") || in_never {
            in_never = true;
            entry.never.extend(backticked(line));
        } else if let Some(bullet) = line.strip_prefix("- ")
            && path.ends_with('/')
        {
            // `- `a.rs`, `b.rs`: what they own`
            let names = bullet.split(':').next().unwrap_or("");
            for name in backticked(names).filter(|n| n.ends_with(".rs")) {
                entry.files.insert(format!("{path}{name}"));
            }
        }
    }
    entries
}

fn backticked(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split('`').skip(1).step_by(2).map(str::to_owned)
}

/// Every `.rs` file under `src/`, as `src/...`.
fn source_files() -> BTreeSet<String> {
    fn walk(dir: &Path, out: &mut BTreeSet<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let rel = path.strip_prefix(root()).unwrap();
                out.insert(rel.to_string_lossy().replace('\\', "/"));
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(&root().join("src"), &mut out);
    out
}

/// A file's production code: up to its test module, comment lines left out.
fn production(file: &str) -> String {
    let text = std::fs::read_to_string(root().join(file)).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let end = lines
        .windows(2)
        .position(|w| {
            let item = w[1]
                .trim_start_matches("pub(super) ")
                .trim_start_matches("pub ");
            w[0].trim() == "#[cfg(test)]" && item.starts_with("mod ")
        })
        .unwrap_or(lines.len());
    lines[..end]
        .iter()
        .filter(|l| !l.trim_start().starts_with("//"))
        .copied()
        .collect::<Vec<_>>()
        .join("\n")
}

/// Whether `code` names the module `name` by a path from the crate's root.
fn imports(code: &str, name: &str) -> bool {
    ["crate::", "sipgw_bulk::"].iter().any(|root| {
        let needle = format!("{root}{name}");
        code.match_indices(&needle).any(|(i, _)| {
            let after = code[i + needle.len()..].chars().next();
            !after.is_some_and(|c| c.is_alphanumeric() || c == '_')
        })
    })
}

#[test]
fn the_code_map_names_every_module_and_its_arrows_hold() {
    let text = std::fs::read_to_string(root().join("ARCHITECTURE.md")).unwrap();
    let map = code_map(&text);
    assert!(
        map.len() > 20,
        "the code map reads as too few entries: {map:?}"
    );
    let mapped: BTreeSet<String> = map.values().flat_map(|e| e.files.clone()).collect();
    let files = source_files();
    let unmapped: Vec<_> = files.difference(&mapped).collect();
    let missing: Vec<_> = mapped.difference(&files).collect();
    assert!(
        unmapped.is_empty(),
        "source files without a line in ARCHITECTURE.md's code map: {unmapped:?}"
    );
    assert!(
        missing.is_empty(),
        "ARCHITECTURE.md's code map names files that do not exist: {missing:?}"
    );
    let modules: BTreeSet<String> = files
        .iter()
        .filter_map(|f| f.strip_prefix("src/"))
        .map(|f| f.split(['/', '.']).next().unwrap().to_owned())
        .collect();
    let mut wrong = Vec::new();
    for (path, entry) in &map {
        for name in &entry.never {
            assert!(
                modules.contains(name),
                "{path} forbids `{name}`, which is not a module"
            );
            for file in &entry.files {
                if imports(&production(file), name) {
                    wrong.push(format!("{file} imports `{name}`"));
                }
            }
        }
    }
    assert!(wrong.is_empty(), "arrows the code map forbids: {wrong:#?}");
}

/// The modules each file names: the crate's top-level modules (`crate::x`), and within
/// a directory, its sibling files (`super::x`; the directory's `mod.rs` declares its
/// children, so arrows to and from it are not counted).
fn arrows(files: &BTreeSet<String>) -> BTreeMap<String, BTreeSet<String>> {
    let module_of = |f: &str| -> String {
        let rel = f.strip_prefix("src/").unwrap_or(f);
        rel.split(['/', '.']).next().unwrap_or("").to_owned()
    };
    let tops: BTreeSet<String> = files.iter().map(|f| module_of(f)).collect();
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in files {
        let code = production(file);
        let from = module_of(file);
        for to in tops.iter().filter(|t| **t != from && imports(&code, t)) {
            graph.entry(from.clone()).or_default().insert(to.clone());
        }
        let Some((dir, name)) = file.rsplit_once('/') else {
            continue;
        };
        if name == "mod.rs" || dir == "src" {
            continue;
        }
        for sibling in files
            .iter()
            .filter_map(|f| f.strip_prefix(&format!("{dir}/")))
        {
            let stem = sibling.trim_end_matches(".rs");
            if sibling != name && sibling != "mod.rs" && code.contains(&format!("super::{stem}")) {
                graph
                    .entry(file.clone())
                    .or_default()
                    .insert(format!("{dir}/{sibling}"));
            }
        }
    }
    graph
}

/// A circle in `graph`, if there is one.
fn circle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|n| n == node) {
            let mut found = path[at..].to_vec();
            found.push(node.to_owned());
            return Some(found);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_owned());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(found) = visit(next, graph, path, done) {
                return Some(found);
            }
        }
        path.pop();
        done.insert(node.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|node| visit(node, graph, &mut Vec::new(), &mut done))
}

#[test]
fn the_module_graph_has_no_circle() {
    let graph = arrows(&source_files());
    assert!(graph.len() > 10, "too few arrows read: {graph:?}");
    assert_eq!(circle(&graph), None, "a circle of imports");
    // The check itself: a circle made by hand is found.
    let mut made = graph.clone();
    made.entry("model".into())
        .or_default()
        .insert("engine".into());
    assert!(circle(&made).is_some());
}

#[test]
fn the_invariants_architecture_md_marks_checked_hold() {
    let only_in = |needle: &str, allowed: &dyn Fn(&str) -> bool| -> Vec<String> {
        source_files()
            .into_iter()
            .filter(|f| !allowed(f) && production(f).contains(needle))
            .collect()
    };
    let report_opened = [
        only_in("ReportWriter::create", &|f| f.starts_with("src/ledger/")),
        only_in("ReportWriter::append", &|f| f.starts_with("src/ledger/")),
    ]
    .concat();
    assert!(
        report_opened.is_empty(),
        "the report is opened outside the ledger in {report_opened:?}"
    );
    let writers = only_in("WriteClient::new", &|f| f == "src/run/passes.rs");
    assert!(writers.is_empty(), "a WriteClient is built in {writers:?}");
    let exposed = only_in(".expose()", &|f| f == "src/secret.rs");
    assert!(exposed.is_empty(), "the token is read in {exposed:?}");
}

/// The sandbox imitates the API from outside: of this crate it may name only `model`
/// (the API's vocabulary), so a module added later is out of its reach by default, as a
/// crate of its own would be.
#[test]
fn the_sandbox_reaches_only_the_model() {
    let files = source_files();
    let graph = arrows(&files);
    let reached: BTreeSet<&String> = graph
        .get("sandbox")
        .into_iter()
        .flatten()
        .filter(|to| !to.starts_with("src/"))
        .collect();
    let beyond: Vec<_> = reached.iter().filter(|m| m.as_str() != "model").collect();
    assert!(beyond.is_empty(), "the sandbox names {beyond:?}");
    assert!(
        reached.iter().any(|m| m.as_str() == "model"),
        "the check reads no arrow from the sandbox at all: {graph:?}"
    );
}

/// The reader itself: an entry's bullets, wrapped "Never imports" lines and a file
/// heading are all read, so a broken map cannot pass by reading as empty.
#[test]
fn the_code_map_reader_reads_bullets_headings_and_wrapped_lists() {
    let text = "# x\n\n## Code map\n\n### `src/a/`: a\n\n- `mod.rs`: m\n- `b.rs`, `c.rs`: \
                b and c\n\nNever imports: `x`,\n`y`.\n\n### `src/d.rs`: d\n\nNever imports: \
                `z`.\n\n## After\n\n### `src/e.rs`: not in the map\n";
    let map = code_map(text);
    assert_eq!(map.len(), 2, "{map:?}");
    let a = &map["src/a/"];
    assert_eq!(
        a.files.iter().map(String::as_str).collect::<Vec<_>>(),
        ["src/a/b.rs", "src/a/c.rs", "src/a/mod.rs"]
    );
    assert_eq!(a.never, ["x", "y"]);
    assert_eq!(map["src/d.rs"].never, ["z"]);
    assert!(imports("use crate::x::Y;", "x"));
    assert!(imports("sipgw_bulk::x::main()", "x"));
    assert!(!imports("use crate::xy::Y;", "x"));
}

/// The diagram's `A ──▶ B, C` arrows, one line at a time (notes in parentheses left out),
/// and every word in the block (notes included).
fn diagram(text: &str) -> (Vec<(String, String)>, BTreeSet<String>) {
    let start = text
        .find("```text\n")
        .expect("ARCHITECTURE.md has the diagram");
    let block = &text[start + 8..];
    let block = &block[..block.find("\n```").expect("the diagram ends")];
    let words = |s: &str| -> Vec<String> {
        s.split(|c: char| !(c.is_alphanumeric() || c == '_'))
            .filter(|w| !w.is_empty())
            .map(str::to_owned)
            .collect()
    };
    let mut arrows = Vec::new();
    for line in block.lines() {
        let mut code = String::new();
        let mut depth = 0;
        for c in line.chars() {
            match c {
                '(' => depth += 1,
                ')' => depth -= 1,
                _ if depth == 0 => code.push(c),
                _ => {}
            }
        }
        let parts: Vec<&str> = code.split("──▶").collect();
        for pair in parts.windows(2) {
            let Some(from) = words(pair[0]).pop() else {
                continue;
            };
            for to in words(pair[1]) {
                arrows.push((from.clone(), to));
            }
        }
    }
    (arrows, words(block).into_iter().collect())
}

#[test]
fn the_diagram_names_every_module_and_its_arrows_are_imports() {
    let text = std::fs::read_to_string(root().join("ARCHITECTURE.md")).unwrap();
    let (arrows, named) = diagram(&text);
    assert!(arrows.len() > 40, "too few arrows read: {arrows:?}");
    let graph = arrows_by_module(&source_files());
    let modules: BTreeSet<String> = graph.keys().cloned().collect();
    let unnamed: Vec<_> = modules
        .iter()
        .filter(|m| *m != "lib" && !named.contains(*m))
        .collect();
    assert!(
        unnamed.is_empty(),
        "modules the diagram leaves out: {unnamed:?}"
    );
    let false_arrows: Vec<_> = arrows
        .iter()
        .filter(|(from, to)| !graph.get(from).is_some_and(|t| t.contains(to)))
        .collect();
    assert!(
        false_arrows.is_empty(),
        "arrows in the diagram that the code does not make (or names that are not modules): \
         {false_arrows:?}"
    );
    // The reader itself: notes are not arrows.
    let (read, _) = diagram("```text\n a ──▶ b, c ──▶ d   (e ──▶ f)\n```\n");
    let pairs: Vec<_> = read.iter().map(|(f, t)| format!("{f}>{t}")).collect();
    assert_eq!(pairs, ["a>b", "a>c", "c>d"]);
}

/// Every top-level module and the top-level modules its production code names.
fn arrows_by_module(files: &BTreeSet<String>) -> BTreeMap<String, BTreeSet<String>> {
    let module_of = |f: &str| -> String {
        let rel = f.strip_prefix("src/").unwrap_or(f);
        rel.split(['/', '.']).next().unwrap_or("").to_owned()
    };
    let tops: BTreeSet<String> = files.iter().map(|f| module_of(f)).collect();
    let mut graph: BTreeMap<String, BTreeSet<String>> =
        tops.iter().map(|t| (t.clone(), BTreeSet::new())).collect();
    for file in files {
        let code = production(file);
        let from = module_of(file);
        for to in tops.iter().filter(|t| **t != from && imports(&code, t)) {
            graph.entry(from.clone()).or_default().insert(to.clone());
        }
    }
    graph
}

/// "No clap parser, command or match leaves the CLI": below it, `clap::` appears only in
/// the `ValueEnum` derives of the value enums a flag takes, and in the settings'
/// declaration that `cli::args` expands.
#[test]
fn no_clap_type_leaves_the_cli_but_value_enums_and_the_settings_declaration() {
    let mut wrong = Vec::new();
    for file in source_files() {
        if file.starts_with("src/cli/") || file == "src/settings.rs" {
            continue;
        }
        for line in production(&file).lines() {
            let derive = line.trim_start().starts_with("#[derive(");
            let rest = line.replace("clap::ValueEnum", "");
            if rest.contains("clap::") || (!derive && line.contains("clap::")) {
                wrong.push(format!("{file}: {}", line.trim()));
            }
        }
    }
    assert!(wrong.is_empty(), "clap used below the CLI: {wrong:#?}");
}

/// One public path per type: no module re-exports what another top-level module declares
/// (`report::Status` beside `status::Status` was one). `cli`'s modules are private, so a
/// `pub use` among them makes no second public path.
#[test]
fn no_module_re_exports_another_top_level_module_s_items() {
    let mut wrong = Vec::new();
    for file in source_files() {
        if file.starts_with("src/cli/") {
            continue;
        }
        for line in production(&file).lines() {
            let line = line.trim_start();
            if line.starts_with("pub use crate::") || line.starts_with("pub use sipgw_bulk::") {
                wrong.push(format!("{file}: {line}"));
            }
        }
    }
    assert!(wrong.is_empty(), "a second public path: {wrong:#?}");
}
