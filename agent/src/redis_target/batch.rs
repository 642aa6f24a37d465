//! Commands sent together. On one server they are one pipeline (a MULTI when asked); on a
//! cluster a pipeline must stay within one slot, and these touch keys and channels of many
//! (`colyseus:nodes`, `roomcount`, `roomcaches`, leases, `p:{processId}`), so there they are
//! sent one by one, in order. They are then not atomic: each caller's writes are
//! idempotent and repaired by the next round (re-read, heartbeat, lease expiry).

use redis::{FromRedisValue, ToRedisArgs, Value};

use super::Commands;

#[derive(Default, Clone)]
pub struct Batch {
    cmds: Vec<(redis::Cmd, bool)>,
    atomic: bool,
}

impl Batch {
    pub fn new() -> Self {
        Self::default()
    }

    /// One MULTI/EXEC where the target allows it (not on a cluster).
    pub fn atomic(&mut self) -> &mut Self {
        self.atomic = true;
        self
    }

    pub fn cmd(&mut self, name: &str) -> &mut Self {
        self.cmds.push((redis::cmd(name), false));
        self
    }

    pub fn arg<T: ToRedisArgs>(&mut self, arg: T) -> &mut Self {
        if let Some((cmd, _)) = self.cmds.last_mut() {
            cmd.arg(arg);
        }
        self
    }

    /// Leaves the last command's reply out of the result.
    pub fn ignore(&mut self) -> &mut Self {
        if let Some((_, ignored)) = self.cmds.last_mut() {
            *ignored = true;
        }
        self
    }

    pub fn is_empty(&self) -> bool {
        self.cmds.is_empty()
    }

    /// The commands of a write described in [`crate::layout`].
    pub fn of(write: &crate::layout::Write) -> Self {
        let mut batch = Self::new();
        if write.atomic {
            batch.atomic();
        }
        for command in &write.commands {
            batch.cmd(command.name);
            for arg in &command.args {
                batch.arg(arg);
            }
            if !command.reply {
                batch.ignore();
            }
        }
        batch
    }

    /// Sends the commands; the replies not ignored, as one array, become `T`.
    ///
    /// # Errors
    /// The first failing command's error (on a cluster, the commands before it were done).
    pub async fn query<T: FromRedisValue>(&self, conn: &mut Commands) -> redis::RedisResult<T> {
        match conn {
            Commands::Node(c) => {
                let mut pipe = redis::pipe();
                if self.atomic {
                    pipe.atomic();
                }
                for (cmd, ignored) in &self.cmds {
                    pipe.add_command(cmd.clone());
                    if *ignored {
                        pipe.ignore();
                    }
                }
                pipe.query_async(c).await
            }
            Commands::Cluster(c) => {
                let mut replies = Vec::new();
                for (cmd, ignored) in &self.cmds {
                    let reply: Value = cmd.query_async(c).await?;
                    if !ignored {
                        replies.push(reply);
                    }
                }
                redis::from_redis_value(&Value::Array(replies))
            }
        }
    }
}
