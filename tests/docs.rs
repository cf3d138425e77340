//! The docs point only at what the repository has: for `README.md` and every `docs/*.md`,
//!
//! - every relative Markdown link (`[text](path)`, `[text](path#anchor)`, `![alt](image)`, and
//!   `[ref]: path` definitions) names a file or folder that exists, relative to the page;
//! - every `#anchor` names a heading of its target page, by GitHub's slug rule (lowercase,
//!   spaces to `-`, punctuation other than `-` and `_` dropped, `-1`, `-2`, … for repeats);
//! - every path in backticks that looks like a repository file exists, relative to the
//!   repository root: a word that contains `/` and ends in one of [`FILE_EXTENSIONS`], or whose
//!   first component is a top-level folder of the repository. Not checked: fenced code blocks
//!   (commands and examples), paths under `out/`, `target/` or `~/.cache`, and examples with
//!   placeholders (`<run-id>`, `DIR/…`, `*`, `{a,b}`, `$VAR`);
//! - every mention of a conventional project document ([`DOCUMENT_NAMES`]: ROADMAP,
//!   ARCHITECTURE, …), linked or not, names a file at the root or in `docs/`.
//!
//! Std only (no libtorch call, no network), so it runs in milliseconds.

use std::collections::{BTreeSet, HashMap};
use std::fs;
use std::path::{Component, Path, PathBuf};

/// File endings that make a backticked word with a `/` a repository path.
const FILE_EXTENSIONS: &[&str] = &[
    ".rs", ".toml", ".md", ".sh", ".csv", ".json", ".py", ".png", ".svg",
];

/// Names of project documents that a page may cite in prose ("see the ROADMAP").
const DOCUMENT_NAMES: &[&str] = &[
    "ROADMAP",
    "ARCHITECTURE",
    "CHANGELOG",
    "CONTRIBUTING",
    "DESIGN",
    "HACKING",
];

/// Top-level paths never checked: build outputs and scratch folders.
const UNCHECKED_PREFIXES: &[&str] = &["out/", "target/", "~/.cache", "./out/", "./target/"];

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// README.md and docs/*.md, relative to the repository root, sorted.
fn pages(root: &Path) -> Vec<PathBuf> {
    let mut pages = vec![PathBuf::from("README.md")];
    let mut docs: Vec<PathBuf> = fs::read_dir(root.join("docs"))
        .map(|dir| {
            dir.filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "md"))
                .map(|p| p.strip_prefix(root).unwrap().to_path_buf())
                .collect()
        })
        .unwrap_or_default();
    docs.sort();
    pages.extend(docs);
    pages
}

/// The folders at the repository root (not hidden, not build outputs).
fn top_level_folders(root: &Path) -> BTreeSet<String> {
    fs::read_dir(root)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.') && n != "target" && n != "out")
        .collect()
}

/// The lines of a page outside fenced code blocks, with their 1-based numbers.
fn prose_lines(text: &str) -> Vec<(usize, &str)> {
    let mut fence: Option<(char, usize)> = None;
    let mut lines = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        let marker = trimmed.chars().next().filter(|c| *c == '`' || *c == '~');
        let run = marker.map_or(0, |c| trimmed.chars().take_while(|&x| x == c).count());
        match fence {
            None if run >= 3 => fence = Some((marker.unwrap(), run)),
            Some((c, n)) if marker == Some(c) && run >= n && trimmed[run..].trim().is_empty() => {
                fence = None
            }
            None => lines.push((i + 1, line)),
            Some(_) => {}
        }
    }
    lines
}

/// A line split into its text outside inline code and its code spans.
fn split_code_spans(line: &str) -> (String, Vec<String>) {
    let chars: Vec<char> = line.chars().collect();
    let (mut text, mut spans) = (String::new(), Vec::new());
    let mut i = 0;
    while i < chars.len() {
        if chars[i] != '`' {
            text.push(chars[i]);
            i += 1;
            continue;
        }
        let run = chars[i..].iter().take_while(|&&c| c == '`').count();
        // The closing run of exactly the same length.
        let mut j = i + run;
        let mut close = None;
        while j < chars.len() {
            if chars[j] == '`' {
                let r = chars[j..].iter().take_while(|&&c| c == '`').count();
                if r == run {
                    close = Some(j);
                    break;
                }
                j += r;
            } else {
                j += 1;
            }
        }
        match close {
            Some(j) => {
                spans.push(
                    chars[i + run..j]
                        .iter()
                        .collect::<String>()
                        .trim()
                        .to_string(),
                );
                text.push(' ');
                i = j + run;
            }
            None => {
                text.extend(&chars[i..i + run]);
                i += run;
            }
        }
    }
    (text, spans)
}

/// Link targets in text with code spans removed: `](target)`, `](target "title")`, and
/// reference definitions `[ref]: target`.
fn link_targets(text: &str) -> Vec<String> {
    let mut targets = Vec::new();
    let mut rest = text;
    while let Some(k) = rest.find("](") {
        let after = &rest[k + 2..];
        let end = after.find(')').unwrap_or(after.len());
        let target = after[..end].split_whitespace().next().unwrap_or("");
        targets.push(target.trim_matches(['<', '>']).to_string());
        rest = &after[end.min(after.len())..];
    }
    let t = text.trim_start();
    if t.starts_with('[')
        && let Some(k) = t.find("]:")
        && !t[..k].contains('(')
    {
        if let Some(target) = t[k + 2..].split_whitespace().next() {
            targets.push(target.to_string());
        }
    }
    targets
}

/// GitHub's anchor for a heading's text.
fn slug(heading: &str) -> String {
    let mut text = String::new();
    // `[label](url)` counts as `label`.
    let mut rest = heading;
    while let Some(open) = rest.find('[') {
        match rest[open..].find("](") {
            Some(mid) => {
                let mid = open + mid;
                let close = rest[mid..].find(')').map_or(rest.len(), |c| mid + c + 1);
                text.push_str(&rest[..open]);
                text.push_str(&rest[open + 1..mid]);
                rest = &rest[close..];
            }
            None => {
                text.push_str(&rest[..=open]);
                rest = &rest[open + 1..];
            }
        }
    }
    text.push_str(rest);
    text.trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            '-' | '_' => Some(c),
            c if c.is_alphanumeric() => Some(c),
            _ => None,
        })
        .collect()
}

/// Every anchor of a page: the slugs of its ATX headings, numbered on repeats as GitHub does.
fn anchors(text: &str) -> BTreeSet<String> {
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut out = BTreeSet::new();
    for (_, line) in prose_lines(text) {
        let t = line.trim_start();
        let hashes = t.chars().take_while(|&c| c == '#').count();
        if !(1..=6).contains(&hashes) || !t[hashes..].starts_with(' ') {
            continue;
        }
        let title = t[hashes..].trim().trim_end_matches('#').trim();
        let base = slug(title);
        let n = seen.entry(base.clone()).or_insert(0);
        out.insert(if *n == 0 {
            base.clone()
        } else {
            format!("{base}-{n}")
        });
        *n += 1;
    }
    out
}

/// `a/b/../c` → `a/c`, without touching the file system.
fn normalise(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::ParentDir => {
                if !out.pop() {
                    out.push("..");
                }
            }
            Component::CurDir => {}
            other => out.push(other.as_os_str()),
        }
    }
    out
}

/// The backticked word as a repository path, if it looks like one and is not an example.
fn repo_path(word: &str, folders: &BTreeSet<String>) -> Option<String> {
    let word = word
        .trim_start_matches(['(', '"', '\''])
        .trim_end_matches([',', ';', ')', '"', '\'', '.']);
    // `file.rs:120` and `file.rs:120-140` name lines of a file.
    let word = match word.rsplit_once(':') {
        Some((path, lines))
            if !lines.is_empty() && lines.chars().all(|c| c.is_ascii_digit() || c == '-') =>
        {
            path
        }
        _ => word,
    };
    if word.is_empty()
        || word.contains("://")
        || word.contains(['<', '>', '*', '{', '}', '$', '…', '|', '='])
        || UNCHECKED_PREFIXES.iter().any(|p| word.starts_with(p))
    {
        return None;
    }
    let first = word
        .trim_start_matches("./")
        .split('/')
        .next()
        .unwrap_or("");
    // `DIR/plots/`, `BASELINE/summary.csv`: a placeholder for a folder the user names.
    if !first.is_empty() && first.chars().all(|c| c.is_ascii_uppercase() || c == '_') {
        return None;
    }
    let is_file = word.contains('/') && FILE_EXTENSIONS.iter().any(|x| word.ends_with(x));
    let in_folder = word.contains('/') && folders.contains(first);
    (is_file || in_folder).then(|| word.to_string())
}

/// Every problem on one page, as `page:line: message`.
fn check_page(root: &Path, page: &Path, folders: &BTreeSet<String>) -> Vec<String> {
    let text = fs::read_to_string(root.join(page)).unwrap();
    let dir = page.parent().unwrap_or(Path::new(""));
    let mut problems = Vec::new();
    for (n, line) in prose_lines(&text) {
        let at = format!("{}:{n}", page.display());
        let (outside, spans) = split_code_spans(line);
        for target in link_targets(&outside) {
            if target.is_empty()
                || target.starts_with("http://")
                || target.starts_with("https://")
                || target.starts_with("mailto:")
            {
                continue;
            }
            let (path, anchor) = match target.split_once('#') {
                Some((p, a)) => (p, Some(a)),
                None => (target.as_str(), None),
            };
            let file = if path.is_empty() {
                page.to_path_buf()
            } else {
                normalise(&dir.join(path))
            };
            let shown = file.display().to_string();
            if !root.join(&file).exists() {
                problems.push(format!("{at}: link to `{target}`: {shown} does not exist"));
                continue;
            }
            if let Some(anchor) = anchor {
                if file.extension().is_none_or(|x| x != "md") {
                    problems.push(format!(
                        "{at}: link to `{target}`: an anchor into a file that is not Markdown"
                    ));
                    continue;
                }
                let target_text = fs::read_to_string(root.join(&file)).unwrap();
                if !anchors(&target_text).contains(anchor) {
                    problems.push(format!(
                        "{at}: link to `{target}`: {shown} has no heading with anchor #{anchor}"
                    ));
                }
            }
        }
        for span in &spans {
            for word in span.split_whitespace() {
                if let Some(path) = repo_path(word, folders)
                    && !root.join(&path).exists()
                {
                    problems.push(format!("{at}: `{path}` does not exist in the repository"));
                }
            }
        }
        for word in line.split(|c: char| !(c.is_alphanumeric() || c == '.' || c == '_')) {
            let stem = word.trim_end_matches('.');
            let stem = stem.strip_suffix(".md").unwrap_or(stem);
            if DOCUMENT_NAMES.contains(&stem) {
                let exists = [root.to_path_buf(), root.join("docs")].iter().any(|d| {
                    [
                        stem.to_string(),
                        format!("{stem}.md"),
                        stem.to_lowercase() + ".md",
                    ]
                    .iter()
                    .any(|f| d.join(f).exists())
                });
                if !exists {
                    problems.push(format!("{at}: cites {stem}, which the repository lacks"));
                }
            }
        }
    }
    problems
}

fn check(root: &Path) -> Vec<String> {
    let folders = top_level_folders(root);
    pages(root)
        .iter()
        .flat_map(|page| check_page(root, page, &folders))
        .collect()
}

#[test]
fn every_link_anchor_and_path_in_the_docs_exists() {
    let problems = check(&repo());
    assert!(
        problems.is_empty(),
        "{} broken reference(s) in the docs:\n{}",
        problems.len(),
        problems.join("\n")
    );
}

#[test]
fn docs_has_a_page_per_area() {
    let root = repo();
    for page in [
        "architecture",
        "environments",
        "training",
        "estimators",
        "harness",
        "testing",
    ] {
        let path = root.join("docs").join(format!("{page}.md"));
        assert!(path.is_file(), "{} is missing", path.display());
    }
}

#[test]
fn slugs_follow_githubs_rule() {
    assert_eq!(slug("Speed of training"), "speed-of-training");
    assert_eq!(
        slug("Statistics: `gradgym report DIR…`"),
        "statistics-gradgym-report-dir"
    );
    assert_eq!(
        slug("Gradient estimators, proved"),
        "gradient-estimators-proved"
    );
    assert_eq!(
        slug("Where to add a metric_column"),
        "where-to-add-a-metric_column"
    );
    assert_eq!(slug("A — B"), "a--b");
    assert_eq!(slug("See [the gate](compare.md)"), "see-the-gate");
    let a = anchors("# Title\n## Notes\n```\n# not a heading\n```\n## Notes\n");
    assert_eq!(
        a,
        ["title", "notes", "notes-1"]
            .map(String::from)
            .into_iter()
            .collect()
    );
}

/// The checker itself, on a scratch repository: each kind of broken reference is caught, and
/// what is allowed passes.
#[test]
fn the_checker_catches_each_kind_of_broken_reference() {
    let root = gradgym::agents::scratch::Scratch::new("docs-test", "repo");
    fs::create_dir_all(root.join("docs")).unwrap();
    fs::create_dir_all(root.join("envs/src")).unwrap();
    fs::write(root.join("envs/src/lib.rs"), "").unwrap();
    fs::write(root.join("docs/a.md"), "# Page A\n\n## Speed of training\n").unwrap();
    let good = "# Front\n\
        [a](docs/a.md#speed-of-training) [self](#front) `envs/src/lib.rs` `out/quick/x.csv`\n\
        `runs/<run-id>/metrics.csv` `DIR/report/report.md` `envs/src/lib.rs:12`\n\
        ```\n[x](missing.md) `envs/src/gone.rs` ROADMAP\n```\n\
        `[x](missing.md)` is code, not a link.\n";
    fs::write(root.join("README.md"), good).unwrap();
    assert_eq!(check(&root), Vec::<String>::new());
    let bad = [
        ("[a](docs/b.md)", "does not exist"),
        ("[a](docs/a.md#speed)", "no heading with anchor #speed"),
        ("[a](#nowhere)", "no heading with anchor #nowhere"),
        ("`envs/src/gone.rs`", "does not exist in the repository"),
        ("`scripts/run.sh`", "does not exist in the repository"),
        ("`envs/src/classic/`", "does not exist in the repository"),
        ("the ROADMAP work", "cites ROADMAP"),
        ("see ARCHITECTURE.md", "cites ARCHITECTURE"),
    ];
    for (line, expected) in bad {
        fs::write(root.join("README.md"), format!("# Front\n{line}\n")).unwrap();
        let problems = check(&root);
        assert!(
            problems.len() == 1 && problems[0].contains(expected),
            "`{line}`: expected one problem with `{expected}`, got {problems:?}"
        );
    }
    // A docs page resolves links from its own folder.
    fs::write(root.join("README.md"), "# Front\n").unwrap();
    fs::write(
        root.join("docs/b.md"),
        "[up](../envs/src/lib.rs) [bad](envs/src/lib.rs)\n",
    )
    .unwrap();
    let problems = check(&root);
    assert!(
        problems.len() == 1 && problems[0].starts_with("docs/b.md:1:"),
        "{problems:?}"
    );
}
