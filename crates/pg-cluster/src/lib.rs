//! A throwaway PostgreSQL cluster on loopback, made from the machine's server binaries (Debian's
//! `postgresql` package: `pg_config --bindir` names their folder): `initdb` into a temporary
//! folder, `pg_ctl start` on a free port, and `pg_ctl stop` plus removal of the folder when the
//! owner drops it — or exits in any way, even SIGKILL.
//!
//! Why a shell keeper: the server is a daemon, not our child. A small `sh` process started with
//! a pipe on its stdin starts the server, says `ready`, and waits for end-of-file on the pipe,
//! which the kernel delivers however the owning process ends; then it stops the server and
//! removes the folder. So a test binary may keep a cluster in a `static` without leaking it.
//!
//! PostgreSQL refuses to run as root; as root the keeper runs the binaries as the `postgres`
//! user (`setpriv`), which the Debian package creates.

#![deny(clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Read};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use thiserror::Error;

/// Set to use server binaries from another folder than `pg_config --bindir`.
pub const BINDIR_ENV: &str = "DOMICILE_PG_BINDIR";
/// Set to `1` where the PostgreSQL tests must run (CI): a missing server is then a failure.
pub const REQUIRE_ENV: &str = "DOMICILE_REQUIRE_POSTGRES";

#[derive(Debug, Error)]
pub enum PgClusterError {
    #[error("PostgreSQL server binaries not found: {0}")]
    NotInstalled(String),
    #[error("could not start a PostgreSQL cluster: {0}")]
    Start(String),
}

/// The folder holding `initdb`, `pg_ctl`, `pg_dump`, …
pub fn bindir() -> Result<PathBuf, PgClusterError> {
    let dir = match std::env::var_os(BINDIR_ENV) {
        Some(dir) => PathBuf::from(dir),
        None => {
            let out = Command::new("pg_config")
                .arg("--bindir")
                .output()
                .map_err(|e| PgClusterError::NotInstalled(format!("pg_config: {e}")))?;
            if !out.status.success() {
                return Err(PgClusterError::NotInstalled(format!(
                    "pg_config --bindir failed: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                )));
            }
            PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
        }
    };
    for tool in ["initdb", "pg_ctl", "postgres"] {
        if !dir.join(tool).is_file() {
            return Err(PgClusterError::NotInstalled(format!(
                "{} has no {tool} (install Debian's postgresql package)",
                dir.display()
            )));
        }
    }
    Ok(dir)
}

/// Whether tests that need PostgreSQL should run here. `Ok(false)` (with the reason printed)
/// means skip; a missing server where [`REQUIRE_ENV`] is set is an error.
pub fn available_for_tests() -> Result<bool, PgClusterError> {
    match bindir() {
        Ok(_) => Ok(true),
        Err(e) if std::env::var(REQUIRE_ENV).as_deref() == Ok("1") => Err(e),
        Err(e) => {
            eprintln!("skipped: {e} (set {REQUIRE_ENV}=1 to make this a failure)");
            Ok(false)
        }
    }
}

/// A running throwaway cluster. Dropping it stops the server and removes its folder.
pub struct PgCluster {
    bindir: PathBuf,
    root: PathBuf,
    port: u16,
    keeper: Child,
    /// Closing this pipe tells the keeper to stop the server.
    keeper_stdin: Option<ChildStdin>,
}

/// The keeper script; its settings come in through the environment, never through quoting.
const KEEPER: &str = r#"
set -u
$AS "$BIN/pg_ctl" -D "$ROOT/data" -l "$ROOT/server.log" -w -t 120 -o "$OPTS" start >/dev/null 2>&1 || {
    cat "$ROOT/server.log" >&2; exit 1; }
echo ready
cat >/dev/null
$AS "$BIN/pg_ctl" -D "$ROOT/data" -m fast -w stop >/dev/null 2>&1
rm -rf "$ROOT"
"#;

fn run(cmd: &mut Command, what: &str) -> Result<(), PgClusterError> {
    let out = cmd
        .output()
        .map_err(|e| PgClusterError::Start(format!("{what}: {e}")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(PgClusterError::Start(format!(
            "{what} failed: {}{}",
            String::from_utf8_lossy(&out.stderr).trim(),
            String::from_utf8_lossy(&out.stdout).trim()
        )))
    }
}

fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

fn free_port() -> Result<u16, PgClusterError> {
    let listener = TcpListener::bind("127.0.0.1:0")
        .map_err(|e| PgClusterError::Start(format!("find a free port: {e}")))?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(|e| PgClusterError::Start(format!("find a free port: {e}")))
}

impl PgCluster {
    /// `initdb`, then start the server on a free loopback port; returns once it accepts
    /// connections (`pg_ctl -w`). Durable settings (fsync on): benchmarks run on it too.
    pub fn start() -> Result<Self, PgClusterError> {
        let bindir = bindir()?;
        let root = tempfile::Builder::new()
            .prefix("domicile-pg-")
            .tempdir()
            .map_err(|e| PgClusterError::Start(format!("temporary folder: {e}")))?
            .keep();
        let result = Self::start_in(&bindir, &root);
        if result.is_err() {
            let _ = std::fs::remove_dir_all(&root);
        }
        result
    }

    fn start_in(bindir: &Path, root: &Path) -> Result<Self, PgClusterError> {
        let as_postgres = running_as_root();
        let prefix: Vec<&str> = if as_postgres {
            run(
                Command::new("chown").args(["postgres:postgres"]).arg(root),
                "chown the cluster folder to postgres",
            )?;
            vec![
                "setpriv",
                "--reuid=postgres",
                "--regid=postgres",
                "--init-groups",
            ]
        } else {
            Vec::new()
        };
        let initdb = bindir.join("initdb");
        let mut cmd = match prefix.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(&initdb);
                c
            }
            None => Command::new(&initdb),
        };
        run(
            cmd.arg("-D").arg(root.join("data")).args([
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
                "--no-instructions",
            ]),
            "initdb",
        )?;

        // A port is free when we look; another process may take it before the server binds,
        // so a failed start on a taken port is retried on another.
        let mut last_error = None;
        for _ in 0..3 {
            let port = free_port()?;
            let opts = format!(
                "-p {port} -k {} -c listen_addresses=127.0.0.1 -c max_connections=300 \
                 -c shared_buffers=128MB -c fsync=on -c synchronous_commit=on",
                root.display()
            );
            let mut keeper = Command::new("sh")
                .arg("-c")
                .arg(KEEPER)
                .env("AS", prefix.join(" "))
                .env("BIN", bindir)
                .env("ROOT", root)
                .env("OPTS", opts)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .map_err(|e| PgClusterError::Start(format!("start the keeper shell: {e}")))?;
            let mut line = String::new();
            if let Some(stdout) = keeper.stdout.take() {
                let _ = BufReader::new(stdout).read_line(&mut line);
            }
            if line.trim() == "ready" {
                let keeper_stdin = keeper.stdin.take();
                return Ok(Self {
                    bindir: bindir.to_path_buf(),
                    root: root.to_path_buf(),
                    port,
                    keeper,
                    keeper_stdin,
                });
            }
            let mut stderr = String::new();
            if let Some(mut err) = keeper.stderr.take() {
                let _ = err.read_to_string(&mut stderr);
            }
            let _ = keeper.wait();
            last_error = Some(stderr.trim().to_string());
        }
        Err(PgClusterError::Start(format!(
            "the server did not start: {}",
            last_error.unwrap_or_default()
        )))
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The cluster's folder (removed when the cluster stops).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// A server binary (`pg_dump`, `psql`, …) of the same installation.
    pub fn bin(&self, name: &str) -> PathBuf {
        self.bindir.join(name)
    }

    /// The URL of `database` on this cluster (superuser `postgres`, trust on loopback).
    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        // End-of-file on the keeper's stdin: it stops the server and removes the folder.
        self.keeper_stdin.take();
        let _ = self.keeper.wait();
    }
}
