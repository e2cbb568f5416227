//! The control API: HTTP JSON on loopback for tests and demonstrations. It reads what
//! was sent and the counters, appends inbound mail, moves the clock, changes the account
//! behind the client's back, changes UIDVALIDITY, and arms faults.

use std::collections::BTreeSet;
use std::sync::Arc;

use axum::Router;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Json, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::json;

use crate::faults::Fault;
use crate::mailbox::INBOX;
use crate::state::Shared;

pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/sent", get(sent).delete(clear_sent))
        .route("/inbox", post(append_inbound))
        .route("/clock", get(clock).post(set_clock))
        .route("/account", get(account))
        .route("/account/expire-password", post(expire_password))
        .route("/account/password", post(set_password))
        .route("/account/unlock", post(unlock))
        .route("/uidvalidity", post(change_uidvalidity))
        .route("/faults", get(faults).post(arm_fault).delete(clear_faults))
        .route("/counters", get(counters))
        .with_state(shared)
}

fn bad_request(message: impl std::fmt::Display) -> Response {
    (StatusCode::BAD_REQUEST, Json(json!({ "error": message.to_string() }))).into_response()
}

fn server_error(message: impl std::fmt::Display) -> Response {
    (StatusCode::INTERNAL_SERVER_ERROR, Json(json!({ "error": message.to_string() }))).into_response()
}

async fn sent(State(shared): State<Arc<Shared>>) -> Response {
    let texts: Vec<_> = shared
        .sent_texts()
        .into_iter()
        .map(|(text, count)| {
            let mut value = serde_json::to_value(text).unwrap_or_default();
            value["count"] = json!(count);
            value
        })
        .collect();
    Json(json!({ "texts": texts })).into_response()
}

async fn clear_sent(State(shared): State<Arc<Shared>>) -> Response {
    shared.clear_sent();
    StatusCode::NO_CONTENT.into_response()
}

#[derive(Deserialize)]
struct InboundRequest {
    raw: String,
    #[serde(default)]
    folder: Option<String>,
    #[serde(default)]
    flags: Vec<String>,
}

async fn append_inbound(
    State(shared): State<Arc<Shared>>,
    body: Result<Json<InboundRequest>, JsonRejection>,
) -> Response {
    let request = match body {
        Ok(Json(request)) => request,
        Err(error) => return bad_request(error),
    };
    let folder = request.folder.unwrap_or_else(|| INBOX.to_string());
    let flags: BTreeSet<String> = request.flags.into_iter().collect();
    let now = shared.clock.now();
    let appended = shared.mailbox().append(&folder, request.raw.as_bytes(), flags, now);
    match appended {
        Ok((uidvalidity, uid)) => {
            shared.counters.message("inbound");
            Json(json!({ "folder": folder, "uidvalidity": uidvalidity, "uid": uid })).into_response()
        }
        Err(error) => bad_request(error),
    }
}

async fn clock(State(shared): State<Arc<Shared>>) -> Response {
    Json(json!({ "offset_secs": shared.clock.offset_secs(), "now": shared.clock.now() })).into_response()
}

#[derive(Deserialize)]
struct ClockRequest {
    offset_secs: i64,
}

async fn set_clock(State(shared): State<Arc<Shared>>, body: Result<Json<ClockRequest>, JsonRejection>) -> Response {
    let request = match body {
        Ok(Json(request)) => request,
        Err(error) => return bad_request(error),
    };
    shared.clock.set_offset_secs(request.offset_secs);
    tracing::info!(offset_secs = request.offset_secs, "clock offset set");
    clock(State(shared)).await
}

async fn account(State(shared): State<Arc<Shared>>) -> Response {
    Json(shared.account().view()).into_response()
}

async fn expire_password(State(shared): State<Arc<Shared>>) -> Response {
    let now = shared.clock.now();
    let mut account = shared.account();
    match account.expire_password(now) {
        Ok(()) => Json(account.view()).into_response(),
        Err(error) => server_error(error),
    }
}

#[derive(Deserialize)]
struct SetPasswordRequest {
    password: String,
    /// Keep issued access tokens valid, as a change without continuous access evaluation.
    #[serde(default)]
    keep_access_tokens: bool,
}

async fn set_password(
    State(shared): State<Arc<Shared>>,
    body: Result<Json<SetPasswordRequest>, JsonRejection>,
) -> Response {
    let request = match body {
        Ok(Json(request)) => request,
        Err(error) => return bad_request(error),
    };
    if request.password.is_empty() {
        return bad_request("password must not be empty");
    }
    let now = shared.clock.now();
    let mut account = shared.account();
    match account.set_password(&request.password, now, request.keep_access_tokens) {
        Ok(()) => Json(account.view()).into_response(),
        Err(error) => server_error(error),
    }
}

async fn unlock(State(shared): State<Arc<Shared>>) -> Response {
    let mut account = shared.account();
    match account.unlock() {
        Ok(()) => Json(account.view()).into_response(),
        Err(error) => server_error(error),
    }
}

#[derive(Deserialize)]
struct UidValidityRequest {
    #[serde(default)]
    folder: Option<String>,
    #[serde(default)]
    uidvalidity: Option<u32>,
}

async fn change_uidvalidity(
    State(shared): State<Arc<Shared>>,
    body: Result<Json<UidValidityRequest>, JsonRejection>,
) -> Response {
    // An empty request changes INBOX to the next UIDVALIDITY.
    let request = match body {
        Ok(Json(request)) => request,
        Err(JsonRejection::MissingJsonContentType(_)) => UidValidityRequest { folder: None, uidvalidity: None },
        Err(error) => return bad_request(error),
    };
    let folder = request.folder.unwrap_or_else(|| INBOX.to_string());
    let changed = shared.mailbox().change_uidvalidity(&folder, request.uidvalidity);
    match changed {
        Ok(uidvalidity) => {
            tracing::info!(%folder, uidvalidity, "UIDVALIDITY changed");
            Json(json!({ "folder": folder, "uidvalidity": uidvalidity })).into_response()
        }
        Err(error) => bad_request(error),
    }
}

async fn faults(State(shared): State<Arc<Shared>>) -> Response {
    Json(json!({ "faults": shared.faults.list() })).into_response()
}

async fn arm_fault(State(shared): State<Arc<Shared>>, body: Result<Json<Fault>, JsonRejection>) -> Response {
    let fault = match body {
        Ok(Json(fault)) => fault,
        Err(error) => return bad_request(error),
    };
    tracing::info!(kind = fault.kind.name(), count = fault.count, "fault armed");
    shared.faults.arm(fault);
    faults(State(shared)).await
}

async fn clear_faults(State(shared): State<Arc<Shared>>) -> Response {
    shared.faults.clear();
    StatusCode::NO_CONTENT.into_response()
}

async fn counters(State(shared): State<Arc<Shared>>) -> Response {
    Json(shared.counters.snapshot()).into_response()
}
