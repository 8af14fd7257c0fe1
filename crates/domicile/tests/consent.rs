//! Consent, export and erasure end to end: a control plane, every reference region node and a
//! gateway as real processes. A write to a consent collection without a grant is refused; a
//! revocation erases the purpose's data; the export archive holds exactly the user's data
//! from two regions; an erasure leaves nothing of the user in any region (copies the owners do
//! not own included) and another user's data untouched.

use crate::cluster_processes::{
    Process, admin_token, certs, member_client, register, start_control, start_gateway,
    start_region, url,
};
use domicile_store::VersionedRecord;
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::io::Read;

struct Cluster {
    _dir: tempfile::TempDir,
    _control: Process,
    regions: Vec<(String, Process)>,
    gateway: Process,
    http: reqwest::Client,
    control_url: String,
    admin: String,
}

struct User {
    id: String,
    token: String,
}

impl Cluster {
    /// Every reference region; SG's shop placed in us-west, the rest of SG's data in
    /// cn-beijing, so a user's data spans two regions.
    async fn start() -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("cluster.toml");
        std::fs::write(&config, domicile_core::reference::CLUSTER_TOML).unwrap();
        let tls = certs(dir.path());
        let control = start_control(dir.path(), &config, &tls, 0);
        let control_url = url(&control, "control");
        let admin = admin_token(&control);
        let http = member_client(&tls);
        let mut regions = Vec::new();
        // Every region of the reference cluster runs: an erasure must reach each one.
        for region in domicile_core::reference::cluster_config()
            .regions
            .iter()
            .map(|r| r.id.to_string())
        {
            let region = region.as_str();
            let p = start_region(&config, region, &control_url, &tls);
            register(&http, &control_url, &admin, region, &p).await;
            regions.push((region.to_string(), p));
        }
        let moved = http
            .post(format!("{control_url}/admin/placement"))
            .bearer_auth(&admin)
            .json(&json!({ "service": "ecommerce", "market": "SG", "buckets": "0-1023", "region": "us-west" }))
            .send()
            .await
            .unwrap();
        assert_eq!(moved.status(), StatusCode::OK, "{:?}", moved.text().await);
        // Started after the change: its first table already routes SG's shop to us-west.
        let gateway = start_gateway(dir.path(), &control_url, &tls);
        Cluster {
            _dir: dir,
            _control: control,
            regions,
            gateway,
            http,
            control_url,
            admin,
        }
    }

    fn gw(&self) -> String {
        url(&self.gateway, "gateway")
    }

    async fn signup(&self) -> User {
        let v: Value = self
            .http
            .post(format!("{}/v1/signup", self.gw()))
            .json(&json!({ "market": "SG" }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        User {
            id: v["user"].as_str().unwrap().to_string(),
            token: v["token"].as_str().unwrap().to_string(),
        }
    }

    async fn call(
        &self,
        method: reqwest::Method,
        u: &User,
        path: &str,
        body: impl Into<reqwest::Body>,
    ) -> reqwest::Response {
        self.http
            .request(method, format!("{}/v1/users/{}{path}", self.gw(), u.id))
            .bearer_auth(&u.token)
            .body(body)
            .send()
            .await
            .unwrap()
    }

    async fn put(&self, u: &User, path: &str, body: impl Into<reqwest::Body>) {
        let r = self.call(reqwest::Method::PUT, u, path, body).await;
        assert_eq!(r.status(), StatusCode::OK, "{path}: {:?}", r.text().await);
    }

    async fn grant(&self, u: &User) -> Value {
        let r = self
            .call(
                reqwest::Method::PUT,
                u,
                "/consents/contacts-sync",
                r#"{"notice_version":"2026-01"}"#,
            )
            .await;
        assert_eq!(r.status(), StatusCode::OK);
        r.json().await.unwrap()
    }

    /// The records (tombstones included) stored at region `i` in one service's scope of SG
    /// for `user`'s bucket, read straight from its store (an internal snapshot), owned or not.
    async fn stored(&self, i: usize, service: &str, user: &str) -> Vec<VersionedRecord> {
        let bucket = domicile_core::BucketCount::DEFAULT
            .bucket_of(&domicile_core::UserId::new(user).unwrap())
            .0;
        let r = self
            .http
            .post(format!(
                "{}/internal/snapshot",
                url(&self.regions[i].1, "url")
            ))
            .json(&json!({ "service": service, "market": "SG", "buckets": bucket.to_string() }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        let bytes = r.bytes().await.unwrap();
        let (_, frames, _) = domicile_wire::frame::decode_all(&bytes).unwrap();
        frames
            .into_iter()
            .filter_map(|f| match f {
                domicile_wire::frame::Frame::Record(r)
                    if r.address.collection.user.as_str() == user =>
                {
                    Some(r)
                }
                _ => None,
            })
            .collect()
    }

    /// Every live record of `user` stored in any region, owned or not.
    async fn stored_anywhere(&self, user: &str) -> Vec<String> {
        let mut found = Vec::new();
        for (i, (region, _)) in self.regions.iter().enumerate() {
            for service in ["account", "cloud", "ecommerce", "messaging"] {
                for r in self.stored(i, service, user).await {
                    if r.value.is_some() {
                        found.push(format!(
                            "{region}: {service}/{}/{}",
                            r.address.collection.collection, r.address.key
                        ));
                    }
                }
            }
        }
        found
    }

    fn region_index(&self, id: &str) -> usize {
        self.regions.iter().position(|(r, _)| r == id).unwrap()
    }
}

/// The user's data the tests write: path → value.
fn data_of(tag: &str) -> Vec<(&'static str, Vec<u8>)> {
    vec![
        (
            "/profile/main",
            format!("{{\"name\":\"{tag}\"}}").into_bytes(),
        ),
        ("/orders/o-1", format!("{tag} order one").into_bytes()),
        ("/orders/o-2", format!("{tag} order two").into_bytes()),
        ("/messages/m-1", format!("{tag} hello").into_bytes()),
        ("/notes/n-1", vec![0xff, 0xfe, 0x00, 0x01]),
        ("/contacts/c-1", format!("{tag} mum").into_bytes()),
        (
            "/photos/p-1",
            (0..150_000u32).map(|i| (i % 251) as u8).collect(),
        ),
    ]
}

async fn seed(c: &Cluster, u: &User, tag: &str) {
    c.grant(u).await;
    for (path, value) in data_of(tag) {
        c.put(u, path, value).await;
    }
}

/// Reads an export archive: entry name → bytes, in order.
fn untar(bytes: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut archive = tar::Archive::new(bytes);
    let mut out = Vec::new();
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let name = entry.path().unwrap().display().to_string();
        let mut data = Vec::new();
        entry.read_to_end(&mut data).unwrap();
        out.push((name, data));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consent_gates_writes_revocation_erases_and_export_holds_exactly_the_users_data() {
    let c = Cluster::start().await;
    let (a, b) = (c.signup().await, c.signup().await);

    // No grant: the contact is refused, and nothing of it is stored.
    let refused = c
        .call(reqwest::Method::PUT, &a, "/contacts/c-1", "mum")
        .await;
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    let v: Value = refused.json().await.unwrap();
    assert_eq!(v["error"]["code"], "consent_required", "{v}");
    let unknown = c
        .call(
            reqwest::Method::PUT,
            &a,
            "/consents/ads",
            r#"{"notice_version":"1"}"#,
        )
        .await;
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
    let v: Value = unknown.json().await.unwrap();
    assert_eq!(v["error"]["code"], "not_found");

    seed(&c, &a, "alice").await;
    seed(&c, &b, "canary").await;
    let consents: Value = c
        .call(reqwest::Method::GET, &a, "/consents", "")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(consents["consents"][0]["service"], "cloud");
    assert_eq!(consents["consents"][0]["consent"]["granted"], true);

    // The export: exactly the user's data, from both regions, in one archive.
    let r = c.call(reqwest::Method::GET, &a, "/export", "").await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["content-type"], "application/x-tar");
    let entries = untar(&r.bytes().await.unwrap());
    let names: Vec<&str> = entries.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        ["manifest.json", "records.jsonl", "blobs/photos/p-1"]
    );
    let manifest: Value = serde_json::from_slice(&entries[0].1).unwrap();
    assert_eq!(manifest["user"], a.id.as_str());
    assert_eq!(
        (manifest["records"].as_u64(), manifest["blobs"].as_u64()),
        (Some(8), Some(1))
    );
    let text = String::from_utf8(entries[1].1.clone()).unwrap();
    assert!(!text.contains("canary") && !text.contains(&b.id), "{text}");
    let records: BTreeMap<String, Value> = text
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            let name = format!(
                "{}/{}/{}",
                v["service"].as_str().unwrap(),
                v["collection"].as_str().unwrap(),
                v["key"].as_str().unwrap()
            );
            (name, v)
        })
        .collect();
    assert_eq!(
        records.keys().collect::<Vec<_>>(),
        [
            "account/profile/main",
            "cloud/_consents/contacts-sync",
            "cloud/contacts/c-1",
            "cloud/notes/n-1",
            "cloud/photos/p-1",
            "ecommerce/orders/o-1",
            "ecommerce/orders/o-2",
            "messaging/messages/m-1",
        ]
    );
    for (path, value) in data_of("alice") {
        let (collection, key) = path[1..].split_once('/').unwrap();
        let (_, v) = records
            .iter()
            .find(|(n, _)| n.ends_with(&format!("/{collection}/{key}")))
            .unwrap();
        match (v["value"].as_str(), v["value_base64"].as_str(), &v["blob"]) {
            (Some(text), _, _) => assert_eq!(text.as_bytes(), &value[..], "{path}"),
            (_, Some(b64), _) => assert_eq!(b64, "//4AAQ==", "{path}"),
            (_, _, blob) => {
                assert_eq!(blob["size"].as_u64(), Some(value.len() as u64));
                assert_eq!(v["file"], "blobs/photos/p-1");
                assert_eq!(entries[2].1, value, "the blob's bytes");
            }
        }
    }
    let consent = &records["cloud/_consents/contacts-sync"];
    let consent: Value = serde_json::from_str(consent["value"].as_str().unwrap()).unwrap();
    assert_eq!(consent["notice_version"], "2026-01");

    // Only the token's own user: another token is refused, no token is unauthorized.
    let r = c
        .http
        .get(format!("{}/v1/users/{}/export", c.gw(), a.id))
        .bearer_auth(&b.token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let r = c
        .http
        .get(format!("{}/v1/users/{}/export", c.gw(), a.id))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);

    // Revoking erases the contacts (and only them) and refuses new ones.
    let r = c
        .call(reqwest::Method::DELETE, &a, "/consents/contacts-sync", "")
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["consents"][0]["erased"]["records"], 1, "{v}");
    assert_eq!(v["consents"][0]["consent"]["granted"], false);
    let gone = c.call(reqwest::Method::GET, &a, "/contacts/c-1", "").await;
    assert_eq!(gone.status(), StatusCode::NOT_FOUND);
    let again = c.call(reqwest::Method::PUT, &a, "/contacts/c-2", "x").await;
    assert_eq!(again.status(), StatusCode::FORBIDDEN);
    let kept = c.call(reqwest::Method::GET, &a, "/notes/n-1", "").await;
    assert_eq!(kept.status(), StatusCode::OK);
    let canary = c.call(reqwest::Method::GET, &b, "/contacts/c-1", "").await;
    assert_eq!(canary.text().await.unwrap(), "canary mum");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn erasure_leaves_nothing_of_the_user_in_any_region_and_spares_others() {
    let c = Cluster::start().await;
    let (a, b) = (c.signup().await, c.signup().await);
    seed(&c, &a, "alice").await;
    seed(&c, &b, "canary").await;
    // Copies the owners do not own: SG's shop left behind in cn-beijing (as after a move, or
    // during its reverse replication) and a stray copy in ap-singapore.
    let shop = c
        .stored(c.region_index("us-west"), "ecommerce", &a.id)
        .await;
    assert_eq!(shop.len(), 2);
    let scope = domicile_wire::api::ScopeRequest {
        service: "ecommerce".parse().unwrap(),
        market: domicile_core::Market::new("SG").unwrap(),
        buckets: domicile_core::BucketSet::default(),
    };
    for region in ["cn-beijing", "ap-singapore"] {
        let node = domicile_client::region::RegionClient::new(
            url(&c.regions[c.region_index(region)].1, "url"),
            c.http.clone(),
        );
        let imported = node.import(&scope, &shop).await.unwrap();
        assert_eq!(imported.applied, 2, "{region}");
    }
    assert_eq!(c.stored_anywhere(&a.id).await.len(), 12);

    // Another user's token cannot erase; the owner's can.
    let r = c
        .http
        .delete(format!("{}/v1/users/{}", c.gw(), a.id))
        .bearer_auth(&b.token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let r = c.call(reqwest::Method::DELETE, &a, "", "").await;
    let status = r.status();
    let summary: Value = r.json().await.unwrap();
    assert_eq!(status, StatusCode::OK, "{summary}");
    assert_eq!(summary["records"], 12, "{summary}");
    assert_eq!(summary["blobs"], 1, "{summary}");
    assert_eq!(summary["regions"].as_array().unwrap().len(), 5, "{summary}");
    // Crypto-shredded wherever something of the user was: each such region destroyed the
    // user's data keys, so bytes left in its files no longer open.
    for region in summary["regions"].as_array().unwrap() {
        if region["records"].as_u64().unwrap() > 0 {
            assert!(region["keys_destroyed"].as_u64().unwrap() > 0, "{region}");
        }
    }
    // And the erasure is in the transfer ledger.
    let ledger: Value = c
        .http
        .get(format!("{}/admin/ledger", c.control_url))
        .bearer_auth(c.admin.trim())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let erasures: Vec<&Value> = ledger["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "erasure" && e["body"]["user"] == a.id.as_str())
        .collect();
    assert_eq!(erasures.len(), 1, "{ledger}");
    assert_eq!(erasures[0]["body"]["records"], 12);
    assert_eq!(
        erasures[0]["body"]["keys_destroyed"],
        summary["keys_destroyed"]
    );

    // Nothing of the user is readable anywhere: every path 404s through the gateway, and no
    // region's store holds a live record of theirs.
    for (path, _) in data_of("alice") {
        let r = c.call(reqwest::Method::GET, &a, path, "").await;
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "{path}");
    }
    let consents: Value = c
        .call(reqwest::Method::GET, &a, "/consents", "")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(consents["consents"], json!([]));
    assert_eq!(c.stored_anywhere(&a.id).await, Vec::<String>::new());
    let entries = untar(
        &c.call(reqwest::Method::GET, &a, "/export", "")
            .await
            .bytes()
            .await
            .unwrap(),
    );
    assert_eq!(entries[1], ("records.jsonl".to_string(), Vec::new()));

    // The other user is untouched.
    assert_eq!(c.stored_anywhere(&b.id).await.len(), 8);
    for (path, value) in data_of("canary") {
        let r = c.call(reqwest::Method::GET, &b, path, "").await;
        assert_eq!(r.status(), StatusCode::OK, "{path}");
        assert_eq!(r.bytes().await.unwrap(), value, "{path}");
    }

    // Idempotent: erasing again succeeds and finds nothing.
    let again: Value = c
        .call(reqwest::Method::DELETE, &a, "", "")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        (
            again["records"].as_u64(),
            again["blobs"].as_u64(),
            again["keys_destroyed"].as_u64()
        ),
        (Some(0), Some(0), Some(0))
    );
}
