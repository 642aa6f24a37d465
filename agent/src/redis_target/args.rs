//! The flags that pick a Redis shape; shared by `sync`, `register` and `status` (each also
//! has `--redis-url`, which gives the scheme, ACL user, password and database).

use std::path::PathBuf;

use clap::Args;

use super::{RedisTarget, RedisTargetSpec, TargetFlags};

#[derive(Debug, Clone, Default, Args)]
pub struct RedisArgs {
    /// Sentinel set (`host:port,...`) to ask for the current master of
    /// `--redis-sentinel-master`, instead of the host of `--redis-url` (whose user, password,
    /// database and TLS still apply to the master).
    #[arg(long, env = "REDIS_SENTINELS")]
    pub redis_sentinels: Option<String>,
    /// The master name the sentinels monitor (ioredis `name`).
    #[arg(long, env = "REDIS_SENTINEL_MASTER")]
    pub redis_sentinel_master: Option<String>,
    /// Password of the sentinels themselves (ioredis `sentinelPassword`), if they have one.
    #[arg(long, env = "REDIS_SENTINEL_PASSWORD", hide_env_values = true)]
    pub redis_sentinel_password: Option<String>,
    /// Redis Cluster seed nodes (`host:port,...`) instead of the host of `--redis-url`
    /// (whose user, password and TLS still apply to every node).
    #[arg(long, env = "REDIS_CLUSTER_NODES")]
    pub redis_cluster: Option<String>,
    /// PEM file of the CA that signed the Redis servers' certificates (with `rediss://`);
    /// without it the system's roots are trusted.
    #[arg(long, env = "REDIS_CA_FILE")]
    pub redis_ca_file: Option<PathBuf>,
}

impl RedisArgs {
    /// The checked target for `url`.
    ///
    /// # Errors
    /// A flag that does not parse, an unreadable CA file, or flags that contradict.
    pub fn target(&self, url: &str) -> Result<RedisTarget, String> {
        self.build("--redis-url", url)
    }

    fn build(&self, flag: &str, url: &str) -> Result<RedisTarget, String> {
        let ca_pem = match &self.redis_ca_file {
            Some(path) => Some(
                std::fs::read(path)
                    .map_err(|e| format!("--redis-ca-file {}: {e}", path.display()))?,
            ),
            None => None,
        };
        let spec = RedisTargetSpec::parse(TargetFlags {
            url,
            sentinels: self.redis_sentinels.as_deref(),
            sentinel_master: self.redis_sentinel_master.as_deref(),
            sentinel_password: self.redis_sentinel_password.as_deref(),
            cluster: self.redis_cluster.as_deref(),
            ca_pem,
        })
        .map_err(|e| match e {
            super::TargetError::Url { .. } => format!("{flag} {e}"),
            _ => e.to_string(),
        })?;
        let identity = spec.identity();
        RedisTarget::new(spec).map_err(|e| format!("Redis {identity}: {e}"))
    }

    /// A standalone target for `url` (another Redis than the presence one), sharing only the
    /// CA file.
    ///
    /// # Errors
    /// As for [`Self::target`].
    pub fn standalone(&self, url: &str) -> Result<RedisTarget, String> {
        Self {
            redis_ca_file: self.redis_ca_file.clone(),
            ..Self::default()
        }
        .build("--redis-rooms-url", url)
    }
}
