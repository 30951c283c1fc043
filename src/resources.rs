//! The process's own CPU time and memory, by pipeline thread: what a run cost (the summary's
//! `resources`: CPU seconds over all threads and per thread role, transactions per CPU
//! second, peak RSS) and what the daemon costs now (the `shieldtap_process_*` metrics).
//!
//! Transactions per CPU second over all threads is how this project measures its speed
//! (`benches/realistic.sh`); a replay of a user's own capture now reports it too, so a team
//! can size a sensor on its own traffic without the bench.
//!
//! - The process: `getrusage(RUSAGE_SELF)` (user and system time of every thread, those
//!   that have ended included; peak RSS) and `/proc/self/status` (RSS now).
//! - A pipeline thread holds a [`ThreadCpu`] for its life: when the thread ends (returns or
//!   unwinds) its CPU time (`getrusage(RUSAGE_THREAD)`, microseconds) is added to its
//!   role's total.
//! - Threads alive when asked are read from `/proc/self/task/*/stat` (clock ticks) and
//!   told apart by name (`shieldtap-worker-0` is a worker); the thread that asks is read
//!   with `getrusage(RUSAGE_THREAD)`.
//! - What no role accounts for (the metrics server, reloads, webhook and enforcement
//!   runtimes, start-up on threads that have ended) is `other`: the process total less the
//!   roles.
//!
//! Nothing here is on the packet path: it is read at the end of a run and at each scrape.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use nix::sys::resource::{UsageWho, getrusage};
use nix::sys::time::{TimeVal, TimeValLike};

/// What a thread of the pipeline does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Reading packets: the capture threads of `run`, the main thread of `replay`.
    Capture,
    /// Decoding, reassembly, HTTP, tokens and event building.
    Worker,
    /// The detect thread: ordering, the engine and (with `detect_shards = 0`) the rules.
    Detect,
    /// Detect shards on threads of their own (`[runtime] detect_shards`).
    Shard,
    /// The transaction-record writer.
    Writer,
    /// Everything else: the main thread of `run`, the metrics server, reloads, webhooks,
    /// enforcement.
    Other,
}

impl Role {
    pub const ALL: [Role; 6] = [
        Role::Capture,
        Role::Worker,
        Role::Detect,
        Role::Shard,
        Role::Writer,
        Role::Other,
    ];

    /// The label of the role in the summary and the metrics.
    pub fn label(self) -> &'static str {
        match self {
            Role::Capture => "capture",
            Role::Worker => "workers",
            Role::Detect => "detect",
            Role::Shard => "shards",
            Role::Writer => "writer",
            Role::Other => "other",
        }
    }

    /// The role of a thread by the name the pipeline gives it (cut to 15 bytes in
    /// `/proc`: `shieldtap-worke`).
    fn of_thread_name(name: &str) -> Role {
        const ROLES: [(&str, Role); 5] = [
            ("shieldtap-work", Role::Worker),
            ("shieldtap-dete", Role::Detect),
            ("shieldtap-capt", Role::Capture),
            ("shieldtap-shar", Role::Shard),
            ("shieldtap-writ", Role::Writer),
        ];
        ROLES
            .iter()
            .find(|(prefix, _)| name.starts_with(prefix))
            .map_or(Role::Other, |(_, r)| *r)
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// CPU microseconds of threads that have ended, by [`Role::index`].
static ENDED_US: [AtomicU64; Role::ALL.len()] = [const { AtomicU64::new(0) }; Role::ALL.len()];

/// The most each role has been reported at, in microseconds ([`Usage::now`]).
static REPORTED_US: [AtomicU64; Role::ALL.len()] = [const { AtomicU64::new(0) }; Role::ALL.len()];

/// The role of the process's main thread ([`Role::index`]): `other` unless a run says what
/// it does ([`main_thread_is`]).
static MAIN_ROLE: AtomicUsize = AtomicUsize::new(Role::Other as usize);

/// Says what the main thread does: `replay` reads the capture on it.
pub fn main_thread_is(role: Role) {
    MAIN_ROLE.store(role.index(), Ordering::Relaxed);
}

fn main_role() -> Role {
    let i = MAIN_ROLE.load(Ordering::Relaxed);
    Role::ALL.get(i).copied().unwrap_or(Role::Other)
}

/// Held by a pipeline thread for its life: its CPU time counts for `role` once it ends.
#[must_use = "the thread's time is counted when this is dropped, as the thread ends"]
pub struct ThreadCpu(Role);

impl ThreadCpu {
    pub fn start(role: Role) -> ThreadCpu {
        ThreadCpu(role)
    }
}

impl Drop for ThreadCpu {
    fn drop(&mut self) {
        ENDED_US[self.0.index()].fetch_add(this_thread_us(), Ordering::Relaxed);
    }
}

/// The calling thread's CPU time (user and system), in microseconds; 0 if unreadable.
fn this_thread_us() -> u64 {
    getrusage(UsageWho::RUSAGE_THREAD)
        .map_or(0, |u| micros(u.user_time()) + micros(u.system_time()))
}

fn micros(t: TimeVal) -> u64 {
    u64::try_from(t.num_microseconds()).unwrap_or(0)
}

/// The process's CPU time and memory at one moment.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Usage {
    pub user: Duration,
    pub system: Duration,
    /// CPU time by [`Role::index`]; `Other` is the total less the others. Each role's
    /// figure only grows, so while threads run and end they may add up to a little more
    /// than the total (a live thread's time is read in whole clock ticks); at the end of a
    /// run, every pipeline thread counted exactly, they add up to it.
    pub by_role: [Duration; Role::ALL.len()],
    /// Resident set now and at its peak, in bytes (0 when unreadable).
    pub rss_bytes: u64,
    pub peak_rss_bytes: u64,
}

impl Usage {
    /// Now: the process's totals, the threads that have ended and those alive by role
    /// (the calling thread read exactly, the others in clock ticks).
    pub fn now() -> Usage {
        let mut u = Usage::default();
        let me = rustix::thread::gettid().as_raw_nonzero().get();
        let pid = rustix::process::getpid().as_raw_nonzero().get();
        // RSS now is `VmRSS`, from per-CPU counters the kernel sums approximately (off by
        // up to a few hundred KiB); the peak is the kernel's exact high-water mark, what
        // `wait4` reports at exit. Read in this order, the two agree within that error.
        u.rss_bytes = std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| status_kib(&s, "VmRSS:"))
            .map_or(0, |k| k * 1024);
        if let Ok(r) = getrusage(UsageWho::RUSAGE_SELF) {
            u.user = Duration::from_micros(micros(r.user_time()));
            u.system = Duration::from_micros(micros(r.system_time()));
            // Linux reports the peak in KiB.
            u.peak_rss_bytes = u64::try_from(r.max_rss()).unwrap_or(0) * 1024;
        }
        let mut us = [0u64; Role::ALL.len()];
        for (r, ended) in us.iter_mut().zip(&ENDED_US) {
            *r = ended.load(Ordering::Relaxed);
        }
        let tick_us = tick_us();
        if let Ok(tasks) = std::fs::read_dir("/proc/self/task") {
            for t in tasks.flatten() {
                let Some(tid) = t.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
                    continue;
                };
                let Ok(stat) = std::fs::read_to_string(t.path().join("stat")) else {
                    // Ended while the list was read: its time is in the ended totals.
                    continue;
                };
                let Some((name, ticks)) = task_stat(&stat) else {
                    continue;
                };
                let role = if tid == pid {
                    main_role()
                } else {
                    Role::of_thread_name(name)
                };
                us[role.index()] += if tid == me {
                    this_thread_us()
                } else {
                    ticks * tick_us
                };
            }
        }
        let total = u.cpu();
        let mut named = Duration::ZERO;
        for (i, r) in us.iter().enumerate() {
            if i != Role::Other.index() {
                u.by_role[i] = Duration::from_micros(*r);
                named += u.by_role[i];
            }
        }
        // Ticks round down and a thread may end between the reads: never below zero.
        u.by_role[Role::Other.index()] = total.saturating_sub(named);
        // Each role's time only grows, as a counter must: a live thread read in whole ticks
        // (rounded down) and `other`, the remainder, could each read a few milliseconds
        // less than a moment before, which Prometheus would take for a restart.
        for (d, seen) in u.by_role.iter_mut().zip(&REPORTED_US) {
            let now = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
            *d = Duration::from_micros(seen.fetch_max(now, Ordering::Relaxed).max(now));
        }
        u
    }

    /// User and system time over all threads.
    pub fn cpu(&self) -> Duration {
        self.user + self.system
    }

    pub fn role(&self, r: Role) -> Duration {
        self.by_role[r.index()]
    }
}

/// Microseconds per clock tick of `/proc`'s times (`sysconf(_SC_CLK_TCK)` through libc:
/// rustix reads it from the auxiliary vector, which ended the process with SIGSEGV under
/// valgrind, whose instruction counts `benches/realistic.sh` relies on).
fn tick_us() -> u64 {
    use nix::unistd::{SysconfVar, sysconf};
    let per_sec = sysconf(SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .and_then(|t| u64::try_from(t).ok())
        .filter(|t| *t > 0)
        .unwrap_or(100);
    1_000_000 / per_sec
}

/// A `Vm*:` line of `/proc/self/status`, in KiB.
fn status_kib(status: &str, field: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

/// The name and user + system clock ticks of a `/proc/<pid>/task/<tid>/stat` line. The
/// name is in parentheses and may hold spaces and parentheses itself: the fields are read
/// after the last `)`.
fn task_stat(stat: &str) -> Option<(&str, u64)> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let name = stat.get(open + 1..close)?;
    let mut rest = stat.get(close + 1..)?.split_whitespace();
    // After the name: state (field 3) ... utime (14), stime (15).
    let utime: u64 = rest.nth(11)?.parse().ok()?;
    let stime: u64 = rest.next()?.parse().ok()?;
    Some((name, utime + stime))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thread_names_map_to_roles() {
        assert_eq!(Role::of_thread_name("shieldtap-worke"), Role::Worker);
        assert_eq!(Role::of_thread_name("shieldtap-detec"), Role::Detect);
        assert_eq!(Role::of_thread_name("shieldtap-captu"), Role::Capture);
        assert_eq!(Role::of_thread_name("shieldtap-shard"), Role::Shard);
        assert_eq!(Role::of_thread_name("shieldtap-write"), Role::Writer);
        assert_eq!(Role::of_thread_name("shieldtap-metri"), Role::Other);
        assert_eq!(Role::of_thread_name("tokio-runtime-w"), Role::Other);
    }

    #[test]
    fn task_stat_reads_name_and_ticks_after_the_last_parenthesis() {
        // A real line (`cat /proc/self/task/*/stat` of a worker), and a name holding a
        // parenthesis and a space as the kernel would show it.
        let line = "4242 (shieldtap-worke) S 4200 4200 4100 34816 4200 4194368 1549 0 0 0 \
                    331 22 0 0 20 0 6 0 123456 1000000 5000 18446744073709551615";
        assert_eq!(task_stat(line), Some(("shieldtap-worke", 353)));
        let odd = "7 (a) b (c) R 1 1 1 0 -1 0 0 0 0 0 5 7 0 0 20 0 1 0 1 1 1 1";
        assert_eq!(task_stat(odd), Some(("a) b (c", 12)));
        assert_eq!(task_stat("7 (cut"), None);
        assert_eq!(task_stat("7 (x) R 1 2"), None);
    }

    #[test]
    fn clock_ticks_are_this_hosts() {
        // Linux's USER_HZ: 100 ticks a second on every architecture this project builds for.
        assert_eq!(tick_us(), 10_000);
    }

    #[test]
    fn status_lines_in_kib() {
        let s = "Name:\tshieldtap\nVmHWM:\t  145296 kB\nVmRSS:\t  140000 kB\n";
        assert_eq!(status_kib(s, "VmRSS:"), Some(140_000));
        assert_eq!(status_kib(s, "VmHWM:"), Some(145_296));
        assert_eq!(status_kib(s, "VmSwap:"), None);
    }

    /// Keeps the calling thread busy until it has used `us` more microseconds of CPU (not
    /// of wall time: a loaded host stretches the wall time, not this).
    fn spin(us: u64) -> u64 {
        let until = this_thread_us() + us;
        let mut x = 0u64;
        while this_thread_us() < until {
            for _ in 0..10_000 {
                x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
            }
        }
        x
    }

    /// Read again and again while threads work and end, no role's time ever falls.
    #[test]
    fn every_role_only_grows() {
        let spinners: Vec<_> = (0..3)
            .map(|i| {
                std::thread::Builder::new()
                    .name(format!("shieldtap-worker-{i}"))
                    .spawn(move || {
                        let _cpu = ThreadCpu::start(Role::Worker);
                        spin(100_000 + 50_000 * i)
                    })
                    .expect("spawn")
            })
            .collect();
        let mut last = Usage::now();
        let start = std::time::Instant::now();
        while start.elapsed() < Duration::from_millis(300) {
            let u = Usage::now();
            for r in Role::ALL {
                assert!(u.role(r) >= last.role(r), "{r:?} fell: {last:?} then {u:?}");
            }
            last = u;
        }
        for s in spinners {
            s.join().expect("join");
        }
        // The three spins: 0.1, 0.15 and 0.2 s of CPU.
        assert!(Usage::now().role(Role::Worker) >= Duration::from_millis(450));
    }

    /// A thread that spins for a while and ends holding a [`ThreadCpu`] of a role is
    /// counted there, and the process total covers it.
    #[test]
    fn an_ended_thread_counts_for_its_role() {
        let before = Usage::now();
        std::thread::Builder::new()
            .name("shieldtap-writer".into())
            .spawn(|| {
                let _cpu = ThreadCpu::start(Role::Writer);
                spin(200_000)
            })
            .expect("spawn")
            .join()
            .expect("join");
        let after = Usage::now();
        let spun = after.role(Role::Writer) - before.role(Role::Writer);
        // At least the spin (other tests of this binary may end writer threads meanwhile).
        assert!(spun >= Duration::from_millis(200), "writer time {spun:?}");
        assert!(after.cpu() >= after.role(Role::Writer), "{after:?}");
        // `VmRSS` is summed from per-CPU counters, a few hundred KiB off at most.
        assert!(
            after.peak_rss_bytes + (1 << 20) >= after.rss_bytes && after.rss_bytes > 0,
            "{after:?}"
        );
        // How the roles add up to the whole is checked in a process of its own
        // (`tests/resources.rs`): here other tests' threads run and end meanwhile, and the
        // roles only grow, so they may add up to more than the total of this moment.
    }
}
