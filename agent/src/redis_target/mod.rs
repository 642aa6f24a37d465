//! Which Redis the agent talks to, and how: the one place every Redis client of the agent
//! (`sync` presence, RedisDriver rooms, `register`, `status`) gets its connections from.
//!
//! Three shapes, as Colyseus's RedisPresence (ioredis) accepts them:
//! - a standalone server, `redis://` or `rediss://` (TLS), with an ACL user and password in
//!   the URL and an optional CA file;
//! - a Sentinel set and a master name: the master is asked of the sentinels on every
//!   (re)connection, so a failover is followed by reconnecting;
//! - a Redis Cluster, from seed nodes.
//!
//! The spec is parsed and checked once, from the flags ([`RedisTargetSpec::parse`], pure);
//! [`RedisTarget`] (in `connect`) builds the `redis` crate's own clients from it.

mod args;
mod batch;
mod connect;

pub use args::RedisArgs;
pub use batch::Batch;
pub use connect::{Commands, RedisTarget};

use std::fmt;

/// A `host:port` of a sentinel or cluster seed node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeAddr {
    pub host: String,
    pub port: u16,
}

impl fmt::Display for NodeAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// The shape of the deployment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Topology {
    /// The URL's own host.
    Standalone {
        host: String,
        port: u16,
    },
    Sentinel {
        sentinels: Vec<NodeAddr>,
        master: String,
        /// `requirepass` of the sentinels, if they have one.
        sentinel_password: Option<String>,
    },
    Cluster {
        seeds: Vec<NodeAddr>,
    },
}

/// Everything needed to connect, checked.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisTargetSpec {
    pub topology: Topology,
    /// `rediss://`: TLS to the data nodes (and to the sentinels).
    pub tls: bool,
    pub username: Option<String>,
    pub password: Option<String>,
    pub db: i64,
    /// PEM of the CA that signed the servers' certificates (else the system's roots).
    pub ca_pem: Option<Vec<u8>>,
}

impl fmt::Debug for RedisTargetSpec {
    /// Never prints a password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.identity())
    }
}

/// The flags, as given.
#[derive(Debug, Clone, Default)]
pub struct TargetFlags<'a> {
    pub url: &'a str,
    pub sentinels: Option<&'a str>,
    pub sentinel_master: Option<&'a str>,
    pub sentinel_password: Option<&'a str>,
    pub cluster: Option<&'a str>,
    /// The CA file's content, already read.
    pub ca_pem: Option<Vec<u8>>,
}

/// Why the Redis flags were refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TargetError {
    #[error("{url:?} is not a usable Redis URL: {why}")]
    Url { url: String, why: String },
    #[error("{flag} {value:?}: {why}")]
    Nodes {
        flag: &'static str,
        value: String,
        why: String,
    },
    #[error("--redis-sentinels and --redis-cluster exclude each other")]
    SentinelAndCluster,
    #[error("--redis-sentinels needs --redis-sentinel-master (the name the sentinels monitor)")]
    NoMaster,
    #[error("--redis-sentinel-master/--redis-sentinel-password need --redis-sentinels")]
    MasterWithoutSentinels,
    #[error("the Redis cluster has no database {0}: a cluster has only database 0")]
    ClusterDb(i64),
    #[error("--redis-ca-file needs a rediss:// URL (TLS)")]
    CaWithoutTls,
}

impl RedisTargetSpec {
    /// Checks the flags: the URL always gives the scheme (TLS or not), the ACL user and
    /// password and the database; with `sentinels` or `cluster` its host is not used.
    ///
    /// # Errors
    /// A malformed URL or node list, or flags that contradict each other.
    pub fn parse(flags: TargetFlags<'_>) -> Result<Self, TargetError> {
        let bad_url = |why: &str| TargetError::Url {
            url: redact(flags.url),
            why: why.to_owned(),
        };
        let info = redis::parse_redis_url(flags.url).ok_or_else(|| {
            bad_url("not a URL (expected redis://[user:password@]host[:port][/db], or rediss:// for TLS)")
        })?;
        let tls = match info.scheme() {
            "redis" => false,
            "rediss" => true,
            _ => return Err(bad_url("the scheme must be redis:// or rediss://")),
        };
        let conn: redis::ConnectionInfo = flags
            .url
            .parse()
            .map_err(|e: redis::RedisError| bad_url(&e.to_string()))?;
        let (host, port) = match &conn.addr {
            redis::ConnectionAddr::Tcp(h, p) => (h.clone(), *p),
            redis::ConnectionAddr::TcpTls { host, port, .. } => (host.clone(), *port),
            redis::ConnectionAddr::Unix(_) => {
                return Err(bad_url("Unix sockets are not supported"))
            }
        };
        if flags.ca_pem.is_some() && !tls {
            return Err(TargetError::CaWithoutTls);
        }
        let topology = match (nonempty(flags.sentinels), nonempty(flags.cluster)) {
            (Some(_), Some(_)) => return Err(TargetError::SentinelAndCluster),
            (Some(list), None) => Topology::Sentinel {
                sentinels: parse_nodes("--redis-sentinels", list, 26379)?,
                master: nonempty(flags.sentinel_master)
                    .ok_or(TargetError::NoMaster)?
                    .to_owned(),
                sentinel_password: nonempty(flags.sentinel_password).map(str::to_owned),
            },
            (None, cluster) => {
                if nonempty(flags.sentinel_master).is_some()
                    || nonempty(flags.sentinel_password).is_some()
                {
                    return Err(TargetError::MasterWithoutSentinels);
                }
                match cluster {
                    Some(list) if conn.redis.db != 0 => {
                        let _ = list;
                        return Err(TargetError::ClusterDb(conn.redis.db));
                    }
                    Some(list) => Topology::Cluster {
                        seeds: parse_nodes("--redis-cluster", list, 6379)?,
                    },
                    None => Topology::Standalone { host, port },
                }
            }
        };
        Ok(Self {
            topology,
            tls,
            username: conn.redis.username.clone(),
            password: conn.redis.password.clone(),
            db: conn.redis.db,
            ca_pem: flags.ca_pem,
        })
    }

    /// Which Redis this is, without credentials: for logs, and to tell whether a saved
    /// state came from the same Redis. `redis[s]://host:port/db`,
    /// `sentinel[s]://s1:p1,s2:p2/master/db` or `cluster[s]://n1:p1,n2:p2`.
    pub fn identity(&self) -> String {
        let s = if self.tls { "s" } else { "" };
        let list = |nodes: &[NodeAddr]| {
            nodes
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(",")
        };
        match &self.topology {
            Topology::Standalone { host, port } => {
                let addr = NodeAddr {
                    host: host.clone(),
                    port: *port,
                };
                format!("redis{s}://{addr}/{}", self.db)
            }
            Topology::Sentinel {
                sentinels, master, ..
            } => format!("sentinel{s}://{}/{master}/{}", list(sentinels), self.db),
            Topology::Cluster { seeds } => format!("cluster{s}://{}", list(seeds)),
        }
    }

    pub fn is_cluster(&self) -> bool {
        matches!(self.topology, Topology::Cluster { .. })
    }
}

fn nonempty(s: Option<&str>) -> Option<&str> {
    s.map(str::trim).filter(|s| !s.is_empty())
}

/// Parses `host:port,host:port,...` (`[v6]:port` for IPv6; a missing port is `default`).
fn parse_nodes(flag: &'static str, list: &str, default: u16) -> Result<Vec<NodeAddr>, TargetError> {
    let bad = |why: &str| TargetError::Nodes {
        flag,
        value: list.to_owned(),
        why: why.to_owned(),
    };
    let mut nodes = Vec::new();
    for item in list.split(',').map(str::trim) {
        if item.is_empty() {
            return Err(bad("an empty entry"));
        }
        let (host, port) = if let Some(rest) = item.strip_prefix('[') {
            let (host, after) = rest.split_once(']').ok_or_else(|| bad("an unclosed '['"))?;
            match after.strip_prefix(':') {
                Some(p) => (host, Some(p)),
                None if after.is_empty() => (host, None),
                None => return Err(bad("text after ']' that is not :port")),
            }
        } else {
            match item.rsplit_once(':') {
                Some((h, _)) if h.contains(':') => {
                    return Err(bad("an IPv6 address must be written [addr]:port"))
                }
                Some((h, p)) => (h, Some(p)),
                None => (item, None),
            }
        };
        if host.is_empty() || host.contains(['/', '@', ' ']) {
            return Err(bad("an entry without a valid host"));
        }
        let port = match port {
            None => default,
            Some(p) => match p.parse::<u16>() {
                Ok(p) if p != 0 => p,
                _ => return Err(bad("a port that is not 1-65535")),
            },
        };
        nodes.push(NodeAddr {
            host: host.to_owned(),
            port,
        });
    }
    Ok(nodes)
}

/// `url` with what stands between `://` and `@` hidden, for error messages.
fn redact(url: &str) -> String {
    match (url.split_once("://"), url.rfind('@')) {
        (Some((scheme, _)), Some(at)) => format!("{scheme}://***{}", &url[at..]),
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests;
