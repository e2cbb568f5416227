//! ConnectivityService: the mailbox account, its password and the upload interval.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::convert;
use super::{authorize, logged};
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
        _request: Request<proto::GetConnectivityRequest>,
    ) -> Result<Response<proto::Connectivity>, Status> {
        logged("GetConnectivity", async { Ok(convert::connectivity(self.app.connectivity().await?)) }).await
    }

    async fn update_connectivity(
        &self,
        request: Request<proto::UpdateConnectivityRequest>,
    ) -> Result<Response<proto::Connectivity>, Status> {
        authorize(&request, Role::Operator)?;
        let request = request.into_inner();
        let update = ConnectivityUpdate {
            upload_interval_minutes: request.upload_interval_minutes,
            username: request.username,
            auto_manage: request.auto_manage,
        };
        logged("UpdateConnectivity", async { Ok(convert::connectivity(self.app.update_connectivity(update).await?)) })
            .await
    }

    async fn update_password(
        &self,
        request: Request<proto::UpdatePasswordRequest>,
    ) -> Result<Response<proto::UpdatePasswordResponse>, Status> {
        let actor = actor(authorize(&request, Role::Operator)?, &request);
        let request = request.into_inner();
        logged("UpdatePassword", async {
            let verified = self
                .app
                .update_password(actor, request.password, request.confirmation, request.skip_verification)
                .await?;
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
            let password = self.app.reveal_password(actor).await?;
            Ok(proto::RevealPasswordResponse { password: password.expose().to_string() })
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
