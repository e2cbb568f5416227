//! The gRPC services. Each handler validates, authorises, calls [`App`](crate::app::App) and converts the
//! result; the business rules live in the core. Health and reflection are always served, health without a token.

mod audit;
mod authenticate;
mod connectivity;
mod convert;
mod inbox;
mod messages;
mod optouts;
mod status;
mod throttle;
pub mod tls;

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use tokio_util::sync::CancellationToken;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Status};

use crate::app::{App, AppError};
use crate::auth::{Caller, Role, TokenAuthority};
use crate::proto;

pub use authenticate::Peer;
pub use convert::status_from_error;

/// Serves the API on `listener` until `shutdown` is cancelled, then lets running calls finish. With `tls`, every
/// connection must finish a TLS handshake first.
pub async fn serve(
    app: Arc<App>,
    authority: TokenAuthority,
    listener: tokio::net::TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: CancellationToken,
) -> Result<(), tonic::transport::Error> {
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    for service in [
        "nhsmail.agent.v1.ConnectivityService",
        "nhsmail.agent.v1.MessageService",
        "nhsmail.agent.v1.AgentService",
        "nhsmail.agent.v1.AuditService",
    ] {
        health_reporter.set_service_status(service, tonic_health::ServingStatus::Serving).await;
    }
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .expect("the descriptor sets compiled into the binary are valid");

    let router = tonic::transport::Server::builder()
        .layer(authenticate::AuthenticateLayer::new(authority))
        .add_service(health_service)
        .add_service(reflection)
        .add_service(proto::connectivity_service_server::ConnectivityServiceServer::new(
            connectivity::ConnectivityApi { app: app.clone() },
        ))
        .add_service(proto::message_service_server::MessageServiceServer::new(messages::MessageApi {
            app: app.clone(),
        }))
        .add_service(proto::opt_out_service_server::OptOutServiceServer::new(optouts::OptOutApi { app: app.clone() }))
        .add_service(proto::inbox_service_server::InboxServiceServer::new(inbox::InboxApi { app: app.clone() }))
        .add_service(proto::audit_service_server::AuditServiceServer::new(audit::AuditApi { app: app.clone() }))
        .add_service(proto::agent_service_server::AgentServiceServer::new(status::AgentApi { app }));

    match tls {
        Some(config) => {
            let incoming = tls::incoming(listener, config, shutdown.clone());
            router.serve_with_incoming_shutdown(incoming, shutdown.cancelled_owned()).await
        }
        None => router.serve_with_incoming_shutdown(incoming(listener), shutdown.cancelled_owned()).await,
    }
}

/// Accepts connections with `TCP_NODELAY` set. Without it, a response that HTTP/2 writes in two parts waits for
/// the client's delayed ACK (40 ms on Linux) before its second part leaves, which added about 40 ms to each call.
fn incoming(listener: tokio::net::TcpListener) -> TcpIncoming {
    TcpIncoming::from(listener).with_nodelay(Some(true))
}

/// Returns the caller if its role allows a call that needs `required`, or `permission denied` naming both roles.
fn authorize<T>(request: &Request<T>, required: Role) -> Result<Caller, Status> {
    check_role(request.extensions().get::<Caller>(), required)
}

fn check_role(caller: Option<&Caller>, required: Role) -> Result<Caller, Status> {
    let caller = caller
        .cloned()
        .ok_or_else(|| Status::unauthenticated("missing bearer token; send `authorization: Bearer <token>`"))?;
    if caller.role.allows(required) {
        return Ok(caller);
    }
    tracing::warn!(
        caller = caller.name,
        role = caller.role.as_str(),
        required = required.as_str(),
        "permission denied"
    );
    Err(Status::permission_denied(format!(
        "the token \"{}\" has the {} role; this call needs {}",
        caller.name,
        caller.role.as_str(),
        required.as_str()
    )))
}

fn caller<T>(request: &Request<T>) -> String {
    request.extensions().get::<Caller>().map_or_else(|| "unknown".into(), |caller| caller.name.clone())
}

/// The caller and peer address of a call, taken from the request before its body is consumed, for the audit trail.
struct CallContext {
    caller: Option<Caller>,
    peer: Option<String>,
}

impl CallContext {
    fn of<T>(request: &Request<T>) -> CallContext {
        let peer = request
            .extensions()
            .get::<Peer>()
            .and_then(|peer| peer.0)
            .or_else(|| request.remote_addr())
            .map(|address| address.to_string());
        CallContext { caller: request.extensions().get::<Caller>().cloned(), peer }
    }
}

/// Runs one handler and writes one log line with the method, the status code and the elapsed time; never the body.
async fn logged<T>(
    method: &'static str,
    handler: impl Future<Output = Result<T, AppError>>,
) -> Result<tonic::Response<T>, Status> {
    let started = Instant::now();
    let result = handler.await.map_err(|error| status_from_error(&error));
    let code = match &result {
        Ok(_) => tonic::Code::Ok,
        Err(status) => status.code(),
    };
    let elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
    match &result {
        Err(status) if code == tonic::Code::Internal || code == tonic::Code::Unavailable => {
            tracing::error!(method, code = ?code, elapsed_ms, error = status.message(), "rpc failed")
        }
        _ => tracing::info!(method, code = ?code, elapsed_ms, "rpc"),
    }
    result.map(tonic::Response::new)
}

/// Runs a change: checks the caller's role, runs `handler` through [`logged`], and appends one audit row with the
/// outcome, whether the call succeeded, failed or was denied. A failure to write the row is logged; the call's own
/// result is returned, because the change has already happened.
async fn audited<T>(
    app: &App,
    context: &CallContext,
    required: Role,
    method: &'static str,
    target: String,
    handler: impl Future<Output = Result<T, AppError>>,
) -> Result<tonic::Response<T>, Status> {
    let result = match check_role(context.caller.as_ref(), required) {
        Ok(_) => logged(method, handler).await,
        Err(status) => Err(status),
    };
    let outcome = match &result {
        Ok(_) => "ok",
        Err(status) => outcome_word(status.code()),
    };
    let event = crate::store::AuditEvent {
        at: chrono::Utc::now(),
        caller: context.caller.as_ref().map_or_else(|| "unknown".into(), |caller| caller.name.clone()),
        role: context.caller.as_ref().map_or("none", |caller| caller.role.as_str()).to_owned(),
        peer: context.peer.clone(),
        action: method.to_owned(),
        target,
        outcome: outcome.to_owned(),
        detail: result.as_ref().err().map(|status| status.message().chars().take(300).collect()),
    };
    if let Err(error) = app.store.record_audit(event).await {
        tracing::error!(method, %error, "cannot write the audit row");
    }
    result
}

/// Returns the audit trail's word for a failed call's status code.
fn outcome_word(code: tonic::Code) -> &'static str {
    match code {
        tonic::Code::PermissionDenied | tonic::Code::Unauthenticated => "denied",
        tonic::Code::InvalidArgument
        | tonic::Code::NotFound
        | tonic::Code::AlreadyExists
        | tonic::Code::FailedPrecondition
        | tonic::Code::OutOfRange => "rejected",
        _ => "failed",
    }
}

#[cfg(test)]
mod tests {
    use tokio_stream::StreamExt;

    #[tokio::test]
    async fn accepted_connections_disable_nagle() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let mut connections = super::incoming(listener);
        let _client = tokio::net::TcpStream::connect(address).await.unwrap();

        let accepted = connections.next().await.expect("a connection").expect("accepted");

        assert!(accepted.nodelay().unwrap(), "TCP_NODELAY is set on the accepted connection");
    }
}
