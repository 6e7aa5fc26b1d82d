//! `GET /metrics` read by a real Prometheus text-format parser: every family typed, the
//! `process_*` and build families there, actuation outcomes that add up, accept errors counted,
//! and `--metrics-listen` moving the metrics off the public port.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use iot_ws_tests::client::{http_get, http_raw};
use iot_ws_tests::{actuation, eventually, run_to_exit, Client, Server, ServerOpts, ACTUATOR, WAIT};
use openmetrics_parser::prometheus::parse_prometheus;
use openmetrics_parser::{MetricsExposition, PrometheusType, PrometheusValue};

type Scrape = MetricsExposition<PrometheusType, PrometheusValue>;

/// `/metrics` at `addr`, parsed whole.
fn scrape(addr: SocketAddr) -> Scrape {
    let (status, body) = http_get(addr, "/metrics");
    assert_eq!(status, 200, "GET /metrics: {body}");
    parse_prometheus(&body).unwrap_or_else(|e| panic!("not Prometheus text ({e:?}):\n{body}"))
}

/// Each sample of family `name`, which must have type `kind`: its label values and value.
fn samples(scrape: &Scrape, name: &str, kind: PrometheusType) -> Vec<(Vec<String>, f64)> {
    let family = scrape.families.get(name).unwrap_or_else(|| panic!("no family {name}"));
    assert_eq!(family.family_type, kind, "{name}");
    family
        .iter_samples()
        .map(|s| {
            let value = match &s.value {
                PrometheusValue::Gauge(n) | PrometheusValue::Unknown(n) => n.as_f64(),
                PrometheusValue::Counter(c) => c.value.as_f64(),
                other => panic!("{name}: {other:?}"),
            };
            (s.get_labelset().map(|l| l.iter_values().cloned().collect()).unwrap_or_default(), value)
        })
        .collect()
}

/// The value of a family of one sample without labels.
fn single(scrape: &Scrape, name: &str, kind: PrometheusType) -> f64 {
    match samples(scrape, name, kind).as_slice() {
        [(labels, value)] if labels.is_empty() => *value,
        other => panic!("{name}: {other:?}"),
    }
}

/// `iot_ws_actuations_total` by outcome.
fn outcomes(scrape: &Scrape) -> Vec<(String, f64)> {
    let rows = samples(scrape, "iot_ws_actuations_total", PrometheusType::Counter);
    rows.into_iter().map(|(labels, n)| (labels.concat(), n)).collect()
}

#[test]
fn metrics_parse_with_process_and_build_families_and_outcomes_that_add_up() {
    let server = Server::start(ServerOpts::default());
    let started = std::time::UNIX_EPOCH.elapsed().unwrap().as_secs_f64();
    let mut device = Client::registered_on(&server, "lamp");
    let mut dashboard = Client::connect(server.addr);
    // Delivered; not connected (never seen); refused (wrong password).
    let (message, body) = actuation(ACTUATOR, "lamp", r#""n":1"#);
    dashboard.send(&message);
    device.expect_delivery("lamp", &body);
    dashboard.send(&actuation(ACTUATOR, "nobody", "").0);
    Client::connect(server.addr).send(&actuation(("dashboard", "wrong"), "lamp", "").0);
    // Held while the device is away, then delivered when it is back: one outcome, delivered.
    drop(device);
    server.wait_registered(0);
    let (message, held) = actuation(ACTUATOR, "lamp", r#""n":2"#);
    dashboard.send(&message);
    let counted = |name: &str| single(&scrape(server.addr), name, PrometheusType::Counter);
    assert!(eventually(WAIT, || (counted("iot_ws_actuations_held_total") == 1.0).then_some(())).is_some());
    let mut device = Client::registered_on(&server, "lamp");
    device.expect_delivery("lamp", &held);

    let expected = [("delivered", 2.0), ("not_connected", 1.0), ("refused", 1.0)];
    let settled = eventually(WAIT, || {
        let rows = outcomes(&scrape(server.addr));
        let all = expected.iter().all(|(o, n)| rows.iter().any(|(label, got)| label == o && got == n));
        all.then_some(rows)
    });
    let rows = settled.unwrap_or_else(|| panic!("outcomes never settled: {:?}", outcomes(&scrape(server.addr))));
    assert_eq!(rows.iter().map(|(_, n)| n).sum::<f64>(), 4.0, "one outcome per actuation: {rows:?}");
    let labels: Vec<&str> = rows.iter().map(|(l, _)| l.as_str()).collect();
    for gone in ["held", "received", "lost_in_transit"] {
        assert!(!labels.contains(&gone), "{gone} is not an outcome: {labels:?}");
    }

    let s = scrape(server.addr);
    assert_eq!(single(&s, "iot_ws_actuations_held_total", PrometheusType::Counter), 1.0);
    assert_eq!(single(&s, "iot_ws_actuations_received_total", PrometheusType::Counter), 0.0);
    assert_eq!(single(&s, "iot_ws_actuations_lost_in_transit_total", PrometheusType::Counter), 0.0);
    assert_eq!(single(&s, "iot_ws_accept_errors_total", PrometheusType::Counter), 0.0);

    let (_, version, _) = run_to_exit(&["--version"], &[], WAIT);
    let version = version.trim().strip_prefix("iot-ws-server ").expect("iot-ws-server VERSION").to_string();
    assert_eq!(samples(&s, "iot_ws_build_info", PrometheusType::Gauge), [(vec![version], 1.0)]);

    let gauge = |name: &str| single(&s, name, PrometheusType::Gauge);
    assert!(single(&s, "process_cpu_seconds_total", PrometheusType::Counter) >= 0.0);
    let rss = gauge("process_resident_memory_bytes");
    assert!(rss > 1e6 && rss < 1e9, "resident {rss} B");
    assert!(gauge("process_virtual_memory_bytes") >= rss);
    // The listener, the device, the dashboard, the scrape itself, stdio.
    let (open, max) = (gauge("process_open_fds"), gauge("process_max_fds"));
    assert!(open >= 7.0 && open < max, "{open} open of {max}");
    let start = gauge("process_start_time_seconds");
    assert!((start - started).abs() < 30.0, "started at {start}, the test saw it start at {started}");
    // And the families that were there before, all typed.
    for (name, kind) in [
        ("iot_ws_connections", PrometheusType::Gauge),
        ("iot_ws_registrations_total", PrometheusType::Counter),
        ("iot_ws_connections_refused_total", PrometheusType::Counter),
        ("iot_ws_log_lines_dropped_total", PrometheusType::Counter),
    ] {
        samples(&s, name, kind);
    }
    assert!(s.families.values().all(|f| f.family_type != PrometheusType::Unknown));
}

#[test]
fn failed_accepts_are_counted_when_the_server_runs_out_of_file_descriptors() {
    // No connection cap below the descriptor limit: accepts themselves fail (EMFILE).
    let opts = ServerOpts::default().arg("--max-connections", "1000");
    let server = Server::start_with_nofile(opts, 48);
    let flood: Vec<TcpStream> = (0..80).filter_map(|_| TcpStream::connect_timeout(&server.addr, WAIT).ok()).collect();
    server.wait_for_log("accept failed", WAIT).expect("an accept fails");
    drop(flood);
    let errors = eventually(WAIT, || {
        let (status, body) = http_get(server.addr, "/metrics");
        let s = (status == 200).then(|| parse_prometheus(&body).expect("Prometheus text"))?;
        let n = single(&s, "iot_ws_accept_errors_total", PrometheusType::Counter);
        (n >= 1.0).then_some(n)
    });
    assert!(errors.is_some(), "no accept error counted; stderr:\n{}", server.log());
}

/// The address in `metrics on http://ADDR/metrics`.
fn metrics_addr(server: &Server) -> SocketAddr {
    let line = server.wait_for_log("metrics on http://", WAIT).expect("the metrics address is logged");
    let addr = line.split("http://").nth(1).and_then(|rest| rest.strip_suffix("/metrics")).expect(&line);
    addr.parse().expect(&line)
}

#[test]
fn metrics_listen_serves_metrics_there_and_the_public_port_404s_them() {
    let server = Server::start(ServerOpts::default().arg("--metrics-listen", "127.0.0.1:0"));
    let private = metrics_addr(&server);
    assert_eq!(http_get(server.addr, "/metrics").0, 404);
    assert_eq!(http_get(server.addr, "/health"), (200, "ok\n".into()));
    let _device = Client::registered_on(&server, "lamp");

    let s = scrape(private);
    assert_eq!(single(&s, "iot_ws_registered_devices", PrometheusType::Gauge), 1.0);
    assert_eq!(http_get(private, "/health"), (200, "ok\n".into()));
    assert_eq!(http_get(private, "/ready"), (200, "ok\n".into()));
    assert_eq!(http_get(private, "/").0, 404);
    let upgrade = "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                   Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
                   Sec-WebSocket-Protocol: echo-protocol\r\n\r\n";
    assert_eq!(http_raw(private, upgrade.as_bytes()).0, 404, "no WebSocket on the metrics port");
    assert_eq!(http_raw(private, b"NONSENSE\r\n\r\n").0, 400);
}

#[test]
fn the_metrics_port_caps_its_connections_and_closes_silent_ones_at_its_deadline() {
    let server = Server::start(ServerOpts::default().arg("--metrics-listen", "127.0.0.1:0"));
    let private = metrics_addr(&server);
    let silent: Vec<TcpStream> = (0..8).map(|_| TcpStream::connect_timeout(&private, WAIT).unwrap()).collect();
    std::thread::sleep(Duration::from_millis(300));
    // Over the cap: closed with no answer.
    let mut ninth = TcpStream::connect_timeout(&private, WAIT).unwrap();
    ninth.set_read_timeout(Some(WAIT)).unwrap();
    let _ = ninth.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    let mut answer = Vec::new();
    let _ = ninth.read_to_end(&mut answer);
    assert!(answer.is_empty(), "a ninth connection is closed unanswered: {:?}", String::from_utf8_lossy(&answer));
    // The silent ones are closed at the deadline (5 s), and their places are free again.
    let since = Instant::now();
    for mut s in silent {
        s.set_read_timeout(Some(WAIT)).unwrap();
        let mut rest = Vec::new();
        let _ = s.write_all(b"GET");
        assert!(matches!(s.read_to_end(&mut rest), Ok(0) | Err(_)), "{rest:?}");
    }
    let waited = since.elapsed();
    assert!(waited > Duration::from_secs(3) && waited < Duration::from_secs(8), "closed after {waited:?}");
    scrape(private);
    // The public port was never affected.
    assert_eq!(http_get(server.addr, "/health").0, 200);
}
