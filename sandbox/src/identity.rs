//! The identity endpoints over HTTP: an OAuth 2.0 token endpoint (RFC 6749 sections 4.3
//! and 6: the password and refresh_token grants) shaped like Microsoft Entra ID's, and
//! Microsoft Graph's `POST /v1.0/me/changePassword`.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::rejection::{FormRejection, JsonRejection};
use axum::extract::{Form, Json, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::json;

use crate::account::{ChangePasswordError, IssuedTokens, SignInError};
use crate::counters::Protocol;
use crate::faults::FaultKind;
use crate::state::Shared;

/// The token endpoint's path, after Entra ID's `/{tenant}/oauth2/v2.0/token`.
pub const TOKEN_PATH: &str = "/organizations/oauth2/v2.0/token";
/// Graph's API version prefix; `graph_url` ends with it.
pub const GRAPH_PREFIX: &str = "/v1.0";
/// The scope granted when the request names none.
const DEFAULT_SCOPE: &str = "https://outlook.office365.com/.default";

pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route(TOKEN_PATH, post(token))
        .route("/v1.0/me", get(me))
        .route("/v1.0/me/changePassword", post(change_password))
        .with_state(shared)
}

/// Builds an OAuth 2.0 error response (RFC 6749 section 5.2) with Entra ID's `error_codes`.
fn oauth_error(status: StatusCode, error: &str, code: u32, description: &str) -> Response {
    let body = json!({
        "error": error,
        "error_description": format!("AADSTS{code}: {description}"),
        "error_codes": [code],
    });
    (status, [(header::CACHE_CONTROL, "no-store")], Json(body)).into_response()
}

async fn token(
    State(shared): State<Arc<Shared>>,
    form: Result<Form<HashMap<String, String>>, FormRejection>,
) -> Response {
    let Ok(Form(form)) = form else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            900144,
            "the request body must be application/x-www-form-urlencoded",
        );
    };
    let field = |name: &str| form.get(name).map(String::as_str).filter(|value| !value.is_empty());
    let Some(grant_type) = field("grant_type") else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            900144,
            "the request body must contain the parameter grant_type",
        );
    };
    let Some(client_id) = field("client_id") else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            900144,
            "the request body must contain the parameter client_id",
        );
    };
    if shared.settings.client_id.as_deref().is_some_and(|expected| expected != client_id) {
        return oauth_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            700016,
            &format!("application {client_id} was not found"),
        );
    }
    let now = shared.clock.now();

    let issued = match grant_type {
        "password" => {
            let (Some(username), Some(password)) = (field("username"), field("password")) else {
                return oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    900144,
                    "the password grant needs username and password",
                );
            };
            let scope = field("scope").unwrap_or(DEFAULT_SCOPE);
            let mut account = shared.account();
            if let Err(error) =
                account.sign_in_with_password(Protocol::Token, username, password, now, &shared.counters)
            {
                tracing::info!(%error, "password grant rejected");
                return sign_in_error(&error);
            }
            shared.counters.token_grant("password");
            account.issue_tokens(scope, now).map(Ok)
        }
        "refresh_token" => {
            let Some(refresh_token) = field("refresh_token") else {
                return oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    900144,
                    "the refresh_token grant needs refresh_token",
                );
            };
            let issued = shared.account().redeem_refresh_token(refresh_token, now);
            if let Ok(Ok(_)) = issued {
                shared.counters.token_grant("refresh_token");
            }
            issued
        }
        other => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                70003,
                &format!("grant type {other} is not supported"),
            );
        }
    };
    match issued {
        Ok(Ok(tokens)) => token_response(&tokens),
        Ok(Err(error)) => {
            tracing::info!(%error, "refresh grant rejected");
            sign_in_error(&error)
        }
        Err(error) => {
            tracing::error!(%error, "failed to save issued tokens");
            oauth_error(StatusCode::INTERNAL_SERVER_ERROR, "server_error", 90033, "failed to store the tokens")
        }
    }
}

fn token_response(tokens: &IssuedTokens) -> Response {
    let body = json!({
        "token_type": "Bearer",
        "scope": tokens.scope,
        "expires_in": tokens.expires_in,
        "ext_expires_in": tokens.expires_in,
        "access_token": tokens.access_token,
        "refresh_token": tokens.refresh_token,
    });
    ([(header::CACHE_CONTROL, "no-store")], Json(body)).into_response()
}

/// Maps a rejected grant to `invalid_grant` with Entra ID's error code for the reason.
fn sign_in_error(error: &SignInError) -> Response {
    if let SignInError::Propagating = error {
        return oauth_error(StatusCode::SERVICE_UNAVAILABLE, "temporarily_unavailable", 50001, &error.to_string());
    }
    let code = match error {
        SignInError::InvalidCredentials => 50126,
        SignInError::Locked { .. } => 50053,
        SignInError::Expired { .. } => 50055,
        SignInError::InvalidToken => 70008,
        SignInError::Propagating => unreachable!("returned as 503 above"),
    };
    oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", code, &error.to_string())
}

/// Builds a Graph error response (`{"error": {"code", "message", "innerError"}}`).
fn graph_error(status: StatusCode, code: &str, message: &str, now: chrono::DateTime<chrono::Utc>) -> Response {
    let body = json!({
        "error": {
            "code": code,
            "message": message,
            "innerError": { "date": now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true) },
        }
    });
    (status, Json(body)).into_response()
}

/// Checks the request's bearer token, returning the Graph error response when it fails.
fn check_bearer(shared: &Shared, headers: &HeaderMap) -> Result<(), Box<Response>> {
    let now = shared.clock.now();
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("Bearer"))
        .map(|(_, token)| token.trim());
    let Some(token) = token else {
        return Err(Box::new(graph_error(
            StatusCode::UNAUTHORIZED,
            "InvalidAuthenticationToken",
            "Access token is empty.",
            now,
        )));
    };
    if !shared.account().check_access_token(token, now) {
        return Err(Box::new(graph_error(
            StatusCode::UNAUTHORIZED,
            "InvalidAuthenticationToken",
            "Access token has expired or is not valid.",
            now,
        )));
    }
    Ok(())
}

async fn me(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    if let Err(response) = check_bearer(&shared, &headers) {
        return *response;
    }
    let username = shared.username();
    Json(json!({ "userPrincipalName": username, "mail": username })).into_response()
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ChangePasswordRequest {
    current_password: String,
    new_password: String,
}

async fn change_password(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Result<Json<ChangePasswordRequest>, JsonRejection>,
) -> Response {
    if let Err(response) = check_bearer(&shared, &headers) {
        return *response;
    }
    let now = shared.clock.now();
    let Ok(Json(request)) = body else {
        return graph_error(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "The request body must be JSON with currentPassword and newPassword.",
            now,
        );
    };
    let take = |kind: FaultKind| {
        let fault = shared.faults.take(kind, None);
        if fault.is_some() {
            shared.counters.fault_fired(kind.name());
        }
        fault
    };
    if take(FaultKind::Change5xx).is_some() {
        return graph_error(StatusCode::SERVICE_UNAVAILABLE, "serviceNotAvailable", "Try again later.", now);
    }
    if take(FaultKind::ChangeRefuse).is_some() {
        let message = "The password does not meet the policy: it was used recently.";
        return graph_error(StatusCode::BAD_REQUEST, "Request_BadRequest", message, now);
    }
    if let Some(fault) = take(FaultKind::ChangeHold) {
        // If the client goes away meanwhile, this future is dropped and nothing changes.
        tokio::time::sleep(std::time::Duration::from_millis(fault.delay_ms)).await;
    }
    let lost_reply = take(FaultKind::ChangeLostReply).is_some();
    let propagation = take(FaultKind::ChangePropagation);
    let rejection_delay = take(FaultKind::ChangePropagationDelay);
    let hold_after = take(FaultKind::ChangeHoldAfterApply);
    let outcome =
        shared.account().change_password(&request.current_password, &request.new_password, now, &shared.counters);
    if outcome.is_ok() {
        shared.counters.password_change();
        if let Some(fault) = propagation {
            let until = now + chrono::TimeDelta::milliseconds(fault.delay_ms as i64);
            if let Err(error) = shared.account().delay_propagation(until) {
                tracing::error!(%error, "failed to save the account");
            }
        }
        if let Some(fault) = rejection_delay {
            let delay = chrono::TimeDelta::milliseconds(i64::try_from(fault.delay_ms).unwrap_or(i64::MAX));
            shared.account().reject_new_password_until(now + delay);
        }
        if lost_reply {
            return graph_error(StatusCode::GATEWAY_TIMEOUT, "gatewayTimeout", "The reply was lost.", now);
        }
        if let Some(fault) = hold_after {
            tokio::time::sleep(std::time::Duration::from_millis(fault.delay_ms)).await;
        }
    }
    match outcome {
        Ok(()) => {
            tracing::info!("password changed through Graph");
            StatusCode::NO_CONTENT.into_response()
        }
        Err(ChangePasswordError::SignIn(error @ SignInError::Locked { .. })) => {
            graph_error(StatusCode::FORBIDDEN, "Authorization_RequestDenied", &error.to_string(), now)
        }
        Err(ChangePasswordError::SignIn(_)) => {
            graph_error(StatusCode::FORBIDDEN, "Authorization_RequestDenied", "The current password is incorrect.", now)
        }
        Err(ChangePasswordError::Policy(error)) => {
            graph_error(StatusCode::BAD_REQUEST, "Request_BadRequest", &error.to_string(), now)
        }
        Err(ChangePasswordError::Persist(error)) => {
            tracing::error!(%error, "failed to save the changed password");
            graph_error(StatusCode::INTERNAL_SERVER_ERROR, "generalException", "failed to store the password", now)
        }
    }
}
