//! The connection to one agent: the channel, the clients of its three services, and the deadline applied to every
//! call.

use std::future::Future;
use std::time::{Duration, Instant};

use nhsmail_agent::proto::agent_service_client::AgentServiceClient;
use nhsmail_agent::proto::audit_service_client::AuditServiceClient;
use nhsmail_agent::proto::connectivity_service_client::ConnectivityServiceClient;
use nhsmail_agent::proto::inbox_service_client::InboxServiceClient;
use nhsmail_agent::proto::message_service_client::MessageServiceClient;
use nhsmail_agent::proto::opt_out_service_client::OptOutServiceClient;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request, Response, Status};

use crate::cli::TlsFiles;
use crate::error::CtlError;
use crate::token::BearerToken;

type AuthChannel = InterceptedService<Channel, BearerToken>;

/// A connected agent. Clients are created per call; they share the one HTTP/2 channel.
pub struct Agent {
    url: String,
    timeout: Duration,
    channel: Channel,
    token: BearerToken,
}

impl Agent {
    /// Connects to `url`, over TLS for an https:// URL, failing with `CtlError::Unreachable` or
    /// `CtlError::TimedOut` after `timeout`.
    pub async fn connect(url: &str, timeout: Duration, token: BearerToken, tls: &TlsFiles) -> Result<Agent, CtlError> {
        let https = url.starts_with("https://");
        let tls_flags = tls.ca_file.is_some() || tls.client_cert.is_some() || tls.client_key.is_some();
        if !https && tls_flags {
            return Err(CtlError::Input(
                "--ca-file, --client-cert and --client-key need an https:// URL in --agent".into(),
            ));
        }
        let endpoint = Endpoint::from_shared(url.to_string())
            .map_err(|err| CtlError::unreachable(url, Box::new(err)))?
            .connect_timeout(timeout);

        let connecting = async {
            if https {
                let connector = crate::tls::TlsConnector::new(crate::tls::client_config(tls)?);
                endpoint
                    .connect_with_connector(connector)
                    .await
                    .map_err(|err| CtlError::unreachable(url, Box::new(err)))
            } else {
                endpoint.connect().await.map_err(|err| CtlError::unreachable(url, Box::new(err)))
            }
        };
        let channel = tokio::time::timeout(timeout, connecting)
            .await
            .map_err(|_| CtlError::TimedOut { url: url.to_string(), seconds: timeout.as_secs() })??;

        Ok(Agent { url: url.to_string(), timeout, channel, token })
    }

    pub fn agent_service(&self) -> AgentServiceClient<AuthChannel> {
        AgentServiceClient::with_interceptor(self.channel.clone(), self.token.clone())
    }

    pub fn audit_service(&self) -> AuditServiceClient<AuthChannel> {
        AuditServiceClient::with_interceptor(self.channel.clone(), self.token.clone())
    }

    pub fn connectivity_service(&self) -> ConnectivityServiceClient<AuthChannel> {
        ConnectivityServiceClient::with_interceptor(self.channel.clone(), self.token.clone())
    }

    pub fn message_service(&self) -> MessageServiceClient<AuthChannel> {
        MessageServiceClient::with_interceptor(self.channel.clone(), self.token.clone())
    }

    pub fn inbox_service(&self) -> InboxServiceClient<AuthChannel> {
        InboxServiceClient::with_interceptor(self.channel.clone(), self.token.clone())
    }

    pub fn opt_out_service(&self) -> OptOutServiceClient<AuthChannel> {
        OptOutServiceClient::with_interceptor(self.channel.clone(), self.token.clone())
    }

    /// Wraps a request message, telling the agent the deadline through the `grpc-timeout` header.
    pub fn request<T>(&self, message: T) -> Request<T> {
        let mut request = Request::new(message);
        request.set_timeout(self.timeout);
        request
    }

    /// Awaits one call, enforcing the deadline locally too, and maps a failure to a `CtlError`.
    pub async fn call<T>(&self, call: impl Future<Output = Result<Response<T>, Status>>) -> Result<T, CtlError> {
        let started = Instant::now();
        match tokio::time::timeout(self.timeout, call).await {
            Ok(Ok(response)) => Ok(response.into_inner()),
            Ok(Err(status)) => Err(self.failure(status, started.elapsed())),
            Err(_) => Err(self.timed_out()),
        }
    }

    /// Starts a server-streaming call under the connect deadline only, since the stream itself runs until it is
    /// cancelled.
    pub async fn open_stream<T>(&self, call: impl Future<Output = Result<Response<T>, Status>>) -> Result<T, CtlError> {
        self.call(call).await
    }

    /// Maps the status of a stream that failed after it started.
    pub fn stream_failure(&self, status: Status) -> CtlError {
        CtlError::from_status(status, &self.url, self.timeout.as_secs())
    }

    /// Maps the status of a failed call that took `elapsed`.
    fn failure(&self, status: Status, elapsed: Duration) -> CtlError {
        // A tonic 0.14 server responds CANCELLED "Timeout expired" once the grpc-timeout deadline passes, and that
        // response can arrive just before the local deadline fires.
        if status.code() == Code::Cancelled && elapsed >= self.timeout {
            return self.timed_out();
        }
        CtlError::from_status(status, &self.url, self.timeout.as_secs())
    }

    fn timed_out(&self) -> CtlError {
        CtlError::TimedOut { url: self.url.clone(), seconds: self.timeout.as_secs() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::exit;

    fn lazy_agent(timeout: Duration) -> Agent {
        let token = crate::token::load(None, Some("test-token".into()), || unreachable!()).unwrap();
        Agent {
            url: "http://127.0.0.1:50051".into(),
            timeout,
            // A lazy channel connects on first use, and these tests never use it.
            channel: Endpoint::from_static("http://127.0.0.1:50051").connect_lazy(),
            token,
        }
    }

    #[tokio::test]
    async fn server_deadline_counts_as_timeout() {
        let agent = lazy_agent(Duration::from_secs(2));
        let status = Status::cancelled("Timeout expired");

        let error = agent.failure(status, Duration::from_secs(2));

        assert!(matches!(error, CtlError::TimedOut { seconds: 2, .. }), "{error}");
    }

    #[tokio::test]
    async fn early_cancel_is_not_timeout() {
        let agent = lazy_agent(Duration::from_secs(2));
        let status = Status::cancelled("stream reset");

        let error = agent.failure(status, Duration::from_millis(100));

        assert!(matches!(error, CtlError::Unreachable { .. }), "{error}");
        assert_eq!(error.exit_code(), exit::UNREACHABLE);
    }

    #[tokio::test]
    async fn request_carries_grpc_timeout() {
        let agent = lazy_agent(Duration::from_secs(7));

        let request = agent.request(());

        assert_eq!(request.metadata().get("grpc-timeout").unwrap(), "7000000u");
    }
}
