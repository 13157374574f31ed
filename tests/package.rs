//! `cargo deb` packages the binary, the systemd unit and the configuration (as a conffile), and
//! ships the binary stripped, its debug tables in a separate `-dbgsym.ddeb`.

use std::process::Command;

/// cargo-deb works in one scratch directory (`target/wsline/`), which it clears at the start of a
/// run: two runs at once spoil each other's files, so the tests here take turns.
static CARGO_DEB: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Runs cargo-deb with `args`, alone, writing its packages into `out`.
fn cargo_deb(args: &[&str], out: &std::path::Path) {
    let _turn = CARGO_DEB.lock().unwrap_or_else(|e| e.into_inner());
    run(
        Command::new("cargo")
            .arg("deb")
            .args(args)
            .arg("-o")
            .arg(out)
            .current_dir(env!("CARGO_MANIFEST_DIR")),
        "cargo-deb (cargo install cargo-deb)",
    );
}

fn run(cmd: &mut Command, what: &str) -> String {
    let out = cmd.output().unwrap_or_else(|e| {
        panic!("{what} is required for this test ({e}); scripts/test installs it")
    });
    assert!(
        out.status.success(),
        "{what} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The bound on the package's Installed-Size. Measured 2026-11-24: 7307 KiB (a 7.1 MiB stripped
/// binary), 2026-12-05: 9544 KiB; the release profile's line tables left in /usr/bin/wsline made
/// it 44 MiB.
const MAX_INSTALLED_KIB: u64 = 12 * 1024;

/// The `.deb` and `.ddeb` files `cargo deb` wrote into `dir`.
fn packages(dir: &std::path::Path) -> (std::path::PathBuf, Option<std::path::PathBuf>) {
    let files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    let find = |ext: &str| {
        files
            .iter()
            .find(|p| p.extension().is_some_and(|x| x == ext))
    };
    (find("deb").expect("a .deb").clone(), find("ddeb").cloned())
}

#[test]
fn the_package_ships_a_stripped_binary_and_stays_small() {
    // The real package: cargo-deb builds the release profile (minutes the first time; a no-op
    // after `cargo build --release`) and strips the binary into a -dbgsym.ddeb.
    let out = tempfile::tempdir().unwrap();
    cargo_deb(&["--locked", "--fast"], out.path());
    let (deb, ddeb) = packages(out.path());
    let size = run(
        Command::new("dpkg-deb")
            .arg("-f")
            .arg(&deb)
            .arg("Installed-Size"),
        "dpkg-deb",
    );
    let kib: u64 = size.trim().parse().expect("Installed-Size in KiB");
    assert!(
        kib <= MAX_INSTALLED_KIB,
        "Installed-Size {kib} KiB is over {MAX_INSTALLED_KIB} KiB"
    );

    let binary = out.path().join("wsline");
    run(
        Command::new("sh").arg("-c").arg(format!(
            "dpkg-deb --fsys-tarfile {} | tar -xO ./usr/bin/wsline > {}",
            deb.display(),
            binary.display()
        )),
        "dpkg-deb and tar",
    );
    let sections = run(
        Command::new("readelf").arg("-S").arg("-W").arg(&binary),
        "readelf",
    );
    assert!(sections.contains(".text"), "{sections}");
    // (`.debug_gdb_scripts` is loaded data, a pointer for gdb, not debug info.)
    for table in [".debug_info", ".debug_line", ".symtab"] {
        assert!(
            !sections.contains(table),
            "/usr/bin/wsline is not stripped ({table}):\n{sections}"
        );
    }

    // The debug tables are not lost: they are in the -dbgsym package, by build id.
    let ddeb = ddeb.expect("a -dbgsym.ddeb next to the .deb");
    let contents = run(Command::new("dpkg-deb").arg("-c").arg(&ddeb), "dpkg-deb");
    assert!(
        contents
            .lines()
            .any(|l| l.contains("./usr/lib/debug/.build-id/") && l.ends_with(".debug")),
        "{contents}"
    );
}

#[test]
fn cargo_deb_packages_the_binary_the_unit_and_the_config() {
    // The test suite's own (debug) build is packaged: the packaging is what is under test here.
    let _ = env!("CARGO_BIN_EXE_wsline");
    let out = tempfile::tempdir().unwrap();
    cargo_deb(
        &["--profile", "dev", "--no-build", "--no-strip", "--fast"],
        out.path(),
    );
    let (deb, _) = packages(out.path());
    let contents = run(Command::new("dpkg-deb").arg("-c").arg(&deb), "dpkg-deb");
    for file in [
        "./usr/bin/wsline",
        "./usr/lib/systemd/system/wsline.service",
        "./etc/wsline/wsline.toml",
        "./usr/share/wsline/nginx/wsline-location.conf",
    ] {
        assert!(
            contents.lines().any(|l| l.ends_with(file)),
            "{file} not in:\n{contents}"
        );
    }
    let conffiles = run(
        Command::new("dpkg-deb")
            .arg("-I")
            .arg(&deb)
            .arg("conffiles"),
        "dpkg-deb",
    );
    assert_eq!(conffiles.trim(), "/etc/wsline/wsline.toml");
    let unit = run(
        Command::new("sh").arg("-c").arg(format!(
            "dpkg-deb --fsys-tarfile {} | tar -xO ./usr/lib/systemd/system/wsline.service",
            deb.display()
        )),
        "dpkg-deb and tar",
    );
    assert_eq!(
        unit,
        std::fs::read_to_string("systemd/wsline.service").unwrap()
    );
}
