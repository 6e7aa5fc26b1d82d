//! Device ids (rule 7); re-registration re-verifies (rule 8).

use super::*;

// ---------------------------------------------------------------------------------------------
// Rule 7: device ids
// ---------------------------------------------------------------------------------------------

#[test]
fn rule7_device_ids_of_1_to_255_characters_without_nul_register_and_others_are_wrong_format() {
    let db = Cluster::shared().create_db();
    let server = Server::start(ServerOpts::default().release().with_db(&db.url()));
    for device in ["a".repeat(255), "é".repeat(255), "a".into()] {
        let token =
            Keys::shared().sign_claims(&json!({"sub": device, "exp": iot_ws_tests::now_secs() + 3600}).to_string());
        let mut c = Client::connect(server.addr);
        assert_eq!(
            c.register(&device, &token),
            json!({"code": 200, "content": "Subscribed"}),
            "{} chars",
            device.chars().count()
        );
        assert!(db.wait_binding(&device, true), "binding of a {}-character id", device.chars().count());
    }
    for (what, device) in [
        ("256 characters", "a".repeat(256)),
        ("256 é", "é".repeat(256)),
        ("empty", String::new()),
        ("NUL", "a\u{0}b".into()),
    ] {
        // Signed for exactly that id: the id itself is refused, before any token check.
        let token =
            Keys::shared().sign_claims(&json!({"sub": device, "exp": iot_ws_tests::now_secs() + 3600}).to_string());
        let mut c = Client::connect(server.addr);
        assert_eq!(c.register(&device, &token), json!({"code": 401, "content": "Wrong message format"}), "{what}");
        c.expect_close(1003);
    }
    assert_live(&server);
}

#[test]
fn rule7_actuations_for_ids_outside_1_to_255_characters_or_with_nul_are_wrong_format() {
    let server = Server::start(ServerOpts::default().release());
    let longest = "b".repeat(255);
    let mut device = Client::registered(server.addr, &longest, &Keys::shared().token(&longest));
    let mut dashboard = Client::connect(server.addr);
    let (message, body) = actuation_ack(&longest, r#""n":1"#);
    dashboard.send(&message);
    assert_eq!(dashboard.recv_json(WAIT), ack_delivered(&longest));
    device.expect_delivery(&longest, &body);
    for (what, id) in [("256 characters", "b".repeat(256)), ("empty", String::new()), ("NUL", "a\u{0}b".into())] {
        let mut sender = Client::connect(server.addr);
        let (message, _) = actuation_ack(&id, r#""n":2"#);
        sender.send(&message);
        assert_eq!(sender.recv_json(WAIT), json!({"code": 401, "content": "Wrong message format"}), "{what}");
        sender.expect_close(1003);
    }
    device.expect_silence(Duration::from_millis(300));
}

// ---------------------------------------------------------------------------------------------
// Rule 8: re-registration re-verifies
// ---------------------------------------------------------------------------------------------

#[test]
fn rule8_re_registration_with_a_bad_token_is_refused_401_and_closed_1008() {
    let server = Server::start(ServerOpts::default().release());
    for (what, token) in [("garbage", "garbage".to_string()), ("another key", Keys::other().token("renewed"))] {
        let mut c = Client::registered(server.addr, "renewed", &Keys::shared().token("renewed"));
        assert_eq!(c.register("renewed", &token), json!({"code": 401, "content": "Invalid device token"}), "{what}");
        c.expect_close(1008);
    }
}

#[test]
fn rule8_re_registration_with_a_valid_token_is_200_and_actuations_keep_arriving() {
    let server = Server::start(ServerOpts::default().release());
    let token = Keys::shared().token("renewing");
    let mut c = Client::registered(server.addr, "renewing", &token);
    let fresh =
        Keys::shared().sign_claims(&json!({"sub": "renewing", "exp": iot_ws_tests::now_secs() + 7200}).to_string());
    assert_eq!(c.register("renewing", &fresh), json!({"code": 200, "content": "Subscribed"}));
    let mut dashboard = Client::connect(server.addr);
    for n in 0..3 {
        let (message, body) = actuation_ack("renewing", &format!(r#""n":{n}"#));
        dashboard.send(&message);
        assert_eq!(dashboard.recv_json(WAIT), ack_delivered("renewing"));
        c.expect_delivery("renewing", &body);
    }
}
