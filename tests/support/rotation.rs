//! Harness for password rotation tests: an in-process sandbox in OAuth 2.0 mode with Graph's changePassword, and
//! the built agent signed in to it, restartable on the same data directory with or without a crash point.

use std::time::Duration;

use nhsmail_agent::proto::{self, PasswordState};

use super::{AgentProcess, AuthMode, Clients, TestSandbox, set_password, wait_for};

/// Bound on each wait for the agent to reach a state.
pub const LIMIT: Duration = Duration::from_secs(60);

/// The `[password]` section of the tests: a short wait for a new password to reach every server.
const PASSWORD_SECTION: &str = "\n[password]\npropagation_wait_seconds = 5\n";

pub struct RotationRig {
    pub sandbox: TestSandbox,
    pub agent: AgentProcess,
    pub clients: Clients,
    data_dir: tempfile::TempDir,
    mode: AuthMode,
}

impl RotationRig {
    /// Starts a sandbox and an agent in OAuth 2.0 mode and stores the sandbox's password.
    pub async fn start() -> RotationRig {
        Self::start_in(AuthMode::OAuth2).await
    }

    pub async fn start_in(mode: AuthMode) -> RotationRig {
        let sandbox = TestSandbox::start().await;
        let data_dir = tempfile::tempdir().unwrap();
        let agent = AgentProcess::start(data_dir.path(), &sandbox.agent_config(mode, PASSWORD_SECTION));
        let mut clients = agent.clients().await;
        let password = sandbox.info().password.clone();
        assert!(set_password(&mut clients, &password, false).await.verified, "the sandbox accepts its password");
        RotationRig { sandbox, agent, clients, data_dir, mode }
    }

    /// Starts the agent again on the same data directory with `env`, after it was killed or stopped.
    pub async fn restart_with_env(&mut self, env: &[(&str, &str)]) {
        self.agent.kill();
        let config = self.sandbox.agent_config(self.mode, PASSWORD_SECTION);
        self.agent = AgentProcess::start_with_env(self.data_dir.path(), &config, env);
        self.clients = self.agent.clients().await;
    }

    pub async fn connectivity(&self) -> proto::Connectivity {
        let mut clients = self.clients.clone();
        let response = clients.connectivity.get_connectivity(proto::GetConnectivityRequest {}).await;
        response.expect("GetConnectivity succeeds").into_inner()
    }

    pub async fn rotate(&self) -> Result<proto::RotatePasswordResponse, tonic::Status> {
        let mut clients = self.clients.clone();
        clients.connectivity.rotate_password(proto::RotatePasswordRequest {}).await.map(tonic::Response::into_inner)
    }

    pub async fn reveal(&self) -> String {
        let mut clients = self.clients.clone();
        let response = clients.connectivity.reveal_password(proto::RevealPasswordRequest {}).await;
        response.expect("RevealPassword succeeds").into_inner().password
    }

    /// Returns the sandbox account's password now.
    pub async fn server_password(&self) -> String {
        self.sandbox.get("/account").await["password"].as_str().expect("/account shows the password").to_string()
    }

    pub async fn counter(&self, name: &str) -> u64 {
        self.sandbox.get("/counters").await[name].as_u64().unwrap_or(0)
    }

    /// Waits until the agent has reconciled: no pending password and the state `ok`.
    pub async fn wait_until_settled(&self) -> proto::Connectivity {
        wait_for(LIMIT, "the password to settle as ok with nothing pending", || async {
            let connectivity = self.connectivity().await;
            let settled = connectivity.password_state() == PasswordState::Ok && !connectivity.pending_password;
            settled.then_some(connectivity)
        })
        .await
    }
}
