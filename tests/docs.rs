//! The documentation cannot drift from the code where it states a key, a default or a link.
//!
//! - Every key of the key table in `docs/configuration.md` is a real key, and its documented
//!   default is the code's: a file that sets the key to it makes the same configuration as a file
//!   without it, and `wsline --check-config` accepts a file that sets every key at once.
//! - Every key of the shipped `config/wsline.toml` is in the table (and the table's keys in it),
//!   with the table's default wherever the file does not say otherwise.
//! - Every relative link of `README.md`, `ARCHITECTURE.md` and `docs/*.md` points to a file that
//!   exists and, with a `#fragment`, to a heading of it.
//!
//! This test asks nothing of the docs it cannot check: it does not judge the prose.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The page with the key table.
const CONFIGURATION: &str = "docs/configuration.md";
/// The table's header row.
const KEY_TABLE: &str = "| key | default | meaning |";
/// Keys of the shipped file that differ from the defaults on purpose (it is a production sample:
/// loopback behind nginx, a Let's Encrypt certificate).
const SAMPLE_OWN_VALUES: [&str; 3] = ["server.listen", "tls.cert", "tls.key"];

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: impl AsRef<Path>) -> String {
    let path = repo().join(path);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The key table's rows: (`section.key`, its default as written, a TOML literal). `[[rooms]]`
/// (a list of entries, none by default) is not a key with a value and is left out.
fn key_table(page: &str) -> Vec<(String, String)> {
    let mut lines = page.lines().skip_while(|l| l.trim() != KEY_TABLE);
    assert!(
        lines.next().is_some(),
        "{CONFIGURATION} has no {KEY_TABLE} table"
    );
    let rows: Vec<(String, String)> = lines
        .skip(1) // | --- | --- | --- |
        .take_while(|l| l.starts_with('|'))
        .map(|row| {
            let cells: Vec<&str> = row.split('|').map(str::trim).collect();
            let cell = |i: usize| cells[i].trim_matches('`').to_owned();
            (cell(1), cell(2))
        })
        .filter(|(key, _)| key != "[[rooms]]")
        .collect();
    assert!(rows.len() > 40, "the key table has {} rows", rows.len());
    rows
}

/// A TOML file from `section.key = value` pairs, one table per section (`security.jwt` too).
fn toml_file<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    let mut tables: BTreeMap<&str, Vec<(&str, &str)>> = BTreeMap::new();
    for (key, value) in pairs {
        let (table, leaf) = key.rsplit_once('.').expect("a key is section.key");
        tables.entry(table).or_default().push((leaf, value));
    }
    let mut text = String::new();
    for (table, leaves) in tables {
        text.push_str(&format!("[{table}]\n"));
        for (leaf, value) in leaves {
            text.push_str(&format!("{leaf} = {value}\n"));
        }
    }
    text
}

/// The configuration a file makes, as text, or its problems. The one place this test uses the
/// library: the CLI prints no effective configuration.
fn effective(toml: &str) -> Result<String, String> {
    let mut config = wsline::Config::from_toml(toml).map_err(|p| format!("{p:?}"))?;
    // Where each key was written differs between two files; what they make must not.
    config.origin = Default::default();
    Ok(format!("{config:?}"))
}

/// The keys a file needs besides `key` to be valid: TLS on needs a certificate, and the
/// development one is the only one that needs no file; `tls.self_signed` itself is compared with
/// TLS off.
fn base_for(key: &str) -> (&'static str, &'static str) {
    match key {
        "tls.self_signed" => ("tls.enabled", "false"),
        _ => ("tls.self_signed", "true"),
    }
}

/// Every row whose key is unknown or whose documented default is not the code's, as a sentence.
fn wrong_defaults(rows: &[(String, String)]) -> Vec<String> {
    let mut wrong = Vec::new();
    for (key, default) in rows {
        let base = base_for(key);
        let without = effective(&toml_file([base])).expect("the base file is valid");
        match effective(&toml_file([base, (key.as_str(), default.as_str())])) {
            Err(problems) => wrong.push(format!("{key} = {default}: {problems}")),
            Ok(with) if with != without => wrong.push(format!(
                "{key} = {default} is documented as the default, but setting it changes the configuration"
            )),
            Ok(_) => {}
        }
    }
    wrong
}

#[test]
fn every_key_in_the_table_is_real_and_has_its_documented_default() {
    let rows = key_table(&read(CONFIGURATION));
    let wrong = wrong_defaults(&rows);
    assert!(wrong.is_empty(), "{CONFIGURATION}:\n{}", wrong.join("\n"));
}

#[test]
fn a_changed_default_in_the_table_is_caught() {
    let mut rows = key_table(&read(CONFIGURATION));
    let row = rows
        .iter_mut()
        .find(|(key, _)| key == "limits.queue_messages")
        .expect("the table has limits.queue_messages");
    row.1 = format!("{}1", row.1);
    assert_eq!(wrong_defaults(&rows).len(), 1);
    rows.push(("limits.no_such_key".into(), "1".into()));
    assert_eq!(wrong_defaults(&rows).len(), 2);
}

#[test]
fn check_config_accepts_every_key_of_the_table_at_its_default() {
    let rows = key_table(&read(CONFIGURATION));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("defaults.toml");
    // Every key at its default, but the development certificate (TLS on needs one).
    let pairs = rows.iter().map(|(key, default)| match key.as_str() {
        "tls.self_signed" => (key.as_str(), "true"),
        _ => (key.as_str(), default.as_str()),
    });
    std::fs::write(&path, toml_file(pairs)).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_wsline"))
        .arg("--check-config")
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.starts_with("config OK\n"),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `section.key` to value for every key set in a TOML document.
fn flatten(prefix: &str, table: &toml::Table, into: &mut BTreeMap<String, toml::Value>) {
    for (name, value) in table {
        let key = if prefix.is_empty() {
            name.clone()
        } else {
            format!("{prefix}.{name}")
        };
        match value {
            toml::Value::Table(inner) => flatten(&key, inner, into),
            _ => {
                into.insert(key, value.clone());
            }
        }
    }
}

/// A documented default (a TOML literal) as a value.
fn toml_value(literal: &str) -> toml::Value {
    let table: toml::Table = format!("v = {literal}")
        .parse()
        .unwrap_or_else(|e| panic!("{literal}: {e}"));
    table["v"].clone()
}

#[test]
fn the_shipped_config_has_the_tables_keys_and_defaults() {
    let rows = key_table(&read(CONFIGURATION));
    let documented: BTreeMap<&str, &str> =
        rows.iter().map(|(k, d)| (k.as_str(), d.as_str())).collect();
    let sample: toml::Table = read("config/wsline.toml").parse().unwrap();
    let mut shipped = BTreeMap::new();
    flatten("", &sample, &mut shipped);
    for (key, value) in &shipped {
        let Some(default) = documented.get(key.as_str()) else {
            panic!(
                "config/wsline.toml sets {key}, which is not in the key table of {CONFIGURATION}"
            );
        };
        if !SAMPLE_OWN_VALUES.contains(&key.as_str()) {
            assert_eq!(
                *value,
                toml_value(default),
                "config/wsline.toml shows {key} with another value than the documented default"
            );
        }
    }
    for key in documented.keys() {
        assert!(
            shipped.contains_key(*key),
            "{key} is in the key table but not in config/wsline.toml"
        );
    }
}

/// The README's minimal production configuration is a valid file (its certificate is only
/// loaded at start, so the library's check is the one that applies here).
#[test]
fn the_readme_minimal_config_is_valid() {
    let readme = read("README.md");
    let (_, after) = readme
        .split_once("<!-- config: minimal -->\n```toml\n")
        .expect("the README's minimal configuration");
    let minimal = after.split_once("```").unwrap().0;
    if let Err(problems) = effective(minimal) {
        panic!("README's minimal configuration: {problems}");
    }
}

/// The anchor GitHub gives a heading: lower case, punctuation dropped, spaces to hyphens.
fn slug(heading: &str) -> String {
    heading
        .trim()
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

/// The lines of a Markdown text outside its fenced code blocks.
fn prose(text: &str) -> Vec<&str> {
    let mut fenced = false;
    text.lines()
        .filter(|line| {
            if line.trim_start().starts_with("```") {
                fenced = !fenced;
                return false;
            }
            !fenced
        })
        .collect()
}

/// The anchors of a Markdown file's headings.
fn anchors(text: &str) -> Vec<String> {
    prose(text)
        .into_iter()
        .filter(|line| line.starts_with('#'))
        .map(|line| slug(line.trim_start_matches('#')))
        .collect()
}

/// The link targets in a Markdown text: what stands in `](...)`.
fn links(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    for line in prose(text) {
        let mut rest = line;
        while let Some(at) = rest.find("](") {
            rest = &rest[at + 2..];
            if let Some(end) = rest.find(')') {
                found.push(rest[..end].to_owned());
                rest = &rest[end..];
            }
        }
    }
    found
}

fn documents() -> Vec<PathBuf> {
    let mut docs = vec![repo().join("README.md"), repo().join("ARCHITECTURE.md")];
    for entry in std::fs::read_dir(repo().join("docs")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "md") {
            docs.push(path);
        }
    }
    docs
}

#[test]
fn every_relative_link_of_the_docs_points_to_a_file_and_heading_that_exist() {
    let mut broken = Vec::new();
    for doc in documents() {
        let text = std::fs::read_to_string(&doc).unwrap();
        for link in links(&text) {
            if link.contains("://") || link.starts_with("mailto:") {
                continue;
            }
            let (file, fragment) = match link.split_once('#') {
                Some((file, fragment)) => (file, Some(fragment)),
                None => (link.as_str(), None),
            };
            let target = match file {
                "" => doc.clone(),
                file => doc.parent().unwrap().join(file),
            };
            let name = doc.strip_prefix(repo()).unwrap().display();
            if !target.exists() {
                broken.push(format!("{name}: {link}: no such file"));
                continue;
            }
            if let Some(fragment) = fragment {
                let target_text = std::fs::read_to_string(&target).unwrap();
                if !anchors(&target_text).iter().any(|a| a == fragment) {
                    broken.push(format!("{name}: {link}: no such heading"));
                }
            }
        }
    }
    assert!(broken.is_empty(), "{}", broken.join("\n"));
}

#[test]
fn slugs_are_githubs() {
    assert_eq!(slug(" Close codes"), "close-codes");
    assert_eq!(
        slug("Deployment: a Debian/Ubuntu VM, nginx, certbot, systemd"),
        "deployment-a-debianubuntu-vm-nginx-certbot-systemd"
    );
    assert_eq!(
        slug("Why `rustls-pki-types` for PEM"),
        "why-rustls-pki-types-for-pem"
    );
    assert_eq!(
        slug("Descriptors and kernel settings (up to 100 000 connections)"),
        "descriptors-and-kernel-settings-up-to-100-000-connections"
    );
}

#[test]
fn the_package_ships_the_readme_and_the_docs() {
    let manifest: toml::Table = read("Cargo.toml").parse().unwrap();
    let assets = manifest["package"]["metadata"]["deb"]["assets"]
        .as_array()
        .expect("[package.metadata.deb] assets");
    let shipped: Vec<(&str, &str)> = assets
        .iter()
        .map(|a| (a[0].as_str().unwrap(), a[1].as_str().unwrap()))
        .collect();
    for (source, dest) in [
        ("README.md", "usr/share/doc/wsline/README.md"),
        ("ARCHITECTURE.md", "usr/share/doc/wsline/ARCHITECTURE.md"),
        ("docs/*.md", "usr/share/doc/wsline/docs/"),
    ] {
        assert!(
            shipped.contains(&(source, dest)),
            "the .deb's assets lack {source} -> {dest}: {shipped:?}"
        );
    }
}
