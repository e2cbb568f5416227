//! The gRPC services. Each handler validates, authorises, calls [`App`](crate::app::App) and converts the
//! result; the business rules live in the core. Health and reflection are always served, health without a token.

mod connectivity;
mod convert;
mod inbox;
mod messages;
mod optouts;
mod status;

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use tokio_util::sync::CancellationToken;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Status};

use crate::app::{App, AppError};
use crate::auth::{Caller, TokenAuthority};
use crate::proto;

pub use convert::status_from_error;

/// Serves the API on `listener` until `shutdown` is cancelled, then lets running calls finish.
pub async fn serve(
    app: Arc<App>,
    authority: TokenAuthority,
    listener: tokio::net::TcpListener,
    shutdown: CancellationToken,
) -> Result<(), tonic::transport::Error> {
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    for service in
        ["nhsmail.agent.v1.ConnectivityService", "nhsmail.agent.v1.MessageService", "nhsmail.agent.v1.AgentService"]
    {
        health_reporter.set_service_status(service, tonic_health::ServingStatus::Serving).await;
    }
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .expect("the descriptor sets compiled into the binary are valid");

    let check = move |request: Request<()>| authenticate(&authority, request);
    let connectivity = proto::connectivity_service_server::ConnectivityServiceServer::with_interceptor(
        connectivity::ConnectivityApi { app: app.clone() },
        check.clone(),
    );
    let messages = proto::message_service_server::MessageServiceServer::with_interceptor(
        messages::MessageApi { app: app.clone() },
        check.clone(),
    );
    let opt_outs = proto::opt_out_service_server::OptOutServiceServer::with_interceptor(
        optouts::OptOutApi { app: app.clone() },
        check.clone(),
    );
    let inbox = proto::inbox_service_server::InboxServiceServer::with_interceptor(
        inbox::InboxApi { app: app.clone() },
        check.clone(),
    );
    let status = proto::agent_service_server::AgentServiceServer::with_interceptor(status::AgentApi { app }, check);

    tonic::transport::Server::builder()
        .add_service(health_service)
        .add_service(reflection)
        .add_service(connectivity)
        .add_service(messages)
        .add_service(opt_outs)
        .add_service(inbox)
        .add_service(status)
        .serve_with_incoming_shutdown(incoming(listener), shutdown.cancelled_owned())
        .await
}

/// Accepts connections with `TCP_NODELAY` set. Without it, a response that HTTP/2 writes in two parts waits for
/// the client's delayed ACK (40 ms on Linux) before its second part leaves, which added about 40 ms to each call.
fn incoming(listener: tokio::net::TcpListener) -> TcpIncoming {
    TcpIncoming::from(listener).with_nodelay(Some(true))
}

/// Checks the bearer token and records who the caller is for the handler.
fn authenticate(authority: &TokenAuthority, mut request: Request<()>) -> Result<Request<()>, Status> {
    let header = request.metadata().get("authorization").and_then(|value| value.to_str().ok());
    let Some(token) = header.and_then(|value| value.strip_prefix("Bearer ")) else {
        return Err(Status::unauthenticated("missing bearer token; send `authorization: Bearer <token>`"));
    };
    match authority.verify(token) {
        Some(caller) => {
            request.extensions_mut().insert(caller);
            Ok(request)
        }
        None => {
            tracing::warn!(peer = ?request.remote_addr(), "rejected a call with an unknown token");
            Err(Status::unauthenticated("unknown token"))
        }
    }
}

fn caller<T>(request: &Request<T>) -> String {
    request.extensions().get::<Caller>().map_or_else(|| "unknown".into(), |caller| caller.name.clone())
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
