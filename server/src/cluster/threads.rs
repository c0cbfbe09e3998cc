//! Starting a node's cluster threads: the publisher, the subscriber and
//! the heartbeat. They end when the server shuts down.

use std::sync::Arc;

use crate::shared::Shared;

/// Starts them, on a node with `--cluster`.
pub(crate) fn start(shared: &Arc<Shared>) {
    let Some(cluster) = shared.cluster.as_ref() else {
        return;
    };
    tracing::info!(
        "cluster: node {:?}, Redis at {}, presence expires {} ms after a node's last heartbeat",
        &*cluster.node,
        cluster.config.url,
        cluster.config.presence_ttl.as_millis()
    );
    for (name, run) in [
        (
            "relay-cluster-out",
            super::publisher::run as fn(Arc<Shared>),
        ),
        ("relay-cluster-in", super::subscriber::run),
        ("relay-cluster-beat", super::heartbeat::run),
    ] {
        let shared = Arc::clone(shared);
        if let Err(error) = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || run(shared))
        {
            tracing::error!(
                "cluster: cannot start thread {name}: {error}; this node serves its own members only"
            );
        }
    }
}
