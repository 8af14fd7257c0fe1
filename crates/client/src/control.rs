//! The control plane's routing table: fetch it, and watch it by long poll.

use crate::{ClientError, check};
use domicile_wire::api::RoutingTable;
use std::time::Duration;
use tokio::sync::watch;

#[derive(Debug, Clone)]
pub struct ControlClient {
    base: String,
    http: reqwest::Client,
}

/// How long one watch request waits at the control plane before it answers "no change".
pub const WATCH_WAIT: Duration = Duration::from_secs(20);

impl ControlClient {
    pub fn new(base: impl Into<String>, http: reqwest::Client) -> Self {
        Self {
            base: base.into().trim_end_matches('/').to_string(),
            http,
        }
    }

    /// The table if it is newer than `after`, waiting up to `wait` for a change; `None` if none came.
    pub async fn table(
        &self,
        after: u64,
        wait: Duration,
    ) -> Result<Option<RoutingTable>, ClientError> {
        let url = format!(
            "{}/internal/table?after={after}&wait_ms={}",
            self.base,
            wait.as_millis()
        );
        let transport = |source| ClientError::Transport {
            url: url.clone(),
            source,
        };
        let response = self
            .http
            .get(&url)
            .timeout(wait + Duration::from_secs(10))
            .send()
            .await
            .map_err(transport)?;
        if response.status() == reqwest::StatusCode::NOT_MODIFIED {
            return Ok(None);
        }
        let response = check(&url, response).await?;
        let table = response
            .json::<RoutingTable>()
            .await
            .map_err(|e| ClientError::Body {
                url: url.clone(),
                message: e.to_string(),
            })?;
        Ok(Some(table))
    }

    /// Records an event in the transfer ledger (`key_destruction`, `erasure`,
    /// `consent_revocation`: build it with `LedgerEvent::new(id, &body)`); returns its sequence
    /// number. A retry with the same id is not appended twice, so a caller may retry freely.
    pub async fn record_ledger_event(
        &self,
        event: &domicile_wire::ledger::LedgerEvent,
    ) -> Result<u64, ClientError> {
        let url = format!("{}/internal/ledger/events", self.base);
        let response = crate::send(&url, self.http.post(&url).json(event)).await?;
        let appended: domicile_wire::ledger::LedgerAppended = crate::json(&url, response).await?;
        Ok(appended.seq)
    }

    /// The current table, now.
    pub async fn current(&self) -> Result<RoutingTable, ClientError> {
        match self.table(0, Duration::ZERO).await? {
            Some(t) => Ok(t),
            None => Err(ClientError::Body {
                url: self.base.clone(),
                message: "no routing table".into(),
            }),
        }
    }

    /// Keeps `tx` at the newest table until every receiver is gone. Errors are logged and retried
    /// with backoff (1 s doubling to 10 s): a control plane that is down only delays changes.
    /// Others may update `tx` too (a refresh after a 421): only newer tables replace older ones.
    pub async fn watch(self, tx: std::sync::Arc<watch::Sender<std::sync::Arc<RoutingTable>>>) {
        let mut backoff = Duration::from_secs(1);
        while !tx.is_closed() {
            let after = tx.borrow().version;
            // Nobody reads the table any more (its owner stopped): end now, not after the
            // long poll, and without reporting a control plane that is going away with it.
            let answer = tokio::select! {
                answer = self.table(after, WATCH_WAIT) => answer,
                () = tx.closed() => return,
            };
            match answer {
                Ok(Some(table)) => {
                    tracing::debug!(version = table.version, "routing table updated");
                    publish(&tx, table);
                    backoff = Duration::from_secs(1);
                }
                Ok(None) => backoff = Duration::from_secs(1),
                Err(e) => {
                    tracing::warn!(error = %e, "routing table watch failed; retrying");
                    tokio::select! {
                        () = tokio::time::sleep(backoff) => {}
                        () = tx.closed() => return,
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                }
            }
        }
    }
}

/// Replaces the table in `tx` if `table` is newer; returns whether it did.
pub fn publish(tx: &watch::Sender<std::sync::Arc<RoutingTable>>, table: RoutingTable) -> bool {
    tx.send_if_modified(|current| {
        let newer = table.version > current.version;
        if newer {
            *current = std::sync::Arc::new(table.clone());
        }
        newer
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[tokio::test]
    async fn a_watch_ends_as_soon_as_nobody_reads_its_table_even_mid_poll() {
        // A control plane that takes the long poll and never answers it.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (accepted, polled) = tokio::sync::oneshot::channel();
        let server = tokio::spawn(async move {
            let (_held, _) = listener.accept().await.unwrap();
            let _ = accepted.send(());
            std::future::pending::<()>().await;
        });
        let http = crate::http_client(&crate::ClientTransport::InsecurePlaintext);
        let client = ControlClient::new(format!("http://{addr}"), http);
        let c = domicile_core::reference::cluster_config();
        let (tx, rx) = watch::channel(Arc::new(RoutingTable {
            version: 0,
            buckets: c.buckets,
            schema: c.schema,
            policy: c.policy,
            regions: Vec::new(),
            placement: c.placement,
            overrides: Vec::new(),
        }));
        let watching = tokio::spawn(client.watch(Arc::new(tx)));
        polled.await.unwrap();
        drop(rx);
        // Not a speed figure: before, the watch waited out its poll (WATCH_WAIT + 10 s) and
        // logged the control plane as unreachable; now it ends on the spot.
        let ended = tokio::time::timeout(WATCH_WAIT / 2, watching).await;
        assert!(
            ended.is_ok(),
            "the watch outlived every reader of its table"
        );
        server.abort();
    }
}
