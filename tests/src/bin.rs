//! Finding (and building) the binary under test.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

/// The `iot-ws-server` binary to test; built once per test process (see the crate docs).
pub fn server_bin() -> &'static PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(path) = std::env::var_os("IOT_WS_SERVER_BIN") {
            return PathBuf::from(path);
        }
        build()
    })
}

/// The release build of `iot-ws-server` (in this target directory), for tests whose point is
/// how the shipped binary holds up (hostile load): a debug build is tens of times slower per
/// frame, which would measure the build, not the server. `IOT_WS_SERVER_BIN` overrides it too.
pub fn release_server_bin() -> &'static PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(path) = std::env::var_os("IOT_WS_SERVER_BIN") {
            return PathBuf::from(path);
        }
        let exe = std::env::current_exe().expect("current_exe");
        let target_dir = exe.ancestors().nth(3).expect("test executable lives in <target>/<profile>/deps");
        build_profile("release", target_dir, &target_dir.join("release"))
    })
}

fn build() -> PathBuf {
    // <target>/<profile>/deps/<test executable>
    let exe = std::env::current_exe().expect("current_exe");
    let profile_dir =
        exe.parent().and_then(|deps| deps.parent()).expect("test executable lives in <target>/<profile>/deps");
    let target_dir = profile_dir.parent().expect("target dir");
    let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") | None => "dev".to_string(),
        Some(other) => other.to_string(),
    };
    build_profile(&profile, target_dir, profile_dir)
}

/// Builds the server with `profile` into `target_dir`; its binary lands in `profile_dir`.
fn build_profile(profile: &str, target_dir: &std::path::Path, profile_dir: &std::path::Path) -> PathBuf {
    let workspace = concat!(env!("CARGO_MANIFEST_DIR"), "/../Cargo.toml");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = Command::new(cargo)
        .args([
            "build",
            "--quiet",
            "-p",
            "iot-ws-server",
            "--bin",
            "iot-ws-server",
            "--profile",
            profile,
            "--manifest-path",
            workspace,
        ])
        .arg("--target-dir")
        .arg(target_dir)
        .env_clear()
        .envs(std::env::vars_os().filter(|(name, _)| !set_for_this_test(name)))
        .output()
        .expect("run cargo build -p iot-ws-server");
    assert!(out.status.success(), "cargo build -p iot-ws-server failed:\n{}", String::from_utf8_lossy(&out.stderr));
    let bin = profile_dir.join("iot-ws-server");
    assert!(bin.exists(), "{} missing after cargo build", bin.display());
    bin
}

/// Whether cargo set `name` for this test crate (its directory, its package's name and version):
/// ring's build script reruns whenever those differ from the last build's, so a nested build
/// that kept them rebuilt ring and relinked the server (~20 s) on every test run, and the next
/// plain `cargo build` did it again.
fn set_for_this_test(name: &std::ffi::OsStr) -> bool {
    let name = name.to_string_lossy();
    name.starts_with("CARGO_PKG_")
        || name.starts_with("CARGO_MANIFEST_")
        || ["CARGO_CRATE_NAME", "CARGO_PRIMARY_PACKAGE", "CARGO_TARGET_TMPDIR"].contains(&name.as_ref())
}
