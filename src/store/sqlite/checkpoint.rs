//! Checkpoints on a thread of their own.
//!
//! In WAL mode a commit appends pages to the `-wal` file; a checkpoint copies them into
//! the database file and syncs it. SQLite checkpoints in the committing thread once the
//! log passes 1,000 pages, and that thread holds the store's one connection meanwhile:
//! polls that store many items waited on the disk (7.4 s of a 31 s ingest of 20,000
//! items, `examples/ingest_bench.rs`). Here a thread with its own connection checkpoints
//! (`PASSIVE`: it never waits for, nor blocks, readers and writers) after a poll's
//! writes, at most every [`EVERY`], and every [`IDLE`] otherwise; the store's connection still checkpoints by itself, as a safety
//! net, should the log pass [`FOREGROUND_PAGES`].

use std::path::Path;
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, sync_channel};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use rusqlite::Connection;
use tracing::warn;

/// The shortest time between two checkpoints of the thread.
const EVERY: Duration = Duration::from_millis(250);
/// The longest: other writes than polls do not wake the thread.
const IDLE: Duration = Duration::from_secs(1);

/// Pages in the log at which the writing connection checkpoints by itself (64 MiB of
/// 4 KiB pages): only when the thread falls far behind.
pub(super) const FOREGROUND_PAGES: i64 = 16_384;

/// The checkpointing thread; stopped (and joined) when dropped.
pub(super) struct Checkpointer {
    wake: Option<SyncSender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Checkpointer {
    /// Starts the thread, with a connection of its own to the database at `path`.
    pub(super) fn start(path: &Path) -> Result<Checkpointer> {
        let conn = Connection::open(path)
            .with_context(|| format!("opening database {} to checkpoint", path.display()))?;
        conn.busy_timeout(Duration::from_secs(1))?;
        let (wake, woken) = sync_channel(1);
        let thread = std::thread::Builder::new()
            .name("sqlite-checkpoint".into())
            .spawn(move || run(conn, woken))
            .context("starting the checkpoint thread")?;
        Ok(Checkpointer {
            wake: Some(wake),
            thread: Some(thread),
        })
    }

    /// Tells the thread the log has grown.
    pub(super) fn wrote(&self) {
        if let Some(wake) = &self.wake {
            // Full means a wake-up is already pending.
            let _ = wake.try_send(());
        }
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.wake.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn run(conn: Connection, woken: Receiver<()>) {
    let mut last: Option<Instant> = None;
    let mut failing = false;
    while let Ok(()) | Err(RecvTimeoutError::Timeout) = woken.recv_timeout(IDLE) {
        // Writes go on meanwhile; the checkpoint takes what is there by then.
        if let Some(wait) = last.and_then(|at| EVERY.checked_sub(at.elapsed())) {
            match woken.recv_timeout(wait) {
                Ok(()) | Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        last = Some(Instant::now());
        let done = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()));
        match done {
            Ok(()) => failing = false,
            // Said once; the writing connection checkpoints by itself meanwhile.
            Err(e) if !failing => {
                failing = true;
                warn!(error = %e, "checkpointing the database log failed; retrying after the next write");
            }
            Err(_) => {}
        }
    }
    // The connection closes here; the last one to close folds the log into the file.
    drop(conn);
}
