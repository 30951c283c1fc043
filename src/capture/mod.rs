//! Capture: frames with timestamps from pcap/pcapng files, stdin or live interfaces.

mod time;

pub use time::Timestamp;
