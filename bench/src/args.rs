//! Command-line flags: `--name value` pairs after the mode.

use std::collections::HashMap;

pub const USAGE: &str = "\
iot-ws-bench MODE [flags]   (loopback only; prints text, then one JSON line)

modes:
  all        every part below that the flags allow (idle and register first: use a fresh server)
  register   fresh-token registrations, then every device reconnecting with the same token
  idle       server RSS per registered idle connection (--idle-devices 1000,10000)
  actuate    actuations at full speed and paced; ping round trip. Full speed is bracketed by two
             loopback floor runs (see floor) with --devices sockets; reported: the server's CPU
             per actuation over their mean (issue 14's target: at most 1.2)
  floor      the loopback floor of one actuation, no server: one write() of the frame a device
             receives to each of --devices loopback sockets in turn (--floor-writes in all),
             drained by another thread; the writer thread's CPU per write (getrusage), median
             of --floor-runs
  ping       ping round trip only
  churn      every device reconnects while acked actuations flow: lost and duplicated
  storm      every device drops at once: time until every binding is false (needs --database-url)
  restart    restart storm: launches --server-bin itself with --database-url on --server's address
             (a free one if its port is 0), registers --storm-devices [19500], stops it
             (--restart-signal), launches it again, every device reconnects with the same token:
             time from the launch until every binding is true, reconnect latency, database CPU
             (its processes in /proc) (needs --private-key; never part of all)
  census     the server's live heap per connection by owner (task, WebSocket, buffers, hub, timer,
             reactor source...), pending (--census-pending) then registered (--census-devices):
             needs a server built with `--features heap-census` and --server-pid; never in all
  startup    launches --server-bin itself: time to \"listening on\" and idle RSS
  attack     a quiet baseline, then each attack for --seconds while a legitimate device registers
             and is actuated every 500 ms: its latencies (2 s limit) and the server's RSS
             (needs --private-key; --server-pid for RSS; never part of all)

flags (defaults in brackets):
  --server ws://127.0.0.1:5000     the server under test (wss://IP:PORT with --ca; not for attack)
  --ca PATH                        wss://: the PEM CA that signed the server's certificate
  --tls-name NAME [localhost]      wss://: the name its certificate must be for
  --server-pid PID                 read its CPU time and RSS from /proc (needed by idle)
  --private-key PATH               signs device tokens (the server's key pair)
  --devices N [1000]               fleet size for register, actuate and churn
  --idle-devices LIST [1000,10000] fleet sizes for idle
  --census-pending N [1000]        census: upgraded connections that never register
  --census-devices N [10000]       census: registered idle devices
  --storm-devices N [--devices]    fleet size for storm (restart: 19500)
  --concurrency N [256]            registrations in flight at once
  --actuations N [100000]          full-speed actuations
  --senders N [2]                  full-speed sender connections
  --window N [2000]                full-speed actuations in flight at most
  --paced-rate N [2000]            paced actuations per second
  --paced-secs S [5]               paced run length
  --pings N [2000]                 ping round trips
  --floor-writes N [--actuations]  writes of each loopback floor measurement
  --floor-runs N [3]               floor: measurements (the median is reported)
  --restart-signal term|kill [term] restart: how the first instance is stopped (kill: a crash,
                                   its bindings left true for the next instance to clear)
  --churn-secs S [10]              churn run length
  --churn-rate N [2000]            actuations per second during churn
  --actuator-username U [bench]    the server's --actuator-username
  --actuator-password P [bench]    the server's --actuator-password
  --database-url URL               the server's database, polled during the storm
  --server-bin PATH                for startup and restart
  --startup-runs N [5]             startup launches (the median is reported)
  --attacks LIST [all]             attack: pong-flood, cont-flood, ping-frame-flood, json-ping-flood,
                                   pending-pings, half-heads, stalled-reader, actuation-flood,
                                   held-flood, log-flood
  --seconds S [5]                  attack: length of each attack (and of the quiet baseline)
  --client-threads N [1]           bench executor threads
  --per-ip N [5000]                client sockets per 127.0.0.x source address

The server needs a file limit above the device count too (ulimit -n; the hard limit here is 20000).
";

/// Parsed flags.
pub struct Args {
    pub mode: String,
    values: HashMap<String, String>,
}

impl Args {
    pub fn parse(args: &[String]) -> Result<Args, String> {
        let mode = args.first().cloned().ok_or("a MODE is required")?;
        let mut values = HashMap::new();
        let mut rest = args[1..].iter();
        while let Some(flag) = rest.next() {
            let name = flag.strip_prefix("--").ok_or_else(|| format!("unexpected argument {flag:?}"))?;
            let value = rest.next().ok_or_else(|| format!("--{name} needs a value"))?;
            values.insert(name.to_string(), value.clone());
        }
        Ok(Args { mode, values })
    }

    pub fn string(&self, name: &str) -> Option<String> {
        self.values.get(name).cloned()
    }

    pub fn string_or(&self, name: &str, default: &str) -> String {
        self.string(name).unwrap_or_else(|| default.to_string())
    }

    pub fn number(&self, name: &str, default: u64) -> Result<u64, String> {
        match self.values.get(name) {
            None => Ok(default),
            Some(v) => v.parse().map_err(|_| format!("--{name} {v:?} is not a number")),
        }
    }

    pub fn list(&self, name: &str, default: &[u64]) -> Result<Vec<u64>, String> {
        match self.values.get(name) {
            None => Ok(default.to_vec()),
            Some(v) => v.split(',').map(|p| p.trim().parse().map_err(|_| format!("--{name} {v:?}: numbers"))).collect(),
        }
    }

    /// Flags nobody asked for are mistakes.
    pub fn check_known(&self) -> Result<(), String> {
        for name in self.values.keys() {
            if !USAGE.contains(&format!("--{name} ")) {
                return Err(format!("unknown flag --{name}"));
            }
        }
        Ok(())
    }
}
