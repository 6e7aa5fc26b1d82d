//! Rotating the device-token key without a restart: `--public-key` names a directory of `*.pem`
//! keys, SIGHUP reads it again. A new key's tokens are refused until the reload, accepted after;
//! the old key's tokens stay accepted while its file is listed, and are refused once it is gone,
//! even from a device whose token was cached. Keys that do not load leave those in use.

use iot_ws_tests::{Client, Keys, Server, ServerOpts, TempDir, WAIT};
use serde_json::json;

const SIGHUP: i32 = 1;

fn register(server: &Server, device: &str, token: &str) -> serde_json::Value {
    let mut client = Client::connect(server.addr);
    client.register(device, token)
}

fn subscribed() -> serde_json::Value {
    json!({"code": 200, "content": "Subscribed"})
}

fn reload(server: &Server, expected_line: &str) {
    let before = server.log().matches(expected_line).count();
    server.signal(SIGHUP);
    let deadline = std::time::Instant::now() + WAIT;
    while server.log().matches(expected_line).count() == before {
        assert!(std::time::Instant::now() < deadline, "no {expected_line:?} after SIGHUP:\n{}", server.log());
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[test]
fn sighup_rotates_the_token_keys_with_an_overlap() {
    let dir = TempDir::new("key-rotation");
    let (old, new) = (Keys::shared(), Keys::other());
    std::fs::copy(old.public_path(), dir.path().join("2026-old.pem")).unwrap();
    let server = Server::start(ServerOpts { public_key: dir.path().to_path_buf(), ..ServerOpts::default() });

    assert_eq!(register(&server, "rot-1", &old.token("rot-1")), subscribed());
    assert_eq!(register(&server, "rot-2", &new.token("rot-2"))["code"], 401, "the new key is not trusted yet");

    std::fs::copy(new.public_path(), dir.path().join("2027-new.pem")).unwrap();
    reload(&server, "reload (SIGHUP): 2 public key(s) in use");
    assert_eq!(register(&server, "rot-2", &new.token("rot-2")), subscribed());
    let old_token = old.token("rot-3");
    assert_eq!(register(&server, "rot-3", &old_token), subscribed(), "the old key overlaps");

    std::fs::remove_file(dir.path().join("2026-old.pem")).unwrap();
    reload(&server, "reload (SIGHUP): 1 public key(s) in use");
    assert_eq!(register(&server, "rot-3", &old_token)["code"], 401, "the old key is out, cached or not");
    assert_eq!(register(&server, "rot-4", &new.token("rot-4")), subscribed());

    std::fs::write(dir.path().join("broken.pem"), "not a key").unwrap();
    reload(&server, "reload (SIGHUP): public keys kept");
    assert_eq!(register(&server, "rot-5", &new.token("rot-5")), subscribed(), "the keys in use stay");
}
