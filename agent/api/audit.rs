//! AuditService: ListAuditEvents.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::{authorize, convert, logged};
use crate::app::{App, AppError};
use crate::auth::Role;
use crate::proto;

pub struct AuditApi {
    pub app: Arc<App>,
}

#[tonic::async_trait]
impl proto::audit_service_server::AuditService for AuditApi {
    async fn list_audit_events(
        &self,
        request: Request<proto::ListAuditEventsRequest>,
    ) -> Result<Response<proto::ListAuditEventsResponse>, Status> {
        authorize(&request, Role::Operator)?;
        let request = request.into_inner();
        logged("ListAuditEvents", async {
            let before_id = match request.page_token.as_str() {
                "" => None,
                token => {
                    Some(token.parse::<i64>().ok().filter(|id| *id > 0).ok_or_else(|| AppError::InvalidArgument {
                        field: "page_token".into(),
                        message: format!("{token:?} is not a page token from ListAuditEvents"),
                    })?)
                }
            };
            let limit = match request.page_size {
                0 => 100,
                size => size.min(1000),
            };
            let records = self.app.store.list_audit(before_id, limit).await?;
            let next_page_token = match records.last() {
                Some(last) if records.len() == limit as usize => last.id.to_string(),
                _ => String::new(),
            };
            Ok(proto::ListAuditEventsResponse {
                events: records.into_iter().map(convert::audit_event).collect(),
                next_page_token,
            })
        })
        .await
    }
}
