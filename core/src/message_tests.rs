use super::*;
use alloc::string::ToString;
use alloc::vec::Vec;

const ACTUATION: &str = r#"{"type":"actuation","credentials":{"username":"u","password":"p"},"body":{"type":"command","content":{"deviceId":"dev-1","actuation":"LED on","value":1.50,"text":"\u00e9"}}}"#;

#[test]
fn device_registration_parses() {
    let m = parse(r#"{"type":"device","deviceId":"dev-1","deviceToken":"a.b.c"}"#).unwrap();
    assert_eq!(m, ClientMessage::Device { device: DeviceId("dev-1".into()), token: "a.b.c".into() });
}

#[test]
fn ping_parses_and_extra_fields_are_ignored() {
    assert_eq!(parse(r#"{"type":"ping"}"#), Ok(ClientMessage::Ping));
    assert_eq!(parse(r#"{"type":"ping","x":[1,2,{}]}"#), Ok(ClientMessage::Ping));
}

#[test]
fn actuation_keeps_the_body_byte_for_byte() {
    let ClientMessage::Actuation { body, device, credentials, ack } = parse(ACTUATION).unwrap() else {
        panic!("not an actuation")
    };
    assert_eq!(device.as_str(), "dev-1");
    assert_eq!(credentials.username, "u");
    assert!(!ack);
    let raw = r#"{"type":"command","content":{"deviceId":"dev-1","actuation":"LED on","value":1.50,"text":"\u00e9"}}"#;
    assert_eq!(body.as_str(), raw);
    assert_eq!(Reply::Actuation(body).to_text(), alloc::format!(r#"{{"code":1024,"content":{raw}}}"#));
}

#[test]
fn actuation_ack_flag_is_read() {
    let text = ACTUATION.replacen("{\"type\":\"actuation\"", "{\"ack\":true,\"type\":\"actuation\"", 1);
    assert!(matches!(parse(&text), Ok(ClientMessage::Actuation { ack: true, .. })));
    let text = ACTUATION.replacen("{\"type\":\"actuation\"", "{\"ack\":\"yes\",\"type\":\"actuation\"", 1);
    assert_eq!(parse(&text), Err(FormatError::WrongType("ack")));
}

#[test]
fn prototype_names_are_plain_device_ids() {
    for id in ["__proto__", "constructor", "toString", "hasOwnProperty"] {
        let text = alloc::format!(r#"{{"type":"device","deviceId":"{id}","deviceToken":"t"}}"#);
        assert!(matches!(parse(&text), Ok(ClientMessage::Device { device, .. }) if device.as_str() == id));
    }
}

#[test]
fn malformed_messages_are_format_errors() {
    let cases: &[(&str, FormatError)] = &[
        ("", FormatError::NotJson),
        ("not json", FormatError::NotJson),
        ("{\"type\":", FormatError::NotJson),
        ("[1,2]", FormatError::NotAnObject),
        ("\"ping\"", FormatError::NotAnObject),
        ("null", FormatError::NotAnObject),
        ("{}", FormatError::MissingField("type")),
        (r#"{"type":1}"#, FormatError::WrongType("type")),
        (r#"{"type":"pong"}"#, FormatError::UnknownType),
        (r#"{"type":"ping","type":"ping"}"#, FormatError::DuplicateField),
        (r#"{"type":"device","deviceToken":"t"}"#, FormatError::MissingField("deviceId")),
        (r#"{"type":"device","deviceId":7,"deviceToken":"t"}"#, FormatError::WrongType("deviceId")),
        (r#"{"type":"device","deviceId":"","deviceToken":"t"}"#, FormatError::WrongType("deviceId")),
        (r#"{"type":"device","deviceId":"d"}"#, FormatError::MissingField("deviceToken")),
        (r#"{"type":"device","deviceId":"d","deviceToken":null}"#, FormatError::WrongType("deviceToken")),
        (r#"{"type":"actuation","body":{"content":{"deviceId":"d"}}}"#, FormatError::MissingField("credentials")),
        (
            r#"{"type":"actuation","credentials":"x","body":{"content":{"deviceId":"d"}}}"#,
            FormatError::WrongType("credentials"),
        ),
        (
            r#"{"type":"actuation","credentials":{"username":"u"},"body":{"content":{"deviceId":"d"}}}"#,
            FormatError::MissingField("credentials.password"),
        ),
        (r#"{"type":"actuation","credentials":{"username":"u","password":"p"}}"#, FormatError::MissingField("body")),
        (
            r#"{"type":"actuation","credentials":{"username":"u","password":"p"},"body":[]}"#,
            FormatError::WrongType("body"),
        ),
        (
            r#"{"type":"actuation","credentials":{"username":"u","password":"p"},"body":{}}"#,
            FormatError::MissingField("body.content"),
        ),
        (
            r#"{"type":"actuation","credentials":{"username":"u","password":"p"},"body":{"content":{"deviceId":5}}}"#,
            FormatError::WrongType("body.content.deviceId"),
        ),
    ];
    for (text, expected) in cases {
        assert_eq!(parse(text), Err(*expected), "{text}");
    }
}

#[test]
fn every_format_error_answers_401_then_closes_1003() {
    for e in [FormatError::Binary, FormatError::NotJson, FormatError::UnknownType, FormatError::MissingField("x")] {
        let (reply, close) = e.reply();
        assert_eq!(reply.to_text(), r#"{"code":401,"content":"Wrong message format"}"#);
        assert_eq!(close, CloseCode::UNSUPPORTED_DATA);
    }
}

#[test]
fn replies_have_their_wire_text() {
    let texts: Vec<_> = [Reply::Subscribed, Reply::Pong, Reply::InvalidToken, Reply::CannotStoreBinding]
        .iter()
        .map(Reply::to_text)
        .collect();
    assert_eq!(
        texts,
        [
            r#"{"code":200,"content":"Subscribed"}"#,
            r#"{"code":202,"content":"PONG"}"#,
            r#"{"code":401,"content":"Invalid device token"}"#,
            r#"{"code":500,"content":"Cannot record the device binding"}"#,
        ]
    );
}

#[test]
fn ack_replies_escape_the_device_id() {
    let reply = Reply::Ack { device: DeviceId("a\"b".into()), status: RouteOutcome::Held };
    assert_eq!(reply.to_text(), r#"{"code":202,"content":"Held","deviceId":"a\"b"}"#);
    let v: serde_json::Value = serde_json::from_str(&reply.to_text()).unwrap();
    assert_eq!(v["deviceId"], "a\"b");
}

#[test]
fn forwarded_ack_names_the_instance() {
    let status = RouteOutcome::Forwarded { server: "gw\"2:5000".to_string() };
    let reply = Reply::Ack { device: DeviceId("d".into()), status };
    assert_eq!(reply.to_text(), r#"{"code":202,"content":"Forwarded","deviceId":"d","server":"gw\"2:5000"}"#);
}

#[test]
fn body_from_json_object_accepts_only_objects() {
    assert!(Body::from_json_object(r#"{"a":1}"#).is_some());
    assert!(Body::from_json_object("[1]").is_none());
    assert!(Body::from_json_object("{").is_none());
}

#[test]
fn device_ids_and_format_errors_display_as_logs_and_checktoken_print_them() {
    assert_eq!(DeviceId("gw-7/led".into()).to_string(), "gw-7/led");
    let errors = [
        (FormatError::Binary, "binary frame"),
        (FormatError::NotJson, "not JSON"),
        (FormatError::NotAnObject, "not a JSON object"),
        (FormatError::DuplicateField, "duplicate field"),
        (FormatError::MissingField("deviceId"), "missing field deviceId"),
        (FormatError::WrongType("body"), "field body has the wrong type"),
        (FormatError::UnknownType, "unknown message type"),
    ];
    for (error, text) in errors {
        assert_eq!(error.to_string(), text);
    }
}
