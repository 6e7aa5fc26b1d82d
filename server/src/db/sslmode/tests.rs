use super::*;

fn file(path: &str) -> Roots {
    Roots::File(PathBuf::from(path))
}

fn mode(url: &str) -> SslMode {
    split(url).unwrap_or_else(|e| panic!("{url}: {e}")).1
}

fn rest(url: &str) -> String {
    split(url).unwrap_or_else(|e| panic!("{url}: {e}")).0
}

fn error(url: &str) -> SslError {
    split(url).expect_err(url)
}

#[test]
fn every_mode_in_key_value_form() {
    let cases = [
        ("host=h", SslMode::Prefer),
        ("host=h sslmode=disable", SslMode::Disable),
        ("host=h sslmode=prefer", SslMode::Prefer),
        ("host=h sslmode=require", SslMode::Require),
        ("host=h sslmode=verify-ca", SslMode::VerifyCa(Roots::System)),
        ("host=h sslmode=verify-full", SslMode::VerifyFull(Roots::System)),
        ("host=h sslmode=verify-ca sslrootcert=/ca.pem", SslMode::VerifyCa(file("/ca.pem"))),
        ("sslrootcert='/my certs/ca.pem' sslmode=verify-full host=h", SslMode::VerifyFull(file("/my certs/ca.pem"))),
    ];
    for (url, expected) in cases {
        assert_eq!(mode(url), expected, "{url}");
        assert_eq!(rest(url), "host='h'", "{url}");
    }
}

#[test]
fn every_mode_in_url_form() {
    let base = "postgresql://u:p@db.example:5432/iot";
    let cases = [
        ("", SslMode::Prefer),
        ("?sslmode=disable", SslMode::Disable),
        ("?sslmode=prefer", SslMode::Prefer),
        ("?sslmode=require", SslMode::Require),
        ("?sslmode=verify-ca", SslMode::VerifyCa(Roots::System)),
        ("?sslmode=verify-full", SslMode::VerifyFull(Roots::System)),
        ("?sslmode=verify-full&sslrootcert=/path/ca.pem", SslMode::VerifyFull(file("/path/ca.pem"))),
        ("?sslrootcert=%2Fmy%20certs%2Fca.pem&sslmode=verify-ca", SslMode::VerifyCa(file("/my certs/ca.pem"))),
    ];
    for (query, expected) in cases {
        let url = format!("{base}{query}");
        assert_eq!(mode(&url), expected, "{url}");
        assert_eq!(rest(&url), base, "{url}: nothing left, no `?`");
    }
    assert_eq!(mode("postgres://h/d?sslmode=require"), SslMode::Require, "both schemes");
}

#[test]
fn require_with_a_root_certificate_is_verify_ca_as_in_libpq() {
    assert_eq!(mode("host=h sslmode=require sslrootcert=/ca.pem"), SslMode::VerifyCa(file("/ca.pem")));
    assert_eq!(mode("postgresql://h/d?sslrootcert=/ca.pem&sslmode=require"), SslMode::VerifyCa(file("/ca.pem")));
}

#[test]
fn a_root_certificate_is_not_used_by_the_modes_that_verify_nothing() {
    assert_eq!(mode("host=h sslrootcert=/ca.pem"), SslMode::Prefer);
    assert_eq!(mode("host=h sslmode=prefer sslrootcert=/ca.pem"), SslMode::Prefer);
    assert_eq!(mode("host=h sslmode=disable sslrootcert=/ca.pem"), SslMode::Disable);
}

#[test]
fn sslrootcert_system_means_verify_full_and_refuses_weaker_modes() {
    assert_eq!(mode("host=h sslrootcert=system"), SslMode::VerifyFull(Roots::System));
    assert_eq!(mode("host=h sslrootcert=system sslmode=verify-full"), SslMode::VerifyFull(Roots::System));
    for weaker in ["disable", "prefer", "require", "verify-ca"] {
        let url = format!("host=h sslrootcert=system sslmode={weaker}");
        assert_eq!(error(&url), SslError::WeakWithSystemRoots(weaker.into()), "{url}");
    }
    let text = error("host=h sslmode=require sslrootcert=system").to_string();
    assert_eq!(text, r#"sslmode "require" may not be used with sslrootcert=system (use verify-full)"#);
}

#[test]
fn an_unknown_mode_is_refused_by_name() {
    for url in ["host=h sslmode=verify_full", "postgresql://h/d?sslmode=allow", "host=h sslmode=''"] {
        assert!(matches!(error(url), SslError::UnknownMode(_)), "{url}");
    }
    let text = error("postgresql://u:secret@h/d?sslmode=bogus").to_string();
    assert_eq!(text, r#"sslmode "bogus" is not one of disable, prefer, require, verify-ca, verify-full"#);
    // An unknown mode is refused even when another setting would make it moot.
    assert!(matches!(error("host=h sslmode=bogus sslrootcert=system"), SslError::UnknownMode(_)));
}

#[test]
fn an_empty_root_certificate_path_is_refused() {
    assert_eq!(error("host=h sslmode=verify-ca sslrootcert=''"), SslError::EmptyRootCert);
    assert_eq!(error("postgresql://h/d?sslmode=verify-ca&sslrootcert="), SslError::EmptyRootCert);
}

#[test]
fn client_certificates_are_refused_as_not_supported() {
    for (url, key) in [
        ("host=h sslcert=/c.pem", "sslcert"),
        ("host=h sslkey=/k.pem", "sslkey"),
        ("postgresql://h/d?sslmode=require&sslcert=%2Fc.pem", "sslcert"),
        ("postgresql://h/d?sslkey=/k.pem", "sslkey"),
    ] {
        let e = error(url);
        assert_eq!(e, SslError::ClientCertificate(key), "{url}");
        assert!(e.to_string().contains("not supported"), "{e}");
    }
}

#[test]
fn a_setting_that_does_not_decode_is_refused() {
    assert_eq!(error("postgresql://h/d?sslrootcert=%FF"), SslError::NotUtf8("sslrootcert"));
    assert_eq!(error("postgresql://h/d?sslmode=%C3"), SslError::NotUtf8("sslmode"));
}

#[test]
fn the_last_setting_wins_as_in_libpq() {
    assert_eq!(mode("host=h sslmode=disable sslmode=require"), SslMode::Require);
    assert_eq!(mode("postgresql://h/d?sslmode=require&sslmode=disable"), SslMode::Disable);
}

#[test]
fn other_url_parameters_stay_exactly_as_written_and_in_order() {
    let url = "postgresql://u:p@h/d?connect_timeout=5&sslmode=require&application_name=a%20b&sslrootcert=/x";
    assert_eq!(
        split(url).unwrap(),
        ("postgresql://u:p@h/d?connect_timeout=5&application_name=a%20b".into(), { SslMode::VerifyCa(file("/x")) })
    );
    assert_eq!(rest("postgresql://h/d?options=-c%20x%3D1"), "postgresql://h/d?options=-c%20x%3D1");
    assert_eq!(rest("postgresql://h/d"), "postgresql://h/d");
    // What tokio-postgres would refuse is left for it to refuse.
    assert_eq!(rest("postgresql://h/d?junk&sslmode=require"), "postgresql://h/d?junk");
    assert_eq!(rest("postgresql://h/d?%FF=1&sslmode=require"), "postgresql://h/d?%FF=1");
}

#[test]
fn the_query_starts_after_the_credentials() {
    // A `?` in the password is not the query: tokio-postgres takes everything up to the first
    // `@` as the credentials.
    let url = "postgresql://u:p?ss?@h:5432/d?sslmode=require";
    assert_eq!(split(url).unwrap(), ("postgresql://u:p?ss?@h:5432/d".into(), SslMode::Require));
    assert_eq!(rest("postgresql://u:pw?@h/d"), "postgresql://u:pw?@h/d");
    assert_eq!(mode("postgresql://h/d?sslmode=require"), SslMode::Require, "no credentials at all");
}

#[test]
fn key_value_pairs_are_tokenised_as_tokio_postgres_does() {
    // Whitespace around `=` and between pairs, quoted values with spaces and escapes.
    let url = " host = h\tsslmode =verify-full  password='p w\\'\\\\x' sslrootcert= /ca.pem \n";
    let (rest, mode) = split(url).unwrap();
    assert_eq!(mode, SslMode::VerifyFull(file("/ca.pem")));
    assert_eq!(rest, r"host='h' password='p w\'\\x'");
    let config: postgres::Config = rest.parse().unwrap();
    assert_eq!(config.get_password(), Some(&b"p w'\\x"[..]));
    // A plain value may hold a quote and escapes; a quoted one may be empty.
    assert_eq!(split(r"user=o'k\ x password=''").unwrap().0, r"user='o\'k x' password=''");
    // tokio-postgres stops reading where no keyword starts, so do we.
    assert_eq!(split("host=h =sslmode=disable").unwrap(), ("host='h'".into(), SslMode::Prefer));
    assert_eq!(split("").unwrap(), (String::new(), SslMode::Prefer));
}

#[test]
fn a_broken_key_value_string_is_left_whole_for_tokio_postgres_to_refuse() {
    for url in ["host='h sslmode=verify-full", "host sslmode=verify-full", "sslmode=verify-full host=", "host"] {
        assert_eq!(split(url).unwrap(), (url.to_owned(), SslMode::Prefer), "{url}");
        assert!(url.parse::<postgres::Config>().is_err(), "{url}");
    }
}

#[test]
fn tokio_postgres_is_told_to_ask_for_tls_and_whether_clear_text_will_do() {
    use postgres::config::SslMode as Pg;
    let cases = [
        (SslMode::Disable, Pg::Disable, "disable"),
        (SslMode::Prefer, Pg::Prefer, "prefer"),
        (SslMode::Require, Pg::Require, "require"),
        (SslMode::VerifyCa(Roots::System), Pg::Require, "verify-ca"),
        (SslMode::VerifyFull(file("/ca.pem")), Pg::Require, "verify-full"),
    ];
    for (mode, negotiation, name) in cases {
        assert_eq!(mode.negotiation(), negotiation, "{name}");
        assert_eq!(mode.name(), name);
    }
}
