//! A real PostgreSQL for tests: [`PgServer::start`] runs `initdb` into a temporary
//! folder and starts the server on a free port of 127.0.0.1 (trust authentication, fsync
//! off); [`PgServer::fresh_database`] makes one empty database per test. Dropping the
//! server stops it (`pg_ctl -m fast stop`) and removes the folder.
//!
//! `initdb` refuses to run as root: as root, the tools run as the `postgres` user
//! (`runuser`) on a folder handed to it. Without PostgreSQL installed, `start` returns
//! `None`; [`PgServer::start_or_skip`] then prints why the tests are skipped, or panics
//! when `TIDINGS_REQUIRE_POSTGRES=1` (CI).

use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

/// A PostgreSQL server of its own, on 127.0.0.1; stopped and removed when dropped.
pub struct PgServer {
    /// The folder holding `initdb` and `pg_ctl`.
    bin: PathBuf,
    /// The data folder, the socket and the log are in here; removed on drop.
    dir: tempfile::TempDir,
    port: u16,
    /// Running as root: the tools run as `postgres`.
    as_postgres: bool,
    databases: AtomicU32,
}

impl PgServer {
    /// Starts a server, or `None` when PostgreSQL is not installed. Panics (with the
    /// server's log) when it is installed but does not start.
    pub fn start() -> Option<PgServer> {
        let bin = find_bin()?;
        let dir = tempfile::Builder::new()
            .prefix("tidings-pg-")
            .tempdir()
            .expect("a temporary folder");
        let as_postgres = std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0);
        if as_postgres {
            run(Command::new("chown").arg("postgres:").arg(dir.path()));
        }
        let mut server = PgServer {
            bin,
            dir,
            port: 0,
            as_postgres,
            databases: AtomicU32::new(0),
        };
        let data = server.data();
        server.run_tool(
            "initdb",
            &[
                "-D".as_ref(),
                data.as_os_str(),
                "-U".as_ref(),
                "postgres".as_ref(),
                "-A".as_ref(),
                "trust".as_ref(),
                "-E".as_ref(),
                "UTF8".as_ref(),
                "--no-locale".as_ref(),
                "--no-sync".as_ref(),
            ],
        );
        // A free port may be taken between asking for it and the server binding it:
        // try a few.
        for attempt in 1..=3 {
            server.port = free_port();
            let options = format!(
                "-c listen_addresses=127.0.0.1 -p {} -k {} -c fsync=off \
                 -c synchronous_commit=off -c full_page_writes=off -c max_connections=200",
                server.port,
                server.dir.path().display()
            );
            let log = server.dir.path().join("log");
            let started = server.tool(
                "pg_ctl",
                &[
                    "-D".as_ref(),
                    data.as_os_str(),
                    "-l".as_ref(),
                    log.as_os_str(),
                    "-o".as_ref(),
                    options.as_ref(),
                    "-w".as_ref(),
                    "-t".as_ref(),
                    "60".as_ref(),
                    "start".as_ref(),
                ],
            );
            if started.status.success() {
                return Some(server);
            }
            if attempt == 3 {
                panic!(
                    "PostgreSQL did not start: {}\n{}",
                    String::from_utf8_lossy(&started.stderr),
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
        }
        unreachable!()
    }

    /// [`PgServer::start`], for a test binary: without PostgreSQL, prints that `what` is
    /// skipped and returns `None`, or panics when `TIDINGS_REQUIRE_POSTGRES=1`.
    pub fn start_or_skip(what: &str) -> Option<PgServer> {
        let server = PgServer::start();
        if server.is_none() {
            if std::env::var("TIDINGS_REQUIRE_POSTGRES").is_ok_and(|v| v == "1") {
                panic!(
                    "{what}: PostgreSQL is not installed (no initdb/pg_ctl on PATH or in \
                     /usr/lib/postgresql/*/bin) and TIDINGS_REQUIRE_POSTGRES=1"
                );
            }
            println!(
                "{what} skipped: PostgreSQL is not installed (apt-get install -y postgresql, \
                 or set TIDINGS_REQUIRE_POSTGRES=1 to make this a failure)"
            );
        }
        server
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// A new, empty database, uniquely named: its `postgres://` URL.
    pub fn fresh_database(&self) -> String {
        let name = format!(
            "t{}_{}",
            std::process::id(),
            self.databases.fetch_add(1, Ordering::Relaxed)
        );
        let mut admin = postgres::Client::connect(&self.url("postgres"), postgres::NoTls)
            .expect("connecting to the test server");
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .expect("creating a database");
        self.url(&name)
    }

    /// The URL of database `name` on this server.
    pub fn url(&self, name: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Runs `tool` from the server's folder (as `postgres` when root) and returns its output.
    fn tool(&self, tool: &str, args: &[&std::ffi::OsStr]) -> Output {
        let path = self.bin.join(tool);
        let mut command = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(path);
            c
        } else {
            Command::new(path)
        };
        // Its own working folder: the postgres user may not enter the caller's.
        command.args(args).current_dir(self.dir.path());
        command
            .output()
            .unwrap_or_else(|e| panic!("running {tool}: {e}"))
    }

    fn run_tool(&self, tool: &str, args: &[&std::ffi::OsStr]) {
        let out = self.tool(tool, args);
        assert!(
            out.status.success(),
            "{tool} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        let data = self.data();
        let out = self.tool(
            "pg_ctl",
            &[
                "-D".as_ref(),
                data.as_os_str(),
                "-m".as_ref(),
                "fast".as_ref(),
                "-w".as_ref(),
                "stop".as_ref(),
            ],
        );
        if !out.status.success() {
            eprintln!(
                "stopping the test PostgreSQL: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        // The TempDir removes the folder after this.
    }
}

/// The folder with `initdb` and `pg_ctl`: `PATH` first, then the newest of Debian's
/// `/usr/lib/postgresql/*/bin`.
fn find_bin() -> Option<PathBuf> {
    let has_tools = |dir: &Path| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file();
    if let Some(dir) = std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .find(|d| has_tools(d))
    {
        return Some(dir);
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| {
            let e = e.ok()?;
            let version = e.file_name().to_str()?.parse().ok()?;
            Some((version, e.path().join("bin")))
        })
        .filter(|(_, bin)| has_tools(bin))
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .expect("a free port on 127.0.0.1")
        .port()
}

fn run(command: &mut Command) {
    let out = command.output().expect("running a command");
    assert!(
        out.status.success(),
        "{command:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// For the benchmarks' `--backend`: with `postgres`, a server of its own (stopped when
/// dropped) and a fresh database on it; else no server and the SQLite file `tidings.db`.
pub fn bench_database(postgres: bool) -> (Option<PgServer>, String) {
    let server = postgres.then(|| PgServer::start().expect("PostgreSQL is not installed"));
    let database = match &server {
        // This client blocks: off the async threads.
        Some(server) => tokio::task::block_in_place(|| server.fresh_database()),
        None => "tidings.db".to_string(),
    };
    (server, database)
}

/// One trial of a test binary whose trials share one server: an `async fn(&PgServer)`.
pub type PgTest = fn(&PgServer) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + '_>>;

/// `pg_trials![a, b]`: the named `async fn(&PgServer)`s, as [`run_pg_trials`] takes them.
#[allow(unused_macros)]
macro_rules! pg_trials {
    ($($name:ident),* $(,)?) => {
        vec![$((
            stringify!($name),
            (|s| Box::pin($name(s))) as $crate::support::postgres::PgTest,
        )),*]
    };
}
#[allow(unused_imports)]
pub(crate) use pg_trials;

/// The `main` of a test binary (`harness = false`) whose trials share one PostgreSQL
/// server, each on a runtime of its own: starts the server (or skips, see
/// [`PgServer::start_or_skip`]), runs the trials libtest's way, then stops it.
pub fn run_pg_trials(what: &str, trials: Vec<(&'static str, PgTest)>) -> std::process::ExitCode {
    use std::sync::Arc;
    let args = libtest_mimic::Arguments::from_args();
    let server = if args.list {
        None
    } else {
        PgServer::start_or_skip(what).map(Arc::new)
    };
    let trials = trials
        .into_iter()
        .map(|(name, test)| {
            let server = server.clone();
            let ignored = server.is_none() && !args.list;
            libtest_mimic::Trial::test(name, move || {
                if let Some(server) = &server {
                    tokio::runtime::Builder::new_multi_thread()
                        .worker_threads(2)
                        .enable_all()
                        .build()
                        .unwrap()
                        .block_on(test(server));
                }
                Ok(())
            })
            .with_ignored_flag(ignored)
        })
        .collect();
    let conclusion = libtest_mimic::run(&args, trials);
    // The trials (and their clones of the server) are gone: this stops it.
    drop(server);
    conclusion.exit_code()
}
