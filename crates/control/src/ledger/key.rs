//! The ledger's signing key: Ed25519 (`ed25519-compact`, already in the tree through `pasetors`;
//! docs/decisions/0008-ledger-signing.md). The control plane keeps the 32-byte seed in a file
//! (hex, mode 0600) and writes the public key beside it, for operators to keep elsewhere and pin
//! (`domicile audit verify --public-key`).

use ed25519_compact::{KeyPair, PublicKey, Seed, Signature};
use std::path::Path;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum KeyError {
    #[error("{path}: {message}")]
    File { path: String, message: String },
    #[error("not an Ed25519 public key (64 hex digits expected): {0}")]
    BadPublicKey(String),
}

/// Lower-case hex.
pub fn to_hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// Bytes from hex (either case); `None` if it is not hex.
pub fn from_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

/// A public key that checkpoints are verified against, with its id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyingKey {
    key: PublicKey,
    id: String,
}

impl VerifyingKey {
    /// From hex text (the public key file's contents; surrounding whitespace is ignored).
    pub fn parse(text: &str) -> Result<Self, KeyError> {
        let text = text.trim();
        let short = || KeyError::BadPublicKey(text.chars().take(80).collect());
        let bytes = from_hex(text).ok_or_else(short)?;
        let key = PublicKey::from_slice(&bytes).map_err(|_| short())?;
        Ok(Self::of(key))
    }

    fn of(key: PublicKey) -> Self {
        let hash = blake3::hash(key.as_ref());
        Self {
            id: to_hex(&hash.as_bytes()[..8]),
            key,
        }
    }

    /// The first 16 hex digits of BLAKE3 of the key: how a checkpoint names its key.
    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn hex(&self) -> String {
        to_hex(self.key.as_ref())
    }

    /// Whether `signature_hex` is this key's signature of `message`.
    pub fn verifies(&self, message: &[u8], signature_hex: &str) -> bool {
        from_hex(signature_hex)
            .and_then(|b| Signature::from_slice(&b).ok())
            .is_some_and(|sig| self.key.verify(message, &sig).is_ok())
    }
}

/// The control plane's ledger signing key.
pub struct LedgerKey {
    pair: KeyPair,
    public: VerifyingKey,
}

impl LedgerKey {
    /// A fresh random key (tests, and the first start).
    pub fn generate() -> Self {
        Self::from_seed(Seed::generate())
    }

    fn from_seed(seed: Seed) -> Self {
        let pair = KeyPair::from_seed(seed);
        let public = VerifyingKey::of(pair.pk);
        Self { pair, public }
    }

    /// Loads the key from `secret` (hex seed), creating it (mode 0600) if missing, and writes
    /// its public key to `public` (hex, one line) unless that file already says so.
    pub fn load_or_create(secret: &Path, public: &Path) -> Result<Self, KeyError> {
        let err = |path: &Path, e: &dyn std::fmt::Display| KeyError::File {
            path: path.display().to_string(),
            message: e.to_string(),
        };
        let key = if secret.exists() {
            let text = std::fs::read_to_string(secret).map_err(|e| err(secret, &e))?;
            let seed = from_hex(text.trim())
                .and_then(|b| Seed::from_slice(&b).ok())
                .ok_or_else(|| err(secret, &"not a ledger key (64 hex digits expected)"))?;
            Self::from_seed(seed)
        } else {
            use std::io::Write as _;
            use std::os::unix::fs::OpenOptionsExt as _;
            let key = Self::generate();
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(secret)
                .map_err(|e| err(secret, &e))?;
            f.write_all(to_hex(key.pair.sk.seed().as_ref()).as_bytes())
                .and_then(|()| f.sync_all())
                .map_err(|e| err(secret, &e))?;
            key
        };
        let line = format!("{}\n", key.public.hex());
        if std::fs::read_to_string(public).ok().as_deref() != Some(line.as_str()) {
            std::fs::write(public, line).map_err(|e| err(public, &e))?;
        }
        Ok(key)
    }

    pub fn public(&self) -> &VerifyingKey {
        &self.public
    }

    /// The hex Ed25519 signature of `message` (deterministic, RFC 8032).
    pub fn sign(&self, message: &[u8]) -> String {
        to_hex(self.pair.sk.sign(message, None).as_ref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_survives_a_restart_and_publishes_its_public_half() {
        let dir = tempfile::tempdir().unwrap();
        let (secret, public) = (dir.path().join("ledger.key"), dir.path().join("ledger.pub"));
        let first = LedgerKey::load_or_create(&secret, &public).unwrap();
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&secret).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let again = LedgerKey::load_or_create(&secret, &public).unwrap();
        assert_eq!(first.public(), again.public());
        let pinned = VerifyingKey::parse(&std::fs::read_to_string(&public).unwrap()).unwrap();
        assert_eq!(&pinned, first.public());
        let sig = first.sign(b"head");
        assert!(pinned.verifies(b"head", &sig));
        assert!(!pinned.verifies(b"hea d", &sig));
        assert!(!pinned.verifies(b"head", "00"));
        assert!(!LedgerKey::generate().public().verifies(b"head", &sig));
    }

    #[test]
    fn bad_key_text_is_refused() {
        assert!(VerifyingKey::parse("zz").is_err());
        assert!(VerifyingKey::parse(&"ab".repeat(31)).is_err());
        assert_eq!(from_hex("0aFf"), Some(vec![10, 255]));
        assert_eq!(from_hex("0"), None);
        assert_eq!(from_hex("é0"), None);
    }
}
