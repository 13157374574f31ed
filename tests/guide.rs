//! The guide cannot drift from the pages the browser tests run: every code block marked
//! `<!-- snippet: examples/PAGE -->` in the README or the browser guide (`docs/browser.md`) is an
//! excerpt of that page (each line, trimmed, is a line of the page, in the page's order), and every
//! example page has a snippet in one of them.

use std::path::Path;

/// The documents whose snippets are checked.
const GUIDES: [&str; 2] = ["README.md", "docs/browser.md"];

/// A document's marked snippets: (page path, the lines of its code block).
fn snippets_of(readme: &str) -> Vec<(String, Vec<String>)> {
    let mut found = Vec::new();
    let mut lines = readme.lines();
    while let Some(line) = lines.next() {
        let Some(path) = line
            .trim()
            .strip_prefix("<!-- snippet: ")
            .and_then(|l| l.strip_suffix(" -->"))
        else {
            continue;
        };
        let fence = lines.next().unwrap_or_default();
        assert!(
            fence.starts_with("```"),
            "a code block right after the marker for {path}"
        );
        let block: Vec<String> = lines
            .by_ref()
            .take_while(|l| !l.starts_with("```"))
            .map(str::to_owned)
            .collect();
        found.push((path.to_owned(), block));
    }
    found
}

/// The first line of `block` (trimmed, non-empty) that is not a line of `page` after the
/// previous one's, if any.
fn first_drift<'a>(block: &'a [String], page: &str) -> Option<&'a str> {
    let page: Vec<&str> = page.lines().map(str::trim).collect();
    let mut at = 0;
    for line in block.iter().map(|l| l.trim()).filter(|l| !l.is_empty()) {
        match page[at..].iter().position(|p| *p == line) {
            Some(i) => at += i + 1,
            None => return Some(line),
        }
    }
    None
}

#[test]
fn every_guide_snippet_is_an_excerpt_of_its_tested_example_page() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut snippets = Vec::new();
    for doc in GUIDES {
        let text = std::fs::read_to_string(repo.join(doc)).unwrap();
        snippets.extend(snippets_of(&text).into_iter().map(|(p, b)| (doc, p, b)));
    }
    for (doc, path, block) in &snippets {
        let page = std::fs::read_to_string(repo.join(path))
            .unwrap_or_else(|e| panic!("{doc} snippet of {path}: {e}"));
        assert!(!block.is_empty(), "{path}: empty snippet");
        if let Some(line) = first_drift(block, &page) {
            panic!(
                "{doc} snippet of {path} has a line the page does not (or not in this order): {line:?}"
            );
        }
    }
    for entry in std::fs::read_dir(repo.join("examples")).unwrap() {
        let name = format!("examples/{}", entry.unwrap().file_name().to_string_lossy());
        assert!(
            snippets.iter().any(|(_, p, _)| *p == name),
            "{name} has no snippet in {GUIDES:?}"
        );
    }
}

#[test]
fn a_drifted_snippet_is_caught() {
    let page = "a();\n  b();\nc();\n";
    let ok = ["a();", "c();"].map(String::from);
    assert_eq!(first_drift(&ok, page), None);
    let changed = ["a();", "b(1);"].map(String::from);
    assert_eq!(first_drift(&changed, page), Some("b(1);"));
    let reordered = ["c();", "a();"].map(String::from);
    assert_eq!(first_drift(&reordered, page), Some("a();"));
}
