//! `domicile audit verify|show`: the transfer ledger, read from a running control plane
//! (`GET /admin/ledger`, which signs the head first) or from an exported file, verified — the
//! hash chain, and every checkpoint's Ed25519 signature against a public key — or printed.

use anyhow::{Context, Result, anyhow, bail};
use clap::{Args, Subcommand};
use domicile_client::admin::AdminClient;
use domicile_control::ledger::verify::{BadEntry, Verified, verify};
use domicile_control::ledger::{EXPORT_FORMAT, LedgerEntry, LedgerExport, VerifyingKey, kind};
use std::io::Write as _;
use std::path::PathBuf;

#[derive(Subcommand)]
pub enum AuditCommand {
    /// Verify the ledger: the hash chain, every checkpoint's signature, and that every entry is
    /// covered by a checkpoint. Prints `ledger verified: …`, or names the first bad entry and
    /// exits non-zero.
    Verify(VerifyArgs),
    /// Print the ledger: one block per entry (`--json`: the export itself, which `--file`
    /// reads back).
    Show(ShowArgs),
}

#[derive(Args)]
pub struct Source {
    /// An exported ledger (`domicile audit show --json`, or `GET /admin/ledger`), read instead
    /// of asking a control plane.
    #[arg(long)]
    file: Option<PathBuf>,
    /// The control plane's URL.
    #[arg(long, env = "DOMICILE_CONTROL")]
    control: Option<String>,
    /// The file holding the admin token.
    #[arg(long, env = "DOMICILE_ADMIN_TOKEN_FILE")]
    admin_token_file: Option<PathBuf>,
    /// The cluster CA to trust for an `https://` control plane (`ca_file` in the ready file).
    #[arg(long, env = "DOMICILE_CA_FILE")]
    ca_file: Option<PathBuf>,
}

#[derive(Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    source: Source,
    /// The public key to verify checkpoints against (hex; the control plane writes it to
    /// `ledger.pub` beside its key). Without it, the key the ledger's source publishes is
    /// used, and the output says the key was not pinned.
    #[arg(long)]
    public_key: Option<PathBuf>,
    /// Accept entries after the last checkpoint (reported, not refused).
    #[arg(long)]
    allow_unsigned_tail: bool,
}

#[derive(Args)]
pub struct ShowArgs {
    #[command(flatten)]
    source: Source,
    /// Print the export as JSON.
    #[arg(long)]
    json: bool,
}

pub async fn run(cmd: AuditCommand) -> Result<()> {
    match cmd {
        AuditCommand::Verify(args) => {
            let export = load(&args.source).await?;
            let (key, pinned) = match &args.public_key {
                Some(path) => {
                    let text = std::fs::read_to_string(path)
                        .with_context(|| format!("read public key {}", path.display()))?;
                    let key = VerifyingKey::parse(&text)
                        .with_context(|| format!("public key {}", path.display()))?;
                    (key, format!("pinned from {}", path.display()))
                }
                None => (
                    VerifyingKey::parse(&export.public_key)
                        .context("the public key the ledger's source publishes")?,
                    "NOT pinned: the key the ledger's source publishes; pass --public-key to check against one kept apart".to_string(),
                ),
            };
            let verified = check(&export, &key, args.allow_unsigned_tail)
                .map_err(|bad| anyhow!("ledger NOT verified: {bad}"))?;
            out(&verified_text(&verified, &key, &pinned))
        }
        AuditCommand::Show(args) => {
            let export = load(&args.source).await?;
            if args.json {
                out(&(serde_json::to_string_pretty(&export)? + "\n"))
            } else {
                out(&show(&export))
            }
        }
    }
}

/// The whole verification: chain and signatures against `key`, and (unless allowed) no entry
/// after the last checkpoint.
pub fn check(
    export: &LedgerExport,
    key: &VerifyingKey,
    allow_unsigned_tail: bool,
) -> Result<Verified, BadEntry> {
    let verified = verify(&export.entries, key)?;
    if !allow_unsigned_tail {
        verified.require_signed()?;
    }
    Ok(verified)
}

fn verified_text(v: &Verified, key: &VerifyingKey, pinned: &str) -> String {
    let mut text = format!(
        "ledger verified: {} entries, {} checkpoints, head {}\nsigned by key {} ({pinned})\n",
        v.entries,
        v.checkpoints,
        v.head,
        key.id()
    );
    match v.unsigned_tail() {
        Some((first, last)) => text.push_str(&format!(
            "unsigned tail: entries {first}..={last} are not covered by any checkpoint\n"
        )),
        None if v.entries > 0 => text.push_str(&format!(
            "every entry is covered by a checkpoint (the last: entry {})\n",
            v.signed_through
        )),
        None => {}
    }
    text
}

async fn load(source: &Source) -> Result<LedgerExport> {
    let export: LedgerExport = if let Some(path) = &source.file {
        let bytes =
            std::fs::read(path).with_context(|| format!("read ledger {}", path.display()))?;
        serde_json::from_slice(&bytes)
            .with_context(|| format!("ledger {} is not an export", path.display()))?
    } else {
        let (Some(control), Some(token_file)) = (&source.control, &source.admin_token_file) else {
            bail!("name the ledger: --file FILE, or --control URL with --admin-token-file FILE");
        };
        let token = std::fs::read_to_string(token_file)
            .with_context(|| format!("read the admin token {}", token_file.display()))?;
        let transport = crate::certs::outside_client(control, source.ca_file.as_deref())?;
        AdminClient::new(
            control.clone(),
            token.trim(),
            domicile_client::http_client(&transport),
        )
        .ledger()
        .await
        .context("fetch the ledger")?
    };
    if export.format != EXPORT_FORMAT {
        bail!(
            "the ledger's format is {:?}, not {EXPORT_FORMAT:?}",
            export.format
        );
    }
    Ok(export)
}

/// Not print!: a closed pipe (`| head`) is an error to report, not a panic.
fn out(text: &str) -> Result<()> {
    std::io::stdout()
        .lock()
        .write_all(text.as_bytes())
        .context("write to stdout")
}

/// Unix milliseconds as RFC 3339 (UTC, milliseconds).
fn rfc3339(ms: u64) -> String {
    let nanos = i128::from(ms) * 1_000_000;
    time::OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| format!("{ms} ms"))
}

/// The body fields shown first, by kind (the rest follow in order).
fn key_fields(kind: &str) -> &'static [&'static str] {
    match kind {
        kind::TRANSFER => &[
            "service",
            "market",
            "buckets",
            "from",
            "from_jurisdiction",
            "to",
            "to_jurisdiction",
            "records",
            "bytes",
            "users",
            "digest",
            "legal_basis",
            "operator",
        ],
        kind::PURGE => &[
            "region",
            "service",
            "market",
            "buckets",
            "entries_purged",
            "reason",
        ],
        kind::CHECKPOINT => &["covers", "reason", "key_id", "algorithm"],
        kind::POLICY => &["version", "after_phase", "rules"],
        kind::KEY_DESTRUCTION => &["region", "service", "users", "user", "reason"],
        kind::ERASURE => &["user", "regions", "records", "blobs", "keys_destroyed"],
        _ => &[],
    }
}

fn value_text(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => "-".to_string(),
        other => other.to_string(),
    }
}

fn entry_text(e: &LedgerEntry) -> String {
    let mut text = format!(
        "entry {}  {}  {}  {}\n",
        e.seq,
        rfc3339(e.time_ms),
        e.kind,
        e.id
    );
    let first = key_fields(&e.kind);
    let mut fields: Vec<(&str, &serde_json::Value)> = Vec::new();
    if let Some(body) = e.body.as_object() {
        fields.extend(
            first
                .iter()
                .filter_map(|k| body.get_key_value(*k).map(|(k, v)| (k.as_str(), v))),
        );
        fields.extend(
            body.iter()
                .filter(|(k, _)| !first.contains(&k.as_str()))
                .map(|(k, v)| (k.as_str(), v)),
        );
    } else {
        fields.push(("body", &e.body));
    }
    let width = fields.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    for (k, v) in fields {
        text.push_str(&format!("  {k:width$}  {}\n", value_text(v)));
    }
    text.push_str(&format!("  {:width$}  {}\n", "hash", e.hash));
    text
}

fn show(export: &LedgerExport) -> String {
    let mut text = format!(
        "ledger: {} entries, signed by key {} ({})\n",
        export.entries.len(),
        export.key_id,
        export.public_key
    );
    for e in &export.entries {
        text.push('\n');
        text.push_str(&entry_text(e));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use domicile_control::ledger::{GENESIS, LedgerKey, checkpoint_entry, seal};

    fn export() -> (LedgerExport, LedgerKey) {
        let key = LedgerKey::generate();
        let t = seal(
            1,
            1_764_412_800_123,
            "transfer",
            "m/p/ecommerce/IN/0-10",
            serde_json::json!({"from":"cn-beijing","to":"ap-mumbai","service":"ecommerce","market":"IN","buckets":"0-10","records":12,"bytes":3400,"legal_basis":null,"operator":"ops"}),
            GENESIS,
        );
        let c = checkpoint_entry(
            &key,
            2,
            1_764_412_800_200,
            "c",
            "phase p completed",
            &t.hash,
        );
        let export = LedgerExport {
            format: EXPORT_FORMAT.into(),
            public_key: key.public().hex(),
            key_id: key.public().id().into(),
            entries: vec![t, c],
        };
        (export, key)
    }

    #[test]
    fn show_prints_one_readable_block_per_entry() {
        let (export, _) = export();
        let text = show(&export);
        assert!(
            text.contains("entry 1  2025-11-29T10:40:00.123Z  transfer  m/p/ecommerce/IN/0-10"),
            "{text}"
        );
        assert!(text.contains("  service      ecommerce\n"), "{text}");
        assert!(text.contains("  legal_basis  -\n"), "{text}");
        assert!(
            text.contains("entry 2  2025-11-29T10:40:00.2Z  checkpoint  c"),
            "{text}"
        );
        assert!(text.find("  covers").unwrap() < text.find("  signature").unwrap());
    }

    #[test]
    fn verify_says_whether_the_key_was_pinned_and_what_is_unsigned() {
        let (mut export, key) = export();
        let v = check(&export, key.public(), false).unwrap();
        let text = verified_text(&v, key.public(), "pinned from k.pub");
        assert!(text.starts_with(&format!(
            "ledger verified: 2 entries, 1 checkpoints, head {}\nsigned by key {} (pinned from k.pub)\n",
            export.entries[1].hash,
            key.public().id()
        )));
        let t = seal(
            3,
            1,
            "erasure",
            "e",
            serde_json::json!({}),
            &export.entries[1].hash,
        );
        export.entries.push(t);
        assert_eq!(check(&export, key.public(), false).unwrap_err().seq, 3);
        let v = check(&export, key.public(), true).unwrap();
        assert!(verified_text(&v, key.public(), "-").contains("unsigned tail: entries 3..=3"));
    }
}
