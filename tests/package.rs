//! The Debian package: `scripts/package` (cargo-deb) builds a .deb whose file list holds the
//! binary, the unit, the conffile, the sysusers.d account, man pages, dashboards and examples;
//! it installs into a throw-away dpkg root (maintainer scripts run chrootless with DPKG_ROOT),
//! creates the `recwatch` user in group adm and its state directory, keeps an edited conffile across a reinstall and
//! removes cleanly (purge drops the API token, keeps the alert store). Needs cargo-deb (installed once per machine by scripts/test) and dpkg.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn run(command: &mut Command) -> Output {
    let out = command.output().unwrap_or_else(|e| panic!("{command:?}: {e}"));
    assert!(
        out.status.success(),
        "{command:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn build_package() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    // The dev-profile binary this test run built: no second build from inside `cargo test`.
    let out = run(Command::new("bash").arg(manifest.join("scripts/package")).env("RECWATCH_DEB_PROFILE", "dev"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let deb = stdout.lines().last().expect("scripts/package prints the .deb path");
    manifest.join(deb.trim())
}

fn dpkg_root(root: &Path) -> Command {
    let mut c = Command::new("dpkg");
    c.arg(format!("--root={}", root.display()))
        .args(["--force-script-chrootless", "--force-depends", "--force-confold", "--force-confdef"])
        .arg(format!("--log={}", root.join("dpkg.log").display()));
    c
}

#[test]
fn deb_holds_every_file_and_installs_into_a_throwaway_root() {
    let deb = build_package();
    let listing = String::from_utf8(run(Command::new("dpkg").arg("-c").arg(&deb)).stdout).unwrap();
    let files: Vec<&str> = listing.lines().filter_map(|l| l.split_whitespace().last()).collect();
    let mut expected: Vec<String> = [
        "./usr/bin/recwatch",
        "./usr/lib/systemd/system/recwatch.service",
        "./etc/recwatch/recwatch.toml",
        "./usr/share/recwatch/recwatch.toml",
        "./usr/share/recwatch/examples/reference.toml",
        "./usr/lib/sysusers.d/recwatch.conf",
        "./usr/share/man/man1/recwatch.1.gz",
        "./usr/share/man/man1/recwatch-run.1.gz",
        "./usr/share/man/man1/recwatch-replay.1.gz",
        "./usr/share/man/man1/recwatch-alerts-list.1.gz",
        "./usr/share/doc/recwatch/README.md",
    ]
    .map(String::from)
    .to_vec();
    let dashboards = Path::new(env!("CARGO_MANIFEST_DIR")).join("dashboards");
    for entry in std::fs::read_dir(&dashboards).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_file() {
            expected.push(format!("./usr/share/recwatch/dashboards/{}", entry.file_name().to_string_lossy()));
        }
    }
    for path in &expected {
        assert!(files.contains(&path.as_str()), "{path} missing from the package:\n{listing}");
    }
    let conffiles =
        String::from_utf8(run(Command::new("dpkg-deb").arg("-I").arg(&deb).arg("conffiles")).stdout).unwrap();
    assert_eq!(conffiles.trim(), "/etc/recwatch/recwatch.toml");

    // A throw-away root with an empty dpkg database.
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    std::fs::create_dir_all(r.join("var/lib/dpkg/info")).unwrap();
    std::fs::create_dir_all(r.join("var/lib/dpkg/updates")).unwrap();
    std::fs::write(r.join("var/lib/dpkg/status"), "").unwrap();
    run(dpkg_root(r).arg("-i").arg(&deb));
    let status = String::from_utf8(run(dpkg_root(r).args(["-s", "recwatch"])).stdout).unwrap();
    assert!(status.contains("Status: install ok installed"), "{status}");
    let passwd = std::fs::read_to_string(r.join("etc/passwd")).unwrap();
    assert!(passwd.lines().any(|l| l.starts_with("recwatch:") && l.ends_with(":/var/lib/recwatch:/usr/sbin/nologin")));
    // The state directory exists, owned by the service user, for a start without systemd too.
    use std::os::unix::fs::MetadataExt;
    let uid: u32 =
        passwd.lines().find(|l| l.starts_with("recwatch:")).unwrap().split(':').nth(2).unwrap().parse().unwrap();
    let state = std::fs::metadata(r.join("var/lib/recwatch")).expect("postinst creates /var/lib/recwatch");
    assert!(state.is_dir() && state.uid() == uid && state.mode() & 0o777 == 0o750, "{state:?}");
    let group = std::fs::read_to_string(r.join("etc/group")).unwrap();
    let adm = group.lines().find(|l| l.starts_with("adm:")).expect("group adm");
    assert!(adm.rsplit(':').next().unwrap().split(',').any(|m| m == "recwatch"), "{adm}");
    // The installed binary accepts the installed config, and its man page renders.
    let config = r.join("etc/recwatch/recwatch.toml");
    run(Command::new(r.join("usr/bin/recwatch")).arg("check").arg("--config").arg(&config));
    let page = run(Command::new("sh").arg("-c").arg("gzip -dc \"$0\"").arg(r.join("usr/share/man/man1/recwatch.1.gz")));
    assert!(String::from_utf8_lossy(&page.stdout).contains(".SH NAME"));

    // Reinstalling keeps the operator's edit of the conffile; remove keeps it, purge drops it.
    std::fs::write(&config, "# edited by the operator\n").unwrap();
    run(dpkg_root(r).arg("-i").arg(&deb));
    assert_eq!(std::fs::read_to_string(&config).unwrap(), "# edited by the operator\n");
    run(dpkg_root(r).args(["-r", "recwatch"]));
    assert!(!r.join("usr/bin/recwatch").exists());
    assert!(config.exists(), "remove keeps the conffile");
    std::fs::write(r.join("etc/recwatch/api-token"), "0123456789abcdef0123\n").unwrap();
    run(dpkg_root(r).args(["-P", "recwatch"]));
    assert!(!config.exists(), "purge removes the conffile");
    assert!(!r.join("etc/recwatch/api-token").exists(), "purge removes the API token");
    assert!(r.join("var/lib/recwatch").is_dir(), "purge keeps the state directory (evidence)");
}
