//! MessageService: submission, inspection and cancellation of texts, and patient replies.

use std::sync::Arc;

use tokio_stream::StreamExt;
use tonic::{Request, Response, Status};

use super::{CallContext, audited, authorize, caller, convert, logged};
use crate::app::App;
use crate::auth::Role;
use crate::proto;
use crate::store::ReplyFilter;

pub struct MessageApi {
    pub app: Arc<App>,
}

type EventStream = std::pin::Pin<Box<dyn futures::Stream<Item = Result<proto::Event, Status>> + Send>>;

#[tonic::async_trait]
impl proto::message_service_server::MessageService for MessageApi {
    type WatchEventsStream = EventStream;

    async fn watch_events(
        &self,
        request: Request<proto::WatchEventsRequest>,
    ) -> Result<Response<Self::WatchEventsStream>, Status> {
        authorize(&request, Role::Viewer)?;
        let after = request.into_inner().after_event_id;
        let receiver = logged("WatchEvents", async { self.app.watch_events(after).await }).await?.into_inner();
        let stream = tokio_stream::wrappers::ReceiverStream::new(receiver).map(|event| match event {
            Ok(event) => Ok(convert::event(event)),
            Err(error) => Err(super::status_from_error(&error)),
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn submit_message(
        &self,
        request: Request<proto::SubmitMessageRequest>,
    ) -> Result<Response<proto::SubmitMessageResponse>, Status> {
        authorize(&request, Role::Submitter)?;
        let caller = caller(&request);
        logged("SubmitMessage", async {
            let submission = convert::submit_request(request.into_inner(), "")?;
            let mut stored = self.app.submit(&caller, vec![submission], "").await?;
            Ok(convert::submission(stored.remove(0)))
        })
        .await
    }

    async fn submit_messages(
        &self,
        request: Request<proto::SubmitMessagesRequest>,
    ) -> Result<Response<proto::SubmitMessagesResponse>, Status> {
        authorize(&request, Role::Submitter)?;
        let caller = caller(&request);
        logged("SubmitMessages", async {
            let submissions = request
                .into_inner()
                .messages
                .into_iter()
                .enumerate()
                .map(|(index, submission)| convert::submit_request(submission, &format!("messages[{index}].")))
                .collect::<Result<Vec<_>, _>>()?;
            let stored = self.app.submit(&caller, submissions, "messages").await?;
            Ok(proto::SubmitMessagesResponse { results: stored.into_iter().map(convert::submission).collect() })
        })
        .await
    }

    async fn get_message(
        &self,
        request: Request<proto::GetMessageRequest>,
    ) -> Result<Response<proto::Message>, Status> {
        authorize(&request, Role::Viewer)?;
        let id = request.into_inner().id;
        logged("GetMessage", async {
            let (message, events) = self.app.get_message(&id).await?;
            Ok(convert::message(message, events))
        })
        .await
    }

    async fn list_messages(
        &self,
        request: Request<proto::ListMessagesRequest>,
    ) -> Result<Response<proto::ListMessagesResponse>, Status> {
        authorize(&request, Role::Viewer)?;
        let request = request.into_inner();
        logged("ListMessages", async {
            let status = convert::status_filter(request.status)?;
            let (messages, next) = self.app.list_messages(status, request.page_size, &request.page_token).await?;
            Ok(proto::ListMessagesResponse {
                messages: messages.into_iter().map(|message| convert::message(message, Vec::new())).collect(),
                next_page_token: next.unwrap_or_default(),
            })
        })
        .await
    }

    async fn cancel_message(
        &self,
        request: Request<proto::CancelMessageRequest>,
    ) -> Result<Response<proto::Message>, Status> {
        let context = CallContext::of(&request);
        let id = request.into_inner().id;
        audited(&self.app, &context, Role::Submitter, "CancelMessage", id.clone(), async {
            Ok(convert::message(self.app.cancel_message(&id).await?, Vec::new()))
        })
        .await
    }

    async fn list_replies(
        &self,
        request: Request<proto::ListRepliesRequest>,
    ) -> Result<Response<proto::ListRepliesResponse>, Status> {
        authorize(&request, Role::Viewer)?;
        let request = request.into_inner();
        logged("ListReplies", async {
            let filter = ReplyFilter {
                message_id: Some(request.message_id).filter(|id| !id.is_empty()),
                from_e164: Some(request.from).filter(|from| !from.is_empty()),
                since: request.since.map(|since| convert::time("since", since)).transpose()?,
            };
            let (replies, next) = self.app.list_replies(filter, request.page_size, &request.page_token).await?;
            Ok(proto::ListRepliesResponse {
                replies: replies.into_iter().map(convert::reply).collect(),
                next_page_token: next.unwrap_or_default(),
            })
        })
        .await
    }
}
