//! InboxService: inbound mail kept for a person to review.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::{CallContext, audited, authorize, convert, logged};
use crate::app::App;
use crate::auth::Role;
use crate::proto;

pub struct InboxApi {
    pub app: Arc<App>,
}

#[tonic::async_trait]
impl proto::inbox_service_server::InboxService for InboxApi {
    async fn list_inbound_for_review(
        &self,
        request: Request<proto::ListInboundForReviewRequest>,
    ) -> Result<Response<proto::ListInboundForReviewResponse>, Status> {
        authorize(&request, Role::Viewer)?;
        let request = request.into_inner();
        logged("ListInboundForReview", async {
            let (emails, next) = self
                .app
                .list_inbound_for_review(request.include_reviewed, request.page_size, &request.page_token)
                .await?;
            Ok(proto::ListInboundForReviewResponse {
                emails: emails.into_iter().map(convert::inbound_email).collect(),
                next_page_token: next.unwrap_or_default(),
            })
        })
        .await
    }

    async fn get_inbound(
        &self,
        request: Request<proto::GetInboundRequest>,
    ) -> Result<Response<proto::InboundEmail>, Status> {
        authorize(&request, Role::Viewer)?;
        let id = request.into_inner().id;
        logged("GetInbound", async { Ok(convert::inbound_email(self.app.inbound_email(id).await?)) }).await
    }

    async fn mark_reviewed(
        &self,
        request: Request<proto::MarkReviewedRequest>,
    ) -> Result<Response<proto::InboundEmail>, Status> {
        let context = CallContext::of(&request);
        let id = request.into_inner().id;
        audited(&self.app, &context, Role::Submitter, "MarkReviewed", id.to_string(), async {
            Ok(convert::inbound_email(self.app.mark_reviewed(id).await?))
        })
        .await
    }
}
