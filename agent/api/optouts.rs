//! OptOutService: numbers that must not be texted.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::{CallContext, audited, authorize, convert, logged};
use crate::app::App;
use crate::auth::Role;
use crate::proto;

pub struct OptOutApi {
    pub app: Arc<App>,
}

#[tonic::async_trait]
impl proto::opt_out_service_server::OptOutService for OptOutApi {
    async fn list_opt_outs(
        &self,
        request: Request<proto::ListOptOutsRequest>,
    ) -> Result<Response<proto::ListOptOutsResponse>, Status> {
        authorize(&request, Role::Viewer)?;
        let request = request.into_inner();
        logged("ListOptOuts", async {
            let (opt_outs, next) = self.app.list_opt_outs(request.page_size, &request.page_token).await?;
            Ok(proto::ListOptOutsResponse {
                opt_outs: opt_outs.into_iter().map(convert::opt_out).collect(),
                next_page_token: next.unwrap_or_default(),
            })
        })
        .await
    }

    async fn add_opt_out(&self, request: Request<proto::AddOptOutRequest>) -> Result<Response<proto::OptOut>, Status> {
        let context = CallContext::of(&request);
        let request = request.into_inner();
        audited(&self.app, &context, Role::Submitter, "AddOptOut", request.number.clone(), async {
            Ok(convert::opt_out(self.app.add_opt_out(&request.number, &request.note).await?))
        })
        .await
    }

    async fn remove_opt_out(
        &self,
        request: Request<proto::RemoveOptOutRequest>,
    ) -> Result<Response<proto::RemoveOptOutResponse>, Status> {
        let context = CallContext::of(&request);
        let request = request.into_inner();
        audited(&self.app, &context, Role::Submitter, "RemoveOptOut", request.number.clone(), async {
            let removed = self.app.remove_opt_out(&request.number, &request.note).await?;
            Ok(proto::RemoveOptOutResponse { removed })
        })
        .await
    }
}
