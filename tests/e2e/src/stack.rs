//! The preamble most tests share, once: a scratch dir, a Redis, N example game servers and
//! the proxy routing all of them.
//!
//! ```text
//! let s = Stack::new("restarts").servers(3).agent_args(&["--balance", "even"]).start();
//! let result = swarm(&s.proxy.endpoint(), 10, &[]);
//! ```

use std::time::Duration;

use crate::game::GameServer;
use crate::process::{scratch, Scratch};
use crate::proxy::Proxy;
use crate::redis_server::Redis;

/// What [`Stack::start`] starts. Fields drop in order: the proxy, the game servers, Redis,
/// then the scratch dir (kept when the test failed).
pub struct Stack {
    pub proxy: Proxy,
    pub servers: Vec<GameServer>,
    pub redis: Redis,
    pub dir: Scratch,
}

/// Settings of a [`Stack`], before it starts.
pub struct StackBuilder {
    name: String,
    servers: usize,
    agent_args: Vec<String>,
    bootstrap_args: Vec<String>,
    server_env: Vec<(String, String)>,
}

impl Stack {
    #[allow(clippy::new_ret_no_self)]
    pub fn new(name: &str) -> StackBuilder {
        StackBuilder {
            name: name.to_owned(),
            servers: 1,
            agent_args: Vec::new(),
            bootstrap_args: Vec::new(),
            server_env: Vec::new(),
        }
    }

    /// The game servers' processIds, in start order.
    pub fn process_ids(&self) -> Vec<String> {
        self.servers.iter().map(|s| s.process_id.clone()).collect()
    }
}

impl StackBuilder {
    /// How many example game servers (default 1).
    pub fn servers(mut self, n: usize) -> Self {
        self.servers = n;
        self
    }

    /// Extra `sync` flags.
    pub fn agent_args(mut self, args: &[&str]) -> Self {
        self.agent_args = args.iter().map(|a| (*a).to_owned()).collect();
        self
    }

    /// Extra `bootstrap` flags.
    pub fn bootstrap_args(mut self, args: &[&str]) -> Self {
        self.bootstrap_args = args.iter().map(|a| (*a).to_owned()).collect();
        self
    }

    /// Extra environment of every game server.
    pub fn server_env(mut self, env: &[(&str, &str)]) -> Self {
        self.server_env = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        self
    }

    /// Starts everything and waits until the agent routes every game server.
    pub fn start(self) -> Stack {
        let dir = scratch(&self.name);
        let redis = Redis::start(&dir);
        let env: Vec<(&str, &str)> = self
            .server_env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let servers: Vec<GameServer> = (0..self.servers)
            .map(|_| GameServer::start(&dir, &redis, &env))
            .collect();
        let args: Vec<&str> = self.agent_args.iter().map(String::as_str).collect();
        let boot: Vec<&str> = self.bootstrap_args.iter().map(String::as_str).collect();
        let proxy = Proxy::start_full(&dir, &redis.url(), &args, &boot);
        let stack = Stack {
            proxy,
            servers,
            redis,
            dir,
        };
        stack
            .proxy
            .wait_routed(stack.process_ids(), Duration::from_secs(10));
        stack
    }
}
