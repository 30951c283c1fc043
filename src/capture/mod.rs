//! Capture: frames with packet timestamps from capture files, stdin or live interfaces.
//!
//! Input: pcap or pcapng files (several, read in order; `-` is stdin), or interfaces opened
//! with libpcap through the `pcap` crate (kernel buffer size, snaplen, BPF, nanosecond
//! timestamps; ring blocks, or immediate mode on request). Output: borrowed [`Frame`]s
//! handed to a callback, so a frame is never copied here. Owns the file readers
//! (pcap-parser, streaming in constant memory) and the live handles. A file that is not a
//! capture, or is empty, is a [`CaptureError`]; a file cut short (a truncated last record)
//! or corrupt mid-way stops that file, is counted in [`CaptureStats`] and the run goes on
//! with the next file.

mod time;

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use pcap_parser::pcapng::Block;
use pcap_parser::{PcapBlockOwned, PcapError, create_reader};

pub use time::Timestamp;

/// One captured frame, borrowed from the reader's buffer.
#[derive(Clone, Copy, Debug)]
pub struct Frame<'a> {
    pub ts: Timestamp,
    /// pcap `LINKTYPE_*` number of the interface that captured it.
    pub linktype: u32,
    pub data: &'a [u8],
    /// Length of the frame on the wire (larger than `data` when snaplen cut it).
    pub wire_len: u32,
}

/// Counters of the capture stage.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct CaptureStats {
    pub files: u64,
    pub frames: u64,
    pub bytes: u64,
    /// Files that ended inside a record (e.g. tcpdump killed mid-write).
    pub truncated_files: u64,
    /// Files abandoned at a corrupt block.
    pub corrupt_files: u64,
    /// Frames whose captured length is below their wire length.
    pub snaplen_cut_frames: u64,
    /// Frames of link types the decoder does not handle.
    pub unsupported_linktype_frames: u64,
    /// Live capture: packets the kernel delivered to libpcap.
    pub kernel_received: u64,
    /// Live capture: packets dropped by the kernel (buffer full).
    pub kernel_dropped: u64,
    /// Live capture: packets dropped by the interface or driver.
    pub interface_dropped: u64,
}

impl CaptureStats {
    pub fn merge(&mut self, o: &CaptureStats) {
        self.files += o.files;
        self.frames += o.frames;
        self.bytes += o.bytes;
        self.truncated_files += o.truncated_files;
        self.corrupt_files += o.corrupt_files;
        self.snaplen_cut_frames += o.snaplen_cut_frames;
        self.unsupported_linktype_frames += o.unsupported_linktype_frames;
        self.kernel_received += o.kernel_received;
        self.kernel_dropped += o.kernel_dropped;
        self.interface_dropped += o.interface_dropped;
    }
}

/// Split taps (`run` on several interfaces): how each worker merged its capture threads'
/// segments into packet-time order (summary JSON `split`; see `runtime::merge`).
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct SplitStats {
    /// Segments that went through the merge (0 with a single input).
    pub segments: u64,
    /// Segments released before a lagging input caught up: that input was more than
    /// `split_window_ms` of packet time behind the most advanced one.
    pub held_too_long: u64,
    /// Segments that arrived behind segments already released (their input lagged past the
    /// window, or its port stamped packets out of order): processed out of packet-time order.
    pub arrived_late: u64,
    /// How far (microseconds of packet time) the worst of those was behind the release
    /// point: how much longer the merge would have had to hold segments to order it.
    pub arrived_late_by_max_us: u64,
    /// Segments released early because held payload reached `split_hold_max_mib`.
    pub hold_cap_hits: u64,
    /// Most payload bytes one worker held for ordering.
    pub held_bytes_peak: u64,
}

impl SplitStats {
    pub fn merge(&mut self, o: &SplitStats) {
        self.segments += o.segments;
        self.held_too_long += o.held_too_long;
        self.arrived_late += o.arrived_late;
        self.arrived_late_by_max_us = self.arrived_late_by_max_us.max(o.arrived_late_by_max_us);
        self.hold_cap_hits += o.hold_cap_hits;
        self.held_bytes_peak = self.held_bytes_peak.max(o.held_bytes_peak);
    }
}

/// Why a capture could not be read at all.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CaptureError {
    #[error("{path}: cannot open: {source}")]
    Open { path: PathBuf, source: io::Error },
    #[error("{path}: empty file, not a capture")]
    Empty { path: PathBuf },
    #[error("{path}: not a pcap or pcapng capture (unrecognised header)")]
    NotACapture { path: PathBuf },
    #[error("{path}: cannot read: {reason}")]
    Read { path: PathBuf, reason: String },
    #[error(
        "interface {interface}: {reason}{}",
        if *.permission { " (capturing needs CAP_NET_RAW, and CAP_NET_ADMIN for promiscuous mode; run as root or `setcap cap_net_raw,cap_net_admin=eip` on the binary)" } else { "" }
    )]
    Live {
        interface: String,
        reason: String,
        permission: bool,
    },
}

/// Per-file outcome that does not stop the run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FileEnd {
    Complete,
    Truncated,
    Corrupt(String),
}

/// Progress so far, shared with a progress display and the metrics: file bytes read,
/// frames and their bytes, and (live) the kernel's counters, refreshed about once a second.
#[derive(Clone, Default)]
pub struct Progress {
    pub bytes: Arc<AtomicU64>,
    pub frames: Arc<AtomicU64>,
    pub frame_bytes: Arc<AtomicU64>,
    pub kernel_received: Arc<AtomicU64>,
    pub kernel_dropped: Arc<AtomicU64>,
    pub interface_dropped: Arc<AtomicU64>,
}

struct CountingReader<R> {
    inner: R,
    bytes: Arc<AtomicU64>,
}

impl<R: Read> Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.bytes.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// Size of the reader's buffer; a record larger than this is corrupt (snaplen is at most
/// 262144 in practice).
const READ_BUFFER: usize = 1 << 20;

/// Reads one capture file (or stdin for `-`), calling `on_frame` for each packet.
pub fn read_file(
    path: &Path,
    progress: &Progress,
    stats: &mut CaptureStats,
    on_frame: &mut dyn FnMut(Frame<'_>),
) -> Result<FileEnd, CaptureError> {
    let input: Box<dyn Read + Send> = if path == Path::new("-") {
        Box::new(io::stdin())
    } else {
        Box::new(File::open(path).map_err(|source| CaptureError::Open {
            path: path.into(),
            source,
        })?)
    };
    let input = CountingReader {
        inner: input,
        bytes: progress.bytes.clone(),
    };
    let mut reader = match create_reader(READ_BUFFER, input) {
        Ok(r) => r,
        Err(PcapError::Eof) => return Err(CaptureError::Empty { path: path.into() }),
        Err(PcapError::HeaderNotRecognized) | Err(PcapError::Incomplete(_)) => {
            return Err(CaptureError::NotACapture { path: path.into() });
        }
        Err(e) => {
            return Err(CaptureError::Read {
                path: path.into(),
                reason: e.to_string(),
            });
        }
    };
    stats.files += 1;
    // Legacy pcap: one link type and resolution for the file. pcapng: per interface.
    let mut legacy_linktype: u32 = 1;
    let mut legacy_nanos = false;
    let mut interfaces: Vec<(u32, u64, i64)> = Vec::new();
    loop {
        let at = reader.consumed() as u64;
        match reader.next() {
            Ok((offset, block)) => {
                match block {
                    PcapBlockOwned::LegacyHeader(h) => {
                        legacy_linktype = h.network.0 as u32;
                        legacy_nanos = h.is_nanosecond_precision();
                    }
                    PcapBlockOwned::Legacy(b) => {
                        let frac = u64::from(b.ts_usec) * if legacy_nanos { 1 } else { 1000 };
                        let ts = Timestamp::from_secs_nanos(u64::from(b.ts_sec), frac);
                        let len = (b.caplen as usize).min(b.data.len());
                        emit(
                            stats,
                            progress,
                            on_frame,
                            ts,
                            legacy_linktype,
                            &b.data[..len],
                            b.origlen,
                        );
                    }
                    PcapBlockOwned::NG(Block::SectionHeader(_)) => interfaces.clear(),
                    PcapBlockOwned::NG(Block::InterfaceDescription(idb)) => {
                        let res = idb.ts_resolution().unwrap_or(1_000_000);
                        interfaces.push((idb.linktype.0 as u32, res, idb.ts_offset()));
                    }
                    PcapBlockOwned::NG(Block::EnhancedPacket(epb)) => {
                        let (linktype, res, off) = interfaces
                            .get(epb.if_id as usize)
                            .copied()
                            .unwrap_or((1, 1_000_000, 0));
                        let units = (u64::from(epb.ts_high) << 32) | u64::from(epb.ts_low);
                        let ts = ts_from_units(units, res, off);
                        let len = (epb.caplen as usize).min(epb.data.len());
                        emit(
                            stats,
                            progress,
                            on_frame,
                            ts,
                            linktype,
                            &epb.data[..len],
                            epb.origlen,
                        );
                    }
                    PcapBlockOwned::NG(Block::SimplePacket(spb)) => {
                        let linktype = interfaces.first().map_or(1, |i| i.0);
                        let len = (spb.origlen as usize).min(spb.data.len());
                        // Simple packet blocks carry no timestamp.
                        emit(
                            stats,
                            progress,
                            on_frame,
                            Timestamp::ZERO,
                            linktype,
                            &spb.data[..len],
                            spb.origlen,
                        );
                    }
                    PcapBlockOwned::NG(_) => {}
                }
                // Not `consume`, which moves the unread half of the buffer to its start
                // whenever half is read (a second copy of every byte of the capture):
                // `refill` moves only the partial record left at the end.
                reader.consume_noshift(offset);
            }
            Err(PcapError::Eof) => return Ok(FileEnd::Complete),
            Err(PcapError::Incomplete(_)) => {
                if reader.reader_exhausted() {
                    stats.truncated_files += 1;
                    return Ok(FileEnd::Truncated);
                }
                if let Err(e) = reader.refill() {
                    stats.corrupt_files += 1;
                    return Ok(FileEnd::Corrupt(corrupt(&e, at)));
                }
            }
            Err(PcapError::UnexpectedEof) => {
                stats.truncated_files += 1;
                return Ok(FileEnd::Truncated);
            }
            Err(e) => {
                stats.corrupt_files += 1;
                return Ok(FileEnd::Corrupt(corrupt(&e, at)));
            }
        }
    }
}

/// Why a file stopped at a corrupt block that starts at byte `offset` of the file: where,
/// and the parser's words without the bytes it was given (pcap-parser's message ends with
/// the input it failed on, as a list of numbers, or `input []`).
fn corrupt(e: &PcapError<&[u8]>, offset: u64) -> String {
    match e {
        PcapError::NomError(_, kind) | PcapError::OwnedNomError(_, kind) => {
            format!("block at byte {offset} does not parse ({kind:?})")
        }
        PcapError::BufferTooSmall => format!(
            "record at byte {offset} is larger than {} MiB",
            READ_BUFFER >> 20
        ),
        e => format!("{e} at byte {offset}"),
    }
}

fn emit(
    stats: &mut CaptureStats,
    progress: &Progress,
    on_frame: &mut dyn FnMut(Frame<'_>),
    ts: Timestamp,
    linktype: u32,
    data: &[u8],
    wire_len: u32,
) {
    stats.frames += 1;
    stats.bytes += data.len() as u64;
    if (data.len() as u64) < u64::from(wire_len) {
        stats.snaplen_cut_frames += 1;
    }
    progress.frames.fetch_add(1, Ordering::Relaxed);
    progress
        .frame_bytes
        .fetch_add(data.len() as u64, Ordering::Relaxed);
    on_frame(Frame {
        ts,
        linktype,
        data,
        wire_len,
    });
}

/// pcapng timestamp units at `res` units per second, plus an offset in seconds.
fn ts_from_units(units: u64, res: u64, offset_secs: i64) -> Timestamp {
    let res = res.max(1);
    let secs = (units / res).saturating_add_signed(offset_secs);
    let frac = units % res;
    let nanos = (u128::from(frac) * 1_000_000_000 / u128::from(res)) as u64;
    Timestamp::from_secs_nanos(secs, nanos)
}

/// Live capture settings (config section `[capture]` and `run` flags).
#[derive(Clone, Debug)]
pub struct LiveConfig {
    pub snaplen: i32,
    pub buffer_size_bytes: i32,
    pub promiscuous: bool,
    /// libpcap's immediate mode: every packet handed over at once. Off by default: ring
    /// blocks are then handed over when full or after `poll_timeout_ms`, and on this
    /// project's live bench (100,000 packets/s on two shared cores) the kernel ring lost
    /// packets in 9 of 15 runs with immediate mode and in none of 16 without it.
    pub immediate: bool,
    pub bpf: Option<String>,
    /// libpcap's read timeout, in milliseconds: outside immediate mode, the longest a
    /// ring block waits before it is handed over partly filled.
    pub poll_timeout_ms: i32,
    /// Several interfaces (split taps, one direction each): how far in packet time one
    /// input may run ahead of another and still be merged in order.
    pub split_window: std::time::Duration,
    /// Several interfaces: payload bytes each worker may hold for that merge.
    pub split_hold_max_bytes: usize,
    /// Niceness of each capture thread (`None`: inherited). A busy port on few cores
    /// shares them with the workers and detection; a capture thread that waits for a core
    /// lets the kernel ring fill, and what overflows it is lost before shieldtap sees it.
    pub nice: Option<i32>,
}

impl Default for LiveConfig {
    fn default() -> Self {
        LiveConfig {
            snaplen: 262_144,
            buffer_size_bytes: 64 << 20,
            promiscuous: true,
            immediate: false,
            bpf: None,
            poll_timeout_ms: 100,
            split_window: std::time::Duration::from_millis(1000),
            split_hold_max_bytes: 64 << 20,
            nice: None,
        }
    }
}

/// Sets the calling thread's niceness (Linux keeps one per thread). Lowering it below the
/// inherited value needs `CAP_SYS_NICE` (or root).
pub fn set_thread_nice(nice: i32) -> io::Result<()> {
    rustix::process::setpriority_process(Some(rustix::thread::gettid()), nice)
        .map_err(io::Error::from)
}

/// Captures from one interface until `stop` is set, calling `on_frame` per packet and
/// `on_idle` when a poll passes without packets (so packet time can be advanced).
pub fn capture_live(
    interface: &str,
    cfg: &LiveConfig,
    stop: &AtomicBool,
    stats: &mut CaptureStats,
    progress: &Progress,
    on_frame: &mut dyn FnMut(Frame<'_>),
    on_idle: &mut dyn FnMut(),
) -> Result<(), CaptureError> {
    let live_err = |e: pcap::Error| {
        let reason = e.to_string();
        let lower = reason.to_ascii_lowercase();
        let permission = lower.contains("permission") || lower.contains("operation not permitted");
        CaptureError::Live {
            interface: interface.to_string(),
            reason,
            permission,
        }
    };
    let inactive = pcap::Capture::from_device(interface)
        .map_err(live_err)?
        .snaplen(cfg.snaplen)
        .buffer_size(cfg.buffer_size_bytes)
        .promisc(cfg.promiscuous)
        .immediate_mode(cfg.immediate)
        .timeout(cfg.poll_timeout_ms)
        .precision(pcap::Precision::Nano);
    // Non-blocking: libpcap on Linux (TPACKET_V3) may keep polling past its timeout while
    // no packet arrives, and an idle port must still advance packet time (`on_idle`).
    let mut cap = inactive
        .open()
        .and_then(|c| c.setnonblock())
        .map_err(live_err)?;
    if let Some(bpf) = &cfg.bpf {
        cap.filter(bpf, true).map_err(live_err)?;
    }
    if let Some(nice) = cfg.nice {
        match set_thread_nice(nice) {
            Ok(()) => tracing::info!(interface, nice, "capture thread niceness set"),
            Err(e) => tracing::warn!(
                interface,
                nice,
                error = %e,
                "capture thread niceness not set (a negative value needs CAP_SYS_NICE); capturing at the inherited priority"
            ),
        }
    }
    tracing::info!(interface, "capture started");
    let linktype = cap.get_datalink().0 as u32;
    // libpcap on Linux (TPACKET_V3) may keep polling past its timeout while no packet
    // arrives, so a watcher wakes the blocked read with pcap_breakloop once `stop` is set.
    let breaker = cap.breakloop_handle();
    let done = AtomicBool::new(false);
    // After a stop, what arrived before it is read, not dropped with the ring.
    let drain = delivery_lag(cfg);
    let result = std::thread::scope(|scope| {
        scope.spawn(|| {
            while !stop.load(Ordering::Relaxed) && !done.load(Ordering::Relaxed) {
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            // The reader drains the ring first; this only wakes a read that blocks.
            let until = std::time::Instant::now() + drain + std::time::Duration::from_secs(1);
            while !done.load(Ordering::Relaxed) && std::time::Instant::now() < until {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            breaker.breakloop();
        });
        let r = read_live(
            &mut cap, stop, stats, progress, linktype, on_frame, on_idle, &live_err, drain,
        );
        done.store(true, Ordering::Relaxed);
        r
    });
    if let Ok(s) = cap.stats() {
        stats.kernel_received += u64::from(s.received);
        stats.kernel_dropped += u64::from(s.dropped);
        stats.interface_dropped += u64::from(s.if_dropped);
    }
    result
}

/// How often the kernel's packet counters are copied to [`Progress`].
const KERNEL_STATS_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

fn kernel_stats(cap: &mut pcap::Capture<pcap::Active>, progress: &Progress) {
    if let Ok(s) = cap.stats() {
        progress
            .kernel_received
            .store(u64::from(s.received), Ordering::Relaxed);
        progress
            .kernel_dropped
            .store(u64::from(s.dropped), Ordering::Relaxed);
        progress
            .interface_dropped
            .store(u64::from(s.if_dropped), Ordering::Relaxed);
    }
}

/// Pause between polls of an idle interface.
const IDLE_POLL: std::time::Duration = std::time::Duration::from_millis(5);

/// Longest the kernel holds a captured packet before handing it over: outside immediate
/// mode a partly filled ring block waits for its timer (`poll_timeout_ms`), plus a margin.
pub fn delivery_lag(cfg: &LiveConfig) -> std::time::Duration {
    if cfg.immediate {
        std::time::Duration::ZERO
    } else {
        std::time::Duration::from_millis(u64::try_from(cfg.poll_timeout_ms).unwrap_or(0) + 50)
    }
}

#[allow(clippy::too_many_arguments)]
fn read_live(
    cap: &mut pcap::Capture<pcap::Active>,
    stop: &AtomicBool,
    stats: &mut CaptureStats,
    progress: &Progress,
    linktype: u32,
    on_frame: &mut dyn FnMut(Frame<'_>),
    on_idle: &mut dyn FnMut(),
    live_err: &dyn Fn(pcap::Error) -> CaptureError,
    drain: std::time::Duration,
) -> Result<(), CaptureError> {
    let mut last_stats = std::time::Instant::now();
    let mut since_check = 0u32;
    let mut stop_at: Option<std::time::Instant> = None;
    loop {
        if stop.load(Ordering::Relaxed) {
            let at = *stop_at.get_or_insert_with(std::time::Instant::now);
            if at.elapsed() >= drain {
                break Ok(());
            }
        }
        since_check += 1;
        if since_check >= 256 {
            since_check = 0;
            if last_stats.elapsed() >= KERNEL_STATS_EVERY {
                last_stats = std::time::Instant::now();
                kernel_stats(cap, progress);
            }
        }
        match cap.next_packet() {
            Ok(p) => {
                // With nanosecond precision libpcap stores nanoseconds in tv_usec.
                let ts = Timestamp::from_secs_nanos(
                    u64::try_from(p.header.ts.tv_sec).unwrap_or(0),
                    u64::try_from(p.header.ts.tv_usec).unwrap_or(0),
                );
                emit(
                    stats,
                    progress,
                    on_frame,
                    ts,
                    linktype,
                    p.data,
                    p.header.len,
                );
            }
            Err(pcap::Error::TimeoutExpired) => {
                // Nothing buffered: the kernel ring holds what arrives meanwhile.
                since_check = 256;
                on_idle();
                std::thread::sleep(IDLE_POLL);
            }
            // pcap_breakloop: shutdown was asked for.
            Err(pcap::Error::NoMorePackets) => break Ok(()),
            Err(e) => break Err(live_err(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn nice_applies_to_the_calling_thread_only() {
        use rustix::process::getpriority_process;
        let own = |tid| getpriority_process(Some(tid)).expect("getpriority");
        let main = rustix::thread::gettid();
        let before = own(main);
        let target = (before + 3).min(19);
        let (tid, seen) = std::thread::spawn(move || {
            set_thread_nice(target).expect("raising one's own niceness is always allowed");
            let tid = rustix::thread::gettid();
            (tid, own(tid))
        })
        .join()
        .expect("thread");
        assert_ne!(tid, main);
        assert_eq!(seen, target);
        assert_eq!(own(main), before, "other threads keep theirs");
    }

    fn pcap_header(nanos: bool, linktype: u32) -> Vec<u8> {
        let magic: u32 = if nanos { 0xa1b2_3c4d } else { 0xa1b2_c3d4 };
        let mut v = Vec::new();
        v.extend_from_slice(&magic.to_le_bytes());
        v.extend_from_slice(&2u16.to_le_bytes());
        v.extend_from_slice(&4u16.to_le_bytes());
        v.extend_from_slice(&0i32.to_le_bytes());
        v.extend_from_slice(&0u32.to_le_bytes());
        v.extend_from_slice(&65535u32.to_le_bytes());
        v.extend_from_slice(&linktype.to_le_bytes());
        v
    }

    fn record(v: &mut Vec<u8>, sec: u32, frac: u32, data: &[u8], orig: u32) {
        v.extend_from_slice(&sec.to_le_bytes());
        v.extend_from_slice(&frac.to_le_bytes());
        v.extend_from_slice(&(data.len() as u32).to_le_bytes());
        v.extend_from_slice(&orig.to_le_bytes());
        v.extend_from_slice(data);
    }

    type ReadOutcome = (
        Result<FileEnd, CaptureError>,
        Vec<(Timestamp, u32, Vec<u8>)>,
        CaptureStats,
    );

    fn read_bytes(bytes: &[u8]) -> ReadOutcome {
        let mut f = tempfile::NamedTempFile::new().expect("temp file");
        f.write_all(bytes).expect("write");
        let mut frames = Vec::new();
        let mut stats = CaptureStats::default();
        let r = read_file(f.path(), &Progress::default(), &mut stats, &mut |fr| {
            frames.push((fr.ts, fr.linktype, fr.data.to_vec()))
        });
        (r, frames, stats)
    }

    #[test]
    fn reads_legacy_pcap_micro_and_nano() {
        for nanos in [false, true] {
            let mut v = pcap_header(nanos, 113);
            record(&mut v, 10, 5, b"abc", 3);
            record(&mut v, 11, 0, b"de", 60);
            let (r, frames, stats) = read_bytes(&v);
            assert_eq!(r.expect("reads"), FileEnd::Complete);
            assert_eq!(frames.len(), 2);
            let want = if nanos {
                10_000_000_005
            } else {
                10_000_005_000
            };
            assert_eq!(frames[0], (Timestamp(want), 113, b"abc".to_vec()));
            assert_eq!(stats.snaplen_cut_frames, 1);
        }
    }

    #[test]
    fn truncated_last_record_is_counted_not_fatal() {
        let mut v = pcap_header(false, 1);
        record(&mut v, 1, 0, b"full", 4);
        record(&mut v, 2, 0, b"cut-short", 9);
        v.truncate(v.len() - 4);
        let (r, frames, stats) = read_bytes(&v);
        assert_eq!(r.expect("reads"), FileEnd::Truncated);
        assert_eq!(frames.len(), 1);
        assert_eq!(stats.truncated_files, 1);
    }

    #[test]
    fn empty_and_garbage_files_are_clear_errors() {
        let (r, _, _) = read_bytes(b"");
        assert!(matches!(r, Err(CaptureError::Empty { .. })), "{r:?}");
        let (r, _, _) =
            read_bytes(b"GET / HTTP/1.1\r\nHost: x\r\n\r\nthis is not a capture at all");
        assert!(matches!(r, Err(CaptureError::NotACapture { .. })), "{r:?}");
    }

    #[test]
    fn garbage_after_header_is_counted() {
        let mut v = pcap_header(false, 1);
        record(&mut v, 1, 0, b"ok", 2);
        // A record claiming a 4 GB length.
        v.extend_from_slice(&[
            1, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        ]);
        v.extend_from_slice(&[0u8; 64]);
        let (r, frames, stats) = read_bytes(&v);
        assert_eq!(frames.len(), 1);
        let end = r.expect("reads");
        // The record starts after the 24-byte header and the 18-byte first record.
        assert_eq!(
            end,
            FileEnd::Corrupt("record at byte 42 is larger than 1 MiB".into())
        );
        assert_eq!(stats.corrupt_files, 1);
    }

    #[test]
    fn corrupt_block_is_named_by_offset_without_its_bytes() {
        // A real pcapng recording (Python's http.client over IPv6); the fifth block's
        // trailing length made to disagree with its leading one.
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/samples/httpclient-ipv6-any/capture.pcapng"
        );
        let mut v = std::fs::read(path).expect("sample");
        let mut starts = Vec::new();
        let mut at = 0;
        while at + 8 <= v.len() {
            starts.push(at);
            let len = u32::from_le_bytes(v[at + 4..at + 8].try_into().expect("4 bytes"));
            at += len as usize;
        }
        assert!(starts.len() > 10, "{} blocks", starts.len());
        let (at, next) = (starts[4], starts[5]);
        let wrong = (next - at + 4) as u32;
        v[next - 4..next].copy_from_slice(&wrong.to_le_bytes());
        let (r, frames, stats) = read_bytes(&v);
        let FileEnd::Corrupt(reason) = r.expect("reads") else {
            panic!("not corrupt");
        };
        assert_eq!(stats.corrupt_files, 1);
        assert_eq!(
            reason,
            format!("block at byte {at} does not parse (Verify)")
        );
        // The blocks before it: section, interface and the packets among the first four.
        let (_, all, _) = read_bytes(&std::fs::read(path).expect("sample"));
        assert!(frames.len() < all.len());
        assert_eq!(frames[..], all[..frames.len()]);
    }

    #[test]
    fn pcapng_resolution_and_offset() {
        assert_eq!(
            ts_from_units(1_500_000, 1_000_000, 0),
            Timestamp(1_500_000_000)
        );
        assert_eq!(
            ts_from_units(3_000_000_001, 1_000_000_000, 10),
            Timestamp(13_000_000_001)
        );
        // 2^-10 resolution.
        assert_eq!(ts_from_units(1024 + 512, 1024, 0), Timestamp(1_500_000_000));
    }

    #[test]
    fn missing_file_names_the_path() {
        let mut stats = CaptureStats::default();
        let r = read_file(
            Path::new("/nonexistent/x.pcap"),
            &Progress::default(),
            &mut stats,
            &mut |_| {},
        );
        let msg = r.expect_err("missing").to_string();
        assert!(msg.contains("/nonexistent/x.pcap"), "{msg}");
    }
}
