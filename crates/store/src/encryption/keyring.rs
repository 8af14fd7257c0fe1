//! Key-encryption keys: the [`KeyProvider`] seam and the default keyring file.

use super::EncryptionError;
use async_trait::async_trait;
use aws_lc_rs::aead::{AES_256_GCM, Aad, Nonce, RandomizedNonceKey};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use zeroize::Zeroizing;

/// Wraps and unwraps data keys with a region's key-encryption key, which never leaves it.
/// `context` is bound to the wrapped key (associated data), so a wrapped key copied to another
/// user's slot does not unwrap.
#[async_trait]
pub trait KeyProvider: Send + Sync + 'static {
    /// What the provider is, for logs (`keyring file /data/us-west/keyring.json`).
    fn describe(&self) -> String;

    async fn wrap(&self, data_key: &[u8], context: &[u8]) -> Result<Vec<u8>, EncryptionError>;

    async fn unwrap(
        &self,
        wrapped: &[u8],
        context: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, EncryptionError>;
}

/// The keyring file's contents: the region it belongs to and its keys, newest last. Older keys
/// stay to unwrap data keys wrapped before a rotation.
#[derive(Serialize, Deserialize)]
struct KeyringDocument {
    region: String,
    keys: Vec<KeyringEntry>,
}

#[derive(Serialize, Deserialize)]
struct KeyringEntry {
    id: String,
    created_ms: u64,
    /// 32 bytes, lower-case hex.
    secret: String,
}

/// A region's key-encryption keys in a local file (0600), made on first start.
pub struct KeyringFile {
    path: PathBuf,
    /// (id, key), the active one last.
    keys: Vec<(String, RandomizedNonceKey)>,
}

/// Wrapped key layout: format byte, key-id length, key id, nonce, sealed data key.
const WRAP_FORMAT: u8 = 1;

impl KeyringFile {
    /// Opens `path`, or creates it with a fresh key for `region`. A keyring made for another
    /// region is refused: a region must never seal with (or hold) another region's key.
    pub fn open_or_create(path: &Path, region: &str) -> Result<Self, EncryptionError> {
        let fail = |reason: String| EncryptionError::Keyring {
            path: path.display().to_string(),
            reason,
        };
        if !path.exists() {
            create(path, region).map_err(|e| fail(e.to_string()))?;
        }
        let text = Zeroizing::new(std::fs::read_to_string(path).map_err(|e| fail(e.to_string()))?);
        let doc: KeyringDocument =
            serde_json::from_str(&text).map_err(|e| fail(format!("not a keyring: {e}")))?;
        if doc.region != region {
            return Err(fail(format!(
                "it belongs to region {}, not {region}",
                doc.region
            )));
        }
        if doc.keys.is_empty() {
            return Err(fail("it holds no key".into()));
        }
        let mut keys = Vec::with_capacity(doc.keys.len());
        for entry in &doc.keys {
            let secret = Zeroizing::new(
                decode_hex(&entry.secret)
                    .filter(|s| s.len() == 32)
                    .ok_or_else(|| fail(format!("key {} is not 64 hex digits", entry.id)))?,
            );
            let key = RandomizedNonceKey::new(&AES_256_GCM, &secret)
                .map_err(|_| EncryptionError::Crypto("AES-256-GCM key"))?;
            keys.push((entry.id.clone(), key));
        }
        Ok(Self {
            path: path.to_path_buf(),
            keys,
        })
    }

    fn key(&self, id: &str) -> Option<&RandomizedNonceKey> {
        self.keys.iter().find(|(k, _)| k == id).map(|(_, key)| key)
    }
}

fn create(path: &Path, region: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut secret = Zeroizing::new([0u8; 32]);
    aws_lc_rs::rand::fill(secret.as_mut())
        .map_err(|_| std::io::Error::other("the system random source failed"))?;
    let created_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let doc = KeyringDocument {
        region: region.to_string(),
        keys: vec![KeyringEntry {
            id: format!("{region}-kek-{created_ms}"),
            created_ms,
            secret: encode_hex(secret.as_ref()),
        }],
    };
    let text = Zeroizing::new(serde_json::to_string_pretty(&doc).map_err(std::io::Error::other)?);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

#[async_trait]
impl KeyProvider for KeyringFile {
    fn describe(&self) -> String {
        format!("keyring file {}", self.path.display())
    }

    async fn wrap(&self, data_key: &[u8], context: &[u8]) -> Result<Vec<u8>, EncryptionError> {
        let (id, key) = self
            .keys
            .last()
            .ok_or_else(|| EncryptionError::UnknownKey(String::new()))?;
        let mut sealed = data_key.to_vec();
        let nonce = key
            .seal_in_place_append_tag(Aad::from(context), &mut sealed)
            .map_err(|_| EncryptionError::Crypto("wrap a data key"))?;
        let mut out = Vec::with_capacity(2 + id.len() + 12 + sealed.len());
        out.push(WRAP_FORMAT);
        out.push(u8::try_from(id.len()).map_err(|_| EncryptionError::UnknownKey(id.clone()))?);
        out.extend_from_slice(id.as_bytes());
        out.extend_from_slice(nonce.as_ref());
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    async fn unwrap(
        &self,
        wrapped: &[u8],
        context: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, EncryptionError> {
        let (&format, rest) = wrapped.split_first().ok_or(EncryptionError::Unwrap)?;
        let (&id_len, rest) = rest.split_first().ok_or(EncryptionError::Unwrap)?;
        if format != WRAP_FORMAT || rest.len() < usize::from(id_len) + 12 {
            return Err(EncryptionError::Unwrap);
        }
        let (id, rest) = rest.split_at(usize::from(id_len));
        let id = std::str::from_utf8(id).map_err(|_| EncryptionError::Unwrap)?;
        let key = self
            .key(id)
            .ok_or_else(|| EncryptionError::UnknownKey(id.to_string()))?;
        let (nonce, sealed) = rest.split_at(12);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| EncryptionError::Unwrap)?;
        let mut buf = Zeroizing::new(sealed.to_vec());
        let len = key
            .open_in_place(nonce, Aad::from(context), buf.as_mut_slice())
            .map_err(|_| EncryptionError::Unwrap)?
            .len();
        buf.truncate(len);
        Ok(buf)
    }
}

fn encode_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_keyring_is_made_once_and_wraps_for_its_context_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keyring.json");
        let ring = KeyringFile::open_or_create(&path, "us-west").unwrap();
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&path).unwrap().permissions(),
        );
        assert_eq!(mode & 0o777, 0o600);
        let wrapped = ring.wrap(&[7u8; 32], b"alice").await.unwrap();
        let again = KeyringFile::open_or_create(&path, "us-west").unwrap();
        assert_eq!(
            again.unwrap(&wrapped, b"alice").await.unwrap().as_slice(),
            &[7u8; 32]
        );
        assert!(matches!(
            again.unwrap(&wrapped, b"bob").await,
            Err(EncryptionError::Unwrap)
        ));
    }

    #[tokio::test]
    async fn another_regions_keyring_neither_opens_as_this_region_nor_unwraps() {
        let dir = tempfile::tempdir().unwrap();
        let west = KeyringFile::open_or_create(&dir.path().join("w.json"), "us-west").unwrap();
        let east_path = dir.path().join("s.json");
        let east = KeyringFile::open_or_create(&east_path, "ap-singapore").unwrap();
        assert!(KeyringFile::open_or_create(&east_path, "us-west").is_err());
        let wrapped = west.wrap(&[1u8; 32], b"ctx").await.unwrap();
        assert!(east.unwrap(&wrapped, b"ctx").await.is_err());
    }
}
