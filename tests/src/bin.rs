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
            &profile,
            "--manifest-path",
            workspace,
        ])
        .arg("--target-dir")
        .arg(target_dir)
        .output()
        .expect("run cargo build -p iot-ws-server");
    assert!(out.status.success(), "cargo build -p iot-ws-server failed:\n{}", String::from_utf8_lossy(&out.stderr));
    let bin = profile_dir.join("iot-ws-server");
    assert!(bin.exists(), "{} missing after cargo build", bin.display());
    bin
}
