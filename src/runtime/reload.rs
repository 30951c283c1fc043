//! Reload for `run`: SIGHUP reloads config and rules; a change in the rules folder reloads
//! the rules. Everything is read and compiled on this thread, off the packet path, then
//! swapped in whole ([`arc_swap`]); a file with any problem keeps what is running, logs
//! each problem as `file:line:col: message`, and is counted.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{RecvTimeoutError, Sender, channel};
use std::thread;
use std::time::Duration;

use notify::RecursiveMode;
use notify_debouncer_full::new_debouncer;

use super::{Judges, Shared};
use crate::config::Config;
use crate::rules;

/// Quiet time after the last change in the rules folder before it is reloaded: editors
/// write files in several steps.
const DEBOUNCE: Duration = Duration::from_millis(300);

/// What `run` reloads from.
#[derive(Clone, Debug, Default)]
pub struct ReloadSources {
    /// The `--config` file.
    pub config: Option<PathBuf>,
    /// The `--rules` folder (the built-in pack never changes).
    pub rules: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Trigger {
    Signal,
    RulesFolder,
}

/// The running reload machinery; [`Reloader::stop`] ends it.
pub(super) struct Reloader {
    done: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
    signals: Option<signal_hook::iterator::Handle>,
}

impl Reloader {
    pub fn stop(mut self) {
        self.done.store(true, Ordering::Relaxed);
        if let Some(s) = self.signals.take() {
            s.close();
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

pub(super) fn start(
    src: ReloadSources,
    shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
) -> Option<Reloader> {
    let (tx, rx) = channel::<Trigger>();
    let signals = match signal_hook::iterator::Signals::new([signal_hook::consts::SIGHUP]) {
        Ok(mut s) => {
            let handle = s.handle();
            let tx = tx.clone();
            let _ = thread::Builder::new()
                .name("shieldtap-sighup".into())
                .spawn(move || {
                    for _ in s.forever() {
                        if tx.send(Trigger::Signal).is_err() {
                            break;
                        }
                    }
                });
            Some(handle)
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot listen for SIGHUP; reload by signal is off");
            None
        }
    };
    let watcher = src.rules.as_ref().and_then(|dir| watch(dir, tx.clone()));
    drop(tx);
    let done = Arc::new(AtomicBool::new(false));
    let thread = {
        let done = done.clone();
        thread::Builder::new()
            .name("shieldtap-reload".into())
            .spawn(move || {
                // Keep the watcher alive as long as the loop runs.
                let _watcher = watcher;
                loop {
                    if done.load(Ordering::Relaxed) || stop.load(Ordering::Relaxed) {
                        break;
                    }
                    match rx.recv_timeout(Duration::from_millis(200)) {
                        Ok(t) => {
                            // Coalesce a burst of triggers into one reload.
                            let mut signal = t == Trigger::Signal;
                            while let Ok(more) = rx.try_recv() {
                                signal |= more == Trigger::Signal;
                            }
                            reload_now(&src, &shared, signal);
                        }
                        Err(RecvTimeoutError::Timeout) => {}
                        Err(RecvTimeoutError::Disconnected) => {
                            thread::sleep(Duration::from_millis(200));
                        }
                    }
                }
            })
            .map_err(|e| tracing::error!(error = %e, "cannot start reload thread"))
            .ok()
    };
    Some(Reloader {
        done,
        thread,
        signals,
    })
}

type Watcher = notify_debouncer_full::Debouncer<
    notify::RecommendedWatcher,
    notify_debouncer_full::RecommendedCache,
>;

fn watch(dir: &std::path::Path, tx: Sender<Trigger>) -> Option<Watcher> {
    let handler = move |res: notify_debouncer_full::DebounceEventResult| {
        if let Ok(events) = res {
            let relevant = events.iter().any(|e| {
                !e.kind.is_access()
                    && e.paths.iter().any(|p| {
                        p.extension().is_some_and(|x| {
                            x.eq_ignore_ascii_case("yaml") || x.eq_ignore_ascii_case("yml")
                        })
                    })
            });
            if relevant {
                let _ = tx.send(Trigger::RulesFolder);
            }
        }
    };
    let mut debouncer = match new_debouncer(DEBOUNCE, None, handler) {
        Ok(d) => d,
        Err(e) => {
            tracing::error!(error = %e, "cannot watch the rules folder; reload with SIGHUP");
            return None;
        }
    };
    if let Err(e) = debouncer.watch(dir, RecursiveMode::NonRecursive) {
        tracing::error!(folder = %dir.display(), error = %e, "cannot watch the rules folder; reload with SIGHUP");
        return None;
    }
    Some(debouncer)
}

/// Reloads now: the config (on a signal) and the rules folder.
fn reload_now(src: &ReloadSources, shared: &Shared, signal: bool) {
    if signal && let Some(path) = &src.config {
        let loaded = Config::load(path)
            .map_err(|e| e.to_string())
            .and_then(|c| Judges::new(&c).map_err(|e| e.to_string()));
        match loaded {
            Ok(j) => {
                shared.judges.store(Arc::new(j));
                bump(shared, |r| r.config_ok += 1);
                tracing::info!(
                    file = %path.display(),
                    "config reloaded: token keys and identity apply now; capture, decode, reassembly, http, runtime and detect settings at restart"
                );
            }
            Err(e) => {
                bump(shared, |r| r.config_failed += 1);
                tracing::error!(problem = %e, "config reload failed; keeping the running config");
            }
        }
    }
    if let Some(dir) = &src.rules {
        match rules::load_dir(dir) {
            Ok(set) => {
                let n = set.rules.len();
                shared.rules.store(Arc::new(set));
                bump(shared, |r| r.rules_ok += 1);
                tracing::info!(folder = %dir.display(), rules = n, "rules reloaded");
            }
            Err(errors) => {
                bump(shared, |r| r.rules_failed += 1);
                for e in &errors.0 {
                    tracing::error!(problem = %e, "rules reload failed; keeping the running rules");
                }
            }
        }
    }
}

fn bump(shared: &Shared, f: impl FnOnce(&mut crate::output::ReloadStats)) {
    if let Ok(mut r) = shared.reloads.lock() {
        f(&mut r);
    }
}
