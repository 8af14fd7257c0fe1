//! Region nodes that run in the gateway's own process (`domicile up`, the demo, the benches):
//! a call to one goes straight into its router, with no socket, TLS or HTTP encoding between.
//!
//! The hop is pure cost there: both ends are the same process, so mutual TLS proves nothing the
//! process does not already know, and on two cores the second TLS exchange cost as much as the
//! whole direct path (decision 0017). The node sees the same request — path, market and epoch
//! headers, body — and answers it through the same handlers, ownership checks and metrics; a
//! 421 or a fenced range comes back exactly as over the network. A node in another process is
//! still called over pooled, mutually authenticated HTTP (decision 0004).

use crate::route::Route;
use axum::Router;
use domicile_core::RegionId;
use std::collections::HashMap;

/// The in-process nodes, by region, each with the URL it serves on.
#[derive(Clone, Default)]
pub struct LocalNodes {
    nodes: HashMap<RegionId, LocalNode>,
}

#[derive(Clone)]
struct LocalNode {
    url: String,
    router: Router,
}

impl LocalNodes {
    /// Adds `region`'s node, which also serves on `url`.
    pub fn with(mut self, region: RegionId, url: String, router: Router) -> Self {
        self.nodes.insert(region, LocalNode { url, router });
        self
    }

    /// The router of the node `route` names, if it runs in this process. Only when the routing
    /// table still gives the URL that node serves on: a region the control plane moved to
    /// another address is called there.
    pub(crate) fn router(&self, route: &Route) -> Option<Router> {
        self.nodes
            .get(&route.region)
            .filter(|node| node.url == route.url)
            .map(|node| node.router.clone())
    }
}

impl std::fmt::Debug for LocalNodes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map()
            .entries(self.nodes.iter().map(|(region, node)| (region, &node.url)))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use domicile_core::{Bucket, CollectionKind, Epoch, ServiceName};

    fn route(region: &str, url: &str) -> Route {
        Route {
            service: ServiceName::new("ecommerce").expect("service"),
            kind: CollectionKind::Records,
            bucket: Bucket(7),
            region: RegionId::new(region).expect("region"),
            url: url.to_string(),
            epoch: Epoch(1),
        }
    }

    #[test]
    fn only_a_node_of_this_process_at_the_url_the_table_gives_is_called_in_process() {
        let local = LocalNodes::default().with(
            RegionId::new("cn-beijing").expect("region"),
            "https://127.0.0.1:4001".into(),
            Router::new(),
        );
        assert!(
            local
                .router(&route("cn-beijing", "https://127.0.0.1:4001"))
                .is_some()
        );
        // The control plane moved the region elsewhere: the call follows the table.
        assert!(
            local
                .router(&route("cn-beijing", "https://10.0.0.9:4001"))
                .is_none()
        );
        // A region of another process.
        assert!(
            local
                .router(&route("us-west", "https://127.0.0.1:4001"))
                .is_none()
        );
        assert!(
            LocalNodes::default()
                .router(&route("cn-beijing", "https://127.0.0.1:4001"))
                .is_none()
        );
    }
}
