//! The command-line clients against the real server: `iot-ws-server device` (a device built on
//! the core's `DeviceClient`) and `iot-ws-server actuate` (one acknowledged actuation).

use std::time::Duration;

use iot_ws_tests::{
    ack_delivered, actuation_ack, run_to_exit, CliProcess, Client, Keys, Server, ServerOpts, TempDir, ACTUATOR, WAIT,
};

fn device_args<'a>(server_url: &'a str, device: &'a str, token: &'a str) -> Vec<&'a str> {
    vec!["device", "--url", server_url, "--device-id", device, "--token", token]
}

/// Sends one acknowledged actuation from a Rust dashboard; returns the body the device must get.
fn actuate_via_rust(server: &Server, device: &str, extra: &str) -> String {
    let (message, body) = actuation_ack(device, extra);
    let mut dashboard = Client::connect(server.addr);
    dashboard.send(&message);
    assert_eq!(dashboard.recv_json(WAIT), ack_delivered(device));
    body
}

fn assert_stops_with(device: &mut CliProcess, signal: i32) {
    device.signal(signal);
    let status = device.wait_exit(WAIT).expect("device exits on the signal");
    assert_eq!(status.code(), Some(0), "stderr:\n{}", device.stderr());
}

#[test]
fn device_prints_each_actuation_byte_for_byte_and_stops_on_sigterm() {
    let server = Server::start(ServerOpts::default());
    let token = Keys::shared().token("cli-device");
    let url = server.url();
    let mut device = CliProcess::start(&device_args(&url, "cli-device", &token), &[]);
    device.wait_for_stderr_count("registered", 1);

    let first = actuate_via_rust(&server, "cli-device", r#""v":1.50,"s":"\u00e9\"","n":[-0.0,1E2]"#);
    let second = actuate_via_rust(&server, "cli-device", r#""actuation":"LED off""#);
    assert_eq!(device.wait_for_stdout_lines(2), [first, second]);

    assert_stops_with(&mut device, libc::SIGTERM);
    assert!(!device.stderr().contains(&token), "the token is printed:\n{}", device.stderr());
    server.assert_never_logged(&token);
}

#[test]
fn device_reads_its_token_from_a_file_and_runs_exec_per_actuation() {
    let server = Server::start(ServerOpts::default());
    let dir = TempDir::new("cli-exec");
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, format!("{}\n", Keys::shared().token("exec-device"))).unwrap();
    let out = dir.path().join("actuations");
    let exec = format!("cat >> '{}'", out.display());
    let url = server.url();
    let args = ["device", "--url", &url, "--device-id", "exec-device", "--token-file", token_file.to_str().unwrap()];
    let mut device = CliProcess::start(&[&args[..], &["--exec", &exec]].concat(), &[]);
    device.wait_for_stderr_count("registered", 1);

    let first = actuate_via_rust(&server, "exec-device", r#""pin":7,"on":true"#);
    let second = actuate_via_rust(&server, "exec-device", r#""pin":7,"on":false"#);
    let expected = format!("{first}\n{second}\n");
    let written = iot_ws_tests::eventually(WAIT, || std::fs::read_to_string(&out).ok().filter(|t| *t == expected));
    assert_eq!(written.as_deref(), Some(expected.as_str()), "what --exec got on its stdin, in order");
    assert!(device.stdout_lines().is_empty(), "--exec replaces stdout: {:?}", device.stdout_lines());

    assert_stops_with(&mut device, libc::SIGINT);
}

#[test]
fn device_reconnects_with_back_off_after_a_server_restart() {
    let server = Server::start_routable(ServerOpts::default());
    let token = Keys::shared().token("restart-device");
    let url = server.url();
    let mut device = CliProcess::start(&device_args(&url, "restart-device", &token), &[]);
    device.wait_for_stderr_count("registered", 1);

    let server = server.restart();
    device.wait_for_stderr_count("registered", 2);
    // The core's first delay after a registered connection.
    assert_eq!(device.count_stderr("reconnecting in 2.5 s"), 1, "stderr:\n{}", device.stderr());
    let body = actuate_via_rust(&server, "restart-device", r#""after":"restart""#);
    assert_eq!(device.wait_for_stdout_lines(1), [body]);
    assert_stops_with(&mut device, libc::SIGTERM);
}

#[test]
fn device_with_a_refused_token_exits_1_at_the_first_refusal() {
    let server = Server::start(ServerOpts::default());
    let token = Keys::other().token("refused-device");
    let url = server.url();
    let mut device = CliProcess::start(&device_args(&url, "refused-device", &token), &[]);
    let status = device.wait_exit(WAIT).expect("a refused device exits");
    assert_eq!(status.code(), Some(1), "stderr:\n{}", device.stderr());
    let stderr = device.stderr();
    assert!(stderr.contains("refused") && stderr.contains("Invalid device token"), "{stderr}");
    assert_eq!(device.count_stderr("connecting to"), 1, "no second attempt:\n{stderr}");
    assert!(!stderr.contains(&token), "the token is printed:\n{stderr}");
}

#[test]
fn device_takes_its_token_from_the_environment() {
    let server = Server::start(ServerOpts::default());
    let token = Keys::shared().token("env-device");
    let url = server.url();
    let args = ["device", "--url", &url, "--device-id", "env-device"];
    let mut device = CliProcess::start(&args, &[("IOT_WS_DEVICE_TOKEN", &token)]);
    device.wait_for_stderr_count("registered", 1);
    assert_stops_with(&mut device, libc::SIGTERM);
}

/// Runs `iot-ws-server actuate ARGS` against `server` with the test actuator's credentials
/// added; returns (exit code, stdout, stderr).
fn actuate(server: &Server, args: &[&str], envs: &[(&str, &str)]) -> (Option<i32>, String, String) {
    let url = server.url();
    let all = [&["actuate", "--url", &url][..], args].concat();
    let (status, stdout, stderr) = run_to_exit(&all, envs, WAIT * 2);
    (status.expect("actuate ends by itself").code(), stdout, stderr)
}

const CREDENTIALS: [&str; 4] = ["--username", ACTUATOR.0, "--password", ACTUATOR.1];

#[test]
fn actuate_delivers_content_and_bodies_byte_for_byte_and_exits_0() {
    let server = Server::start(ServerOpts::default());
    let mut device = Client::registered(server.addr, "act-device", &Keys::shared().token("act-device"));

    let content = r#"{"actuation":"LED on","v":1.50,"s":"\u00e9"}"#;
    let args = [&["--device-id", "act-device", "--content", content][..], &CREDENTIALS].concat();
    let (code, stdout, stderr) = actuate(&server, &args, &[]);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(
        stdout, "{\"code\":200,\"content\":\"Delivered\",\"deviceId\":\"act-device\"}",
        "stdout is the ack, one line"
    );
    let body = r#"{"type":"command","content":{"deviceId":"act-device","actuation":"LED on","v":1.50,"s":"\u00e9"}}"#;
    device.expect_delivery("act-device", body);

    // A whole body, the user and password from the environment and a file.
    let dir = TempDir::new("cli-actuate");
    let password_file = dir.path().join("password");
    std::fs::write(&password_file, format!("{}\n", ACTUATOR.1)).unwrap();
    let body = r#"{"content":{"deviceId":"act-device","x":[1,2]},"type":"command","extra":null}"#;
    let args = ["--body", body, "--password-file", password_file.to_str().unwrap()];
    let (code, _, stderr) = actuate(&server, &args, &[("IOT_WS_ACTUATOR_USERNAME", ACTUATOR.0)]);
    assert_eq!(code, Some(0), "{stderr}");
    device.expect_delivery("act-device", body);

    // Both from the environment.
    let envs = [("IOT_WS_ACTUATOR_USERNAME", ACTUATOR.0), ("IOT_WS_ACTUATOR_PASSWORD", ACTUATOR.1)];
    let (code, _, stderr) = actuate(&server, &["--device-id", "act-device", "--content", "{}"], &envs);
    assert_eq!(code, Some(0), "{stderr}");
    device.expect_delivery("act-device", r#"{"type":"command","content":{"deviceId":"act-device"}}"#);
}

#[test]
fn actuate_exit_status_follows_the_ack() {
    let server = Server::start(ServerOpts::default());
    let mut gone = Client::registered(server.addr, "gone-device", &Keys::shared().token("gone-device"));
    gone.close(1000);
    gone.finish_close();

    // Held for a device that just left: 0.
    let args = [&["--device-id", "gone-device", "--content", "{}"][..], &CREDENTIALS].concat();
    let (code, stdout, stderr) = actuate(&server, &args, &[]);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(
        stdout, "{\"code\":202,\"content\":\"Held\",\"deviceId\":\"gone-device\"}",
        "stdout is the ack, one line"
    );

    // Never connected: 1, and the ack is still printed.
    let args = [&["--device-id", "nobody", "--content", "{}"][..], &CREDENTIALS].concat();
    let (code, stdout, stderr) = actuate(&server, &args, &[]);
    assert_eq!(code, Some(1), "{stderr}");
    assert_eq!(
        stdout, "{\"code\":500,\"content\":\"Device not connected\",\"deviceId\":\"nobody\"}",
        "stdout is the ack, one line"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");

    // Wrong password: 1, and the password appears nowhere.
    let wrong = "not-the-Pa55word";
    let args = ["--device-id", "nobody", "--content", "{}", "--username", ACTUATOR.0, "--password", wrong];
    let (code, stdout, stderr) = actuate(&server, &args, &[]);
    assert_eq!(code, Some(1), "{stderr}");
    assert_eq!(stdout, "{\"code\":401,\"content\":\"Invalid credentials\"}", "stdout is the ack, one line");
    assert!(!stdout.contains(wrong) && !stderr.contains(wrong), "{stdout}{stderr}");
    server.assert_never_logged(wrong);
}

#[test]
fn actuate_without_a_server_exits_1() {
    let port = iot_ws_tests::free_port();
    let url = format!("ws://127.0.0.1:{port}/");
    let args = [&["actuate", "--url", &url, "--device-id", "d", "--content", "{}"][..], &CREDENTIALS].concat();
    let (status, stdout, stderr) = run_to_exit(&args, &[], WAIT * 2);
    assert_eq!(status.unwrap().code(), Some(1), "{stderr}");
    assert!(stdout.is_empty() && stderr.contains("cannot connect"), "{stdout}{stderr}");
}

#[test]
fn bad_usage_is_one_line_and_exit_2() {
    const SECRET: &str = "pw-Secret-9";
    let url = "ws://127.0.0.1:1/";
    let cases: &[&[&str]] = &[
        &["device", "--device-id", "d", "--token", "t"],
        &["device", "--url", "http://127.0.0.1:1/", "--device-id", "d", "--token", "t"],
        &["device", "--url", url, "--device-id", "d"],
        &["device", "--url", url, "--device-id", "d", "--token", "t", "--token-file", "/nonexistent"],
        &["device", "--url", url, "--device-id", "d", "--token-file", "/nonexistent/token"],
        &["device", "--url", url, "--device-id", "d", "--token", "t", "--colour", "red"],
        &["actuate", "--device-id", "d", "--content", "{}", "--username", "u", "--password", SECRET],
        &["actuate", "--url", url, "--content", "{}", "--username", "u", "--password", SECRET],
        &["actuate", "--url", url, "--device-id", "d", "--content", "{nope", "--username", "u", "--password", SECRET],
        &["actuate", "--url", url, "--device-id", "d", "--content", "[1]", "--username", "u", "--password", SECRET],
        &["actuate", "--url", url, "--body", r#"{"content":{}}"#, "--username", "u", "--password", SECRET],
        &[
            "actuate",
            "--url",
            url,
            "--device-id",
            "e",
            "--body",
            r#"{"content":{"deviceId":"d"}}"#,
            "--username",
            "u",
            "--password",
            SECRET,
        ],
        &["actuate", "--url", url, "--device-id", "d", "--content", "{}", "--username", "u"],
        &[
            "actuate",
            "--url",
            url,
            "--device-id",
            "d",
            "--content",
            "{}",
            "--body",
            "{}",
            "--username",
            "u",
            "--password",
            SECRET,
        ],
        &[
            "actuate",
            "--url",
            url,
            "--device-id",
            "d",
            "--content",
            "{}",
            "--username",
            "u",
            "--password",
            SECRET,
            "--timeout-secs",
            "0",
        ],
    ];
    for sub in ["device", "actuate"] {
        let (status, stdout, _) = run_to_exit(&[sub, "--help"], &[], WAIT);
        assert_eq!(status.and_then(|s| s.code()), Some(0));
        assert!(stdout.contains(&format!("iot-ws-server {sub} --url")), "{stdout}");
    }
    for args in cases {
        let (status, stdout, stderr) = run_to_exit(args, &[], WAIT);
        assert_eq!(status.and_then(|s| s.code()), Some(2), "{args:?}: {stderr}");
        assert!(stdout.is_empty(), "{args:?}: {stdout}");
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
        assert!(!stderr.contains(SECRET), "{args:?} printed the password: {stderr}");
    }
}

/// `--demo` generates a 2048-bit RSA key before it listens; a debug build may take a while.
const DEMO_STARTUP: Duration = Duration::from_secs(90);

/// The commands `--demo` prints, pasted into a shell as they are: the device registers and the
/// actuation reaches it.
#[test]
fn demo_commands_work_as_printed() {
    let listen = format!("127.0.0.1:{}", iot_ws_tests::loopback_port());
    let args: Vec<String> = ["--demo", "--listen", &listen].iter().map(|s| s.to_string()).collect();
    let server = Server::spawn_waiting(ServerOpts::default(), &args, DEMO_STARTUP);
    server.wait_for_stdout("Any WebSocket client", WAIT).expect("the demo's instructions");
    let lines = server.stdout_lines();
    let command = |word: &str| {
        let line = lines.iter().find(|l| l.starts_with("  ") && l.contains(word));
        line.unwrap_or_else(|| panic!("no {word:?} command in:\n{}", lines.join("\n"))).trim().to_string()
    };
    let (device_command, actuate_command) = (command(" device --url "), command(" actuate --url "));

    let mut device = CliProcess::shell(&device_command);
    device.wait_for_stderr_count("registered", 1);
    let mut actuate = CliProcess::shell(&actuate_command);
    let status = actuate.wait_exit(WAIT * 2).expect("actuate ends by itself");
    assert_eq!(status.code(), Some(0), "stderr:\n{}", actuate.stderr());
    assert_eq!(actuate.stdout_lines(), [r#"{"code":200,"content":"Delivered","deviceId":"demo-device"}"#]);
    let body = r#"{"type":"command","content":{"deviceId":"demo-device","actuation":"LED on"}}"#;
    assert_eq!(device.wait_for_stdout_lines(1), [body]);
    assert_stops_with(&mut device, libc::SIGINT);
}

/// A server that takes the TCP connection and never answers the upgrade: the device is stuck in
/// its connect, and a signal still ends it at once (not after the connect's own timeout).
#[test]
fn device_stops_on_a_signal_even_while_connecting() {
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("ws://{}/", silent.local_addr().unwrap());
    let mut device = CliProcess::start(&device_args(&url, "stuck-device", "a.b.c"), &[]);
    device.wait_for_stderr_count("connecting to", 1);
    let (_accepted, _) = silent.accept().unwrap();
    assert_stops_with(&mut device, libc::SIGTERM);
    assert_eq!(device.count_stderr("cannot connect"), 0, "it waited for the connect:\n{}", device.stderr());
}
