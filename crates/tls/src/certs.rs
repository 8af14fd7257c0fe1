//! The development CA and per-role certificates (`domicile certs init DIR`; `domicile up` and
//! `domicile demo` make them on first start).
//!
//! A folder holds `ca.pem` and `ca.key` (the cluster CA) and, per role, `ROLE.pem` and
//! `ROLE.key`. Keys are written 0600. Every role certificate names `localhost`, `127.0.0.1` and
//! `::1`, and is valid for both server and client authentication (a gateway serves clients and
//! is itself a client of the region nodes).

use crate::{Role, TlsError};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use time::{Duration, OffsetDateTime};

/// The CA certificate's file in a certificate folder.
pub const CA_CERT: &str = "ca.pem";
/// The CA key's file in a certificate folder.
pub const CA_KEY: &str = "ca.key";

/// The names every certificate is valid for: the cluster's development listeners are on
/// loopback.
pub const NAMES: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

/// The certificate file of `role` in `dir`.
pub fn cert_file(dir: &Path, role: Role) -> PathBuf {
    dir.join(format!("{}.pem", role.name()))
}

/// The key file of `role` in `dir`.
pub fn key_file(dir: &Path, role: Role) -> PathBuf {
    dir.join(format!("{}.key", role.name()))
}

/// Makes a new CA and a certificate for every role in `dir` (created if missing). Refuses a
/// folder that already holds a CA: re-issuing would lock out every holder of the old one.
pub fn init(dir: &Path) -> Result<(), TlsError> {
    if dir.join(CA_CERT).exists() {
        return Err(TlsError::Exists(dir.to_path_buf()));
    }
    std::fs::create_dir_all(dir).map_err(|source| TlsError::Write {
        path: dir.to_path_buf(),
        source,
    })?;
    let now = OffsetDateTime::now_utc();
    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.distinguished_name = name("domicile development CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca.not_before = now - Duration::days(1);
    ca.not_after = now + Duration::days(3650);
    let ca_cert = ca.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca, ca_key);
    // Role files first, the CA last: a folder with `ca.pem` is complete.
    for role in Role::ALL {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(NAMES.map(str::to_string).to_vec())?;
        params.distinguished_name = name(&format!("domicile {}", role.name()));
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.not_before = now - Duration::days(1);
        params.not_after = now + Duration::days(5 * 365);
        let cert = params.signed_by(&key, &issuer)?;
        write(&key_file(dir, role), &key.serialize_pem(), true)?;
        write(&cert_file(dir, role), &cert.pem(), false)?;
    }
    write(&dir.join(CA_KEY), &issuer.key().serialize_pem(), true)?;
    write(&dir.join(CA_CERT), &ca_cert.pem(), false)?;
    Ok(())
}

/// Makes the certificates in `dir` unless it already holds a CA; true if it made them.
pub fn ensure(dir: &Path) -> Result<bool, TlsError> {
    if dir.join(CA_CERT).exists() {
        return Ok(false);
    }
    init(dir)?;
    Ok(true)
}

fn name(common: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "domicile");
    dn.push(DnType::CommonName, common);
    dn
}

/// Writes `text` to a new file made durable; `secret` files are 0600 from their creation.
fn write(path: &Path, text: &str, secret: bool) -> Result<(), TlsError> {
    use std::os::unix::fs::OpenOptionsExt;
    let err = |source| TlsError::Write {
        path: path.to_path_buf(),
        source,
    };
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(if secret { 0o600 } else { 0o644 })
        .open(path)
        .map_err(err)?;
    f.write_all(text.as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(err)
}
