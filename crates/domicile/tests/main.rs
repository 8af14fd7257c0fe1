//! End-to-end tests of the `domicile` binary: real processes on loopback, ports chosen by the OS.

mod bench_postgres;
mod cli;
mod cluster_processes;
mod consent;
mod moves;
mod region_process;
