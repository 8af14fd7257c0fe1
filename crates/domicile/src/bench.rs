//! `domicile bench …`: benchmarks that print JSON, each with its baseline from the same run.

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use domicile_bench::{StoreBenchOptions, run_store_bench};
use std::path::PathBuf;

#[derive(Subcommand)]
pub enum BenchCommand {
    /// The region store against the bare engine: durable writes, import, scan, point reads, RSS.
    Store(StoreArgs),
}

#[derive(Args)]
pub struct StoreArgs {
    /// Print only the JSON report on stdout (progress goes to stderr either way).
    #[arg(long)]
    json: bool,
    /// Records to import, scan and read.
    #[arg(long, default_value_t = 1_000_000)]
    records: u64,
    /// Concurrent writers for the durable-write figures.
    #[arg(long, default_value_t = 64)]
    writers: usize,
    /// Seconds each durable-write figure is measured for.
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// Folder for the benchmark's stores (default: a temporary folder on the same disk as the
    /// current directory, removed afterwards).
    #[arg(long)]
    dir: Option<PathBuf>,
}

pub async fn run(cmd: BenchCommand) -> Result<()> {
    match cmd {
        BenchCommand::Store(args) => {
            anyhow::ensure!(args.records > 0, "--records must be at least 1");
            anyhow::ensure!(args.writers > 0, "--writers must be at least 1");
            anyhow::ensure!(args.seconds > 0.0, "--seconds must be positive");
            let dir = match args.dir {
                Some(d) => d,
                None => std::env::current_dir()?.join(".domicile-bench"),
            };
            let options = StoreBenchOptions {
                dir: dir.clone(),
                records: args.records,
                writers: args.writers,
                write_seconds: args.seconds,
                progress: !args.json,
            };
            let report = run_store_bench(options)
                .await
                .context("run the store benchmark")?;
            let _ = std::fs::remove_dir(&dir);
            println!("{}", serde_json::to_string_pretty(&report)?);
            Ok(())
        }
    }
}
