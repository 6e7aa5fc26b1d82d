use super::*;

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

fn load(list: &[&str], vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
    let vars: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let env = move |name: &str| vars.get(name).cloned();
    Config::load(Flags::parse(&args(list), &["demo"])?, &env)
}

const VCAP: &str = r#"{
  "postgresql": [{"name": "mypostgres", "credentials": {"hostname": "db.example", "port": 5433, "dbname": "iot", "username": "u", "password": "p'w"}}],
  "user-provided": [{"name": "websocket-ups", "credentials": {"username": "dash", "password": "board"}}]
}"#;

#[test]
fn defaults_need_nothing() {
    let c = load(&[], &[("HOSTNAME", "gw")]).unwrap();
    assert_eq!(c.listen, "0.0.0.0:5000".parse().unwrap());
    assert_eq!(c.public_key, PathBuf::from("keys/public.pem"));
    assert!(c.database_url.is_none() && c.actuator.is_none());
    assert_eq!((c.max_message_bytes, c.register_timeout_secs, c.hold_secs), (65_536, 10, 30));
    assert_eq!(c.external_address, None);
    assert!(c.external_address(c.listen).ends_with(":5000"));
}

#[test]
fn flags_beat_environment_which_beats_vcap() {
    let vars = [
        ("IOT_WS_LISTEN", "127.0.0.1:7000"),
        ("IOT_WS_ACTUATOR_USERNAME", "env"),
        ("IOT_WS_ACTUATOR_PASSWORD", "envpw"),
        ("VCAP_SERVICES", VCAP),
    ];
    let c = load(&["--listen", "127.0.0.1:7001"], &vars).unwrap();
    assert_eq!(c.listen.port(), 7001);
    assert_eq!(c.actuator.unwrap().username, "env");
    let c = load(&[], &[("VCAP_SERVICES", VCAP)]).unwrap();
    assert_eq!(c.actuator.unwrap().password, "board");
}

#[test]
fn cloud_foundry_port_services_and_route_are_read() {
    let app = r#"{"uris": ["iot-ws.apps.example.com"]}"#;
    let c = load(&[], &[("PORT", "8080"), ("VCAP_SERVICES", VCAP), ("VCAP_APPLICATION", app)]).unwrap();
    assert_eq!(c.listen, "0.0.0.0:8080".parse().unwrap());
    assert_eq!(c.external_address.as_deref(), Some("iot-ws.apps.example.com:80"));
    let db = c.database_url.unwrap();
    assert_eq!(db.url, r"host='db.example' dbname='iot' user='u' port='5433' password='p\'w'");
    assert_eq!(db.origin, "VCAP_SERVICES mypostgres");
    assert!(db.url.parse::<postgres::Config>().is_ok());
}

#[test]
fn vcap_uri_is_used_as_given() {
    let vcap = r#"{"p": [{"name": "mypostgres", "credentials": {"uri": "postgres://u:p@h:5432/d"}}]}"#;
    let db = load(&[], &[("VCAP_SERVICES", vcap)]).unwrap().database_url.unwrap();
    assert_eq!(db, DatabaseUrl { url: "postgres://u:p@h:5432/d".into(), origin: "VCAP_SERVICES mypostgres".into() });
}

#[test]
fn external_address_is_kept_exactly() {
    let c = load(&["--external-address", "gw-7.local:5000"], &[]).unwrap();
    assert_eq!(c.external_address.as_deref(), Some("gw-7.local:5000"));
}

#[test]
fn invalid_settings_are_refused_with_a_reason() {
    let cases: &[(&[&str], &str)] = &[
        (&["--listen", "nowhere"], "--listen"),
        (&["--max-message-bytes", "-1"], "--max-message-bytes"),
        (&["--register-timeout-secs", "0"], "--register-timeout-secs"),
        (&["--actuator-username", "u"], "go together"),
        (&["--external-address", "no-port"], "--external-address"),
        (&["--external-address", "0.0.0.0:5000"], "0.0.0.0"),
        (&["--external-address", "h:99999"], "--external-address"),
        (&["--bogus", "1"], "unknown option --bogus"),
        (&["--listen"], "needs a value"),
        (&["stray"], "unexpected argument"),
        (&["--listen", "127.0.0.1:1", "--listen", "127.0.0.1:2"], "twice"),
    ];
    for (list, expected) in cases {
        let err = load(list, &[]).unwrap_err().0;
        assert!(err.contains(expected), "{list:?}: {err}");
        assert!(!err.contains('\n'), "one line: {err}");
    }
    let err = load(&[], &[("VCAP_SERVICES", "{")]).unwrap_err().0;
    assert!(err.contains("VCAP_SERVICES"));
}

#[test]
fn every_number_has_its_default_and_its_bounds() {
    let c = load(&[], &[]).unwrap();
    assert_eq!((c.max_pending, c.max_pending_per_address), (1_024, 512));
    assert_eq!((c.send_queue_bytes, c.hold_max_bytes), (1 << 20, 16 << 20));
    assert_eq!(c.instance_lock_wait_secs, 90);
    let mib = 1u64 << 20;
    let bounds: &[(&str, u64, u64)] = &[
        ("--max-message-bytes", 64, 64 * mib),
        ("--register-timeout-secs", 1, 86_400),
        ("--hold-actuations-secs", 0, 3_600),
        ("--max-connections", 1, 10_000_000),
        ("--max-pending", 1, 10_000_000),
        ("--max-pending-per-address", 1, 10_000_000),
        ("--send-queue-bytes", 1_024, 1_024 * mib),
        ("--hold-max-bytes", 0, 1_024 * 1_024 * mib),
        ("--instance-lock-wait", 0, 86_400),
    ];
    for &(flag, min, max) in bounds {
        for n in [min, max] {
            assert!(load(&[flag, &n.to_string()], &[]).is_ok(), "{flag} {n}");
        }
        let below = min.checked_sub(1).map(|n| n.to_string()).unwrap_or_else(|| "-1".into());
        for text in [below, (max + 1).to_string()] {
            let err = load(&[flag, &text], &[]).unwrap_err().0;
            assert!(err.contains(&format!("from {min} to {max}")), "{flag} {text}: {err}");
        }
    }
}

#[test]
fn instance_lock_wait_comes_from_the_flag_then_the_environment() {
    let env = [("IOT_WS_INSTANCE_LOCK_WAIT", "5")];
    assert_eq!(load(&[], &env).unwrap().instance_lock_wait_secs, 5);
    assert_eq!(load(&["--instance-lock-wait", "0"], &env).unwrap().instance_lock_wait_secs, 0);
}

#[test]
fn metrics_listen_is_off_by_default_else_from_the_flag_then_the_environment() {
    assert_eq!(load(&[], &[]).unwrap().metrics_listen, None);
    let env = [("IOT_WS_METRICS_LISTEN", "127.0.0.1:9100")];
    assert_eq!(load(&[], &env).unwrap().metrics_listen, Some("127.0.0.1:9100".parse().unwrap()));
    let c = load(&["--metrics-listen", "[::1]:9101"], &env).unwrap();
    assert_eq!(c.metrics_listen, Some("[::1]:9101".parse().unwrap()));
    let err = load(&["--metrics-listen", "nowhere"], &env).unwrap_err().0;
    assert!(err.starts_with(r#"--metrics-listen: "nowhere" "#), "{err}");
}

#[test]
fn max_connections_defaults_to_the_open_file_limit_less_what_the_server_keeps() {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit only writes the struct it is given.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) }, 0);
    // Raised to the hard limit, so that the figure is not the 1,024 the server assumes when it
    // cannot read the limit (where the hard limit allows).
    limit.rlim_cur = limit.rlim_max;
    // SAFETY: setrlimit only reads the struct it is given; raising the soft limit up to the hard
    // one is always allowed.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) }, 0);
    #[allow(clippy::unnecessary_cast)]
    let soft = limit.rlim_cur as u64;
    let c = load(&[], &[]).unwrap();
    assert_eq!(c.max_connections as u64, soft.min(1 << 24) - RESERVED_FDS);
}

#[test]
fn the_host_name_comes_from_the_kernel_then_the_environment() {
    let some = |s: &str| Some(s.to_string());
    assert_eq!(host_name(some("gw-7\n"), some("env")), "gw-7");
    assert_eq!(host_name(some(" \n"), some("env")), "env");
    assert_eq!(host_name(None, some("env")), "env");
    assert_eq!(host_name(None, None), "localhost");
}

#[test]
fn demo_ignores_the_database() {
    let c = load(&["--demo", "--database-url", "host=x"], &[]).unwrap();
    assert!(c.demo && c.database_url.is_none());
}

#[test]
fn database_url_must_parse() {
    let err = load(&["--database-url", "postgres://[::1"], &[]).unwrap_err().0;
    assert!(err.contains("--database-url") && !err.contains('\n'), "{err}");
}

fn vcap_uri(uri: &str) -> String {
    serde_json::json!({"p": [{"name": "mypostgres", "credentials": {"uri": uri}}]}).to_string()
}

#[test]
fn the_database_url_comes_from_the_flag_then_the_environment_then_vcap_and_says_which() {
    let vcap = vcap_uri("postgresql://v@h/d");
    let vars = [("DATABASE_URL", "host=env"), ("VCAP_SERVICES", vcap.as_str())];
    let from = |list: &[&str], vars: &[(&str, &str)]| load(list, vars).unwrap().database_url.unwrap();
    assert_eq!(
        from(&["--database-url", "host=flag"], &vars),
        DatabaseUrl { url: "host=flag".into(), origin: "--database-url".into() }
    );
    assert_eq!(from(&[], &vars), DatabaseUrl { url: "host=env".into(), origin: "DATABASE_URL".into() });
    assert_eq!(from(&[], &vars[1..]).origin, "VCAP_SERVICES mypostgres");
    // An empty variable is no setting.
    assert_eq!(from(&[], &[("DATABASE_URL", ""), ("VCAP_SERVICES", &vcap)]).origin, "VCAP_SERVICES mypostgres");
    assert!(load(&[], &[("DATABASE_URL", "")]).unwrap().database_url.is_none());
}

#[test]
fn a_bad_tls_setting_is_blamed_on_where_it_came_from() {
    let dir = std::env::temp_dir().join(format!("iot-ws-sslrootcert-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let empty = dir.join("empty.pem");
    std::fs::write(&empty, "").unwrap();
    let empty = empty.display().to_string();
    let bad_mode = "postgresql://u:secret@h/d?sslmode=verify-everything";
    let missing = "postgresql://u:secret@h/d?sslmode=verify-full&sslrootcert=/nonexistent/ca.pem";
    let no_certs = format!("host=h password=secret sslmode=require sslrootcert={empty}");
    let client_cert = "host=h password=secret sslcert=/c.pem sslkey=/k.pem";
    let cases: &[(&str, &str)] = &[
        (bad_mode, "\"verify-everything\" is not one of disable, prefer, require, verify-ca, verify-full"),
        (missing, "sslrootcert /nonexistent/ca.pem: cannot read it (No such file or directory"),
        (&no_certs, "no CA certificate found"),
        (client_cert, "client certificates (sslcert, sslkey) are not supported"),
        ("host=h sslmode=prefer sslnegotiation=direct password=secret", "sslnegotiation=direct needs sslmode require"),
        ("host=h sslnegotiation=direct password=secret", "sslnegotiation=direct needs sslmode require"),
        ("host=h password=secret sslcrl=/x", "unknown option `sslcrl`"),
    ];
    for (url, expected) in cases {
        let vcap = vcap_uri(url);
        for (list, vars, origin) in [
            (&["--database-url", *url][..], &[][..], "--database-url: "),
            (&[][..], &[("DATABASE_URL", *url)][..], "DATABASE_URL: "),
            (&[][..], &[("VCAP_SERVICES", vcap.as_str())][..], "VCAP_SERVICES mypostgres: "),
        ] {
            let err = load(list, vars).unwrap_err().0;
            assert!(err.starts_with(origin) && err.contains(expected), "{origin}{url}: {err}");
            assert!(!err.contains("secret") && !err.contains('\n'), "{err}");
        }
    }
    assert!(load(&["--demo", "--database-url", bad_mode], &[]).is_ok(), "--demo ignores the database");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn good_tls_settings_pass_the_check() {
    for url in [
        "host=h sslmode=disable",
        "host=h sslmode=prefer sslrootcert=/nonexistent/ca.pem",
        "postgresql://u@h/d?sslmode=require&sslnegotiation=direct",
    ] {
        let db = load(&["--database-url", url], &[]).unwrap().database_url.unwrap();
        assert_eq!(db.url, url, "kept as given");
    }
    let db = DatabaseUrl { url: "postgresql://u:secret@h/d".into(), origin: "DATABASE_URL".into() };
    assert_eq!(format!("{db:?}"), r#"DatabaseUrl { origin: "DATABASE_URL", .. }"#, "no password in Debug");
}

#[test]
fn secrets_come_from_the_flag_its_file_or_the_environment() {
    let dir = std::env::temp_dir().join(format!("iot-ws-secret-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (file, blank) = (dir.join("pw"), dir.join("blank"));
    std::fs::write(&file, " s3cret\n").unwrap();
    std::fs::write(&blank, "\n").unwrap();
    let (file, blank) = (file.to_str().unwrap(), blank.to_str().unwrap());
    let env = |name: &str| (name == "PW").then(|| "from-env".to_string());
    let none = |_: &str| Some(String::new());
    let secret = |list: &[&str], env: &Env| {
        let given = Flags::parse(&args(list), &[]).unwrap().take_secret("password", env, "PW");
        given.map(|secret| secret.map(|s| (s.text, s.origin)))
    };
    let is = |text: &str, origin: &str| Some((text.to_string(), origin.to_string()));

    assert_eq!(secret(&["--password", "flag"], &env).unwrap(), is("flag", "--password"));
    assert_eq!(secret(&["--password-file", file], &env).unwrap(), is("s3cret", "--password-file"));
    assert_eq!(secret(&[], &env).unwrap(), is("from-env", "PW"));
    assert_eq!(secret(&[], &none).unwrap(), None, "an empty variable is no secret");
    // The variable naming a file, as systemd's LoadCredential= hands one over; flags still first.
    let path = file.to_string();
    let file_env = move |name: &str| (name == "PW_FILE").then(|| path.clone());
    assert_eq!(secret(&[], &file_env).unwrap(), is("s3cret", "PW_FILE"));
    assert_eq!(secret(&["--password", "flag"], &file_env).unwrap(), is("flag", "--password"));
    let path = file.to_string();
    let both_env = move |name: &str| match name {
        "PW" => Some("from-env".to_string()),
        "PW_FILE" => Some(path.clone()),
        _ => None,
    };
    assert_eq!(secret(&[], &both_env).unwrap_err().0, "give PW or PW_FILE, not both");
    let path = blank.to_string();
    let blank_env = move |name: &str| (name == "PW_FILE").then(|| path.clone());
    assert_eq!(secret(&[], &blank_env).unwrap_err().0, format!("PW_FILE {blank} is empty"));
    for (list, expected) in [
        (&["--password", "a", "--password-file", file][..], "not both"),
        (&["--password-file", blank][..], "is empty"),
        (&["--password-file", "/nonexistent/pw"][..], "--password-file /nonexistent/pw"),
    ] {
        let err = secret(list, &env).unwrap_err().0;
        assert!(err.contains(expected) && !err.contains("s3cret"), "{list:?}: {err}");
    }
    // A file larger than its bound (64 KiB, secret_file.rs) is refused, not cut to a wrong secret.
    let big = dir.join("big");
    std::fs::write(&big, vec![b'x'; 65_537]).unwrap();
    let err = secret(&["--password-file", big.to_str().unwrap()], &env).unwrap_err().0;
    assert_eq!(err, format!("--password-file {} is larger than 64 KiB", big.display()));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn tls_takes_a_certificate_and_its_key_together_from_flags_or_environment() {
    assert_eq!(load(&[], &[]).unwrap().tls, None);
    let files = |cert: &str, key: &str| Some(TlsFiles { cert: cert.into(), key: key.into() });
    let c = load(&["--tls-cert", "c.pem", "--tls-key", "k.pem"], &[]).unwrap();
    assert_eq!(c.tls, files("c.pem", "k.pem"));
    let c =
        load(&["--tls-key", "flag.pem"], &[("IOT_WS_TLS_CERT", "env.pem"), ("IOT_WS_TLS_KEY", "envkey.pem")]).unwrap();
    assert_eq!(c.tls, files("env.pem", "flag.pem"));
    for alone in [&["--tls-cert", "c.pem"], &["--tls-key", "k.pem"]] {
        assert_eq!(load(alone, &[]).unwrap_err().0, "--tls-cert and --tls-key go together");
    }
}

#[test]
fn an_invalid_variable_is_named_not_the_flag_it_stands_for() {
    let cases: &[(&str, &str)] = &[
        ("IOT_WS_LISTEN", "foo"),
        ("IOT_WS_EXTERNAL_ADDRESS", "no-port"),
        ("IOT_WS_MAX_MESSAGE_BYTES", "lots"),
        ("IOT_WS_REGISTER_TIMEOUT_SECS", "0"),
        ("IOT_WS_HOLD_ACTUATIONS_SECS", "3601"),
        ("IOT_WS_MAX_CONNECTIONS", "0"),
        ("IOT_WS_MAX_PENDING", "x"),
        ("IOT_WS_MAX_PENDING_PER_ADDRESS", "x"),
        ("IOT_WS_SEND_QUEUE_BYTES", "1"),
        ("IOT_WS_HOLD_MAX_BYTES", "x"),
        ("IOT_WS_INSTANCE_LOCK_WAIT", "-5"),
        ("IOT_WS_METRICS_LISTEN", "loopback"),
    ];
    for &(var, value) in cases {
        let err = load(&[], &[(var, value)]).unwrap_err().0;
        assert!(err.starts_with(&format!("{var}: {value:?} ")), "{var}={value}: {err}");
        assert!(!err.contains("--") && !err.contains('\n'), "{var}={value}: {err}");
    }
    let err = load(&[], &[("IOT_WS_EXTERNAL_ADDRESS", "0.0.0.0:5000")]).unwrap_err().0;
    assert!(err.starts_with("IOT_WS_EXTERNAL_ADDRESS: 0.0.0.0 "), "{err}");
    let app = r#"{"uris": ["a:b"]}"#;
    let err = load(&[], &[("VCAP_APPLICATION", app)]).unwrap_err().0;
    assert!(err.starts_with(r#"VCAP_APPLICATION: "a:b:80" "#), "{err}");
    // A flag given beside the variable is what is used, so it is what an error names.
    let err = load(&["--listen", "bar"], &[("IOT_WS_LISTEN", "127.0.0.1:1")]).unwrap_err().0;
    assert!(err.starts_with(r#"--listen: "bar" "#), "{err}");
    let err = load(&["--max-pending", "0"], &[("IOT_WS_MAX_PENDING", "x")]).unwrap_err().0;
    assert!(err.starts_with(r#"--max-pending: "0" "#), "{err}");
}

#[test]
fn help_and_version_are_asked_for_anywhere_on_the_line_and_per_command() {
    let ask = |list: &[&str]| match invocation(&args(list)) {
        Invocation::Help(command) => format!("help {command:?}"),
        Invocation::Version => "version".into(),
        Invocation::Run(command, rest) => format!("run {command:?} {rest:?}"),
    };
    let cases: &[(&[&str], &str)] = &[
        (&["--help"], "help Serve"),
        (&["-h"], "help Serve"),
        (&["help"], "help Serve"),
        (&["help", "keygen"], "help Keygen"),
        (&["help", "checktoken"], "help CheckToken"),
        (&["help", "nonsense"], "help Serve"),
        (&["--listen", "127.0.0.1:1", "--help"], "help Serve"),
        (&["--demo", "-h", "--bogus"], "help Serve"),
        (&["keygen", "--help"], "help Keygen"),
        (&["token", "--device-id", "d", "-h"], "help Token"),
        (&["checktoken", "TOKEN", "--help"], "help CheckToken"),
        (&["device", "--url", "ws://h/", "--help"], "help Device"),
        (&["actuate", "-h"], "help Actuate"),
        (&["--version"], "version"),
        (&["-V"], "version"),
        (&["version"], "version"),
        (&["--listen", "x", "--version"], "version"),
        (&["keygen", "-V"], "version"),
        (&["--help", "--version"], "help Serve"),
        (&[], "run Serve []"),
        (&["--listen", "x"], r#"run Serve ["--listen", "x"]"#),
        (&["keygen", "--dir", "k"], r#"run Keygen ["--dir", "k"]"#),
        (&["token"], "run Token []"),
        (&["checktoken", "T"], r#"run CheckToken ["T"]"#),
        (&["device"], "run Device []"),
        (&["actuate"], "run Actuate []"),
        // Only the first word names a command.
        (&["--demo", "keygen"], r#"run Serve ["--demo", "keygen"]"#),
        (&["stray", "version"], r#"run Serve ["stray", "version"]"#),
    ];
    for (list, expected) in cases {
        assert_eq!(ask(list), *expected, "{list:?}");
    }
}

#[test]
fn each_command_has_its_own_usage() {
    let commands =
        [Command::Serve, Command::Keygen, Command::Token, Command::CheckToken, Command::Device, Command::Actuate];
    let words = ["--listen", "keygen", "token", "checktoken", "device", "actuate"];
    for (command, word) in commands.into_iter().zip(words) {
        assert!(command.usage().contains(word), "{command:?}");
    }
    assert!(Command::Keygen.usage().starts_with("iot-ws-server keygen"));
    assert!(Command::Token.usage().starts_with("iot-ws-server token"));
    assert!(Command::CheckToken.usage().starts_with("iot-ws-server checktoken"));
    assert!(Command::Device.usage().starts_with("iot-ws-server device"));
    assert!(Command::Actuate.usage().starts_with("iot-ws-server actuate"));
}

#[test]
fn positional_arguments_are_taken_in_order_and_leftovers_refused() {
    let mut flags = Flags::parse(&args(&["one", "--device-id", "d", "two"]), &[]).unwrap();
    assert_eq!(flags.take("device-id").as_deref(), Some("d"));
    assert_eq!(flags.take_positional().as_deref(), Some("one"));
    let err = flags.finish().unwrap_err().0;
    assert_eq!(err, r#"unexpected argument "two" (see --help)"#);
    let mut flags = Flags::parse(&args(&["-"]), &[]).unwrap();
    assert_eq!(flags.take_positional().as_deref(), Some("-"));
    assert_eq!(flags.take_positional(), None);
    assert!(flags.finish().is_ok());
}

#[test]
fn the_actuator_password_and_the_database_url_may_come_from_files() {
    let dir = std::env::temp_dir().join(format!("iot-ws-secret-files-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (password, url) = (dir.join("password"), dir.join("url"));
    std::fs::write(&password, "pass word\n").unwrap();
    std::fs::write(&url, "host=from-file sslmode=wrong\n").unwrap();
    let (password, url) = (password.to_str().unwrap(), url.to_str().unwrap());

    let c = load(&["--actuator-username", "dash", "--actuator-password-file", password], &[]).unwrap();
    assert_eq!(c.actuator, Some(Credentials { username: "dash".into(), password: "pass word".into() }));
    assert_eq!(c.actuator_password_file.as_deref(), Some(std::path::Path::new(password)), "read again on SIGHUP");
    let vars = [("IOT_WS_ACTUATOR_USERNAME", "dash"), ("IOT_WS_ACTUATOR_PASSWORD_FILE", password)];
    let c = load(&[], &vars).unwrap();
    assert_eq!(c.actuator.unwrap().password, "pass word");
    assert_eq!(c.actuator_password_file.as_deref(), Some(std::path::Path::new(password)));
    // A password given as a value has no file to read again.
    let c = load(&["--actuator-username", "dash", "--actuator-password", "pw"], &[]).unwrap();
    assert_eq!((c.actuator.is_some(), c.actuator_password_file), (true, None));

    // The URL read from a file is checked like any other, and its errors name the file's setting.
    let err = load(&[], &[("DATABASE_URL_FILE", url)]).unwrap_err().0;
    assert!(err.starts_with("DATABASE_URL_FILE") && !err.contains("from-file"), "{err}");
    let err = load(&["--database-url-file", url], &[]).unwrap_err().0;
    assert!(err.starts_with("--database-url-file") && !err.contains("from-file"), "{err}");
    std::fs::write(dir.join("url"), "host=from-file\n").unwrap();
    let db = load(&[], &[("DATABASE_URL_FILE", url)]).unwrap().database_url.unwrap();
    assert_eq!(db, DatabaseUrl { url: "host=from-file".into(), origin: "DATABASE_URL_FILE".into() });
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn log_settings_come_from_the_flags_then_the_environment_and_errors_name_the_source() {
    let c = load(&[], &[]).unwrap();
    assert_eq!(c.log, logging::Settings::default());
    let env = [("IOT_WS_LOG", "warn,tokio_postgres=debug"), ("IOT_WS_LOG_FORMAT", "json")];
    let c = load(&[], &env).unwrap();
    assert_eq!(c.log.filter, logging::Filter::parse("warn,tokio_postgres=debug").unwrap());
    assert_eq!(c.log.format, logging::Format::Json);
    let c = load(&["--log", "error", "--log-format", "text"], &env).unwrap();
    assert_eq!(c.log.filter, logging::Filter::parse("error").unwrap());
    assert_eq!(c.log.format, logging::Format::Text);
    let err = load(&[], &[("IOT_WS_LOG", "loud")]).unwrap_err().0;
    assert!(err.starts_with(r#"IOT_WS_LOG: "loud" is not a level"#), "{err}");
    let err = load(&["--log-format", "xml"], &[]).unwrap_err().0;
    assert!(err.starts_with(r#"--log-format: "xml" is not a log format"#), "{err}");
}
