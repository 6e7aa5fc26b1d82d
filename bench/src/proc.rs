//! What the bench reads about the server process from /proc, and its own file limit.
//!
//! The load generator shares the machine's cores with the server, so the server's cost is read
//! as the CPU time the kernel charged to its process, not inferred from wall-clock rates.

use std::time::Duration;

/// The server process being measured.
#[derive(Clone, Copy, Debug)]
pub struct ServerProc {
    pub pid: u32,
}

impl ServerProc {
    /// CPU time of the whole process, to the nanosecond where the kernel tells it (see
    /// [`run_time`]), else in clock ticks.
    pub fn cpu(&self) -> Option<Duration> {
        run_time(self.pid).or_else(|| cpu_time(self.pid, false))
    }

    /// Resident set size in KiB (`VmRSS`).
    pub fn rss_kib(&self) -> Option<u64> {
        rss_kib(self.pid)
    }
}

pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// The run time of process `pid`'s live threads, summed from /proc/PID/task/*/schedstat
/// (nanoseconds). `stat` counts clock ticks, 10 ms, a quarter of what 1,000 registrations cost the
/// server: too coarse for a phase of the bench. Threads that ended are not counted; the server's
/// threads live as long as it does.
pub fn run_time(pid: u32) -> Option<Duration> {
    let mut nanos = None;
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).ok()?.flatten() {
        // A thread that ends while the directory is read has no file left: it is skipped.
        let Ok(schedstat) = std::fs::read_to_string(task.path().join("schedstat")) else { continue };
        let ran: u64 = schedstat.split_whitespace().next()?.parse().ok()?;
        nanos = Some(nanos.unwrap_or(0) + ran);
    }
    nanos.map(Duration::from_nanos)
}

/// User + system CPU time of process `pid`; with `reaped_children`, plus that of the children it
/// has waited for (a PostgreSQL postmaster's ended backends).
pub fn cpu_time(pid: u32, reaped_children: bool) -> Option<Duration> {
    stat_cpu(&format!("/proc/{pid}"), reaped_children)
}

/// The CPU time in `dir`/stat (a process's, or a thread's under /proc/PID/task).
fn stat_cpu(dir: &str, reaped_children: bool) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("{dir}/stat")).ok()?;
    // The command name may contain spaces and parentheses: fields start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 to 17 of stat(5) are utime, stime, cutime, cstime; `rest` starts at field 3.
    let wanted = if reaped_children { 11..15 } else { 11..13 };
    let mut ticks = 0u64;
    for i in wanted {
        ticks += fields.get(i)?.parse::<u64>().ok()?;
    }
    Some(Duration::from_micros(ticks * 1_000_000 / clock_ticks()))
}

/// CPU time of each thread of process `pid` that is still alive, by thread name (the main
/// thread carries the program's), summed over threads of one name.
pub fn threads_cpu(pid: u32) -> Vec<(String, Duration)> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return Vec::new() };
    let mut by_name: Vec<(String, Duration)> = Vec::new();
    for tid in dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok()) {
        let name = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/comm")).unwrap_or_default();
        // /proc/TID/stat would give the whole process's figures: the thread's are under task/.
        let cpu = stat_cpu(&format!("/proc/{pid}/task/{tid}"), false).unwrap_or_default();
        match by_name.iter_mut().find(|(n, _)| n == name.trim()) {
            Some((_, total)) => *total += cpu,
            None => by_name.push((name.trim().to_string(), cpu)),
        }
    }
    by_name
}

/// The parent of process `pid`.
pub fn parent(pid: u32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|l| l.strip_prefix("PPid:"))?.trim().parse().ok()
}

/// The processes whose parent is `pid`.
pub fn children(pid: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else { return Vec::new() };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok()).filter(|&p| parent(p) == Some(pid)).collect()
}

fn clock_ticks() -> u64 {
    // SAFETY: sysconf only reads a constant of the C library.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 {
        ticks as u64
    } else {
        100
    }
}

/// Raises the soft limit on open files to the hard limit; returns the soft limit in force.
pub fn raise_file_limit() -> u64 {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit write to and read from the struct we own.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return 1024;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit { rlim_cur: limit.rlim_max, rlim_max: limit.rlim_max };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit = raised;
            }
        }
    }
    limit.rlim_cur
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_time_counts_this_process_to_well_under_a_tick() {
        let pid = std::process::id();
        let before = run_time(pid).expect("schedstat is readable on Linux");
        // Spin for 3 ms of this thread's CPU: less than one 10 ms tick, which stat would miss.
        let spun = crate::floor::thread_cpu();
        while crate::floor::thread_cpu() - spun < Duration::from_millis(3) {
            std::hint::black_box(0u64);
        }
        let ran = run_time(pid).unwrap() - before;
        assert!(ran >= Duration::from_millis(3), "{ran:?}");
        assert!(run_time(u32::MAX).is_none());
    }
}
