//! Adversarial access against a real `domicile up` process (TLS by default, ports chosen by the
//! OS): unauthenticated calls, other users' ids, forged and expired tokens, plain HTTP to TLS
//! ports, a client certificate from another CA (and none at all) on the internal APIs. Every
//! attempt is counted; none may succeed, and each must be refused the way its kind is refused
//! (401, 403, a TLS handshake refusal, …), so that a refusal for a wrong reason (a 404 from a
//! mistyped path) cannot pass for a defence.

use super::cluster_processes::start_up;
use domicile_tls::rustls;
use domicile_tls::{ClientTransport, Role, RoleTls};
use pasetors::claims::Claims;
use pasetors::keys::{AsymmetricKeyPair, AsymmetricSecretKey, Generate};
use pasetors::public;
use pasetors::version4::V4;
use reqwest::{Client, RequestBuilder};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

/// How an attempt of a kind must be refused.
#[derive(Clone, Copy, Debug)]
enum Refusal {
    /// An HTTP answer with this status.
    Status(u16),
    /// No HTTP answer: the TLS handshake (or the connection) was refused.
    Transport,
    /// No successful answer of any sort: plain HTTP to a TLS port.
    NoHttpSuccess,
}

#[derive(Default)]
struct Kind {
    attempts: u32,
    succeeded: u32,
    /// How the attempts were refused: `401`, `403`, `tls refused`, …
    refused: BTreeMap<String, u32>,
}

#[derive(Default)]
struct Tally {
    kinds: BTreeMap<&'static str, Kind>,
    /// Attempts refused otherwise than their kind must be (a test that no longer tests).
    wrong_refusals: Vec<String>,
}

impl Tally {
    async fn attempt(
        &mut self,
        kind: &'static str,
        what: &str,
        expect: Refusal,
        req: RequestBuilder,
    ) {
        let k = self.kinds.entry(kind).or_default();
        k.attempts += 1;
        let (outcome, matches) = match req.send().await {
            Ok(r) => {
                let status = r.status();
                if status.is_success() || status.is_redirection() {
                    k.succeeded += 1;
                    self.wrong_refusals
                        .push(format!("{kind}: {what}: SUCCEEDED with {status}"));
                    return;
                }
                let matches = match expect {
                    Refusal::Status(s) => status.as_u16() == s,
                    Refusal::Transport => false,
                    Refusal::NoHttpSuccess => true,
                };
                (status.as_u16().to_string(), matches)
            }
            Err(e) => {
                let chain = error_chain(&e);
                // TLS 1.3 finishes the client's side of the handshake before the server checks
                // the client's certificate: a refused one shows as a connection the server
                // closed. A TLS alert read as HTTP is "invalid HTTP version".
                let class = if chain.contains("invalid HTTP version") {
                    "answered with a TLS alert, not HTTP"
                } else if chain.contains("alert") || chain.contains("certificate") {
                    "TLS alert"
                } else if chain.contains("closed") || chain.contains("broken pipe") {
                    "TLS connection closed by the server"
                } else {
                    "connection failed"
                };
                let matches = matches!(expect, Refusal::Transport | Refusal::NoHttpSuccess);
                if !matches {
                    self.wrong_refusals
                        .push(format!("{kind}: {what}: expected {expect:?}, got {chain}"));
                }
                *k.refused.entry(class.to_string()).or_default() += 1;
                return;
            }
        };
        if !matches {
            self.wrong_refusals.push(format!(
                "{kind}: {what}: expected {expect:?}, got {outcome}"
            ));
        }
        *k.refused.entry(outcome).or_default() += 1;
    }

    fn totals(&self) -> (u32, u32) {
        self.kinds
            .values()
            .fold((0, 0), |(a, s), k| (a + k.attempts, s + k.succeeded))
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// A client that trusts the cluster CA (so a failure is the server's refusal, not its own) and
/// presents `cert`/`key`, made by another CA.
fn foreign_client(ca: &Path, foreign: &Path) -> Client {
    let mut roots = rustls::RootCertStore::empty();
    for cert in domicile_tls::load_certs(&ca.join("ca.pem")).unwrap() {
        roots.add(cert).unwrap();
    }
    let chain =
        domicile_tls::load_certs(&domicile_tls::certs::cert_file(foreign, Role::Client)).unwrap();
    let key =
        domicile_tls::load_key(&domicile_tls::certs::key_file(foreign, Role::Client)).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_client_auth_cert(chain, key)
    .unwrap();
    domicile_client::http_client(&ClientTransport::Tls(Arc::new(config)))
}

/// A PASETO v4.public token for `user` of `market`, signed with `secret`, valid from `nbf` to
/// `exp` (RFC 3339).
fn token(
    secret: &AsymmetricSecretKey<V4>,
    user: &str,
    market: &str,
    nbf: &str,
    exp: &str,
) -> String {
    let mut claims = Claims::new().unwrap();
    claims.issued_at(nbf).unwrap();
    claims.not_before(nbf).unwrap();
    claims.expiration(exp).unwrap();
    claims.subject(user).unwrap();
    claims.add_additional("mkt", market).unwrap();
    public::sign(secret, &claims, None, None).unwrap()
}

/// `token` with the character at `at` replaced by another valid base64url character.
fn altered(token: &str, at: usize) -> String {
    let mut bytes = token.as_bytes().to_vec();
    bytes[at] = if bytes[at] == b'A' { b'B' } else { b'A' };
    String::from_utf8(bytes).unwrap()
}

fn plain(url: &str) -> String {
    url.replacen("https://", "http://", 1)
}

/// Signs up a user of `market` at `gateway`: (user, token).
pub(crate) async fn signup(http: &Client, gateway: &str, market: &str) -> (String, String) {
    let r = http
        .post(format!("{gateway}/v1/signup"))
        .json(&json!({ "market": market }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    (
        v["user"].as_str().unwrap().to_string(),
        v["token"].as_str().unwrap().to_string(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_adversarial_access_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let up = start_up(&data);
    let e = &up.ready;
    let (gw, control) = (
        e["gateway"].as_str().unwrap().to_string(),
        e["control"].as_str().unwrap().to_string(),
    );
    let regions: Vec<String> = e["regions"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    let tls = Path::new(e["tls_dir"].as_str().unwrap()).to_path_buf();
    let ca = Path::new(e["ca_file"].as_str().unwrap()).to_path_buf();
    assert!(gw.starts_with("https://") && control.starts_with("https://"));
    assert!(regions.iter().all(|r| r.starts_with("https://")));
    let admin = std::fs::read_to_string(e["admin_token_file"].as_str().unwrap()).unwrap();

    // Who is who: a user's app and an operator trust the CA; a cluster tool has the `client`
    // certificate; the attacker's tools have a certificate of another CA, or speak plain HTTP.
    let outside = domicile_client::http_client(&domicile_tls::trust_ca(&ca).unwrap());
    let member = domicile_client::http_client(&RoleTls::load(&tls, Role::Client).unwrap().client);
    let other_ca = dir.path().join("other-ca");
    domicile_tls::certs::init(&other_ca).unwrap();
    let foreign = foreign_client(&tls, &other_ca);
    let plaintext = domicile_client::http_client(&ClientTransport::InsecurePlaintext);

    // Two users with data; what each attack targets works with the right credentials.
    let (a, a_token) = signup(&outside, &gw, "IN").await;
    let (b, b_token) = signup(&outside, &gw, "IN").await;
    let a_record = format!("{gw}/v1/users/{a}/orders/o-1");
    let b_record = format!("{gw}/v1/users/{b}/orders/o-1");
    for (url, t) in [(&a_record, &a_token), (&b_record, &b_token)] {
        let r = outside
            .put(url)
            .bearer_auth(t)
            .body("mine")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let r = outside.get(url).bearer_auth(t).send().await.unwrap();
        assert_eq!(r.text().await.unwrap(), "mine");
    }
    // Servers offer HTTP/2 by ALPN.
    let h2 = domicile_client::builder(
        &domicile_tls::trust_ca(&ca).unwrap(),
        domicile_client::Alpn::H2AndHttp1,
    )
    .build()
    .unwrap();
    let r = h2.get(format!("{gw}/healthz")).send().await.unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    let r = outside
        .get(format!("{control}/admin/table"))
        .bearer_auth(admin.trim())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = member
        .get(format!("{control}/internal/table?after=0&wait_ms=0"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    for region in &regions {
        let r = member
            .get(format!("{region}/internal/status"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{region}");
    }

    let mut t = Tally::default();
    use Refusal::{NoHttpSuccess, Status, Transport};

    // Unauthenticated: no token, or no admin credential.
    let k = "unauthenticated";
    t.attempt(k, "GET record", Status(401), outside.get(&a_record))
        .await;
    t.attempt(
        k,
        "PUT record",
        Status(401),
        outside.put(&a_record).body("x"),
    )
    .await;
    t.attempt(k, "DELETE record", Status(401), outside.delete(&a_record))
        .await;
    let a_list = format!("{gw}/v1/users/{a}/orders");
    t.attempt(k, "list", Status(401), outside.get(&a_list))
        .await;
    t.attempt(
        k,
        "Basic credentials",
        Status(401),
        outside.get(&a_record).basic_auth(&a, Some("password")),
    )
    .await;
    t.attempt(
        k,
        "empty bearer",
        Status(401),
        outside.get(&a_record).header("authorization", "Bearer "),
    )
    .await;
    let admin_calls: [(&str, reqwest::Method, &str); 6] = [
        ("GET table", reqwest::Method::GET, "/admin/table"),
        ("PUT policy", reqwest::Method::PUT, "/admin/policy"),
        ("POST placement", reqwest::Method::POST, "/admin/placement"),
        (
            "PUT region",
            reqwest::Method::PUT,
            "/admin/regions/cn-beijing",
        ),
        ("POST migration", reqwest::Method::POST, "/admin/migrations"),
        ("GET ledger", reqwest::Method::GET, "/admin/ledger"),
    ];
    for (what, method, path) in &admin_calls {
        let url = format!("{control}{path}");
        t.attempt(
            k,
            what,
            Status(401),
            outside.request(method.clone(), &url).json(&json!({})),
        )
        .await;
        let wrong = format!("{}0", admin.trim());
        t.attempt(
            k,
            &format!("{what} with a wrong admin token"),
            Status(401),
            outside
                .request(method.clone(), &url)
                .bearer_auth(wrong)
                .json(&json!({})),
        )
        .await;
    }
    // A user's token is no admin credential.
    t.attempt(
        k,
        "admin table with a user token",
        Status(401),
        outside
            .get(format!("{control}/admin/table"))
            .bearer_auth(&a_token),
    )
    .await;

    // Other users' ids: a valid token, someone else's data.
    let k = "other_users";
    t.attempt(
        k,
        "GET",
        Status(403),
        outside.get(&b_record).bearer_auth(&a_token),
    )
    .await;
    t.attempt(
        k,
        "PUT",
        Status(403),
        outside.put(&b_record).bearer_auth(&a_token).body("theirs"),
    )
    .await;
    t.attempt(
        k,
        "DELETE",
        Status(403),
        outside.delete(&b_record).bearer_auth(&a_token),
    )
    .await;
    t.attempt(
        k,
        "list",
        Status(403),
        outside
            .get(format!("{gw}/v1/users/{b}/orders"))
            .bearer_auth(&a_token),
    )
    .await;
    t.attempt(
        k,
        "PUT photo",
        Status(403),
        outside
            .put(format!("{gw}/v1/users/{b}/photos/p-1"))
            .bearer_auth(&a_token)
            .body(vec![0u8; 64]),
    )
    .await;

    // Forged tokens: tampered, or signed by a key that is not the gateway's.
    let k = "forged_token";
    let body_start = "v4.public.".len();
    let forgeries = [
        ("payload altered", altered(&a_token, body_start + 10)),
        ("signature altered", altered(&a_token, a_token.len() - 6)),
        ("truncated", a_token[..a_token.len() - 10].to_string()),
        ("signed by another key", {
            let kp = AsymmetricKeyPair::<V4>::generate().unwrap();
            token(
                &kp.secret,
                &a,
                "IN",
                "2026-01-01T00:00:00+00:00",
                "2099-01-01T00:00:00+00:00",
            )
        }),
        (
            "v4.local instead of public",
            a_token.replacen("v4.public.", "v4.local.", 1),
        ),
        ("not a token", "not-a-token".to_string()),
    ];
    for (what, forged) in &forgeries {
        t.attempt(
            k,
            what,
            Status(401),
            outside.get(&a_record).bearer_auth(forged),
        )
        .await;
    }
    let forged_b = {
        let kp = AsymmetricKeyPair::<V4>::generate().unwrap();
        token(
            &kp.secret,
            &b,
            "IN",
            "2026-01-01T00:00:00+00:00",
            "2099-01-01T00:00:00+00:00",
        )
    };
    t.attempt(
        k,
        "another key, another user, write",
        Status(401),
        outside.put(&b_record).bearer_auth(&forged_b).body("x"),
    )
    .await;

    // Expired (and not yet valid) tokens, signed with the gateway's own key.
    let k = "expired_token";
    let key = std::fs::read(data.join("gateway.key")).unwrap();
    let secret = AsymmetricSecretKey::<V4>::from(&key).unwrap();
    let expired = token(
        &secret,
        &a,
        "IN",
        "2020-01-01T00:00:00+00:00",
        "2020-01-01T01:00:00+00:00",
    );
    let future = token(
        &secret,
        &a,
        "IN",
        "2100-01-01T00:00:00+00:00",
        "2100-01-02T00:00:00+00:00",
    );
    // The same key signing a current token is accepted: the refusals below are about time.
    let current = token(
        &secret,
        &a,
        "IN",
        "2020-01-01T00:00:00+00:00",
        "2100-01-01T00:00:00+00:00",
    );
    let r = outside
        .get(&a_record)
        .bearer_auth(&current)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    t.attempt(
        k,
        "expired GET",
        Status(401),
        outside.get(&a_record).bearer_auth(&expired),
    )
    .await;
    t.attempt(
        k,
        "expired PUT",
        Status(401),
        outside.put(&a_record).bearer_auth(&expired).body("x"),
    )
    .await;
    t.attempt(
        k,
        "expired list",
        Status(401),
        outside.get(&a_list).bearer_auth(&expired),
    )
    .await;
    t.attempt(
        k,
        "not yet valid",
        Status(401),
        outside.get(&a_record).bearer_auth(&future),
    )
    .await;

    // Plain HTTP to TLS ports, with valid credentials where they take any.
    let k = "plain_http";
    t.attempt(
        k,
        "gateway signup",
        NoHttpSuccess,
        plaintext
            .post(plain(&format!("{gw}/v1/signup")))
            .json(&json!({ "market": "IN" })),
    )
    .await;
    t.attempt(
        k,
        "gateway GET with a valid token",
        NoHttpSuccess,
        plaintext.get(plain(&a_record)).bearer_auth(&a_token),
    )
    .await;
    t.attempt(
        k,
        "control admin with the admin token",
        NoHttpSuccess,
        plaintext
            .get(plain(&format!("{control}/admin/table")))
            .bearer_auth(admin.trim()),
    )
    .await;
    t.attempt(
        k,
        "control internal table",
        NoHttpSuccess,
        plaintext.get(plain(&format!("{control}/internal/table"))),
    )
    .await;
    for region in &regions {
        t.attempt(
            k,
            "region internal status",
            NoHttpSuccess,
            plaintext.get(plain(&format!("{region}/internal/status"))),
        )
        .await;
    }
    t.attempt(
        k,
        "region write",
        NoHttpSuccess,
        plaintext
            .put(plain(&format!("{}/v1/users/{a}/orders/o-2", regions[0])))
            .header("x-domicile-market", "IN")
            .body("x"),
    )
    .await;

    // A client certificate from another CA on the internal APIs (and the nodes' public one).
    let k = "foreign_ca_cert";
    for region in &regions {
        t.attempt(
            k,
            "region internal status",
            Transport,
            foreign.get(format!("{region}/internal/status")),
        )
        .await;
    }
    t.attempt(
        k,
        "region purge",
        Transport,
        foreign
            .post(format!("{}/internal/purge", regions[0]))
            .json(&json!({})),
    )
    .await;
    t.attempt(
        k,
        "region write",
        Transport,
        foreign
            .put(format!("{}/v1/users/{a}/orders/o-2", regions[0]))
            .header("x-domicile-market", "IN")
            .body("x"),
    )
    .await;
    t.attempt(
        k,
        "control internal table",
        Transport,
        foreign.get(format!("{control}/internal/table?after=0&wait_ms=0")),
    )
    .await;

    // No client certificate at all on the internal APIs.
    let k = "no_client_cert";
    for region in &regions {
        t.attempt(
            k,
            "region internal status",
            Transport,
            outside.get(format!("{region}/internal/status")),
        )
        .await;
    }
    t.attempt(
        k,
        "control internal table",
        Status(403),
        outside.get(format!("{control}/internal/table?after=0&wait_ms=0")),
    )
    .await;
    t.attempt(
        k,
        "control internal table through the gateway",
        Status(404),
        outside.get(format!("{gw}/internal/table?after=0&wait_ms=0")),
    )
    .await;

    // Nothing the attacks tried changed anyone's data.
    for (url, t_) in [(&a_record, &a_token), (&b_record, &b_token)] {
        let r = outside.get(url).bearer_auth(t_).send().await.unwrap();
        assert_eq!(r.text().await.unwrap(), "mine", "{url}");
    }

    let (attempts, succeeded) = t.totals();
    println!("adversarial: {attempts} attempts, {succeeded} succeeded");
    for (kind, k) in &t.kinds {
        let refused: Vec<String> = k
            .refused
            .iter()
            .map(|(how, n)| format!("{how}: {n}"))
            .collect();
        println!(
            "  {kind:<16} {:>3} attempts, {} succeeded (refused: {})",
            k.attempts,
            k.succeeded,
            refused.join(", ")
        );
    }
    assert_eq!(succeeded, 0, "{:#?}", t.wrong_refusals);
    assert!(t.wrong_refusals.is_empty(), "{:#?}", t.wrong_refusals);
    assert!(attempts >= 50, "{attempts}");
    drop(up);
}
