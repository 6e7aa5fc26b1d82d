//! The log as operators read it (issue 11): RFC 3339 times and levels, text or JSON lines,
//! errors and warnings on stderr and the rest on stdout, levels and module filters, the
//! libraries' records, and error causes.

use std::time::Duration;

use iot_ws_tests::{eventually, log_message, run_to_exit, server_bin, Client, Keys, Server, ServerOpts, WAIT};
use serde_json::{json, Value};

/// A registration refused for its token: an info line from the connection's module.
fn refused_registration(server: &Server, device: &str) {
    let mut c = Client::connect(server.addr);
    assert_eq!(
        c.register(device, &Keys::shared().token("someone-else")),
        json!({"code": 401, "content": "Invalid device token"})
    );
    c.expect_close(1008);
}

/// Stops the server (SIGTERM) and waits for it, so that its last lines are written.
fn stop(mut server: Server) -> Server {
    server.sigterm();
    let status = server.wait_exit(WAIT).expect("the server stops on SIGTERM");
    assert!(status.success(), "{status:?}\n{}", server.log());
    // The reader threads finish at EOF, right after the exit.
    let _ = server.wait_for_log("never said", Duration::from_millis(300));
    server
}

/// `2026-12-02T00:11:23.123Z`: RFC 3339, UTC, milliseconds.
fn is_rfc3339_millis(s: &str) -> bool {
    let b = s.as_bytes();
    let digits = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
    b.len() == 24
        && digits(0..4)
        && b[4] == b'-'
        && digits(5..7)
        && b[7] == b'-'
        && digits(8..10)
        && b[10] == b'T'
        && digits(11..13)
        && b[13] == b':'
        && digits(14..16)
        && b[16] == b':'
        && digits(17..19)
        && b[19] == b'.'
        && digits(20..23)
        && b[23] == b'Z'
}

#[test]
fn json_lines_are_objects_with_time_level_target_and_message_and_warnings_go_to_stderr() {
    let mut opts = ServerOpts::default().env("IOT_WS_LOG_FORMAT", "json");
    opts.actuator = None; // a warning at startup
    let server = Server::start(opts);
    refused_registration(&server, "dev\"ice\n1");
    server.wait_for_log("token refused", WAIT).expect("the refusal is logged");
    let server = stop(server);

    let parse = |text: String| -> Vec<Value> {
        text.lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l:?}")))
            .collect()
    };
    let (out, err) = (parse(server.stdout_lines().join("\n")), parse(server.stderr()));
    for v in out.iter().chain(&err) {
        let o = v.as_object().expect("an object");
        assert_eq!(o.keys().collect::<Vec<_>>(), ["level", "message", "target", "time"], "{v}");
        assert!(is_rfc3339_millis(v["time"].as_str().unwrap()), "{v}");
        assert!(v["target"].as_str().unwrap().starts_with("iot_ws_server"), "{v}");
    }
    let times: Vec<&str> = out.iter().map(|v| v["time"].as_str().unwrap()).collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "stdout in time order: {times:?}");
    assert!(out.iter().all(|v| v["level"] == "info"), "stdout: info only here: {out:?}");
    assert!(err.iter().all(|v| v["level"] == "warn" || v["level"] == "error"), "stderr: {err:?}");

    let message =
        |lines: &[Value], needle: &str| lines.iter().find(|v| v["message"].as_str().unwrap().contains(needle)).cloned();
    assert!(message(&out, "listening on 127.0.0.1:").is_some(), "{out:?}");
    assert!(message(&out, "stopped").is_some(), "{out:?}");
    let refused = message(&out, "token refused").expect("the refusal, on stdout");
    assert_eq!(refused["target"], "iot_ws_server::connection::output");
    let text = refused["message"].as_str().unwrap();
    assert!(text.starts_with("peer 127.0.0.1:"), "{text}");
    assert!(text.contains(r#"device "dev\"ice\n1""#), "the id escaped as client text: {text}");
    let warning = message(&err, "no actuator credentials configured").expect("the warning, on stderr");
    assert_eq!(warning["level"], "warn");
}

#[test]
fn text_lines_start_with_the_time_and_level() {
    let server = stop(Server::start(ServerOpts::default()));
    let out = server.stdout_lines();
    assert!(!out.is_empty());
    for line in &out {
        let (time, rest) = line.split_once(' ').unwrap_or_else(|| panic!("{line:?}"));
        assert!(is_rfc3339_millis(time), "{line:?}");
        assert!(rest.starts_with("INFO  "), "{line:?}");
        assert_eq!(log_message(line), &rest[6..]);
    }
    assert!(out.iter().any(|l| log_message(l).starts_with("listening on ")), "{out:?}");
    assert!(server.stderr().is_empty(), "nothing went wrong, nothing on stderr:\n{}", server.stderr());
}

#[test]
fn levels_and_module_filters_choose_the_lines_and_libraries_records_appear() {
    // Warnings by default; this server's start-up lines; tungstenite up to trace (its trace
    // records carry frame payloads and are never written).
    let filter = "warn,iot_ws_server::serve=info,tungstenite=trace";
    let mut opts = ServerOpts::default().env("IOT_WS_LOG", filter);
    opts.actuator = None;
    let server = Server::start(opts);
    let mut device = Client::registered_on(&server, "lamp");
    refused_registration(&server, "intruder");
    // The refused client's answer to the server's close frame.
    let close = server.wait_for_log("tungstenite::protocol: Received close frame", WAIT);
    assert!(close.is_some(), "tungstenite's debug record:\n{}", server.log());
    device.ping();
    let server = stop(server);
    let log = server.log_lines();
    assert!(log.iter().any(|l| l.contains(" DEBUG tungstenite::")), "{log:?}");
    assert!(!log.iter().any(|l| l.contains(" TRACE ")), "a library's trace record was written:\n{}", log.join("\n"));
    assert!(!log.iter().any(|l| l.contains("token refused")), "the connection module is at warn:\n{}", log.join("\n"));
    assert!(log.iter().any(|l| l.contains(" WARN  actuations: no actuator credentials")), "{log:?}");
    assert!(log.iter().any(|l| l.contains(" INFO  stopped")), "serve's info lines: {log:?}");
}

#[test]
fn a_database_error_is_a_warning_with_its_cause() {
    // Nothing listens on port 1; the password must not be logged either.
    let server = Server::start(ServerOpts::default().with_db("postgres://iot:hunter2-secret@127.0.0.1:1/iot"));
    let line = server.wait_for_log("database (bindings): unavailable", WAIT).expect("the outage is logged");
    assert!(line.contains(" WARN  "), "{line}");
    assert!(line.contains("error connecting to server: Connection refused"), "the cause is kept: {line}");
    assert!(server.stderr().contains(&line), "warnings go to stderr");
    server.assert_never_logged("hunter2-secret");
}

#[test]
fn a_bad_log_setting_is_one_line_naming_it_and_status_2() {
    // Flags, environment, and what the one line says.
    type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], &'a str);
    let cases: [Case; 4] = [
        (&[], &[("IOT_WS_LOG", "loud")], r#"IOT_WS_LOG: "loud" is not a level (off, error, warn, info, debug, trace)"#),
        (&["--log", "info,tokio postgres=debug"], &[], r#"--log: "tokio postgres" is not a module path"#),
        (&[], &[("IOT_WS_LOG_FORMAT", "xml")], r#"IOT_WS_LOG_FORMAT: "xml" is not a log format (text, json)"#),
        (&["--log-format", "yaml"], &[("IOT_WS_LOG_FORMAT", "json")], r#"--log-format: "yaml" is not a log format"#),
    ];
    for (args, env, said) in cases {
        let mut all = vec!["--check"];
        all.extend(args);
        let (status, _, stderr) = run_to_exit(&all, env, WAIT);
        assert_eq!(status.and_then(|s| s.code()), Some(2), "{args:?} {env:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.contains(said), "{args:?} {env:?}: {stderr}");
    }
}

#[test]
fn a_server_whose_log_reader_is_gone_still_serves() {
    use std::os::unix::process::CommandExt;
    let addr: std::net::SocketAddr = format!("127.0.0.1:{}", iot_ws_tests::loopback_port()).parse().unwrap();
    let key = ServerOpts::default().public_key;
    let mut cmd = std::process::Command::new(server_bin());
    cmd.arg("--listen").arg(addr.to_string()).arg("--public-key").arg(&key).stdin(std::process::Stdio::null());
    // stdout and stderr: a pipe whose reading end is closed, as when a log collector died. Every
    // write fails with EPIPE (SIGPIPE is ignored), where `print!` would panic.
    // SAFETY: pipe, dup2 and close are async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            let mut fds = [0; 2];
            if libc::pipe(fds.as_mut_ptr()) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            libc::dup2(fds[1], 1);
            libc::dup2(fds[1], 2);
            libc::close(fds[0]);
            libc::close(fds[1]);
            Ok(())
        });
    }
    let mut child = cmd.spawn().expect("spawn iot-ws-server");
    // Its start-up lines (one a warning: no actuator credentials) went nowhere.
    let up = eventually(WAIT, || std::net::TcpStream::connect(addr).ok());
    assert!(up.is_some(), "never accepted: {:?}", child.try_wait());
    let mut device = Client::connect(addr);
    assert_eq!(device.register("no-reader", &Keys::shared().token("no-reader"))["code"], 200);
    for n in 0..3 {
        let mut c = Client::connect(addr);
        assert_eq!(
            c.register(&format!("intruder-{n}"), &Keys::shared().token("other"))["code"],
            401,
            "logged, to nowhere"
        );
    }
    assert_eq!(device.ping(), json!({"code": 202, "content": "PONG"}));
    assert!(child.try_wait().unwrap().is_none(), "the server exited");
    let _ = child.kill();
    let _ = child.wait();
}
