//! `steeple_build_info` and the standard `process_*` metrics every Prometheus client
//! library exposes (the same names, types and units), read from `/proc/self` at scrape
//! time. A reading that fails (no `/proc`) leaves its metric out rather than reporting 0.

use std::fmt::Write as _;

use super::{escape, header};

/// The cargo features compiled in, as `steeple_build_info` labels them.
const FEATURES: &[(&str, bool)] = &[
    ("aws", cfg!(feature = "aws")),
    ("vault", cfg!(feature = "vault")),
];

/// One reading of the process's resources.
#[derive(Debug, Default, Clone, PartialEq)]
pub(super) struct ProcessSample {
    cpu_seconds: Option<f64>,
    resident_bytes: Option<u64>,
    virtual_bytes: Option<u64>,
    start_time_seconds: Option<f64>,
    open_fds: Option<u64>,
    max_fds: Option<u64>,
}

/// The fields of `/proc/<pid>/stat` the metrics need, in the kernel's units.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stat {
    /// `utime` + `stime`, clock ticks.
    cpu_ticks: u64,
    /// `starttime`, clock ticks after boot.
    start_ticks: u64,
    /// `vsize`, bytes.
    virtual_bytes: u64,
    /// `rss`, pages.
    resident_pages: u64,
}

impl ProcessSample {
    /// Reads this process now.
    pub(super) fn read() -> Self {
        let read = |path: &str| std::fs::read_to_string(path).ok();
        let mut sample = Self::from_proc(
            read("/proc/self/stat").as_deref(),
            read("/proc/stat").as_deref(),
            rustix::param::clock_ticks_per_second(),
            rustix::param::page_size() as u64,
        );
        sample.open_fds = std::fs::read_dir("/proc/self/fd")
            .ok()
            .map(|entries| entries.count() as u64);
        sample.max_fds = rustix::process::getrlimit(rustix::process::Resource::Nofile).current;
        sample
    }

    /// What `/proc/self/stat` and `/proc/stat` (for the boot time) say, with the clock
    /// tick rate and page size they are counted in.
    fn from_proc(
        stat: Option<&str>,
        proc_stat: Option<&str>,
        ticks_per_second: u64,
        page_size: u64,
    ) -> Self {
        let Some(stat) = stat.and_then(parse_stat) else {
            return Self::default();
        };
        let ticks = ticks_per_second.max(1) as f64;
        let boot_time = proc_stat.and_then(parse_boot_time);
        Self {
            cpu_seconds: Some(stat.cpu_ticks as f64 / ticks),
            resident_bytes: Some(stat.resident_pages.saturating_mul(page_size)),
            virtual_bytes: Some(stat.virtual_bytes),
            start_time_seconds: boot_time.map(|boot| boot as f64 + stat.start_ticks as f64 / ticks),
            open_fds: None,
            max_fds: None,
        }
    }
}

/// `/proc/<pid>/stat`, read after the command name (which may hold spaces and
/// parentheses, so parsing starts after its last `)`).
fn parse_stat(stat: &str) -> Option<Stat> {
    let after_comm = &stat[stat.rfind(')')? + 1..];
    // After the comm comes field 3 (state): field n is index n - 3.
    let fields: Vec<&str> = after_comm.split_whitespace().collect();
    let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
    Some(Stat {
        cpu_ticks: field(14)?.saturating_add(field(15)?),
        start_ticks: field(22)?,
        virtual_bytes: field(23)?,
        resident_pages: field(24)?,
    })
}

/// The `btime` line of `/proc/stat`: boot time, Unix seconds.
fn parse_boot_time(proc_stat: &str) -> Option<u64> {
    proc_stat
        .lines()
        .find_map(|line| line.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()
}

/// `steeple_build_info` and the `process_*` metrics from `sample`.
pub(super) fn render(out: &mut String, sample: &ProcessSample) {
    header(
        out,
        "steeple_build_info",
        "gauge",
        "Always 1: the version and the cargo features compiled in.",
    );
    let features: Vec<&str> = FEATURES
        .iter()
        .filter(|(_, on)| *on)
        .map(|(name, _)| *name)
        .collect();
    let _ = writeln!(
        out,
        "steeple_build_info{{version=\"{}\",features=\"{}\"}} 1",
        escape(env!("CARGO_PKG_VERSION")),
        features.join(",")
    );
    render_process(out, sample);
}

/// The `process_*` metrics of `sample`; a reading that failed is left out, not shown as 0.
fn render_process(out: &mut String, sample: &ProcessSample) {
    let series: [(&str, &str, &str, Option<String>); 6] = [
        (
            "process_cpu_seconds_total",
            "counter",
            "Total user and system CPU time spent in seconds.",
            sample.cpu_seconds.map(|v| v.to_string()),
        ),
        (
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory size in bytes.",
            sample.resident_bytes.map(|v| v.to_string()),
        ),
        (
            "process_virtual_memory_bytes",
            "gauge",
            "Virtual memory size in bytes.",
            sample.virtual_bytes.map(|v| v.to_string()),
        ),
        (
            "process_start_time_seconds",
            "gauge",
            "Start time of the process since unix epoch in seconds.",
            sample.start_time_seconds.map(|v| v.to_string()),
        ),
        (
            "process_open_fds",
            "gauge",
            "Number of open file descriptors.",
            sample.open_fds.map(|v| v.to_string()),
        ),
        (
            "process_max_fds",
            "gauge",
            "Maximum number of open file descriptors.",
            sample.max_fds.map(|v| v.to_string()),
        ),
    ];
    for (name, kind, help, value) in series {
        if let Some(value) = value {
            header(out, name, kind, help);
            let _ = writeln!(out, "{name} {value}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `/proc/<pid>/stat` line whose command name holds spaces and parentheses.
    const STAT: &str = "4242 (steeple (x) y) S 1 4242 4242 0 -1 4194560 2741 0 0 0 150 75 0 0 \
                        20 0 9 0 123450 1073741824 2048 18446744073709551615 1 1 0 0 0 0 0 \
                        4096 17 1 0 0 0 0 0\n";
    const PROC_STAT: &str = "cpu  10 0 5 100 0 0 0 0 0 0\nbtime 1700000000\nprocesses 77\n";

    #[test]
    fn stat_fields_are_read_after_the_command_name() {
        assert_eq!(
            parse_stat(STAT),
            Some(Stat {
                cpu_ticks: 225,
                start_ticks: 123_450,
                virtual_bytes: 1_073_741_824,
                resident_pages: 2048,
            })
        );
        assert_eq!(parse_stat("4242 (steeple) S 1 2 3"), None);
        assert_eq!(parse_stat(""), None);
        assert_eq!(parse_boot_time(PROC_STAT), Some(1_700_000_000));
        assert_eq!(parse_boot_time("cpu  1 2 3\n"), None);
    }

    #[test]
    fn ticks_and_pages_become_seconds_and_bytes() {
        let sample = ProcessSample::from_proc(Some(STAT), Some(PROC_STAT), 100, 4096);
        assert_eq!(sample.cpu_seconds, Some(2.25));
        assert_eq!(sample.resident_bytes, Some(2048 * 4096));
        assert_eq!(sample.virtual_bytes, Some(1_073_741_824));
        assert_eq!(sample.start_time_seconds, Some(1_700_001_234.5));
        // No boot time: no start time, the rest stays.
        let sample = ProcessSample::from_proc(Some(STAT), None, 100, 4096);
        assert_eq!(sample.start_time_seconds, None);
        assert_eq!(sample.cpu_seconds, Some(2.25));
        assert_eq!(
            ProcessSample::from_proc(None, Some(PROC_STAT), 100, 4096),
            ProcessSample::default()
        );
    }

    #[test]
    fn rendered_with_the_client_libraries_names_and_missing_readings_left_out() {
        let mut sample = ProcessSample::from_proc(Some(STAT), Some(PROC_STAT), 100, 4096);
        sample.open_fds = Some(12);
        let mut out = String::new();
        render(&mut out, &sample);
        for line in [
            "# TYPE process_cpu_seconds_total counter",
            "process_cpu_seconds_total 2.25",
            "process_resident_memory_bytes 8388608",
            "process_virtual_memory_bytes 1073741824",
            "process_start_time_seconds 1700001234.5",
            "process_open_fds 12",
        ] {
            assert!(out.lines().any(|l| l == line), "{line} missing from\n{out}");
        }
        assert!(!out.contains("process_max_fds"), "{out}");
        let version = env!("CARGO_PKG_VERSION");
        let features = if cfg!(all(feature = "aws", feature = "vault")) {
            "aws,vault"
        } else if cfg!(feature = "aws") {
            "aws"
        } else if cfg!(feature = "vault") {
            "vault"
        } else {
            ""
        };
        let build_info =
            format!("steeple_build_info{{version=\"{version}\",features=\"{features}\"}} 1");
        assert!(out.lines().any(|l| l == build_info), "{out}");
    }

    #[test]
    fn this_process_is_read_from_proc() {
        let sample = ProcessSample::read();
        assert!(sample.resident_bytes.is_some_and(|b| b > 0), "{sample:?}");
        assert!(sample.virtual_bytes >= sample.resident_bytes, "{sample:?}");
        assert!(sample.open_fds.is_some_and(|n| n >= 3), "{sample:?}");
        assert!(sample.max_fds >= sample.open_fds, "{sample:?}");
        assert!(sample.cpu_seconds.is_some(), "{sample:?}");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        let started = sample.start_time_seconds.unwrap();
        assert!(
            started <= now + 1.0 && started > now - 86_400.0,
            "{started} vs {now}"
        );
    }
}
