//! `domicile certs init DIR`, and the TLS options every process takes.

use anyhow::Result;
use clap::{Args, Subcommand};
use domicile_tls::{ClientTransport, Role, RoleTls};
use std::path::PathBuf;

#[derive(Subcommand)]
pub enum CertsCommand {
    /// Make a development CA and a certificate per role (control, gateway, region, client) in
    /// DIR: `ca.pem`, `ca.key` and `ROLE.pem`, `ROLE.key` (keys 0600), valid for localhost,
    /// 127.0.0.1 and ::1. Refuses a DIR that already holds a CA.
    Init { dir: PathBuf },
}

pub fn run(cmd: CertsCommand) -> Result<()> {
    match cmd {
        CertsCommand::Init { dir } => {
            domicile_tls::certs::init(&dir)?;
            println!(
                "{}",
                serde_json::json!({
                    "ca": dir.join(domicile_tls::certs::CA_CERT),
                    "roles": Role::ALL.map(Role::name),
                })
            );
            Ok(())
        }
    }
}

/// How a cluster process talks: mutual TLS with the certificates of `--tls-dir`, or plaintext
/// when asked for by name.
#[derive(Args)]
pub struct TlsArgs {
    /// A `domicile certs init` folder: the cluster CA and this role's certificate and key.
    #[arg(
        long,
        env = "DOMICILE_TLS_DIR",
        required_unless_present = "insecure_plaintext"
    )]
    tls_dir: Option<PathBuf>,
    /// Serve and call over plain HTTP: no encryption, and every peer counts as a cluster member.
    #[arg(long, conflicts_with = "tls_dir")]
    insecure_plaintext: bool,
}

impl TlsArgs {
    pub fn load(&self, role: Role) -> Result<RoleTls> {
        match &self.tls_dir {
            Some(dir) if !self.insecure_plaintext => Ok(RoleTls::load(dir, role)?),
            _ => {
                tracing::warn!("serving plain HTTP (--insecure-plaintext)");
                Ok(RoleTls::insecure_plaintext())
            }
        }
    }
}

/// How a CLI reaches the control plane's admin API: trusting `ca_file` for `https://`.
pub fn outside_client(url: &str, ca_file: Option<&std::path::Path>) -> Result<ClientTransport> {
    match ca_file {
        Some(ca) => Ok(domicile_tls::trust_ca(ca)?),
        None => {
            anyhow::ensure!(
                !url.starts_with("https://"),
                "{url} is https: name the cluster CA with --ca-file (ca.pem of the certificate folder)"
            );
            Ok(ClientTransport::InsecurePlaintext)
        }
    }
}
