//! Envoy cluster names: the only place they are built.
//!
//! Every game process gets the cluster `{prefix}{processId}`, and all live processes share
//! one more cluster for requests that name no process (matchmaking). The route only accepts
//! names matching [`ClusterNames::route_guard_regex`], so neither a client nor a bug can
//! steer a request to a cluster that is not a game process (the agent, Envoy's admin).

#[cfg(doc)]
use crate::id::MAX_ID_LEN;
use crate::id::{check_id, ProcessId};

/// Default prefix of a per-process cluster name.
pub const DEFAULT_PROCESS_PREFIX: &str = "colyseus-process-";
/// Default name of the all-processes cluster.
pub const DEFAULT_ALL_CLUSTER: &str = "colyseus-all";

/// Longest prefix or all-processes cluster name (see [`ClusterNames::new`]).
pub const MAX_NAME_PART: usize = 40;

/// Why a naming scheme is unsafe.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NamesError {
    #[error("cluster name part {0:?} must be 1-40 characters of [A-Za-z0-9_-]")]
    BadName(String),
    #[error("all-processes cluster {all:?} starts with the process prefix {prefix:?}, so a processId could name it")]
    Ambiguous { prefix: String, all: String },
}

/// A validated naming scheme for game-process clusters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterNames {
    prefix: String,
    all: String,
}

impl Default for ClusterNames {
    fn default() -> Self {
        Self {
            prefix: DEFAULT_PROCESS_PREFIX.to_owned(),
            all: DEFAULT_ALL_CLUSTER.to_owned(),
        }
    }
}

impl ClusterNames {
    /// Builds a naming scheme in which no process cluster can be confused with the
    /// all-processes cluster.
    ///
    /// # Errors
    /// A name part outside `[A-Za-z0-9_-]`, or an `all` name that starts with `prefix`.
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
        Ok(Self {
            prefix: prefix.to_owned(),
            all: all.to_owned(),
        })
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
    pub fn route_guard_regex(&self) -> String {
        // Name parts use only [A-Za-z0-9_-], none of which is special in RE2.
        format!("^(?:{}|{}[A-Za-z0-9_-]+)$", self.all, self.prefix)
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
    }

    #[test]
    fn guard_regex_text() {
        assert_eq!(
            ClusterNames::default().route_guard_regex(),
            "^(?:colyseus-all|colyseus-process-[A-Za-z0-9_-]+)$"
        );
    }
}
