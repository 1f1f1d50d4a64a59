//! The shape of the code, as ARCHITECTURE.md promises it: functions that read on one screen,
//! and agent modules that do not import each other.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The workspace's library and binary sources, tests left out.
fn sources() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the workspace").to_owned();
    let mut files = Vec::new();
    for krate in ["agentctl", "agents", "runtime", "tools", "sandbox", "prompts"] {
        let mut dirs = vec![root.join(krate).join("src")];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    dirs.push(path);
                } else if path.extension().is_some_and(|e| e == "rs")
                    && path.file_name().is_some_and(|n| n != "tests.rs")
                {
                    files.push(path);
                }
            }
        }
    }
    files.sort();
    files
}

/// Each function with a body, outside `#[cfg(test)]`: (where, lines from `fn` to its `}`).
fn function_lengths(path: &Path) -> Vec<(String, usize)> {
    let text = std::fs::read_to_string(path).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let mut found = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        if line.trim_start().starts_with("#[cfg(test)]") {
            break;
        }
        let code = line.trim_start();
        let head = ["pub ", "pub(crate) ", "pub(super) ", "async ", "const "]
            .iter()
            .fold(code, |c, p| c.strip_prefix(p).unwrap_or(c));
        let head = head.strip_prefix("async ").unwrap_or(head);
        // (A function on one line ends there.)
        if let Some(rest) = head.strip_prefix("fn ").filter(|_| !code.trim_end().ends_with('}')) {
            let indent = &line[..line.len() - code.len()];
            let close = format!("{indent}}}");
            // A declaration without a body (a trait's) ends with `;` before any `{`.
            let body = lines[i..].iter().position(|l| l.trim_end().ends_with('{'));
            let decl = lines[i..].iter().position(|l| l.trim_end().ends_with(';'));
            if body.is_some() && decl.is_none_or(|d| body.unwrap() < d) {
                if let Some(end) = lines[i..].iter().position(|l| *l == close) {
                    let name = rest.split(['(', '<']).next().unwrap_or(rest);
                    found.push((format!("{}:{} {name}", path.display(), i + 1), end + 1));
                    i += end;
                }
            }
        }
        i += 1;
    }
    found
}

#[test]
fn no_function_outside_the_tests_is_longer_than_a_screen() {
    let long: Vec<String> = sources()
        .iter()
        .flat_map(|p| function_lengths(p))
        .filter(|(_, n)| *n > 100)
        .map(|(at, n)| format!("{at}: {n} lines"))
        .collect();
    assert!(long.is_empty(), "functions over 100 lines:\n{}", long.join("\n"));
    // The count above sees functions at all: this file's own reader is one of them.
    let here = Path::new(env!("CARGO_MANIFEST_DIR")).join("it/shape.rs");
    assert!(function_lengths(&here).iter().any(|(at, n)| at.ends_with(" sources") && *n > 10));
}

#[test]
fn no_two_agent_modules_import_each_other() {
    let agents = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().join("agents/src");
    let mut imports: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for path in sources().iter().filter(|p| p.starts_with(&agents)) {
        let module = path
            .strip_prefix(&agents)
            .unwrap()
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy()
            .trim_end_matches(".rs")
            .to_owned();
        let text = std::fs::read_to_string(path).unwrap();
        let used = imports.entry(module.clone()).or_default();
        for (at, _) in text.match_indices("crate::") {
            let name: String = text[at + 7..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if name != module && !name.is_empty() {
                used.insert(name);
            }
        }
    }
    assert!(imports.len() > 10, "the agents' modules are read: {imports:?}");
    // A cycle of any length, found by walking from each module.
    for start in imports.keys() {
        let mut stack: Vec<Vec<&String>> = vec![vec![start]];
        while let Some(path) = stack.pop() {
            let last = path[path.len() - 1];
            for next in imports.get(last).into_iter().flatten() {
                assert!(next != start, "agent modules import each other: {path:?} -> {next}");
                if !path.contains(&next) {
                    let mut longer = path.clone();
                    longer.push(next);
                    stack.push(longer);
                }
            }
        }
    }
}
