//! Envoy cluster names: the only place they are built.
//!
//! Every game process gets the cluster `{prefix}{processId}`, and all live processes share
//! the all-processes cluster for requests that name no process (matchmaking). The route only
//! accepts names matching [`ClusterNames::route_guard_regex`], so neither a client nor a bug
//! can steer a request to a cluster that is not a game process (the agent, Envoy's admin).
//!
//! The all-processes cluster may be split in shards ([`ClusterNames::with_all_shards`]):
//! Envoy rebuilds a cluster's whole host set on every EDS update, so at 10,000 processes one
//! registration cost ~21 ms of Envoy CPU in that cluster alone; with S shards it rebuilds one
//! shard of ~N/S hosts. Shard 0 keeps the plain name (`{all}`, so S = 1 is the unsharded
//! scheme and a filter that does not know S routes there), shard k is `{all}-{k}`, and a
//! process belongs to shard [`shard_of`] (the same function in agent and filter).

#[cfg(doc)]
use crate::id::MAX_ID_LEN;
use crate::id::{check_id, ProcessId};

/// Default prefix of a per-process cluster name.
pub const DEFAULT_PROCESS_PREFIX: &str = "colyseus-process-";
/// Default name of the all-processes cluster.
pub const DEFAULT_ALL_CLUSTER: &str = "colyseus-all";

/// Longest prefix or all-processes cluster name (see [`ClusterNames::new`]).
pub const MAX_NAME_PART: usize = 40;

/// Most shards of the all-processes cluster (one per ~1,000 processes is the guidance).
pub const MAX_ALL_SHARDS: u16 = 256;

/// FNV-1a 64: a stable hash (std's hasher may change between Rust releases; this must not,
/// or content versions and shard assignments would move with an upgrade).
pub fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The all-processes shard (0-based, below `shards`) of a process: FNV-1a of its processId
/// modulo the shard count. Agent and filter both call this, so they can never disagree.
/// `shards` of 0 counts as 1.
pub fn shard_of(process_id: &str, shards: u16) -> u16 {
    let n = u64::from(shards.max(1));
    // Below `shards`, so it fits.
    u16::try_from(fnv1a(process_id.as_bytes()) % n).unwrap_or(0)
}

/// Why a naming scheme is unsafe.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NamesError {
    #[error("cluster name part {0:?} must be 1-40 characters of [A-Za-z0-9_-]")]
    BadName(String),
    #[error("all-processes cluster {all:?} starts with the process prefix {prefix:?}, so a processId could name it")]
    Ambiguous { prefix: String, all: String },
    #[error("process prefix {prefix:?} is {all:?} followed by '-' and digits, so a processId could name a shard {all:?}-N of the all-processes cluster")]
    AmbiguousShard { prefix: String, all: String },
    #[error("{0} shards of the all-processes cluster: the count must be 1 to {MAX_ALL_SHARDS}")]
    ShardCount(u32),
}

/// A validated naming scheme for game-process clusters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterNames {
    prefix: String,
    all: String,
    /// Shards of the all-processes cluster the agent renders (1..=[`MAX_ALL_SHARDS`]). The
    /// filter keeps 1 here: it learns the count from the agent's `/processes` answers.
    shards: u16,
}

impl Default for ClusterNames {
    fn default() -> Self {
        Self {
            prefix: DEFAULT_PROCESS_PREFIX.to_owned(),
            all: DEFAULT_ALL_CLUSTER.to_owned(),
            shards: 1,
        }
    }
}

impl ClusterNames {
    /// Builds a naming scheme in which no process cluster can be confused with the
    /// all-processes cluster.
    ///
    /// # Errors
    /// A name part outside `[A-Za-z0-9_-]`, an `all` name that starts with `prefix`, or a
    /// `prefix` that is `{all}-` and digits (a process cluster could be a shard name).
    pub fn new(prefix: &str, all: &str) -> Result<Self, NamesError> {
        for part in [prefix, all] {
            // Same alphabet as ids. The length bound keeps the route guard regex within RE2's
            // default program size in Envoy (100): 64 + 64 was refused, 45 + 45 accepted.
            if check_id(part).is_err() || part.len() > MAX_NAME_PART {
                return Err(NamesError::BadName(part.to_owned()));
            }
        }
        if all.starts_with(prefix) {
            return Err(NamesError::Ambiguous {
                prefix: prefix.to_owned(),
                all: all.to_owned(),
            });
        }
        // `{prefix}{pid}` = `{all}-{k}` needs `prefix` = `{all}-` and some digits of `k`.
        let shard_like = prefix
            .strip_prefix(all)
            .and_then(|rest| rest.strip_prefix('-'))
            .is_some_and(|digits| digits.bytes().all(|b| b.is_ascii_digit()));
        if shard_like {
            return Err(NamesError::AmbiguousShard {
                prefix: prefix.to_owned(),
                all: all.to_owned(),
            });
        }
        Ok(Self {
            prefix: prefix.to_owned(),
            all: all.to_owned(),
            shards: 1,
        })
    }

    /// The same scheme with the all-processes cluster split in `shards` shards.
    ///
    /// # Errors
    /// A count outside 1..=[`MAX_ALL_SHARDS`].
    pub fn with_all_shards(mut self, shards: u32) -> Result<Self, NamesError> {
        self.shards = u16::try_from(shards)
            .ok()
            .filter(|s| (1..=MAX_ALL_SHARDS).contains(s))
            .ok_or(NamesError::ShardCount(shards))?;
        Ok(self)
    }

    /// How many shards the all-processes cluster has (1: unsharded).
    pub fn all_shards(&self) -> u16 {
        self.shards
    }

    /// The name of shard `k` of the all-processes cluster: [`Self::all`] for 0, `{all}-{k}`
    /// after (whatever the configured count: the filter names shards the agent announced).
    pub fn all_shard(&self, k: u16) -> String {
        if k == 0 {
            self.all.clone()
        } else {
            format!("{}-{k}", self.all)
        }
    }

    /// The shard of the all-processes cluster a process is in, under this scheme's count.
    pub fn shard_of(&self, process_id: &ProcessId) -> u16 {
        shard_of(process_id.as_str(), self.shards)
    }

    /// Whether `cluster` is a shard name of the all-processes cluster (`{all}`, or
    /// `{all}-{k}` with `k` in 1..[`MAX_ALL_SHARDS`] written without leading zeros), the
    /// names the guard regex's first branch accepts.
    pub fn is_all_shard(&self, cluster: &str) -> bool {
        match cluster.strip_prefix(self.all.as_str()) {
            Some("") => true,
            Some(rest) => rest
                .strip_prefix('-')
                .filter(|k| !k.starts_with('0') && k.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|k| k.parse::<u16>().ok())
                .is_some_and(|k| k > 0 && k < MAX_ALL_SHARDS),
            None => false,
        }
    }

    /// Whether the route guard could let a request reach `cluster`: a shard of the
    /// all-processes cluster or a name under the process prefix. No cluster of another role
    /// (the agent, the xDS server, internal hops) may be one.
    pub fn is_guarded(&self, cluster: &str) -> bool {
        self.is_all_shard(cluster) || cluster.starts_with(self.prefix.as_str())
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The cluster of every live process, for requests that name none.
    pub fn all(&self) -> &str {
        &self.all
    }

    /// The cluster of one process.
    pub fn process(&self, process_id: &ProcessId) -> String {
        self.process_unchecked(process_id.as_str())
    }

    /// The cluster of one process, for an id the caller has already checked (the filter's
    /// hot path, where [`crate::classify`] validated it).
    pub fn process_unchecked(&self, process_id: &str) -> String {
        let mut name = String::with_capacity(self.prefix.len() + process_id.len());
        name.push_str(&self.prefix);
        name.push_str(process_id);
        name
    }

    /// The process a cluster name belongs to, if it is a process cluster.
    pub fn process_of<'a>(&self, cluster: &'a str) -> Option<&'a str> {
        cluster
            .strip_prefix(self.prefix.as_str())
            .filter(|id| check_id(id).is_ok())
    }

    /// An RE2 regex matching the names this scheme can produce. The route requires the
    /// routing header to match it, as a second line of defence behind the filter.
    ///
    /// The id length is not bounded here: `{1,64}` compiles to an RE2 program over Envoy's
    /// default size limit (100) and the config is refused. The filter enforces
    /// [`MAX_ID_LEN`], and a cluster exists only for a valid id.
    /// The shards branch accepts `{all}` and `{all}-{k}` for k of 1 to 3 digits without a
    /// leading zero (the names [`Self::is_all_shard`] accepts, and 256..=999, which no
    /// agent renders: Envoy answers those `no_cluster`).
    pub fn route_guard_regex(&self) -> String {
        // Name parts use only [A-Za-z0-9_-], none of which is special in RE2.
        format!(
            "^(?:{}(?:-[1-9][0-9]?[0-9]?)?|{}[A-Za-z0-9_-]+)$",
            self.all, self.prefix
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        let names = ClusterNames::default();
        let pid = ProcessId::parse("abc123xyz").unwrap();
        let cluster = names.process(&pid);
        assert_eq!(cluster, "colyseus-process-abc123xyz");
        assert_eq!(names.process_of(&cluster), Some("abc123xyz"));
        assert_eq!(names.process_of(names.all()), None);
        assert_eq!(names.process_of("colyseus-agent"), None);
        assert_eq!(names.process_of("colyseus-process-"), None);
    }

    #[test]
    fn rejects_unsafe_schemes() {
        assert!(ClusterNames::new("p-", "all").is_ok());
        assert_eq!(
            ClusterNames::new("colyseus-", "colyseus-all"),
            Err(NamesError::Ambiguous {
                prefix: "colyseus-".into(),
                all: "colyseus-all".into()
            })
        );
        assert!(matches!(
            ClusterNames::new("", "all"),
            Err(NamesError::BadName(_))
        ));
        assert!(matches!(
            ClusterNames::new("p.", "all"),
            Err(NamesError::BadName(_))
        ));
        assert!(matches!(
            ClusterNames::new("p-", "a|b"),
            Err(NamesError::BadName(_))
        ));
        // `colyseus-` + `1` would be shard 1 of `colyseus`.
        for prefix in ["colyseus-", "colyseus-1", "colyseus-12"] {
            assert_eq!(
                ClusterNames::new(prefix, "colyseus"),
                Err(NamesError::AmbiguousShard {
                    prefix: prefix.into(),
                    all: "colyseus".into()
                }),
                "{prefix}"
            );
        }
        assert!(ClusterNames::new("colyseus-p", "colyseus").is_ok());
        assert!(ClusterNames::new("colyseus-all-p-", "colyseus-all").is_ok());
    }

    #[test]
    fn guard_regex_text() {
        assert_eq!(
            ClusterNames::default().route_guard_regex(),
            "^(?:colyseus-all(?:-[1-9][0-9]?[0-9]?)?|colyseus-process-[A-Za-z0-9_-]+)$"
        );
    }

    #[test]
    fn shard_names() {
        let names = ClusterNames::default().with_all_shards(3).unwrap();
        assert_eq!(names.all_shards(), 3);
        assert_eq!(names.all_shard(0), "colyseus-all");
        assert_eq!(names.all_shard(1), "colyseus-all-1");
        assert_eq!(names.all_shard(2), "colyseus-all-2");
        assert_eq!(ClusterNames::default().all_shards(), 1);
        for ok in ["colyseus-all", "colyseus-all-1", "colyseus-all-255"] {
            assert!(names.is_all_shard(ok) && names.is_guarded(ok), "{ok}");
            assert_eq!(names.process_of(ok), None, "{ok}");
        }
        for bad in [
            "colyseus-all-0",
            "colyseus-all-01",
            "colyseus-all-256",
            "colyseus-all-+1",
            "colyseus-all-",
            "colyseus-all1",
            "colyseus-all-1x",
            "colyseus-envoy-xds",
        ] {
            assert!(!names.is_all_shard(bad), "{bad}");
        }
        assert!(names.is_guarded("colyseus-process-p1"));
        assert!(!names.is_guarded("colyseus-envoy-xds"));
        for bad in [0, 257, 70_000] {
            assert_eq!(
                ClusterNames::default().with_all_shards(bad),
                Err(NamesError::ShardCount(bad))
            );
        }
        assert!(ClusterNames::default().with_all_shards(256).is_ok());
    }

    /// Pinned: the agent renders and the filter picks shards with this function, possibly
    /// from different builds; a change here would split them.
    #[test]
    fn shard_of_is_pinned() {
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(shard_of("anything", 1), 0);
        assert_eq!(shard_of("anything", 0), 0);
        let fixed: Vec<u16> = ["p0", "p1", "p2", "abc123xyz", "LbBu7mJ9x"]
            .iter()
            .map(|p| shard_of(p, 10))
            .collect();
        assert_eq!(fixed, [3, 2, 1, 6, 1]);
        assert_eq!(shard_of("p0", 3), u16::try_from(fnv1a(b"p0") % 3).unwrap());
        let names = ClusterNames::default().with_all_shards(10).unwrap();
        let pid = ProcessId::parse("abc123xyz").unwrap();
        assert_eq!(names.shard_of(&pid), shard_of("abc123xyz", 10));
        // Spread: 1,000 ids over 10 shards, none empty or holding twice its share.
        let mut counts = [0u32; 10];
        for i in 0..1000 {
            counts[usize::from(shard_of(&format!("proc{i}"), 10))] += 1;
        }
        assert!(counts.iter().all(|&c| (50..200).contains(&c)), "{counts:?}");
    }
}
