//! A network lab for the tests that need one: fresh network namespaces (removed on drop),
//! commands run in them, processes started in them and stopped on drop, and polling with a
//! deadline. Shared by `tests/netns.rs` and `tests/enforce_nginx.rs` (each includes it with
//! `#[path = "common/netlab.rs"] mod netlab;`).
#![allow(dead_code)]

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const ROOT: &str = env!("CARGO_MANIFEST_DIR");

pub fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0\n"))
}

pub fn run(args: &[&str]) -> Output {
    let o = Command::new(args[0])
        .args(&args[1..])
        .current_dir(ROOT)
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", args.join(" ")));
    assert!(
        o.status.success(),
        "{} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

pub fn ns(name: &str, args: &[&str]) -> Output {
    let mut v = vec!["ip", "netns", "exec", name];
    v.extend_from_slice(args);
    run(&v)
}

/// Namespaces removed on drop (their interfaces go with them).
pub struct Lab {
    pub names: Vec<String>,
    pub id: String,
}

impl Drop for Lab {
    fn drop(&mut self) {
        for n in &self.names {
            let _ = Command::new("ip").args(["netns", "del", n]).status();
        }
    }
}

impl Lab {
    pub fn ns(&self, role: &str) -> String {
        format!("st{role}{}", self.id)
    }

    pub fn dev(&self, role: &str) -> String {
        format!("{role}{}", self.id)
    }
}

pub struct Proc {
    pub child: Child,
    pub name: &'static str,
}

impl Proc {
    pub fn signal(&self, sig: &str) {
        let _ = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status();
    }

    pub fn wait(&mut self, limit: Duration) -> std::process::ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(s) = self.child.try_wait().expect("wait") {
                return s;
            }
            assert!(start.elapsed() < limit, "{} did not exit", self.name);
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn spawn(name: &'static str, netns: &str, args: &[&str], stderr: Option<&Path>) -> Proc {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", netns])
        .args(args)
        .current_dir(ROOT);
    cmd.stdout(Stdio::null());
    match stderr {
        Some(p) => cmd.stderr(std::fs::File::create(p).expect("log file")),
        None => cmd.stderr(Stdio::null()),
    };
    Proc {
        child: cmd.spawn().unwrap_or_else(|e| panic!("{name}: {e}")),
        name,
    }
}

pub fn wait_until(what: &str, limit: Duration, mut ok: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ok() {
        assert!(start.elapsed() < limit, "{what} not ready after {limit:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}
