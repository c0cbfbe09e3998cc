//! The crate's shape, checked: modules depend on each other without cycles,
//! and `unsafe` code lives only under `src/sys/`. A change that breaks
//! either fails here, with the offending path named.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// Every library source file, as (module path, file).
fn modules() -> BTreeMap<String, PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in fs::read_dir(dir).expect("read src") {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                if !path.ends_with("bin") {
                    walk(&path, out);
                }
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    walk(&src, &mut files);
    files
        .into_iter()
        .map(|file| {
            let relative = file.strip_prefix(&src).expect("under src");
            let mut parts: Vec<String> = relative
                .with_extension("")
                .iter()
                .map(|p| p.to_string_lossy().into_owned())
                .collect();
            if parts.last().is_some_and(|p| p == "mod" || p == "lib") {
                parts.pop();
            }
            let name = if parts.is_empty() {
                "crate".to_owned()
            } else {
                parts.join("::")
            };
            (name, file)
        })
        .collect()
}

/// The code of a file without its comments (doc comments mention paths).
fn code(file: &Path) -> String {
    let text = fs::read_to_string(file).expect("read source");
    text.lines()
        .map(|line| line.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The modules `module` names through `crate::…` and `super::…` paths.
fn dependencies(module: &str, code: &str, known: &BTreeSet<String>) -> BTreeSet<String> {
    let parent = match module.rsplit_once("::") {
        Some((parent, _)) => parent.to_owned(),
        None => String::new(),
    };
    let mut deps = BTreeSet::new();
    for (at, _) in code
        .match_indices("crate::")
        .chain(code.match_indices("super::"))
    {
        let before = code[..at].chars().next_back();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
            continue;
        }
        let rest = &code[at..];
        let path: String = rest
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
            .collect();
        let mut segments: Vec<&str> = path.split("::").filter(|s| !s.is_empty()).collect();
        let mut base: Vec<String> = Vec::new();
        if segments[0] == "super" {
            base.extend(
                parent
                    .split("::")
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned),
            );
        }
        segments.remove(0);
        // The longest prefix that is a module is what the path depends on.
        let mut found = None;
        let mut candidate = base.clone();
        for segment in segments {
            candidate.push(segment.to_owned());
            let name = candidate.join("::");
            if known.contains(&name) {
                found = Some(name);
            }
        }
        if let Some(dep) = found
            && dep != module
        {
            deps.insert(dep);
        }
    }
    deps
}

fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        done: &mut BTreeSet<String>,
        path: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|n| n == node) {
            let mut cycle = path[at..].to_vec();
            cycle.push(node.to_owned());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_owned());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, graph, done, path) {
                return Some(cycle);
            }
        }
        path.pop();
        done.insert(node.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|node| visit(node, graph, &mut done, &mut Vec::new()))
}

#[test]
fn no_module_imports_another_in_a_cycle() {
    let modules = modules();
    let known: BTreeSet<String> = modules.keys().cloned().collect();
    assert!(known.contains("conn::session") && known.contains("rooms"));
    let graph: BTreeMap<String, BTreeSet<String>> = modules
        .iter()
        .map(|(name, file)| (name.clone(), dependencies(name, &code(file), &known)))
        .collect();
    // The data path is there, in this direction.
    assert!(graph["conn::reader"].contains("conn::session"));
    assert!(graph["conn::session"].contains("conn::outbound"));
    assert!(graph["rooms"].contains("conn::outbound"));
    if let Some(cycle) = find_cycle(&graph) {
        panic!(
            "modules import each other in a cycle: {}",
            cycle.join(" → ")
        );
    }
}

#[test]
fn unsafe_code_lives_only_under_sys() {
    for (name, file) in modules() {
        if name == "sys" || name.starts_with("sys::") {
            continue;
        }
        let code = code(&file);
        assert!(
            !code.contains("unsafe ") && !code.contains("unsafe{"),
            "{} has unsafe code; it belongs under src/sys/",
            file.display()
        );
    }
}
