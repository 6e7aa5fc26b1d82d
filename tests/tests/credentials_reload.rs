//! Changing the actuator's password without a restart: with `--actuator-password-file`, SIGHUP
//! reads the file again. The new password is accepted and the old one refused, on new
//! connections and on a dashboard connection already open; a file that cannot be used (removed,
//! empty) leaves the password in use, and the log says why without showing a password. A
//! password given as a value stays, and the reload says so.

use iot_ws_tests::{actuation, Client, Keys, Server, ServerOpts, TempDir, WAIT};
use serde_json::json;

const USER: &str = "dash";
const ALPHA: &str = "Alpha-Pass-7f3a";
const BRAVO: &str = "Bravo-Pass-91c2";

/// Sends SIGHUP and waits for one more log line containing `expected`; returns that line.
fn reload(server: &Server, expected: &str) -> String {
    let lines = |server: &Server| -> Vec<String> {
        server.log().lines().filter(|l| l.contains(expected)).map(str::to_string).collect()
    };
    let before = lines(server).len();
    server.signal(libc::SIGHUP);
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        if let Some(line) = lines(server).get(before) {
            return line.clone();
        }
        assert!(std::time::Instant::now() < deadline, "no {expected:?} after SIGHUP:\n{}", server.log());
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// On `dashboard`, an actuation with `password` that `device` receives.
fn accepted(dashboard: &mut Client, device: &mut Client, password: &str, n: u32) {
    let (message, body) = actuation((USER, password), "cr-dev", &format!(r#""n":{n}"#));
    dashboard.send(&message);
    device.expect_delivery("the device", &body);
}

/// On `dashboard`, an actuation with `password` refused 401 then closed 1008; `device` hears nothing.
fn refused(mut dashboard: Client, device: &mut Client, password: &str) {
    let (message, _) = actuation((USER, password), "cr-dev", r#""refused":true"#);
    dashboard.send(&message);
    assert_eq!(dashboard.recv_json(WAIT), json!({"code": 401, "content": "Invalid credentials"}), "{password}");
    dashboard.expect_close(1008);
    device.expect_nothing_more("the device");
}

#[test]
fn sighup_reads_the_actuator_password_file_again_for_new_and_open_connections() {
    let dir = TempDir::new("credentials-reload");
    let file = dir.path().join("actuator-password");
    std::fs::write(&file, format!("{ALPHA}\n")).unwrap();
    let opts = ServerOpts { actuator: None, ..ServerOpts::default() }
        .arg("--actuator-username", USER)
        .arg("--actuator-password-file", file.to_str().unwrap());
    let server = Server::start(opts);
    let mut device = Client::registered(server.addr, "cr-dev", &Keys::shared().token("cr-dev"));
    let mut open_dashboard = Client::connect(server.addr);
    accepted(&mut open_dashboard, &mut device, ALPHA, 1);

    std::fs::write(&file, format!("{BRAVO}\n")).unwrap();
    let line = reload(&server, "actuator password read again from");
    assert!(line.contains(file.to_str().unwrap()) && line.contains("changed"), "{line}");
    refused(Client::connect(server.addr), &mut device, ALPHA);
    accepted(&mut Client::connect(server.addr), &mut device, BRAVO, 2);
    refused(open_dashboard, &mut device, ALPHA);

    // A file that cannot be used leaves the password in use, and the log says why.
    std::fs::remove_file(&file).unwrap();
    let line = reload(&server, "actuator credentials kept");
    assert!(line.contains(file.to_str().unwrap()) && line.contains("No such file"), "{line}");
    accepted(&mut Client::connect(server.addr), &mut device, BRAVO, 3);
    std::fs::write(&file, "\n").unwrap();
    let line = reload(&server, "actuator credentials kept");
    assert!(line.contains(file.to_str().unwrap()) && line.contains("is empty"), "{line}");
    accepted(&mut Client::connect(server.addr), &mut device, BRAVO, 4);
    refused(Client::connect(server.addr), &mut device, ALPHA);

    server.assert_never_logged(ALPHA);
    server.assert_never_logged(BRAVO);
}

#[test]
fn a_password_given_as_a_value_stays_across_a_reload_and_the_log_says_so() {
    let server = Server::start(ServerOpts { actuator: Some((USER.into(), ALPHA.into())), ..ServerOpts::default() });
    let mut device = Client::registered(server.addr, "cr-dev", &Keys::shared().token("cr-dev"));
    reload(&server, "actuator credentials kept: given as values");
    accepted(&mut Client::connect(server.addr), &mut device, ALPHA, 1);
    server.assert_never_logged(ALPHA);
}
