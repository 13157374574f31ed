//! `cargo deb` packages the binary, the systemd unit and the configuration (as a conffile).

use std::process::Command;

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

#[test]
fn cargo_deb_packages_the_binary_the_unit_and_the_config() {
    // The test suite's own (debug) build is packaged: the packaging is what is under test here.
    let _ = env!("CARGO_BIN_EXE_wsline");
    let out = tempfile::tempdir().unwrap();
    run(
        Command::new("cargo")
            .args([
                "deb",
                "--profile",
                "dev",
                "--no-build",
                "--no-strip",
                "--fast",
                "-o",
            ])
            .arg(out.path())
            .current_dir(env!("CARGO_MANIFEST_DIR")),
        "cargo-deb (cargo install cargo-deb)",
    );
    let deb = std::fs::read_dir(out.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .expect("a .deb");
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
