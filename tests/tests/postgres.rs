//! The platform's own bindings table, PostgreSQL going away and coming back (and `/ready` with
//! it), and SIGTERM.

use std::time::Duration;

use iot_ws_tests::{
    actuation, eventually, run_to_exit, Client, Cluster, Db, Event, Keys, Server, ServerOpts, ACTUATOR, WAIT,
};
use serde_json::json;

/// The platform's table as its dashboard (Sequelize) made it: no defaults, `server`
/// varchar(20), an enum type, and a foreign key to `dashboard.devices`.
const PLATFORM_SCHEMA: &str = r#"
CREATE SCHEMA dashboard;
CREATE TABLE dashboard.devices (id varchar(255) PRIMARY KEY, name varchar(255));
CREATE TYPE dashboard."enum_connectionBindings_type" AS ENUM ('mqtt', 'ws');
CREATE TABLE dashboard."connectionBindings" (
  id uuid PRIMARY KEY,
  "deviceId" varchar(255) NOT NULL REFERENCES dashboard.devices(id) ON DELETE CASCADE,
  "lastConnectedAt" timestamptz NOT NULL,
  server varchar(20) NOT NULL,
  "connectingStatus" boolean NOT NULL,
  type dashboard."enum_connectionBindings_type" NOT NULL,
  created timestamptz NOT NULL,
  updated timestamptz NOT NULL,
  UNIQUE ("deviceId", type)
);
INSERT INTO dashboard.devices (id, name) VALUES ('known-1', 'one'), ('known-2', 'two');
"#;

fn subscribed() -> serde_json::Value {
    json!({"code": 200, "content": "Subscribed"})
}

#[test]
fn the_platforms_own_table_is_used_as_is_and_every_column_is_filled() {
    let db = Cluster::shared().create_db();
    db.client().batch_execute(PLATFORM_SCHEMA).unwrap();
    let server = Server::start(ServerOpts::default().with_db(&db.url()));

    let _known = Client::registered(server.addr, "known-1", &Keys::shared().token("known-1"));
    let mut client = db.client();
    let row = client
        .query_one(
            r#"SELECT id IS NOT NULL, "deviceId", "lastConnectedAt" > now() - interval '1 hour', server,
                      "connectingStatus", type::text, created IS NOT NULL, updated >= created
               FROM dashboard."connectionBindings""#,
            &[],
        )
        .unwrap();
    assert!(row.get::<_, bool>(0));
    assert_eq!(row.get::<_, String>(1), "known-1");
    assert!(row.get::<_, bool>(2));
    assert_eq!(row.get::<_, String>(3), "10.1.2.3:5000");
    assert!(row.get::<_, bool>(4));
    assert_eq!(row.get::<_, String>(5), "ws");
    assert!(row.get::<_, bool>(6));
    assert!(row.get::<_, bool>(7));
    // The server did not add a table of its own shape, nor defaults.
    let defaults: i64 = client
        .query_one(
            r#"SELECT count(*) FROM information_schema.columns
               WHERE table_schema = 'dashboard' AND table_name = 'connectionBindings' AND column_default IS NOT NULL"#,
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(defaults, 0);

    // A device the platform does not know: the row cannot be written (foreign key).
    let mut stranger = Client::connect(server.addr);
    let reply = stranger.register("stranger", &Keys::shared().token("stranger"));
    assert_eq!(reply["code"], 500, "{reply}");
    stranger.expect_close(1011);
    assert_eq!(db.binding("stranger"), None);
    let (ready, why) = iot_ws_tests::client::http_get(server.addr, "/ready");
    assert_eq!(ready, 200, "one row refused is not a database refusing writes: {why}");

    // ...and the server keeps serving.
    let mut second = Client::registered(server.addr, "known-2", &Keys::shared().token("known-2"));
    let (message, body) = actuation(ACTUATOR, "known-2", r#""after":"stranger""#);
    Client::connect(server.addr).send(&message);
    second.expect_delivery("known-2", &body);
    assert_eq!(db.binding("known-2"), Some((true, "10.1.2.3:5000".into())));
    second.close(1000);
    assert!(db.wait_binding("known-2", false));
}

#[test]
fn missing_schema_and_table_are_created() {
    let db = Cluster::shared().create_db();
    let server = Server::start(ServerOpts::default().with_db(&db.url()));
    let _d = Client::registered(server.addr, "fresh-table", &Keys::shared().token("fresh-table"));
    assert_eq!(db.binding("fresh-table"), Some((true, "10.1.2.3:5000".into())));
}

/// Registers on a fresh connection until one gets 200 (bounded); returns the connection.
fn register_eventually(server: &Server, device: &str, timeout: Duration) -> Client {
    let token = Keys::shared().token(device);
    let mut last = json!(null);
    let got = eventually(timeout, || {
        let mut c = Client::connect(server.addr);
        let reply = c.register(device, &token);
        if reply == subscribed() {
            return Some(c);
        }
        last = reply;
        std::thread::sleep(Duration::from_millis(200));
        None
    });
    got.unwrap_or_else(|| panic!("{device} never registered; last reply {last}\nserver stderr:\n{}", server.log()))
}

#[test]
fn postgres_outage_refuses_registrations_only_and_the_table_is_repaired_when_it_returns() {
    // A cluster of its own: this test stops it.
    let cluster = Cluster::new();
    let db: Db = cluster.create_db();
    let server = Server::start(ServerOpts::default().with_db(&db.url()));
    let mut stays = Client::registered(server.addr, "stays", &Keys::shared().token("stays"));
    let mut leaves = Client::registered(server.addr, "leaves", &Keys::shared().token("leaves"));
    assert!(db.wait_binding("stays", true) && db.wait_binding("leaves", true));

    cluster.stop();
    // Registrations get 500 and the connection is closed 1011.
    let mut refused = Client::connect(server.addr);
    let reply = refused.register("during-outage", &Keys::shared().token("during-outage"));
    assert_eq!(reply["code"], 500, "{reply}");
    refused.expect_close(1011);
    // Everything else keeps working.
    assert_eq!(stays.ping(), json!({"code": 202, "content": "PONG"}));
    let (message, body) = actuation(ACTUATOR, "stays", r#""during":"outage""#);
    let mut dashboard = Client::connect(server.addr);
    dashboard.send(&message);
    stays.expect_delivery("stays", &body);
    let (health, _) = iot_ws_tests::client::http_get(server.addr, "/health");
    assert_eq!(health, 200);
    // A device leaves while the database is away.
    leaves.close(1000);
    leaves.finish_close();

    cluster.start();
    let _back = register_eventually(&server, "after-outage", Duration::from_secs(30));
    // The table matches the connected devices again.
    let repaired = eventually(Duration::from_secs(20), || {
        let now = (
            db.binding("stays").map(|b| b.0),
            db.binding("leaves").map(|b| b.0),
            db.binding("after-outage").map(|b| b.0),
        );
        (now == (Some(true), Some(false), Some(true))).then_some(())
    });
    assert!(
        repaired.is_some(),
        "stays {:?} leaves {:?} after-outage {:?}",
        db.binding("stays"),
        db.binding("leaves"),
        db.binding("after-outage")
    );
    assert_ne!(db.binding("during-outage").map(|b| b.0), Some(true));
    // The survivor still gets actuations.
    dashboard.send(&message);
    stays.expect_delivery("stays", &body);
    assert!(server.log().contains("database"), "the outage is logged:\n{}", server.log());
}

#[test]
fn sigterm_closes_devices_1001_marks_them_disconnected_and_exits_0() {
    let db = Cluster::shared().create_db();
    let mut server = Server::start(ServerOpts::default().with_db(&db.url()));
    let mut devices: Vec<(String, Client)> = (0..3)
        .map(|i| {
            let id = format!("term-{i}");
            let c = Client::registered(server.addr, &id, &Keys::shared().token(&id));
            (id, c)
        })
        .collect();
    let mut idle = Client::connect(server.addr);
    for (id, _) in &devices {
        assert!(db.wait_binding(id, true));
    }
    server.sigterm();
    for (_, c) in &mut devices {
        c.expect_close(1001);
    }
    match idle.recv(WAIT) {
        Event::Close(code) => assert_eq!(code, Some(1001)),
        other => panic!("idle connection: {other:?}"),
    }
    let status = server.wait_exit(Duration::from_secs(10)).expect("exits within 10 s of SIGTERM");
    assert!(status.success(), "exit status {status:?}\n{}", server.log());
    for (id, _) in &devices {
        assert_eq!(db.binding(id).map(|b| b.0), Some(false), "{id}");
    }
    // Nothing listens any more.
    assert!(std::net::TcpStream::connect_timeout(&server.addr, Duration::from_secs(1)).is_err());
}

#[test]
fn sigint_stops_gracefully_too() {
    let mut server = Server::start(ServerOpts::default());
    let mut device = Client::registered(server.addr, "int-dev", &Keys::shared().token("int-dev"));
    server.signal(libc::SIGINT);
    device.expect_close(1001);
    let status = server.wait_exit(Duration::from_secs(10)).expect("exits within 10 s of SIGINT");
    assert!(status.success(), "exit status {status:?}");
}

#[test]
fn an_external_address_longer_than_the_platforms_server_column_is_refused_at_startup() {
    let db = Cluster::shared().create_db();
    db.client().batch_execute(PLATFORM_SCHEMA).unwrap();
    let key = Keys::shared().public_path().display().to_string();
    let url = db.url();
    // 27 characters; the platform's column holds 20, so no registration could ever be recorded.
    let external = "gateway-17.example.org:5000";
    let args =
        ["--listen", "127.0.0.1:0", "--public-key", &key, "--database-url", &url, "--external-address", external];
    let (status, _out, err) = run_to_exit(&args, &[], WAIT);
    let status = status.expect("the server exits");
    assert_eq!(status.code(), Some(2), "stderr:\n{err}");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "one line on stderr, got:\n{err}");
    assert!(lines[0].contains(external) && lines[0].contains("20 characters"), "{}", lines[0]);

    // Twenty characters fit.
    let server = Server::start(
        ServerOpts { external_address: "gw-17.example.o:5000".into(), ..ServerOpts::default() }.with_db(&url),
    );
    let _known = Client::registered(server.addr, "known-1", &Keys::shared().token("known-1"));
    assert_eq!(db.binding("known-1"), Some((true, "gw-17.example.o:5000".into())));
}

/// `GET /ready`'s status and body.
fn ready(server: &Server) -> (u16, String) {
    iot_ws_tests::client::http_get(server.addr, "/ready")
}

/// Waits (bounded) until `/ready` answers `status` and every role's `iot_ws_database_up` is
/// `up`; returns the last body.
fn wait_ready(server: &Server, status: u16, up: f64) -> String {
    let gauges = ["bindings", "inbox", "forwarding"].map(|role| format!("iot_ws_database_up{{role=\"{role}\"}}"));
    let mut last = (0, String::new());
    let reached = eventually(Duration::from_secs(30), || {
        last = ready(server);
        let followed = gauges.iter().all(|g| server.metric(g) == Some(up));
        (last.0 == status && followed).then_some(())
    });
    assert!(
        reached.is_some(),
        "/ready never {status} with gauges at {up}; last {last:?}\n{}\nserver stderr:\n{}",
        server.metrics(),
        server.log()
    );
    last.1
}

/// Sets or resets `default_transaction_read_only` for the whole cluster, open sessions included
/// (as a primary turned standby refuses writes), through the test's own connection.
fn read_only(db: &Db, on: bool) {
    let set = if on {
        "ALTER SYSTEM SET default_transaction_read_only = on"
    } else {
        "ALTER SYSTEM RESET default_transaction_read_only"
    };
    let mut client = db.client();
    client.batch_execute(set).expect("alter system");
    client.batch_execute("SELECT pg_reload_conf()").expect("reload");
}

#[test]
fn ready_follows_the_database_refusing_writes_going_away_and_coming_back() {
    // A cluster of its own: this test makes it read-only and stops it.
    let cluster = Cluster::new();
    let db = cluster.create_db();
    // Trust login ignores the password; it is there to show it never appears.
    let secret = "ready-secret-pw";
    let server = Server::start(ServerOpts::default().with_db(&format!("{} password={secret}", db.url())));
    assert_eq!(wait_ready(&server, 200, 1.0), "ok\n");
    assert_eq!(iot_ws_tests::client::http_get(server.addr, "/health"), (200, "ok\n".into()));

    // The database refuses every write: a registration gets 500, and /ready says why.
    read_only(&db, true);
    let refused = eventually(WAIT, || {
        let mut c = Client::connect(server.addr);
        (c.register("read-only", &Keys::shared().token("read-only"))["code"] == 500).then_some(())
    });
    assert!(refused.is_some(), "registrations still accepted on a read-only database");
    for n in 0..3 {
        let mut c = Client::connect(server.addr);
        assert_eq!(c.register("read-only", &Keys::shared().token("read-only"))["code"], 500, "attempt {n}");
    }
    let why = wait_ready(&server, 503, 0.0);
    assert!(why.starts_with("database (bindings): ") && why.contains("25006"), "{why:?}");
    assert_eq!(why.lines().count(), 1, "{why:?}");
    assert_eq!(iot_ws_tests::client::http_get(server.addr, "/health").0, 200, "liveness is not readiness");

    read_only(&db, false);
    assert_eq!(wait_ready(&server, 200, 1.0), "ok\n");
    let _back = register_eventually(&server, "writable-again", WAIT);
    // Four or more refused writes, each failure logged once until a write works again.
    let failures: Vec<String> = server
        .log_messages()
        .into_iter()
        .filter(|l| l.starts_with("database (bindings): cannot record connected devices: 25006"))
        .collect();
    let distinct: std::collections::BTreeSet<&String> = failures.iter().collect();
    assert!(!failures.is_empty() && failures.len() == distinct.len(), "logged again and again: {failures:#?}");
    let again = server.wait_for_log("database (bindings): works again", WAIT);
    assert!(again.is_some_and(|l| l.contains(" INFO  ")), "{}", server.log());

    // The database goes away, then comes back.
    cluster.stop();
    let why = wait_ready(&server, 503, 0.0);
    assert!(why.starts_with("database (bindings): "), "{why:?}");
    assert_eq!(why.lines().count(), 1, "{why:?}");
    assert!(!why.contains(&db.name) && !why.contains(secret), "{why:?}");
    cluster.start();
    assert_eq!(wait_ready(&server, 200, 1.0), "ok\n");
    let _after = register_eventually(&server, "after-outage", Duration::from_secs(30));
    assert!(!server.metrics().contains(secret));
    server.assert_never_logged(secret);
}

#[test]
fn without_a_database_ready_is_200_and_there_is_no_database_gauge() {
    let server = Server::start(ServerOpts::default());
    assert_eq!(ready(&server), (200, "ok\n".into()));
    assert!(!server.metrics().contains("iot_ws_database_up"), "{}", server.metrics());
}
