//! ConnectivityService: the mailbox account, its password and the upload interval.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::convert;
use super::{CallContext, audited, authorize, logged};
use crate::app::{App, ConnectivityUpdate};
use crate::auth::{Caller, Role};
use crate::proto;
use crate::rotation::Actor;

pub struct ConnectivityApi {
    pub app: Arc<App>,
}

#[tonic::async_trait]
impl proto::connectivity_service_server::ConnectivityService for ConnectivityApi {
    async fn get_connectivity(
        &self,
        request: Request<proto::GetConnectivityRequest>,
    ) -> Result<Response<proto::Connectivity>, Status> {
        authorize(&request, Role::Viewer)?;
        logged("GetConnectivity", async { Ok(convert::connectivity(self.app.connectivity().await?)) }).await
    }

    async fn update_connectivity(
        &self,
        request: Request<proto::UpdateConnectivityRequest>,
    ) -> Result<Response<proto::Connectivity>, Status> {
        let context = CallContext::of(&request);
        let request = request.into_inner();
        let target = request.username.clone().unwrap_or_default();
        let update = ConnectivityUpdate {
            upload_interval_minutes: request.upload_interval_minutes,
            username: request.username,
            auto_manage: request.auto_manage,
        };
        audited(&self.app, &context, Role::Operator, "UpdateConnectivity", target, async {
            Ok(convert::connectivity(self.app.update_connectivity(update).await?))
        })
        .await
    }

    async fn update_password(
        &self,
        request: Request<proto::UpdatePasswordRequest>,
    ) -> Result<Response<proto::UpdatePasswordResponse>, Status> {
        let context = CallContext::of(&request);
        let request = request.into_inner();
        audited(&self.app, &context, Role::Operator, "UpdatePassword", "password".into(), async {
            let verified =
                self.app.update_password(request.password, request.confirmation, request.skip_verification).await?;
            let connectivity = convert::connectivity(self.app.connectivity().await?);
            Ok(proto::UpdatePasswordResponse { verified, connectivity: Some(connectivity) })
        })
        .await
    }

    async fn rotate_password(
        &self,
        request: Request<proto::RotatePasswordRequest>,
    ) -> Result<Response<proto::RotatePasswordResponse>, Status> {
        let actor = actor(authorize(&request, Role::Operator)?, &request);
        logged("RotatePassword", async {
            let outcome = self.app.rotate_password(actor).await?;
            let connectivity = convert::connectivity(self.app.connectivity().await?);
            Ok(proto::RotatePasswordResponse {
                rotated: outcome.rotated,
                outcome: outcome.outcome,
                connectivity: Some(connectivity),
            })
        })
        .await
    }

    async fn reveal_password(
        &self,
        request: Request<proto::RevealPasswordRequest>,
    ) -> Result<Response<proto::RevealPasswordResponse>, Status> {
        let actor = actor(authorize(&request, Role::Admin)?, &request);
        logged("RevealPassword", async {
            let (password, pending) = self.app.reveal_password(actor).await?;
            Ok(proto::RevealPasswordResponse {
                password: password.expose().to_string(),
                pending_password: pending.map(|pending| pending.expose().to_string()).unwrap_or_default(),
            })
        })
        .await
    }
}

fn actor<T>(caller: Caller, request: &Request<T>) -> Actor {
    Actor {
        name: caller.name,
        role: caller.role.as_str().into(),
        peer: request.remote_addr().map(|address| address.to_string()),
    }
}
