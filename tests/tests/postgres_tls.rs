//! TLS to PostgreSQL: every `sslmode` against a real PostgreSQL with `ssl = on` and a throwaway
//! CA, and against one without TLS; the URL from `--database-url`, `DATABASE_URL` and
//! `VCAP_SERVICES` alike.
//!
//! The TLS cluster still accepts clear text, so a server that fell back to it would get in: a
//! failure here is a refusal, not the cluster's doing. Where the server gets in, `pg_stat_ssl`
//! shows that every one of its connections is encrypted.

use std::path::PathBuf;
use std::sync::OnceLock;

use iot_ws_tests::{
    eventually, run_to_exit, Ca, Client, Cluster, Db, Keys, Server, ServerOpts, TempDir, SCRAM_USER, WAIT,
};
use serde_json::json;

/// The TLS cluster shared by this file's tests. Its certificate names `localhost` and
/// 127.0.0.2, not 127.0.0.1.
struct Tls {
    cluster: Cluster,
    /// The CA that issued the cluster's certificate, and another one.
    ca: PathBuf,
    other_ca: PathBuf,
}

fn tls() -> &'static Tls {
    static TLS: OnceLock<Tls> = OnceLock::new();
    TLS.get_or_init(|| {
        let ca = Ca::new("iot-ws test CA");
        let cluster = Cluster::with_tls(&ca, &["localhost", "127.0.0.2"]);
        let dir = TempDir::new("pg-tls-ca").remove_at_exit();
        let (ca_path, other_ca) = (dir.join("ca.crt"), dir.join("other-ca.crt"));
        std::fs::write(&ca_path, ca.cert_pem()).unwrap();
        std::fs::write(&other_ca, Ca::new("some other CA").cert_pem()).unwrap();
        Tls { cluster, ca: ca_path, other_ca }
    })
}

/// A fresh database on the TLS cluster and its URL's start, `postgresql://postgres@HOST:PORT/DB`.
fn tls_db(host: &str) -> (Db, String) {
    let db = tls().cluster.create_db();
    let url = format!("postgresql://postgres@{host}:{}/{}", db.port, db.name);
    (db, url)
}

fn path(p: &std::path::Path) -> &str {
    p.to_str().unwrap()
}

/// A device registers (200) and its binding is recorded, over TLS only.
fn assert_registers_over_tls(server: &Server, db: &Db, device: &str) {
    let _device = Client::registered(server.addr, device, &Keys::shared().token(device));
    assert_eq!(db.binding(device).map(|b| b.0), Some(true), "binding of {device}");
    let (connections, encrypted) = db.server_tls();
    assert!(connections > 0 && encrypted == connections, "{encrypted} of {connections} connections are TLS");
}

/// Registration gets 500, the server says why (`reason`, the rustls or tokio-postgres text), and
/// it never got in, in clear text or otherwise.
fn assert_refused(server: &Server, db: &Db, device: &str, reason: &str) {
    let mut client = Client::connect(server.addr);
    let reply = client.register(device, &Keys::shared().token(device));
    assert_eq!(reply["code"], 500, "{reply}");
    client.expect_close(1011);
    // The line of the connection that stores bindings; the others say the same.
    let said = format!("database (bindings): unavailable (error performing TLS handshake: {reason})");
    let line = eventually(WAIT, || server.log_messages().into_iter().find(|l| l.starts_with(&said)));
    assert!(line.is_some(), "no line {said:?}; stderr:\n{}", server.log());
    assert_eq!(db.server_tls().0, 0, "the server has a connection to the database");
    // It would have made its table on its first connection.
    let table: Option<String> =
        db.client().query_one(r#"SELECT to_regclass('dashboard."connectionBindings"')::text"#, &[]).unwrap().get(0);
    assert_eq!(table, None, "the server got in once");
}

#[test]
fn require_encrypts_without_checking_the_certificate() {
    let db = tls().cluster.create_db();
    // Key=value form, 127.0.0.1, which the certificate does not name: require checks nothing.
    let server = Server::start(ServerOpts::default().with_db(&format!("{} sslmode=require", db.url())));
    assert_registers_over_tls(&server, &db, "tls-require");
    assert!(server.log().contains("(sslmode require)"), "{}", server.log());
}

#[test]
fn verify_full_with_the_right_ca_and_host_name_works_by_dns_name_and_by_ip_address() {
    for (host, device) in [("localhost", "full-dns"), ("127.0.0.2", "full-ip")] {
        let (db, url) = tls_db(host);
        let url = format!("{url}?sslmode=verify-full&sslrootcert={}", path(&tls().ca));
        let server = Server::start(ServerOpts::default().with_db(&url));
        assert_registers_over_tls(&server, &db, device);
    }
}

/// SCRAM with channel binding: the server proves, inside the password exchange, which
/// certificate it saw (the hash of the cluster's ECDSA P-256 certificate, SHA-256), so a man in the
/// middle cannot relay the login; `channel_binding=require` fails unless it is offered and right.
#[test]
fn a_password_login_binds_itself_to_the_tls_channel() {
    let (user, password) = SCRAM_USER;
    let verified = format!("verify-full&sslrootcert={}", path(&tls().ca));
    // require checks no certificate: the binding is what stops a man in the middle there.
    for (mode, device) in [(verified.as_str(), "scram-full"), ("require", "scram-require")] {
        let db = tls().cluster.create_db();
        let url = format!(
            "postgresql://{user}:{password}@localhost:{}/{}?sslmode={mode}&channel_binding=require",
            db.port, db.name
        );
        let server = Server::start(ServerOpts::default().with_db(&url));
        assert_registers_over_tls(&server, &db, device);
        server.assert_never_logged(password);
    }
}

#[test]
fn verify_full_with_another_ca_is_refused_and_says_unknown_issuer() {
    let (db, url) = tls_db("localhost");
    let url = format!("{url}?sslmode=verify-full&sslrootcert={}", path(&tls().other_ca));
    let server = Server::start(ServerOpts::default().with_db(&url));
    assert_refused(&server, &db, "full-wrong-ca", "invalid peer certificate: UnknownIssuer");
}

#[test]
fn verify_full_with_a_host_name_the_certificate_does_not_name_is_refused_and_says_so() {
    let (db, url) = tls_db("127.0.0.1");
    let url = format!("{url}?sslmode=verify-full&sslrootcert={}", path(&tls().ca));
    let server = Server::start(ServerOpts::default().with_db(&url));
    let reason = r#"invalid peer certificate: certificate not valid for name "127.0.0.1"; certificate is only valid for DnsName("localhost") or IpAddress(127.0.0.2)"#;
    assert_refused(&server, &db, "full-wrong-name", reason);
}

#[test]
fn verify_ca_checks_the_chain_and_not_the_host_name() {
    let (db, url) = tls_db("127.0.0.1");
    let server = Server::start(
        ServerOpts::default().with_db(&format!("{url}?sslmode=verify-ca&sslrootcert={}", path(&tls().ca))),
    );
    assert_registers_over_tls(&server, &db, "ca-any-name");
    // require with a root certificate is verify-ca, as in libpq: another CA is refused.
    let db = tls().cluster.create_db();
    let url = format!("{} sslmode=require sslrootcert='{}'", db.url(), path(&tls().other_ca));
    let server = Server::start(ServerOpts::default().with_db(&url));
    assert_refused(&server, &db, "require-root-wrong-ca", "invalid peer certificate: UnknownIssuer");
}

#[test]
fn the_system_roots_are_read_at_run_time_when_no_sslrootcert_is_given() {
    // rustls-native-certs honours SSL_CERT_FILE, as OpenSSL does: the CA stands in for the
    // system's store.
    let (db, url) = tls_db("localhost");
    let opts =
        ServerOpts::default().with_db(&format!("{url}?sslmode=verify-full")).env("SSL_CERT_FILE", path(&tls().ca));
    assert_registers_over_tls(&Server::start(opts), &db, "system-roots");
    let (db, url) = tls_db("localhost");
    let opts = ServerOpts::default()
        .with_db(&format!("{url}?sslmode=verify-full"))
        .env("SSL_CERT_FILE", path(&tls().other_ca));
    assert_refused(&Server::start(opts), &db, "system-roots-wrong", "invalid peer certificate: UnknownIssuer");
}

#[test]
fn require_never_falls_back_to_clear_text_but_prefer_does() {
    // The shared cluster of the other tests offers no TLS.
    let db = Cluster::shared().create_db();
    let server = Server::start(ServerOpts::default().with_db(&format!("{} sslmode=require", db.url())));
    assert_refused(&server, &db, "plain-require", "server does not support TLS");

    let server = Server::start(ServerOpts::default().with_db(&format!("{} sslmode=prefer", db.url())));
    let _device = Client::registered(server.addr, "plain-prefer", &Keys::shared().token("plain-prefer"));
    assert_eq!(db.binding("plain-prefer").map(|b| b.0), Some(true));
    assert_eq!(db.server_tls().1, 0, "prefer: clear text when the server has no TLS");
}

fn vcap(uri: &str) -> String {
    json!({"postgresql": [{"name": "mypostgres", "credentials": {"uri": uri}}]}).to_string()
}

#[test]
fn the_same_url_works_through_database_url_and_vcap_services() {
    for (var, device) in [("DATABASE_URL", "from-env"), ("VCAP_SERVICES", "from-vcap")] {
        let (db, url) = tls_db("localhost");
        let url = format!("{url}?sslmode=verify-full&sslrootcert={}", path(&tls().ca));
        let value = if var == "VCAP_SERVICES" { vcap(&url) } else { url };
        let opts = ServerOpts { database_url: None, ..ServerOpts::default() }.env(var, &value);
        assert_registers_over_tls(&Server::start(opts), &db, device);
    }
}

#[test]
fn a_bad_tls_setting_exits_2_naming_where_it_came_from() {
    let key = Keys::shared().public_path();
    let args = ["--listen", "127.0.0.1:0", "--public-key", path(&key), "--external-address", "h:1"];
    let bad_mode = "postgresql://postgres:secret@localhost:5432/d?sslmode=verify-everything";
    let no_file = "host=localhost password=secret sslmode=verify-ca sslrootcert=/nonexistent/ca.pem";
    let client_cert = "host=localhost password=secret sslmode=require sslcert=/c.crt sslkey=/c.key";
    let cases = [
        (bad_mode, "VCAP_SERVICES", "VCAP_SERVICES mypostgres: sslmode \"verify-everything\" is not one of"),
        (bad_mode, "DATABASE_URL", "DATABASE_URL: sslmode \"verify-everything\""),
        (bad_mode, "--database-url", "--database-url: sslmode \"verify-everything\""),
        (no_file, "DATABASE_URL", "DATABASE_URL: sslrootcert /nonexistent/ca.pem: cannot read it (No such file"),
        (client_cert, "VCAP_SERVICES", "VCAP_SERVICES mypostgres: sslcert is given, but client certificates"),
    ];
    for (url, source, expected) in cases {
        let mut args: Vec<&str> = args.to_vec();
        let vcap = vcap(url);
        let env: Vec<(&str, &str)> = match source {
            "--database-url" => {
                args.extend(["--database-url", url]);
                vec![]
            }
            "VCAP_SERVICES" => vec![("VCAP_SERVICES", vcap.as_str())],
            _ => vec![(source, url)],
        };
        let (status, _, stderr) = run_to_exit(&args, &env, WAIT);
        assert_eq!(status.and_then(|s| s.code()), Some(2), "{source} {url}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "one line: {stderr:?}");
        assert!(stderr.contains(expected), "{source} {url}: {stderr}");
        assert!(!stderr.contains("secret"), "the password is printed: {stderr}");
    }
}
