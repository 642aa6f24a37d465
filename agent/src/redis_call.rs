//! One Redis call with a deadline: a dead or unreachable server must never hang the agent
//! or the registrar, it must fail so the caller can reconnect or retry.

use std::future::Future;
use std::time::Duration;

/// Why a bounded Redis call failed.
#[derive(Debug, thiserror::Error)]
pub enum RedisCallError {
    #[error("{what} timed out after {timeout:?}")]
    Timeout {
        what: &'static str,
        timeout: Duration,
    },
    #[error("{what} failed: {source}")]
    Redis {
        what: &'static str,
        source: redis::RedisError,
    },
}

/// Runs `fut` (described by `what`, for the error) with `timeout`.
///
/// # Errors
/// The call's own error, or the timeout.
pub async fn bounded<T>(
    timeout: Duration,
    what: &'static str,
    fut: impl Future<Output = redis::RedisResult<T>>,
) -> Result<T, RedisCallError> {
    match tokio::time::timeout(timeout, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(source)) => Err(RedisCallError::Redis { what, source }),
        Err(_) => Err(RedisCallError::Timeout { what, timeout }),
    }
}

/// A multiplexed connection whose connect and every later response are bounded by
/// `timeout` (`what` describes the attempt, for the error).
///
/// # Errors
/// Connecting failed or timed out.
pub async fn connect(
    client: &redis::Client,
    timeout: Duration,
    what: &'static str,
) -> Result<redis::aio::MultiplexedConnection, RedisCallError> {
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(timeout)
        .set_response_timeout(timeout);
    bounded(
        timeout,
        what,
        client.get_multiplexed_async_connection_with_config(&config),
    )
    .await
}
