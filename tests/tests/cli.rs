//! The command line itself: `--version`, `--help` anywhere and per command, errors that name the
//! environment variable at fault, `checktoken` against real keys and tokens, and `--check`.

use std::io::Write;
use std::process::{Command, Stdio};

use iot_ws_tests::{now_secs, run_to_exit, server_bin, Ca, Keys, TempDir, WAIT};

/// Runs `args` to its end: (exit code, stdout, stderr).
fn run(args: &[&str], envs: &[(&str, &str)]) -> (i32, String, String) {
    let (status, stdout, stderr) = run_to_exit(args, envs, WAIT);
    let status = status.unwrap_or_else(|| panic!("{args:?}: still running after {WAIT:?}"));
    (status.code().expect("exit code"), stdout, stderr)
}

#[test]
fn version_in_all_three_spellings_prints_the_version_and_exits_0() {
    // The harness gives the output as lines joined, without the last newline.
    let expected = format!("iot-ws-server {}", env!("CARGO_PKG_VERSION"));
    for args in [&["--version"][..], &["-V"], &["version"], &["--listen", "nowhere", "--version"], &["keygen", "-V"]] {
        let (code, stdout, stderr) = run(args, &[]);
        assert_eq!((code, stdout.as_str(), stderr.as_str()), (0, expected.as_str(), ""), "{args:?}");
    }
}

#[test]
fn help_anywhere_prints_the_usage_of_its_command_and_exits_0() {
    let cases: &[(&[&str], &str)] = &[
        (&["--help"], "--listen ADDR"),
        (&["-h"], "--listen ADDR"),
        (&["help"], "--listen ADDR"),
        (&["--listen", "127.0.0.1:1", "--help"], "--listen ADDR"),
        // Whatever else is wrong on the line.
        (&["--bogus", "--listen", "-h"], "--listen ADDR"),
        (&["keygen", "--help"], "iot-ws-server keygen [--dir DIR]"),
        (&["token", "--device-id", "d", "--help"], "iot-ws-server token --private-key"),
        (&["checktoken", "--help"], "iot-ws-server checktoken"),
        (&["device", "--help"], "iot-ws-server device --url"),
        (&["actuate", "-h"], "iot-ws-server actuate --url"),
        (&["help", "actuate"], "iot-ws-server actuate --url"),
    ];
    for (args, expected) in cases {
        let (code, stdout, stderr) = run(args, &[]);
        assert_eq!(code, 0, "{args:?}: {stderr}");
        assert!(stdout.contains(expected), "{args:?}: {stdout}");
        assert!(stderr.is_empty(), "{args:?}: {stderr}");
    }
    // A command's help is its own, not the server's.
    let (_, keygen, _) = run(&["keygen", "--help"], &[]);
    assert!(!keygen.contains("--listen"), "{keygen}");
}

#[test]
fn an_invalid_variable_is_reported_under_its_own_name() {
    let key = Keys::shared().public_path();
    let key = key.to_str().unwrap();
    let cases = [
        ("IOT_WS_LISTEN", "foo", "IOT_WS_LISTEN: \"foo\""),
        ("IOT_WS_MAX_PENDING", "lots", "IOT_WS_MAX_PENDING: \"lots\""),
        ("IOT_WS_EXTERNAL_ADDRESS", "no-port", "IOT_WS_EXTERNAL_ADDRESS: \"no-port\""),
    ];
    for (var, value, expected) in cases {
        let (code, stdout, stderr) = run(&["--public-key", key], &[(var, value)]);
        assert_eq!(code, 2, "{var}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{var}: {stderr:?}");
        assert!(stderr.starts_with(&format!("iot-ws-server: {expected}")), "{var}: {stderr}");
        assert!(stdout.is_empty(), "{var}: {stdout}");
    }
}

/// `checktoken` with the shared key: (exit code, stdout lines, stderr).
fn checktoken(extra: &[&str], token: &str) -> (i32, Vec<String>, String) {
    let key = Keys::shared().public_path();
    let mut args = vec!["checktoken", "--public-key", key.to_str().unwrap()];
    args.extend(extra);
    args.push(token);
    let (code, stdout, stderr) = run(&args, &[]);
    (code, stdout.lines().map(str::to_string).collect(), stderr)
}

#[test]
fn checktoken_prints_the_claims_and_accepts_a_valid_token() {
    let keys = Keys::shared();
    let token = keys.token("dev-1");
    for extra in [&[][..], &["--device-id", "dev-1"]] {
        let (code, lines, stderr) = checktoken(extra, &token);
        assert_eq!(code, 0, "{extra:?}: {lines:?} {stderr}");
        let claims: serde_json::Value = serde_json::from_str(&lines[0]).expect("the claims as JSON");
        assert_eq!(claims["sub"], "dev-1");
        assert_eq!(lines[1], r#"valid for device "dev-1""#);
    }
    // The platform's shape: an ISO-8601 `exp`.
    let iso = keys.sign_claims(r#"{"sub":"dev-1","exp":"2035-11-24T10:00:00.000Z"}"#);
    let (code, lines, _) = checktoken(&[], &iso);
    assert_eq!((code, lines[1].as_str()), (0, r#"valid for device "dev-1""#));
}

#[test]
fn checktoken_rejects_with_the_cores_reason_and_exits_1() {
    let keys = Keys::shared();
    let expired = keys.sign_claims(&format!(r#"{{"sub":"dev-1","exp":{}}}"#, now_secs() - 3_600));
    let cases = [
        ("expired", expired, vec![], "rejected: token expired"),
        ("wrong device", keys.token("dev-2"), vec!["--device-id", "dev-1"], "rejected: sub is not the device id"),
        ("other key", Keys::other().token("dev-1"), vec![], "rejected: signature does not verify"),
        ("not yet valid", keys.token_not_yet_valid("dev-1"), vec![], "rejected: token not yet valid"),
        ("not a token", "garbage".to_string(), vec![], "rejected: malformed token"),
    ];
    for (case, token, extra, verdict) in cases {
        let (code, lines, stderr) = checktoken(&extra, &token);
        assert_eq!(code, 1, "{case}: {lines:?} {stderr}");
        assert_eq!(lines.last().map(String::as_str), Some(verdict), "{case}: {lines:?}");
        assert!(stderr.is_empty(), "{case}: {stderr}");
    }
    // The claims are shown even when the signature fails: they say what the token claims.
    let (_, lines, _) = checktoken(&[], &Keys::other().token("dev-9"));
    assert!(lines[0].contains(r#""sub":"dev-9""#), "{lines:?}");
}

#[test]
fn checktoken_reads_the_token_from_stdin_for_a_dash() {
    let keys = Keys::shared();
    let key = keys.public_path();
    let mut child = Command::new(server_bin())
        .args(["checktoken", "--public-key", key.to_str().unwrap(), "--device-id", "dev-1", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    writeln!(child.stdin.take().unwrap(), "{}", keys.token("dev-1")).unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout} {}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.ends_with("valid for device \"dev-1\"\n"), "{stdout}");
}

#[test]
fn checktoken_bad_usage_or_key_exits_2_with_one_line() {
    let token = Keys::shared().token("dev-1");
    let key = Keys::shared().public_path();
    let key = key.to_str().unwrap();
    let cases: &[(&str, Vec<&str>)] = &[
        ("no token", vec!["checktoken", "--public-key", key]),
        ("two tokens", vec!["checktoken", "--public-key", key, &token, &token]),
        ("unknown flag", vec!["checktoken", "--public-key", key, "--bogus", "1", &token]),
        ("missing key", vec!["checktoken", "--public-key", "/nonexistent/public.pem", &token]),
        ("not a key", vec!["checktoken", "--public-key", "/etc/hostname", &token]),
    ];
    for (case, args) in cases {
        let (code, stdout, stderr) = run(args, &[]);
        assert_eq!(code, 2, "{case}: {stdout} {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{case}: {stderr:?}");
        assert!(stdout.is_empty(), "{case}: {stdout}");
    }
}

#[test]
fn check_says_configuration_ok_and_exits_0_for_a_good_configuration() {
    let key = Keys::shared().public_path();
    let dir = TempDir::new("check-tls");
    let (cert, tls_key, _) = Ca::new("check").write(dir.path(), "server", &["localhost"]);
    let args = [
        "--check",
        "--public-key",
        key.to_str().unwrap(),
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        tls_key.to_str().unwrap(),
        // Only its syntax is checked: nothing listens there.
        "--database-url",
        "postgresql://u@127.0.0.1:1/db?sslmode=disable",
        "--external-address",
        "h:1",
    ];
    let (code, stdout, stderr) = run(&args, &[]);
    assert_eq!((code, stdout.as_str(), stderr.as_str()), (0, "configuration ok", ""));
}

#[test]
fn check_fails_with_the_usual_line_and_exits_2() {
    let key = Keys::shared().public_path();
    let key = key.to_str().unwrap();
    let dir = TempDir::new("check-bad");
    let (cert, _, _) = Ca::new("check").write(dir.path(), "a", &["localhost"]);
    let (_, other_key, _) = Ca::new("check").write(dir.path(), "b", &["localhost"]);
    let (cert, other_key) = (cert.to_str().unwrap(), other_key.to_str().unwrap());
    /// (case, arguments, environment, what the line says)
    type Case<'a> = (&'a str, Vec<&'a str>, Vec<(&'a str, &'a str)>, &'a str);
    let cases: &[Case] = &[
        ("missing key", vec!["--check", "--public-key", "/nonexistent/public.pem"], vec![], "/nonexistent/public.pem"),
        ("bad variable", vec!["--check", "--public-key", key], vec![("IOT_WS_LISTEN", "foo")], "IOT_WS_LISTEN"),
        (
            "mismatched TLS pair",
            vec!["--check", "--public-key", key, "--tls-cert", cert, "--tls-key", other_key],
            vec![],
            "--tls-",
        ),
        (
            "bad database URL",
            vec!["--check", "--public-key", key, "--database-url", "postgresql://u@h:xx/db"],
            vec![],
            "--database-url",
        ),
    ];
    for (case, args, envs, expected) in cases {
        let (code, stdout, stderr) = run(args, envs);
        assert_eq!(code, 2, "{case}: {stdout} {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{case}: {stderr:?}");
        assert!(stderr.contains(expected), "{case}: {stderr}");
        assert!(stdout.is_empty(), "{case}: {stdout}");
    }
}
