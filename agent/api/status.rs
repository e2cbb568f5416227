//! AgentService: GetStatus and TriggerUpload.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::convert;
use super::logged;
use crate::app::App;
use crate::proto;

pub struct AgentApi {
    pub app: Arc<App>,
}

#[tonic::async_trait]
impl proto::agent_service_server::AgentService for AgentApi {
    async fn get_status(&self, _request: Request<proto::GetStatusRequest>) -> Result<Response<proto::Status>, Status> {
        logged("GetStatus", async { Ok(convert::agent_status(self.app.status().await?)) }).await
    }

    async fn trigger_upload(
        &self,
        _request: Request<proto::TriggerUploadRequest>,
    ) -> Result<Response<proto::UploadReport>, Status> {
        logged("TriggerUpload", async { Ok(convert::upload_report(self.app.trigger_upload().await?)) }).await
    }
}
