//! `--cluster-nodes N` (chaos, load): a `redis-server` of the run's own
//! and N Relay nodes sharing rooms through it (SPEC.md 14), each in this
//! process; the scenario spreads its clients over the nodes.

use crate::error::{Context, Error, Result};
use crate::peer::System;
use crate::peer::servers::{PeerServer, find_binary};
use crate::target::{Target, TargetOptions};

/// The Redis and the nodes of a cluster run.
#[derive(Debug)]
pub struct Cluster {
    redis: PeerServer,
    pub nodes: Vec<Target>,
}

impl Cluster {
    /// Starts Redis, then `nodes` nodes with `base`'s settings,
    /// `--cluster` pointing at it and `--cluster-order order`.
    pub fn start(
        nodes: usize,
        order: server::ClusterOrder,
        base: &TargetOptions,
    ) -> Result<Cluster> {
        if base.addr.is_some() {
            return Err(Error::new(
                "--cluster-nodes starts its own nodes; leave out --addr",
            ));
        }
        let binary = find_binary("redis-server").ok_or_else(|| {
            Error::new("--cluster-nodes needs redis-server on PATH (apt-get install redis-server)")
        })?;
        let redis = PeerServer::start(System::Redis, &binary, 10_000)?;
        let url = format!("redis://{}", redis.addr);
        let mut started = Vec::with_capacity(nodes);
        for node in 0..nodes {
            let mut config = base.config.clone().unwrap_or_default();
            config.cluster = Some(server::ClusterConfig {
                node_id: format!("chaos-{node}"),
                order,
                ..server::ClusterConfig::new(url.clone())
            });
            let target =
                Target::in_process(config).context(format!("starting cluster node {node}"))?;
            started.push(target);
        }
        Ok(Cluster {
            redis,
            nodes: started,
        })
    }

    pub fn stop(self) {
        for node in self.nodes {
            node.stop();
        }
        self.redis.stop();
    }
}
