//! AgentService: GetStatus and TriggerUpload.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::{CallContext, audited, authorize, convert, logged};
use crate::app::App;
use crate::auth::Role;
use crate::proto;

pub struct AgentApi {
    pub app: Arc<App>,
}

#[tonic::async_trait]
impl proto::agent_service_server::AgentService for AgentApi {
    async fn get_status(&self, request: Request<proto::GetStatusRequest>) -> Result<Response<proto::Status>, Status> {
        authorize(&request, Role::Viewer)?;
        logged("GetStatus", async { Ok(convert::agent_status(self.app.status().await?)) }).await
    }

    async fn trigger_upload(
        &self,
        request: Request<proto::TriggerUploadRequest>,
    ) -> Result<Response<proto::UploadReport>, Status> {
        let context = CallContext::of(&request);
        audited(&self.app, &context, Role::Operator, "TriggerUpload", String::new(), async {
            Ok(convert::upload_report(self.app.trigger_upload().await?))
        })
        .await
    }
}
