//! The `process_*` metrics, named as Prometheus's client libraries name them, read from
//! `/proc/self` at each scrape (Linux only; elsewhere they are left out).

use std::fmt::Write;

/// What the kernel says about this process at one moment.
#[derive(Debug, PartialEq)]
pub struct Process {
    pub cpu_seconds: f64,
    pub resident_bytes: u64,
    pub virtual_bytes: u64,
    pub start_time_seconds: f64,
    pub open_fds: u64,
    pub max_fds: u64,
}

impl Process {
    /// Reads `/proc/self/stat`, `/proc/stat` (boot time) and `/proc/self/fd`; `None` if any is
    /// unreadable (not Linux, no `/proc`).
    pub fn read() -> Option<Process> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        let boot = std::fs::read_to_string("/proc/stat").ok()?;
        let btime = boot.lines().find_map(|l| l.strip_prefix("btime ")?.trim().parse().ok())?;
        // SAFETY: sysconf only reads the setting asked for.
        let (ticks, page) = unsafe { (libc::sysconf(libc::_SC_CLK_TCK), libc::sysconf(libc::_SC_PAGESIZE)) };
        let mut process = parse_stat(&stat, btime, u64::try_from(ticks).ok()?, u64::try_from(page).ok()?)?;
        // Less one: the directory handle that reads it.
        process.open_fds = std::fs::read_dir("/proc/self/fd").ok()?.count().saturating_sub(1) as u64;
        process.max_fds = soft_open_file_limit()?;
        Some(process)
    }

    /// Appends the families, each with its HELP and TYPE.
    pub fn render(&self, out: &mut String) {
        let rows: [(&str, &str, &str, f64); 6] = [
            ("process_cpu_seconds_total", "counter", "User and system CPU time, seconds.", self.cpu_seconds),
            ("process_resident_memory_bytes", "gauge", "Resident memory size, bytes.", self.resident_bytes as f64),
            ("process_virtual_memory_bytes", "gauge", "Virtual memory size, bytes.", self.virtual_bytes as f64),
            ("process_start_time_seconds", "gauge", "Start time, seconds since the epoch.", self.start_time_seconds),
            ("process_open_fds", "gauge", "Open file descriptors.", self.open_fds as f64),
            ("process_max_fds", "gauge", "Most open file descriptors (soft limit).", self.max_fds as f64),
        ];
        for (name, kind, help, value) in rows {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}");
        }
    }
}

/// `RLIMIT_NOFILE`'s soft limit, as `/proc/self/limits` shows it.
pub fn soft_open_file_limit() -> Option<u64> {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit only writes the struct it is given.
    let known = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0;
    // rlim_t is 32 bits on 32-bit ARM, 64 elsewhere.
    #[allow(clippy::unnecessary_cast)]
    known.then_some(limit.rlim_cur as u64)
}

/// The CPU time, memory and start time in a `/proc/[pid]/stat` line (proc(5)); `btime` is the
/// boot time (epoch seconds), `ticks` the clock ticks per second, `page` the page size.
fn parse_stat(stat: &str, btime: u64, ticks: u64, page: u64) -> Option<Process> {
    // The command name in parentheses may hold spaces and parentheses: fields start after the
    // last ')', with field 3 (state) first.
    let fields: Vec<&str> = stat.get(stat.rfind(')')? + 1..)?.split_whitespace().collect();
    let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
    let ticks = ticks.max(1) as f64;
    Some(Process {
        cpu_seconds: (field(14)? + field(15)?) as f64 / ticks,
        start_time_seconds: btime as f64 + field(22)? as f64 / ticks,
        virtual_bytes: field(23)?,
        resident_bytes: field(24)? * page,
        open_fds: 0,
        max_fds: 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_the_command_name_whatever_it_holds() {
        let stat = "4242 (iot ws) (x)) S 1 4242 4242 0 -1 4194560 900 0 0 0 250 150 0 0 20 0 3 0 \
                    12000 20971520 1536 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0";
        let p = parse_stat(stat, 1_700_000_000, 100, 4096).unwrap();
        assert_eq!(p.cpu_seconds, 4.0, "(250 + 150) ticks at 100 a second");
        assert_eq!(p.start_time_seconds, 1_700_000_120.0, "boot + 12000 ticks");
        assert_eq!((p.virtual_bytes, p.resident_bytes), (20_971_520, 1536 * 4096));
        assert_eq!(parse_stat("4242 (cut) S 1 2", 0, 100, 4096), None);
    }

    #[test]
    fn this_process_is_read_and_rendered() {
        let p = Process::read().expect("/proc on Linux");
        assert!(p.resident_bytes > 0 && p.open_fds >= 3 && p.max_fds >= p.open_fds, "{p:?}");
        let now = std::time::UNIX_EPOCH.elapsed().unwrap().as_secs_f64();
        assert!(p.start_time_seconds <= now + 1.0 && p.start_time_seconds > now - 86_400.0, "{p:?}");
        let mut out = String::new();
        p.render(&mut out);
        assert!(out.contains("# TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total "), "{out}");
        assert_eq!(out.lines().filter(|l| l.starts_with("# TYPE process_")).count(), 6, "{out}");
    }
}
