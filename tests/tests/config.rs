//! Bad configuration exits 2 with one line and binds nothing; `--demo`, `keygen` and `token`
//! produce what they say.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use iot_ws_tests::{actuation, free_port, log_message, run_to_exit, Client, Keys, Server, ServerOpts, TempDir, WAIT};
use serde_json::json;

fn assert_config_error(args: &[&str], envs: &[(&str, &str)], port: u16, case: &str) {
    let (status, stdout, stderr) = run_to_exit(args, envs, WAIT);
    let status = status.unwrap_or_else(|| panic!("{case}: still running after {WAIT:?}"));
    assert_eq!(status.code(), Some(2), "{case}: status {status:?}, stderr {stderr:?}");
    assert_eq!(stderr.lines().count(), 1, "{case}: stderr must be exactly one line: {stderr:?}");
    assert!(stderr.trim().len() > 10, "{case}: say what is wrong: {stderr:?}");
    assert!(stdout.is_empty(), "{case}: stdout {stdout:?}");
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    assert!(TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_err(), "{case}: something listens on {addr}");
}

#[test]
fn bad_configuration_exits_2_with_one_line_and_binds_nothing() {
    let key = Keys::shared().public_path();
    let key = key.to_str().unwrap();
    let junk = TempDir::new("junk-key");
    let junk_key = junk.path().join("junk.pem");
    std::fs::write(&junk_key, "-----BEGIN PUBLIC KEY-----\nnot a key\n-----END PUBLIC KEY-----\n").unwrap();
    let junk_key = junk_key.to_str().unwrap();
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let l = listen.as_str();
    let base = ["--external-address", "h:1"];
    type Case<'a> = (&'a str, Vec<&'a str>, Vec<(&'a str, &'a str)>);
    let cases: Vec<Case> = vec![
        ("missing key file", vec!["--listen", l, "--public-key", "/nonexistent/public.pem"], vec![]),
        ("key file that is not a key", vec!["--listen", l, "--public-key", junk_key], vec![]),
        ("key file that is a directory", vec!["--listen", l, "--public-key", "/tmp"], vec![]),
        ("unknown flag", vec!["--listen", l, "--public-key", key, "--bogus", "1"], vec![]),
        ("flag without value", vec!["--public-key", key, "--listen"], vec![]),
        ("positional argument", vec!["--listen", l, "--public-key", key, "serve"], vec![]),
        ("flag given twice", vec!["--listen", l, "--listen", l, "--public-key", key], vec![]),
        ("invalid --listen", vec!["--listen", "not-an-address", "--public-key", key], vec![]),
        ("--listen port out of range", vec!["--listen", "127.0.0.1:99999", "--public-key", key], vec![]),
        (
            "--max-message-bytes not a number",
            vec!["--listen", l, "--public-key", key, "--max-message-bytes", "lots"],
            vec![],
        ),
        ("--register-timeout-secs 0", vec!["--listen", l, "--public-key", key, "--register-timeout-secs", "0"], vec![]),
        ("username without password", vec!["--listen", l, "--public-key", key, "--actuator-username", "u"], vec![]),
        (
            "external address without port",
            vec!["--listen", l, "--public-key", key, "--external-address", "host"],
            vec![],
        ),
        (
            "external address 0.0.0.0",
            vec!["--listen", l, "--public-key", key, "--external-address", "0.0.0.0:5000"],
            vec![],
        ),
        (
            "bad --database-url",
            vec!["--listen", l, "--public-key", key, "--database-url", "host=localhost port=notaport"],
            vec![],
        ),
        (
            "bad database URL",
            vec!["--listen", l, "--public-key", key, "--database-url", "postgresql://u@h:xx/db"],
            vec![],
        ),
        ("VCAP_SERVICES not JSON", vec!["--listen", l, "--public-key", key], vec![("VCAP_SERVICES", "{nope")]),
        ("bad IOT_WS_LISTEN", vec!["--public-key", key], vec![("IOT_WS_LISTEN", "nowhere")]),
        ("bad PORT", vec!["--public-key", key], vec![("PORT", "http")]),
    ];
    for (case, mut args, envs) in cases {
        if !args.contains(&"--external-address") {
            args.extend(base);
        }
        assert_config_error(&args, &envs, port, case);
    }
}

#[test]
fn a_port_already_in_use_exits_2_with_one_line() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let key = Keys::shared().public_path();
    let args = ["--listen", &addr, "--public-key", key.to_str().unwrap(), "--external-address", "h:1"];
    let (status, _, stderr) = run_to_exit(&args, &[], WAIT);
    assert_eq!(status.and_then(|s| s.code()), Some(2), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr:?}");
}

#[test]
fn help_prints_usage_and_exits_0() {
    let (status, stdout, _) = run_to_exit(&["--help"], &[], WAIT);
    assert!(status.unwrap().success());
    assert!(stdout.contains("echo-protocol") && stdout.contains("--listen"), "{stdout}");
}

/// `--demo` generates a 2048-bit RSA key before it listens; a debug build may take a while.
const DEMO_STARTUP: Duration = Duration::from_secs(90);

fn demo_args(extra: &[&str]) -> Vec<String> {
    ["--demo", "--listen", "127.0.0.1:0"].iter().chain(extra).map(|s| s.to_string()).collect()
}

#[test]
fn demo_prints_a_token_that_works_against_that_very_server() {
    let server = Server::spawn_waiting(
        ServerOpts::default(),
        &demo_args(&["--external-address", "localhost:5000"]),
        DEMO_STARTUP,
    );
    server.wait_for_stdout("Actuator credentials:", WAIT).expect("demo prints the actuator credentials");
    let out = server.stdout_lines();
    let token_line = out.iter().position(|l| l.contains("Device token for demo-device")).expect("token heading");
    let token = out[token_line + 1].trim().to_string();
    assert_eq!(token.split('.').count(), 3, "{token}");
    let creds = out.iter().find(|l| l.starts_with("Actuator credentials:")).expect("credentials line");
    let words: Vec<&str> = creds.split_whitespace().collect();
    let (user, password) = (words[3], words[5]);

    let mut device = Client::connect(server.addr);
    assert_eq!(device.register("demo-device", &token), json!({"code": 200, "content": "Subscribed"}));
    let (message, body) = actuation((user, password), "demo-device", r#""actuation":"LED on""#);
    Client::connect(server.addr).send(&message);
    device.expect_delivery("demo-device", &body);
    // The token is for demo-device only.
    let mut other = Client::connect(server.addr);
    assert_eq!(other.register("other-device", &token), json!({"code": 401, "content": "Invalid device token"}));
    other.expect_close(1008);
    // Printed once in the instructions, never in a log record (a line with a time and level).
    let records: Vec<String> = server.log_lines().into_iter().filter(|l| log_message(l).len() < l.len()).collect();
    assert!(records.iter().any(|l| l.contains("listening on")), "log records are recognised: {records:?}");
    assert!(!records.iter().any(|l| l.contains(&token)), "the demo token is logged:\n{}", records.join("\n"));
}

#[test]
fn keygen_and_token_subcommands_make_a_working_pair() {
    let dir = TempDir::new("keygen");
    let keys = dir.path().join("keys");
    let (status, _, stderr) = run_to_exit(&["keygen", "--dir", keys.to_str().unwrap()], &[], Duration::from_secs(60));
    assert!(status.unwrap().success(), "{stderr}");
    // A second keygen must not overwrite the private key.
    let (status, _, _) = run_to_exit(&["keygen", "--dir", keys.to_str().unwrap()], &[], Duration::from_secs(60));
    assert_eq!(status.unwrap().code(), Some(2));
    let private = keys.join("private.pem");
    let args = ["token", "--private-key", private.to_str().unwrap(), "--device-id", "op-device", "--ttl", "600"];
    let (status, token, stderr) = run_to_exit(&args, &[], WAIT);
    assert!(status.unwrap().success(), "{stderr}");
    let token = token.trim();
    let server = Server::start(ServerOpts { public_key: keys.join("public.pem"), ..ServerOpts::default() });
    let _device = Client::registered(server.addr, "op-device", token);
}

/// The default external address uses the port actually bound: `--listen HOST:0` works without
/// `--external-address` (it once produced "HOST:0", which the address check refused).
#[test]
fn demo_on_an_ephemeral_port_needs_no_external_address() {
    let server = Server::spawn_waiting(ServerOpts::default(), &demo_args(&[]), DEMO_STARTUP);
    assert_ne!(server.addr.port(), 0);
}

/// The actuator password read from a file (systemd's LoadCredential= way): actuations with it are
/// delivered, and it shows neither on the server's command line nor in its log.
#[test]
fn the_actuator_password_from_a_file_is_the_one_actuations_need() {
    let dir = TempDir::new("secret-file");
    let (user, password) = iot_ws_tests::ACTUATOR;
    let file = dir.path().join("actuator-password");
    std::fs::write(&file, format!("{password}\n")).unwrap();
    let mut opts = ServerOpts::default()
        .env("IOT_WS_ACTUATOR_USERNAME", user)
        .env("IOT_WS_ACTUATOR_PASSWORD_FILE", &file.display().to_string());
    opts.actuator = None;
    let server = Server::start(opts);

    let mut device = Client::registered_on(&server, "file-dev");
    let (message, body) = actuation(iot_ws_tests::ACTUATOR, "file-dev", "");
    Client::connect(server.addr).send(&message);
    device.expect_delivery("file-dev", &body);

    let (wrong, _) = actuation((user, "not-the-password"), "file-dev", "");
    let mut dashboard = Client::connect(server.addr);
    dashboard.send(&wrong);
    assert_eq!(dashboard.recv_json(WAIT), json!({"code": 401, "content": "Invalid credentials"}));

    let cmdline = std::fs::read(format!("/proc/{}/cmdline", server.pid())).unwrap();
    assert!(!String::from_utf8_lossy(&cmdline).contains(password), "the password is on the command line");
    server.assert_never_logged(password);
}
