//! The agent's private HTTP API: `/live`, `/ready`, `/metrics`, `/processes`,
//! `/rooms/{roomId}` (bodies in [`routing::wire`]). `/processes?after=VERSION` is a
//! long-poll (see [`routing::wire::PROCESSES_AFTER_PARAM`]).
//! Bind it to a private address; Envoy's public listener never routes to it (its cluster
//! name cannot pass the route guard).

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};

use crate::status::{Resolved, Status};

/// The node id the filter sent ([`routing::wire::NODE_HEADER`]), if it is a valid one.
fn asking_node(headers: &HeaderMap) -> Option<&str> {
    let raw = headers.get(routing::wire::NODE_HEADER)?;
    routing::wire::node_id(raw.as_bytes())
}

/// The API's routes over shared status.
pub fn router(status: Arc<Status>) -> Router {
    Router::new()
        .route("/live", get(|| async { "ok\n" }))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .route("/processes", get(processes))
        .route("/rejected", get(rejected))
        .route("/rooms/{room_id}", get(room))
        .route(XDS_CLIENTS_PATH, get(xds_clients))
        .with_state(status)
}

/// Serves the API on `listener` until `shutdown` completes.
///
/// # Errors
/// The server failing.
pub async fn serve(
    listener: tokio::net::TcpListener,
    status: Arc<Status>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let held = status.clone();
    axum::serve(listener, router(status))
        .with_graceful_shutdown(async move {
            shutdown.await;
            // Held long-polls answer now instead of delaying the shutdown.
            held.advertised.close();
        })
        .await
}

/// 200 once the first full sync reached Envoy's config, 503 before.
async fn ready(State(status): State<Arc<Status>>) -> impl IntoResponse {
    if status.is_ready() {
        (StatusCode::OK, "ready\n")
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "waiting for the first sync\n",
        )
    }
}

/// The registrations refused right now, each with its reason.
async fn rejected(State(status): State<Arc<Status>>) -> impl IntoResponse {
    axum::Json(routing::wire::RejectedRegistrations(status.rejected.list()))
}

async fn metrics(State(status): State<Arc<Status>>) -> impl IntoResponse {
    let mut body = status.metrics.render();
    status.deltas.render(&mut body);
    crate::inspect::render_all_shards(&mut body, status.all_shards());
    if let Some(ads) = status.xds.get() {
        ads.render_metrics(&mut body);
        status.ack_gate.render(&mut body);
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body)
}

/// Where `agent status` reads the Envoys streaming xDS from this agent.
pub const XDS_CLIENTS_PATH: &str = "/xds/clients";

/// The connected Envoys (JSON list of `sinks::xds::clients::ClientView`); 404 without xDS.
async fn xds_clients(State(status): State<Arc<Status>>) -> axum::response::Response {
    match status.xds.get() {
        Some(ads) => {
            let mut view = ads.status();
            view.gate = status.ack_gate.view();
            Json(view).into_response()
        }
        None => (StatusCode::NOT_FOUND, "this agent does not serve xDS\n").into_response(),
    }
}

/// Query of `GET /processes`.
#[derive(Debug, serde::Deserialize)]
struct ProcessesQuery {
    /// [`routing::wire::PROCESSES_AFTER_PARAM`]: the version the caller has.
    after: Option<u64>,
    /// [`routing::wire::PROCESSES_SINCE_PARAM`]: the digest of the set the caller holds.
    since: Option<u64>,
}

/// The advertised processes, with their version in
/// [`routing::wire::PROCESSES_VERSION_HEADER`] and the all-processes cluster's shard count
/// in [`routing::wire::ALL_SHARDS_HEADER`]; with `after` equal to the current version,
/// held until the set changes (at most [`routing::wire::PROCESSES_HOLD_MS`]). For an Envoy
/// streaming xDS from this agent, only the processes whose cluster it has ACKed, and held
/// until that changes too (see [`crate::ack_gate`]). With `since` naming a set this agent
/// answered lately, only what changed since ([`crate::status::deltas`]).
async fn processes(
    State(status): State<Arc<Status>>,
    Query(query): Query<ProcessesQuery>,
    headers: HeaderMap,
) -> axum::response::Response {
    use crate::status::deltas::Answer;
    use routing::wire::{
        ALL_SHARDS_HEADER, PROCESSES_DELTA_HEADER, PROCESSES_DIGEST_HEADER,
        PROCESSES_VERSION_HEADER,
    };
    let node = asking_node(&headers);
    if let Some(after) = query.after {
        let hold = std::time::Duration::from_millis(routing::wire::PROCESSES_HOLD_MS);
        status.wait_processes(after, node, hold).await;
    }
    let (version, rows) = status.processes_for(node);
    let version = (PROCESSES_VERSION_HEADER, version.to_string());
    let shards = (ALL_SHARDS_HEADER, status.all_shards().to_string());
    match status.deltas.answer(rows, query.since) {
        Answer::Full { digest, rows } => (
            [
                version,
                shards,
                (PROCESSES_DIGEST_HEADER, digest.to_string()),
            ],
            Json(status.rows_with_rooms(&rows)),
        )
            .into_response(),
        Answer::Delta {
            digest,
            since,
            delta,
        } => (
            [
                version,
                shards,
                (PROCESSES_DIGEST_HEADER, digest.to_string()),
                (PROCESSES_DELTA_HEADER, since.to_string()),
            ],
            Json(delta),
        )
            .into_response(),
    }
}

/// Query of `GET /rooms/{roomId}`.
#[derive(Debug, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct RoomQuery {
    /// The processId the client's path named, if any.
    process_id: Option<String>,
}

/// 200 with the room's process (active or draining), 404 naming the room otherwise; 503
/// `not_acked` when the asking Envoy streams xDS from this agent and has not ACKed the
/// process's cluster within the bound. 200 and 404 are counted by outcome and timed
/// (`colyseus_envoy_lookup_duration_seconds`); waits for an ACK are counted apart
/// (`colyseus_envoy_ack_waits_total`).
async fn room(
    State(status): State<Arc<Status>>,
    Path(room_id): Path<String>,
    Query(query): Query<RoomQuery>,
    headers: HeaderMap,
) -> axum::response::Response {
    let started = Instant::now();
    let node = asking_node(&headers);
    let resolved = status
        .resolve_for(&room_id, query.process_id.as_deref(), node)
        .await;
    let (found, response) = match resolved {
        Resolved::Found(location) => (true, Json(location).into_response()),
        Resolved::NotAcked(location) => {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(routing::wire::NotRoutableYet {
                    error: routing::wire::NOT_ACKED.to_owned(),
                    room_id,
                    process_id: location.process_id,
                }),
            )
                .into_response();
        }
        Resolved::Unknown => (
            false,
            (
                StatusCode::NOT_FOUND,
                Json(routing::wire::UnknownRoom {
                    error: routing::wire::UNKNOWN_ROOM.to_owned(),
                    room_id,
                }),
            )
                .into_response(),
        ),
    };
    status.metrics.lookups.record(found, started.elapsed());
    response
}
