//! The I/O half of [`super`]: the `redis` crate's own clients (plain, Sentinel, Cluster),
//! built once, and the connections they hand out.

use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionLike, MultiplexedConnection, PubSub};
use redis::cluster::{ClusterClient, ClusterClientBuilder};
use redis::cluster_async::ClusterConnection;
use redis::sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType};
use redis::{
    AsyncConnectionConfig, Client, ConnectionAddr, ConnectionInfo, RedisConnectionInfo,
    TlsCertificates, TlsMode,
};
use tokio::sync::Mutex;

use super::{NodeAddr, RedisTargetSpec, Topology};
use crate::redis_call::{bounded, RedisCallError};

/// A validated Redis target with its clients; cheap to clone.
#[derive(Clone)]
pub struct RedisTarget {
    spec: Arc<RedisTargetSpec>,
    kind: Kind,
}

#[derive(Clone)]
enum Kind {
    Standalone(Client),
    /// `&mut` to ask the sentinels, hence the lock; held only while asking.
    Sentinel(Arc<Mutex<SentinelClient>>),
    /// The cluster client for commands, and one plain client per seed node for pub/sub.
    Cluster {
        client: ClusterClient,
        seeds: Vec<Client>,
    },
}

impl std::fmt::Debug for RedisTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.spec.identity())
    }
}

/// A command connection: one node's multiplexed connection, or a cluster connection that
/// routes each command to its slot's master (following MOVED/ASK itself).
#[derive(Clone)]
pub enum Commands {
    Node(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl std::fmt::Debug for Commands {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Node(_) => "Commands::Node",
            Self::Cluster(_) => "Commands::Cluster",
        })
    }
}

impl ConnectionLike for Commands {
    fn req_packed_command<'a>(
        &'a mut self,
        cmd: &'a redis::Cmd,
    ) -> redis::RedisFuture<'a, redis::Value> {
        match self {
            Self::Node(c) => c.req_packed_command(cmd),
            Self::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<redis::Value>> {
        match self {
            Self::Node(c) => c.req_packed_commands(cmd, offset, count),
            Self::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Node(c) => c.get_db(),
            Self::Cluster(c) => c.get_db(),
        }
    }
}

impl RedisTarget {
    /// Builds the clients; connects to nothing yet.
    ///
    /// # Errors
    /// The `redis` crate refused the configuration (e.g. an unusable CA file).
    pub fn new(spec: RedisTargetSpec) -> Result<Self, redis::RedisError> {
        let certs = || TlsCertificates {
            client_tls: None,
            root_cert: spec.ca_pem.clone(),
        };
        let plain = |node: &NodeAddr| -> Result<Client, redis::RedisError> {
            let info = spec.connection_info(node);
            if spec.ca_pem.is_some() {
                Client::build_with_tls(info, certs())
            } else {
                Client::open(info)
            }
        };
        let kind = match &spec.topology {
            Topology::Standalone { host, port } => Kind::Standalone(plain(&NodeAddr {
                host: host.clone(),
                port: *port,
            })?),
            Topology::Sentinel {
                sentinels,
                master,
                sentinel_password,
            } => {
                let addrs = sentinels.iter().map(|n| spec.addr(n));
                let mut b =
                    SentinelClientBuilder::new(addrs, master.clone(), SentinelServerType::Master)?
                        .set_client_to_redis_db(spec.db);
                if let Some(u) = &spec.username {
                    b = b.set_client_to_redis_username(u.clone());
                }
                if let Some(p) = &spec.password {
                    b = b.set_client_to_redis_password(p.clone());
                }
                if let Some(p) = sentinel_password {
                    b = b.set_client_to_sentinel_password(p.clone());
                }
                if spec.tls {
                    b = b
                        .set_client_to_redis_tls_mode(TlsMode::Secure)
                        .set_client_to_sentinel_tls_mode(TlsMode::Secure);
                }
                if spec.ca_pem.is_some() {
                    b = b
                        .set_client_to_redis_certificates(certs())
                        .set_client_to_sentinel_certificates(certs());
                }
                Kind::Sentinel(Arc::new(Mutex::new(b.build()?)))
            }
            Topology::Cluster { seeds } => {
                let infos: Vec<ConnectionInfo> =
                    seeds.iter().map(|n| spec.connection_info(n)).collect();
                let mut b = ClusterClientBuilder::new(infos).retries(3);
                if spec.ca_pem.is_some() {
                    b = b.certs(certs());
                }
                Kind::Cluster {
                    client: b.build()?,
                    seeds: seeds.iter().map(plain).collect::<Result<_, _>>()?,
                }
            }
        };
        Ok(Self {
            spec: Arc::new(spec),
            kind,
        })
    }

    /// See [`RedisTargetSpec::identity`].
    pub fn identity(&self) -> String {
        self.spec.identity()
    }

    /// Commands that touch keys of different slots cannot be one MULTI on a cluster.
    pub fn is_cluster(&self) -> bool {
        self.spec.is_cluster()
    }

    /// A command connection, its connect and every response bounded by `timeout`.
    ///
    /// # Errors
    /// No master known to the sentinels, connecting failed or timed out.
    pub async fn commands(
        &self,
        timeout: Duration,
        what: &'static str,
    ) -> Result<Commands, RedisCallError> {
        match &self.kind {
            Kind::Cluster { client, .. } => {
                let config = redis::cluster::ClusterConfig::new()
                    .set_connection_timeout(timeout)
                    .set_response_timeout(timeout);
                let conn = bounded(
                    timeout,
                    what,
                    client.get_async_connection_with_config(config),
                )
                .await?;
                Ok(Commands::Cluster(conn))
            }
            _ => {
                let node = self.node(timeout).await?;
                Ok(Commands::Node(node_commands(&node, timeout, what).await?))
            }
        }
    }

    /// A pub/sub connection and a command connection. On Sentinel both go to the same
    /// master. On a cluster the pub/sub connection goes to the first seed node that
    /// answers: a classic PUBLISH reaches every node, so any one node hears everything.
    ///
    /// # Errors
    /// As for [`Self::commands`].
    pub async fn session(&self, timeout: Duration) -> Result<(PubSub, Commands), RedisCallError> {
        match &self.kind {
            Kind::Cluster { seeds, .. } => {
                let mut last = None;
                let mut pubsub = None;
                for seed in seeds {
                    match bounded(timeout, "connecting pub/sub", seed.get_async_pubsub()).await {
                        Ok(p) => {
                            pubsub = Some(p);
                            break;
                        }
                        Err(e) => last = Some(e),
                    }
                }
                let pubsub = match (pubsub, last) {
                    (Some(p), _) => p,
                    (None, Some(e)) => return Err(e),
                    (None, None) => {
                        return Err(RedisCallError::Redis {
                            what: "connecting pub/sub",
                            source: (redis::ErrorKind::InvalidClientConfig, "no seed node").into(),
                        })
                    }
                };
                Ok((pubsub, self.commands(timeout, "connecting").await?))
            }
            _ => {
                let node = self.node(timeout).await?;
                let pubsub =
                    bounded(timeout, "connecting pub/sub", node.get_async_pubsub()).await?;
                let commands = node_commands(&node, timeout, "connecting").await?;
                Ok((pubsub, Commands::Node(commands)))
            }
        }
    }

    /// The server to talk to now: the standalone one, or the master the sentinels name.
    async fn node(&self, timeout: Duration) -> Result<Client, RedisCallError> {
        match &self.kind {
            Kind::Standalone(client) => Ok(client.clone()),
            Kind::Sentinel(sentinel) => {
                let ask = async {
                    let mut sentinel = sentinel.lock().await;
                    sentinel.async_get_client().await
                };
                bounded(timeout, "asking the sentinels for the master", ask).await
            }
            Kind::Cluster { seeds, .. } => seeds.first().cloned().ok_or(RedisCallError::Redis {
                what: "choosing a node",
                source: (redis::ErrorKind::InvalidClientConfig, "no seed node").into(),
            }),
        }
    }
}

async fn node_commands(
    node: &Client,
    timeout: Duration,
    what: &'static str,
) -> Result<MultiplexedConnection, RedisCallError> {
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(timeout)
        .set_response_timeout(timeout);
    bounded(
        timeout,
        what,
        node.get_multiplexed_async_connection_with_config(&config),
    )
    .await
}

impl RedisTargetSpec {
    fn addr(&self, node: &NodeAddr) -> ConnectionAddr {
        if self.tls {
            ConnectionAddr::TcpTls {
                host: node.host.clone(),
                port: node.port,
                insecure: false,
                tls_params: None,
            }
        } else {
            ConnectionAddr::Tcp(node.host.clone(), node.port)
        }
    }

    fn connection_info(&self, node: &NodeAddr) -> ConnectionInfo {
        ConnectionInfo {
            addr: self.addr(node),
            redis: RedisConnectionInfo {
                db: self.db,
                username: self.username.clone(),
                password: self.password.clone(),
                ..RedisConnectionInfo::default()
            },
        }
    }
}
