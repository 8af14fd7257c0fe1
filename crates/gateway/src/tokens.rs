//! User tokens: PASETO v4.public (Ed25519) from `pasetors`, carrying the user id and market.
//!
//! PASETO over JWT: one algorithm per version, so no algorithm-confusion attacks to configure
//! away. The signing key is kept in a file (0600) so that tokens survive a gateway restart.

use domicile_core::{Market, UserId};
use pasetors::claims::{Claims, ClaimsValidationRules};
use pasetors::keys::{AsymmetricKeyPair, AsymmetricPublicKey, AsymmetricSecretKey, Generate};
use pasetors::token::UntrustedToken;
use pasetors::version4::V4;
use pasetors::{Public, public};
use std::path::Path;
use std::time::Duration;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum TokenError {
    #[error("token is malformed")]
    Malformed,
    #[error("token is invalid or expired")]
    Invalid,
    #[error("token lacks the {0} claim")]
    MissingClaim(&'static str),
    #[error("signing key: {0}")]
    Key(String),
}

/// What a valid token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub user: UserId,
    pub market: Market,
}

pub struct TokenIssuer {
    secret: AsymmetricSecretKey<V4>,
    public: AsymmetricPublicKey<V4>,
    ttl: Duration,
    verified: VerifiedCache,
}

/// Tokens already verified, by their BLAKE3 hash, with their expiry. An Ed25519 verification
/// costs ~60 µs — 14% of the gateway's CPU under load (perf, `bench gateway`); a client sends
/// the same token on every call. Entries are dropped at expiry, and the whole cache when full.
#[derive(Default)]
struct VerifiedCache {
    entries:
        std::sync::Mutex<std::collections::HashMap<[u8; 32], (Identity, time::OffsetDateTime)>>,
}

const VERIFIED_CACHE_MAX: usize = 100_000;

impl VerifiedCache {
    fn get(&self, key: &[u8; 32]) -> Option<Identity> {
        let entries = self.entries.lock().ok()?;
        let (identity, expires) = entries.get(key)?;
        (time::OffsetDateTime::now_utc() < *expires).then(|| identity.clone())
    }

    fn put(&self, key: [u8; 32], identity: Identity, expires: time::OffsetDateTime) {
        if let Ok(mut entries) = self.entries.lock() {
            if entries.len() >= VERIFIED_CACHE_MAX {
                entries.clear();
            }
            entries.insert(key, (identity, expires));
        }
    }
}

impl TokenIssuer {
    pub fn generate(ttl: Duration) -> Result<Self, TokenError> {
        let kp = AsymmetricKeyPair::<V4>::generate().map_err(|e| TokenError::Key(e.to_string()))?;
        Ok(Self {
            secret: kp.secret,
            public: kp.public,
            ttl,
            verified: VerifiedCache::default(),
        })
    }

    /// Loads the signing key from `path`, creating it (mode 0600) if missing.
    pub fn load_or_create(path: &Path, ttl: Duration) -> Result<Self, TokenError> {
        let key_err = |e: String| TokenError::Key(format!("{}: {e}", path.display()));
        if path.exists() {
            let bytes = std::fs::read(path).map_err(|e| key_err(e.to_string()))?;
            let secret =
                AsymmetricSecretKey::<V4>::from(&bytes).map_err(|e| key_err(e.to_string()))?;
            let public =
                AsymmetricPublicKey::<V4>::try_from(&secret).map_err(|e| key_err(e.to_string()))?;
            return Ok(Self {
                secret,
                public,
                ttl,
                verified: VerifiedCache::default(),
            });
        }
        let issuer = Self::generate(ttl)?;
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| key_err(e.to_string()))?;
        file.write_all(issuer.secret.as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(|e| key_err(e.to_string()))?;
        Ok(issuer)
    }

    pub fn issue(&self, identity: &Identity) -> Result<String, TokenError> {
        let err = |e: pasetors::errors::Error| TokenError::Key(e.to_string());
        let mut claims = Claims::new_expires_in(&self.ttl).map_err(err)?;
        claims.subject(identity.user.as_str()).map_err(err)?;
        claims
            .add_additional("mkt", identity.market.as_str())
            .map_err(err)?;
        let token = public::sign(&self.secret, &claims, None, None).map_err(err)?;
        // A token this gateway has just signed needs no verifying on its first call.
        if let Some(expires) = expiry(&claims) {
            let key = *blake3::hash(token.as_bytes()).as_bytes();
            self.verified.put(key, identity.clone(), expires);
        }
        Ok(token)
    }

    /// Checks signature and expiry; returns who the token is for.
    pub fn verify(&self, token: &str) -> Result<Identity, TokenError> {
        let key = *blake3::hash(token.as_bytes()).as_bytes();
        if let Some(identity) = self.verified.get(&key) {
            return Ok(identity);
        }
        let untrusted =
            UntrustedToken::<Public, V4>::try_from(token).map_err(|_| TokenError::Malformed)?;
        let trusted = public::verify(
            &self.public,
            &untrusted,
            &ClaimsValidationRules::new(),
            None,
            None,
        )
        .map_err(|_| TokenError::Invalid)?;
        let claims = trusted.payload_claims().ok_or(TokenError::Invalid)?;
        let user = claims
            .get_claim("sub")
            .and_then(|v| v.as_str())
            .ok_or(TokenError::MissingClaim("sub"))?;
        let market = claims
            .get_claim("mkt")
            .and_then(|v| v.as_str())
            .ok_or(TokenError::MissingClaim("mkt"))?;
        let identity = Identity {
            user: UserId::new(user).map_err(|_| TokenError::Invalid)?,
            market: Market::new(market).map_err(|_| TokenError::Invalid)?,
        };
        // Cache only what says when it expires (pasetors has just checked that it has not).
        if let Some(expires) = expiry(claims) {
            self.verified.put(key, identity.clone(), expires);
        }
        Ok(identity)
    }
}

/// A token's expiry, from its `exp` claim.
fn expiry(claims: &Claims) -> Option<time::OffsetDateTime> {
    claims
        .get_claim("exp")
        .and_then(|v| v.as_str())
        .and_then(|e| {
            time::OffsetDateTime::parse(e, &time::format_description::well_known::Rfc3339).ok()
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity() -> Identity {
        Identity {
            user: UserId::new("u1").unwrap(),
            market: Market::new("IN").unwrap(),
        }
    }

    #[test]
    fn tokens_round_trip_and_forgeries_fail() {
        let issuer = TokenIssuer::generate(Duration::from_secs(60)).unwrap();
        let token = issuer.issue(&identity()).unwrap();
        let key = *blake3::hash(token.as_bytes()).as_bytes();
        assert_eq!(
            issuer.verified.get(&key),
            Some(identity()),
            "issued, so known valid"
        );
        assert_eq!(issuer.verify(&token).unwrap(), identity());
        let other = TokenIssuer::generate(Duration::from_secs(60)).unwrap();
        assert!(
            matches!(other.verify(&token), Err(TokenError::Invalid)),
            "another key's token"
        );
        let mut tampered = token.clone().into_bytes();
        let n = tampered.len();
        tampered[n - 5] = if tampered[n - 5] == b'A' { b'B' } else { b'A' };
        assert!(
            issuer
                .verify(&String::from_utf8(tampered).unwrap())
                .is_err()
        );
        assert!(matches!(
            issuer.verify("not a token"),
            Err(TokenError::Malformed)
        ));
    }

    #[test]
    fn expired_tokens_fail() {
        let issuer = TokenIssuer::generate(Duration::from_secs(60)).unwrap();
        let mut claims = Claims::new().unwrap();
        claims.issued_at("2020-01-01T00:00:00+00:00").unwrap();
        claims.not_before("2020-01-01T00:00:00+00:00").unwrap();
        claims.expiration("2020-01-01T01:00:00+00:00").unwrap();
        claims.subject("u1").unwrap();
        claims.add_additional("mkt", "IN").unwrap();
        let token = public::sign(&issuer.secret, &claims, None, None).unwrap();
        assert!(matches!(issuer.verify(&token), Err(TokenError::Invalid)));
        // A cached token stops working at its expiry too.
        let key = *blake3::hash(b"t").as_bytes();
        let past = time::OffsetDateTime::now_utc() - time::Duration::seconds(1);
        issuer.verified.put(key, identity(), past);
        assert_eq!(issuer.verified.get(&key), None);
    }

    #[test]
    fn the_key_file_persists_the_issuer() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gateway.key");
        let a = TokenIssuer::load_or_create(&path, Duration::from_secs(60)).unwrap();
        let token = a.issue(&identity()).unwrap();
        let b = TokenIssuer::load_or_create(&path, Duration::from_secs(60)).unwrap();
        assert_eq!(b.verify(&token).unwrap(), identity());
    }
}
