//! End-to-end tests of the `domicile` binary: real processes on loopback, ports chosen by the OS.

mod adversarial;
mod audit;
mod bench_postgres;
mod cli;
mod cluster_processes;
mod consent;
mod demo_run;
mod moves;
mod region_process;
mod up_in_process;
