//! The dependency graphs of the workspace are acyclic.
//!
//! - Modules: inside each crate, the graph "top-level module A refers to top-level module B"
//!   (a `crate::B` path anywhere in A's code, `use crate::{B, …}` groups, and `super::…` paths
//!   that climb out of A) has no cycle. Each crate root (`src/lib.rs`, `src/main.rs`,
//!   `src/bin/*.rs`) is followed through its `mod x;` declarations, and every `src/**/*.rs` file
//!   must be reached from one of them. Comments, strings and character literals are skipped, so
//!   a doc link is not an edge.
//! - Crates: the layers are envs ← algorithms ← agents ← benchmarks; a crate depends only on
//!   gradgym crates below it (read from the `Cargo.toml` files).

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

const CRATES: [&str; 4] = ["envs", "algorithms", "agents", "benchmarks"];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[derive(Clone, Debug, PartialEq)]
enum Token {
    Ident(String),
    PathSep,
    Open,
    Close,
    Comma,
    Semi,
    Other,
}

/// Rust source as tokens with their line, without comments, strings and char literals.
fn tokens(src: &str) -> Vec<(Token, usize)> {
    let s: Vec<char> = src.chars().collect();
    let mut out = Vec::new();
    let (mut i, mut line) = (0, 1);
    let at = |i: usize| s.get(i).copied().unwrap_or('\0');
    while i < s.len() {
        let c = s[i];
        if c == '\n' {
            line += 1;
            i += 1;
        } else if c.is_whitespace() {
            i += 1;
        } else if c == '/' && at(i + 1) == '/' {
            while i < s.len() && s[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && at(i + 1) == '*' {
            let mut depth = 0;
            loop {
                if i >= s.len() {
                    break;
                }
                if s[i] == '/' && at(i + 1) == '*' {
                    depth += 1;
                    i += 2;
                } else if s[i] == '*' && at(i + 1) == '/' {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    line += (s[i] == '\n') as usize;
                    i += 1;
                }
            }
        } else if c == '"' || ((c == 'r' || c == 'b') && matches!(at(i + 1), '"' | '#' | 'r')) {
            // "…", b"…", r"…", r#"…"#, br#"…"# (an identifier starting with r or b is handled
            // below when no quote follows).
            let start = i;
            if c == 'b' {
                i += 1;
            }
            let raw = at(i) == 'r';
            if raw {
                i += 1;
            }
            let mut hashes = 0;
            while raw && at(i) == '#' {
                hashes += 1;
                i += 1;
            }
            if at(i) != '"' {
                // An identifier such as `r#type` or `bar`: take it as an identifier.
                i = start;
                let j = ident_end(&s, i);
                out.push((Token::Ident(s[i..j].iter().collect()), line));
                i = j;
                continue;
            }
            i += 1;
            loop {
                if i >= s.len() {
                    break;
                }
                if s[i] == '\\' && !raw {
                    line += (at(i + 1) == '\n') as usize;
                    i += 2;
                    continue;
                }
                if s[i] == '"' && (0..hashes).all(|h| at(i + 1 + h) == '#') {
                    i += 1 + hashes;
                    break;
                }
                line += (s[i] == '\n') as usize;
                i += 1;
            }
            out.push((Token::Other, line));
        } else if c == '\'' {
            // 'x', '\n', '\u{…}' are literals; 'a (no closing quote right after) a lifetime.
            if at(i + 1) == '\\' {
                i += 3;
                while i < s.len() && s[i] != '\'' {
                    i += 1;
                }
                i += 1;
            } else if at(i + 2) == '\'' {
                i += 3;
            } else {
                i += 1;
            }
            out.push((Token::Other, line));
        } else if c.is_alphanumeric() || c == '_' {
            let j = ident_end(&s, i);
            out.push((Token::Ident(s[i..j].iter().collect()), line));
            i = j;
        } else if c == ':' && at(i + 1) == ':' {
            out.push((Token::PathSep, line));
            i += 2;
        } else {
            out.push((
                match c {
                    '{' => Token::Open,
                    '}' => Token::Close,
                    ',' => Token::Comma,
                    ';' => Token::Semi,
                    _ => Token::Other,
                },
                line,
            ));
            i += 1;
        }
    }
    out
}

fn ident_end(s: &[char], mut i: usize) -> usize {
    if s[i] == 'r' && s.get(i + 1) == Some(&'#') {
        i += 2;
    }
    while i < s.len() && (s[i].is_alphanumeric() || s[i] == '_') {
        i += 1;
    }
    i
}

/// One module file of a crate: its module path (`[]` for the root) and where it is.
struct ModuleFile {
    path: Vec<String>,
    file: PathBuf,
}

/// The files of the crate rooted at `root_file`, through `mod x;` declarations.
fn module_files(root_file: &Path) -> Vec<ModuleFile> {
    let mut out = Vec::new();
    let mut todo = vec![(Vec::<String>::new(), root_file.to_path_buf())];
    while let Some((path, file)) = todo.pop() {
        let src = fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        let is_dir_owner = path.is_empty() || file.file_name().is_some_and(|n| n == "mod.rs");
        let dir = if is_dir_owner {
            file.parent().unwrap().to_path_buf()
        } else {
            file.with_extension("")
        };
        let t = tokens(&src);
        let mut depth = 0usize;
        for (k, (tok, _)) in t.iter().enumerate() {
            match tok {
                Token::Open => depth += 1,
                Token::Close => depth -= 1,
                Token::Ident(m) if m == "mod" && depth == 0 => {
                    if let (Some((Token::Ident(name), _)), Some((Token::Semi, _))) =
                        (t.get(k + 1), t.get(k + 2))
                    {
                        let flat = dir.join(format!("{name}.rs"));
                        let nested = dir.join(name).join("mod.rs");
                        let child = if flat.exists() { flat } else { nested };
                        assert!(
                            child.exists(),
                            "{}: `mod {name};` has no file",
                            file.display()
                        );
                        let mut p = path.clone();
                        p.push(name.clone());
                        todo.push((p, child));
                    }
                }
                _ => {}
            }
        }
        out.push(ModuleFile { path, file });
    }
    out
}

/// Edges "top-level module A → top-level module B" of one crate, each with a place it is seen.
fn module_edges(files: &[ModuleFile]) -> BTreeMap<(String, String), String> {
    let mut top: BTreeSet<String> = files
        .iter()
        .filter_map(|f| f.path.first().cloned())
        .collect();
    let mut sources = Vec::new();
    for f in files {
        let src = fs::read_to_string(&f.file).unwrap();
        let t = tokens(&src);
        // Inline top-level modules of the root (`pub mod build_info { … }`) are modules too.
        if f.path.is_empty() {
            for w in t.windows(3) {
                if let [
                    (Token::Ident(m), _),
                    (Token::Ident(name), _),
                    (Token::Open, _),
                ] = w
                    && m == "mod"
                {
                    top.insert(name.clone());
                }
            }
        }
        sources.push((f, t));
    }
    let mut edges = BTreeMap::new();
    for (f, t) in &sources {
        let rel = f
            .file
            .strip_prefix(root())
            .unwrap_or(&f.file)
            .display()
            .to_string();
        // The inline modules open at this point, with the brace depth they close at.
        let mut inline: Vec<(String, usize)> = Vec::new();
        let mut depth = 0usize;
        let mut k = 0;
        while k < t.len() {
            let (tok, line) = &t[k];
            match tok {
                Token::Open => {
                    depth += 1;
                    if let (Some((Token::Ident(name), _)), Some((Token::Ident(m), _))) = (
                        k.checked_sub(1).map(|j| &t[j]),
                        k.checked_sub(2).map(|j| &t[j]),
                    ) && m == "mod"
                    {
                        inline.push((name.clone(), depth));
                    }
                }
                Token::Close => {
                    if inline.last().is_some_and(|(_, d)| *d == depth) {
                        inline.pop();
                    }
                    depth -= 1;
                }
                Token::Ident(first)
                    if (first == "crate" || first == "super")
                        && !(k > 0 && t[k - 1].0 == Token::PathSep) =>
                {
                    // (After `::` it is no path start: `super::super` is read from the first.)
                    let mut here: Vec<String> = f.path.clone();
                    here.extend(inline.iter().map(|(n, _)| n.clone()));
                    let from = match here.first() {
                        Some(m) => m.clone(),
                        None => {
                            k += 1;
                            continue;
                        }
                    };
                    // Resolve the path's start: `crate` is the root, each `super` climbs one.
                    let mut target = here.clone();
                    let mut j = k;
                    if first == "crate" {
                        target.clear();
                        j += 1;
                    } else {
                        while matches!(&t.get(j), Some((Token::Ident(s), _)) if s == "super") {
                            target.pop();
                            j += 1;
                            if t.get(j).map(|x| &x.0) == Some(&Token::PathSep)
                                && matches!(&t.get(j + 1), Some((Token::Ident(s), _)) if s == "super")
                            {
                                j += 1;
                            }
                        }
                    }
                    if t.get(j).map(|x| &x.0) != Some(&Token::PathSep) {
                        k = j.max(k + 1);
                        continue;
                    }
                    j += 1;
                    let mut names = Vec::new();
                    if !target.is_empty() {
                        // Still inside a top-level module: that module is the target.
                        names.push(target[0].clone());
                    } else {
                        match t.get(j) {
                            Some((Token::Ident(name), _)) => names.push(name.clone()),
                            Some((Token::Open, _)) => {
                                // `{a, b::c, d::{e}}`: the first segment of each entry.
                                let mut level = 0;
                                let mut expect = true;
                                for (tok, _) in &t[j..] {
                                    match tok {
                                        Token::Open => {
                                            level += 1;
                                            expect = level == 1;
                                        }
                                        Token::Close => {
                                            level -= 1;
                                            if level == 0 {
                                                break;
                                            }
                                        }
                                        Token::Comma if level == 1 => expect = true,
                                        Token::Ident(name) if expect && level == 1 => {
                                            names.push(name.clone());
                                            expect = false;
                                        }
                                        _ if level == 1 => expect = false,
                                        _ => {}
                                    }
                                }
                            }
                            _ => {}
                        }
                    }
                    for to in names {
                        if to != from && top.contains(&to) {
                            edges
                                .entry((from.clone(), to))
                                .or_insert_with(|| format!("{rel}:{line}"));
                        }
                    }
                    k = j;
                    continue;
                }
                _ => {}
            }
            k += 1;
        }
    }
    edges
}

/// The strongly connected components of `edges` with more than one module (each one a set of
/// modules that reach each other: every cycle lies in one), sorted.
fn tangles(edges: &BTreeMap<(String, String), String>) -> Vec<BTreeSet<String>> {
    let nodes: BTreeSet<&String> = edges.keys().flat_map(|(a, b)| [a, b]).collect();
    let reach = |from: &String| {
        let mut seen = BTreeSet::from([from.clone()]);
        let mut todo = vec![from.clone()];
        while let Some(n) = todo.pop() {
            for (a, b) in edges.keys() {
                if *a == n && seen.insert(b.clone()) {
                    todo.push(b.clone());
                }
            }
        }
        seen
    };
    let reached: BTreeMap<&String, BTreeSet<String>> =
        nodes.iter().map(|n| (*n, reach(n))).collect();
    let mut out: Vec<BTreeSet<String>> = Vec::new();
    for n in &nodes {
        let component: BTreeSet<String> = reached[n]
            .iter()
            .filter(|m| reached[m].contains(*n))
            .cloned()
            .collect();
        if component.len() > 1 && !out.contains(&component) {
            out.push(component);
        }
    }
    out
}

/// A shortest cycle through the first module of `component`, first = last.
fn a_cycle(
    edges: &BTreeMap<(String, String), String>,
    component: &BTreeSet<String>,
) -> Vec<String> {
    let start = component.first().unwrap();
    let mut parent: BTreeMap<String, String> = BTreeMap::new();
    let mut queue = std::collections::VecDeque::from([start.clone()]);
    while let Some(n) = queue.pop_front() {
        for (a, b) in edges.keys() {
            if *a != n || !component.contains(b) {
                continue;
            }
            if b == start {
                let mut cycle = vec![start.clone(), n.clone()];
                while let Some(p) = parent.get(cycle.last().unwrap()) {
                    cycle.push(p.clone());
                }
                if cycle.last() != Some(start) {
                    cycle.push(start.clone());
                }
                cycle.reverse();
                cycle.dedup();
                return cycle;
            }
            if !parent.contains_key(b) && b != start {
                parent.insert(b.clone(), n.clone());
                queue.push_back(b.clone());
            }
        }
    }
    unreachable!("a strongly connected component has a cycle")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap() {
        let p = entry.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

#[test]
fn the_module_graph_of_every_crate_is_acyclic() {
    let mut failures = Vec::new();
    for krate in CRATES {
        let src = root().join(krate).join("src");
        let mut roots: Vec<PathBuf> = ["lib.rs", "main.rs"]
            .iter()
            .map(|f| src.join(f))
            .filter(|p| p.exists())
            .collect();
        if src.join("bin").is_dir() {
            for e in fs::read_dir(src.join("bin")).unwrap() {
                let p = e.unwrap().path();
                if p.extension().is_some_and(|e| e == "rs") {
                    roots.push(p);
                }
            }
        }
        assert!(!roots.is_empty(), "{krate}: no crate root");
        let mut reached = BTreeSet::new();
        for r in &roots {
            let files = module_files(r);
            reached.extend(files.iter().map(|f| f.file.clone()));
            let edges = module_edges(&files);
            if krate == "agents" {
                assert!(
                    edges.len() >= 5,
                    "agents: only {edges:?} found; the scan is broken"
                );
            }
            // The graph, for `--nocapture`: "module → what it refers to".
            let mut out: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
            for (a, b) in edges.keys() {
                out.entry(a).or_default().push(b);
            }
            for (a, bs) in out {
                println!(
                    "{krate} ({}): {a} → {}",
                    r.strip_prefix(root()).unwrap_or(r).display(),
                    bs.join(", ")
                );
            }
            for component in tangles(&edges) {
                let cycle = a_cycle(&edges, &component);
                let inside: Vec<String> = edges
                    .iter()
                    .filter(|((a, b), _)| component.contains(a) && component.contains(b))
                    .map(|((a, b), at)| format!("  {a} → {b}   ({at})"))
                    .collect();
                failures.push(format!(
                    "{krate} ({}): the modules {component:?} reach each other, e.g. {}; \
                     the references among them:\n{}",
                    r.file_name().unwrap().to_string_lossy(),
                    cycle.join(" → "),
                    inside.join("\n")
                ));
            }
        }
        let mut all = Vec::new();
        rust_files(&src, &mut all);
        for f in all {
            assert!(
                reached.contains(&f),
                "{} is in no module tree (no `mod` declares it)",
                f.display()
            );
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

/// The gradgym crates `krate` depends on, from the dependency tables of its Cargo.toml
/// (`[dependencies]`, `[dev-dependencies]`, `[build-dependencies]`, target-specific ones, and
/// `[dependencies.gradgym-x]` tables).
fn gradgym_deps(krate: &str) -> BTreeSet<String> {
    let toml = fs::read_to_string(root().join(krate).join("Cargo.toml")).unwrap();
    let mut deps = BTreeSet::new();
    let mut in_deps = false;
    for line in toml.lines().map(str::trim) {
        if let Some(header) = line.strip_prefix('[') {
            let header = header.trim_end_matches(']').trim();
            let table = header.rsplit_once('.').map(|(a, _)| a);
            let is_deps = |h: &str| h.ends_with("dependencies");
            in_deps = is_deps(header);
            if let Some(t) = table
                && is_deps(t)
            {
                let name = header.rsplit('.').next().unwrap();
                if name.starts_with("gradgym") {
                    deps.insert(name.trim_matches('"').to_string());
                }
            }
            continue;
        }
        if in_deps
            && let Some(name) = line.split(['=', '.', ' ']).next()
            && name.trim_matches('"').starts_with("gradgym")
        {
            deps.insert(name.trim_matches('"').to_string());
        }
    }
    deps
}

#[test]
fn the_crates_are_layered_envs_algorithms_agents_benchmarks() {
    let allowed: [&[&str]; 4] = [
        &[],
        &["gradgym-envs"],
        &["gradgym-envs", "gradgym-algorithms"],
        &["gradgym-envs", "gradgym-algorithms", "gradgym-agents"],
    ];
    for (krate, allowed) in CRATES.iter().zip(allowed) {
        let deps = gradgym_deps(krate);
        let extra: Vec<&String> = deps
            .iter()
            .filter(|d| !allowed.contains(&d.as_str()))
            .collect();
        assert!(
            extra.is_empty(),
            "gradgym-{krate} depends on {extra:?}; it may depend only on {allowed:?}"
        );
    }
    // The parse does see dependencies.
    assert!(gradgym_deps("agents").contains("gradgym-algorithms"));
    assert!(gradgym_deps("algorithms").contains("gradgym-envs"));
}

#[test]
fn the_scan_reads_every_form_of_path_and_skips_comments_and_strings() {
    let dir = gradgym::agents::scratch::Scratch::new("module-graph", "src");
    fs::create_dir_all(dir.join("b")).unwrap();
    let write = |name: &str, text: &str| fs::write(dir.join(name), text).unwrap();
    write(
        "lib.rs",
        "pub mod a;\npub mod b;\npub mod c;\npub mod d;\npub mod e;\npub mod inline { use crate::e::X; }\n",
    );
    write(
        "a.rs",
        "use crate::{b::{self, Y}, c};\n// crate::d in a comment\nconst S: &str = \"crate::d\";\n\
         fn f<'a>(x: &'a str) -> char { 'x' }\n#[cfg(test)]\nmod tests { use super::*; }\n",
    );
    write("b/mod.rs", "pub mod inner;\npub struct Y;\n");
    write("b/inner.rs", "pub fn g() { super::super::c::h() }\n");
    write(
        "c.rs",
        "pub fn h() {}\n/* crate::a /* nested */ crate::a */\n",
    );
    write("d.rs", "pub(crate) fn k() { r#\"crate::a\"#; }\n");
    write("e.rs", "pub struct X;\n");
    let files = module_files(&dir.join("lib.rs"));
    assert_eq!(files.len(), 7);
    let edges: BTreeSet<(String, String)> = module_edges(&files).into_keys().collect();
    let expected: BTreeSet<(String, String)> =
        [("a", "b"), ("a", "c"), ("b", "c"), ("inline", "e")]
            .iter()
            .map(|(x, y)| (x.to_string(), y.to_string()))
            .collect();
    assert_eq!(edges, expected);
}
