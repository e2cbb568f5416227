//! The commands of nhsmail-ctl, one module per command group. `run` loads the token, connects to the agent and
//! dispatches; each command makes its call, prints the result and then the agent's warnings. Fleet commands go to
//! [`fleet`], which contacts every agent of the inventory.

mod audit;
mod connectivity;
mod fleet;
mod inbox;
mod messages;
mod optouts;
mod password;
mod replies;
mod status;
mod upload;
mod watch;

use std::time::Duration;

use nhsmail_agent::paths::{admin_token_path, default_data_dir};
use nhsmail_agent::proto::GetStatusRequest;

use crate::cli::{
    AuditCommand, Cli, Command, ConnectivityCommand, InboxCommand, MessagesCommand, OptoutsCommand, PasswordCommand,
    RepliesCommand, UploadCommand,
};
use crate::connect::Agent;
use crate::output;
use crate::token::{self, TOKEN_ENV};

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let global = cli.global;
    let command = match cli.command {
        Command::Fleet(command) => return fleet::run(&global, command).await,
        command => command,
    };
    let agent = match &global.target {
        Some(name) => fleet::connect_target(&global, name).await?,
        None => {
            let token = token::load(global.token_file.as_deref(), std::env::var(TOKEN_ENV).ok(), || {
                admin_token_path(&default_data_dir())
            })?;
            Agent::connect(&global.agent, Duration::from_secs(global.timeout), token, &global.tls_files()).await?
        }
    };
    let format = global.output;

    match command {
        Command::Fleet(_) => unreachable!("fleet commands return above"),
        Command::Status => status::show(&agent, format).await,
        Command::Connectivity(ConnectivityCommand::Show) => connectivity::show(&agent, format).await,
        Command::Connectivity(ConnectivityCommand::Set(args)) => connectivity::set(&agent, format, args).await,
        Command::Password(PasswordCommand::Set(args)) => password::set(&agent, format, args).await,
        Command::Password(PasswordCommand::Rotate) => password::rotate(&agent, format).await,
        Command::Password(PasswordCommand::Reveal(args)) => password::reveal(&agent, format, args).await,
        Command::Upload(UploadCommand::Trigger) => upload::trigger(&agent, format).await,
        Command::Send(args) => messages::send(&agent, format, args).await,
        Command::Messages(MessagesCommand::List(args)) => messages::list(&agent, format, args).await,
        Command::Messages(MessagesCommand::Show { id }) => messages::show(&agent, format, id).await,
        Command::Messages(MessagesCommand::Cancel { id }) => messages::cancel(&agent, format, id).await,
        Command::Messages(MessagesCommand::Watch { after }) => watch::run(&agent, format, after).await,
        Command::Replies(RepliesCommand::List(args)) => replies::list(&agent, format, args).await,
        Command::Inbox(InboxCommand::Review(args)) => inbox::review(&agent, format, args).await,
        Command::Inbox(InboxCommand::Show(args)) => inbox::show(&agent, format, args).await,
        Command::Inbox(InboxCommand::MarkReviewed(args)) => inbox::mark_reviewed(&agent, format, args).await,
        Command::Optouts(OptoutsCommand::List(args)) => optouts::list(&agent, format, args).await,
        Command::Optouts(OptoutsCommand::Add(args)) => optouts::add(&agent, format, args).await,
        Command::Optouts(OptoutsCommand::Remove(args)) => optouts::remove(&agent, format, args).await,
        Command::Audit(AuditCommand::List(args)) => audit::list(&agent, format, args).await,
    }
}

/// Prints the agent's current warnings after a command whose response carries none. A failure of this extra call
/// is ignored, because the command itself has already succeeded.
async fn print_status_warnings(agent: &Agent) {
    let request = agent.request(GetStatusRequest {});
    if let Ok(status) = agent.call(agent.agent_service().get_status(request)).await {
        output::print_warnings(&status.warnings);
    }
}
