//! `nhsmail-agent token create | list | revoke`: token management on the agent's own machine, straight on the
//! database in the data directory. Each create and revoke is an audit row with the role `local`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

use nhsmail_agent::auth::TokenAuthority;
use nhsmail_agent::config::{Config, Overrides};
use nhsmail_agent::store::{AuditEvent, Store, TokenRecord};

use crate::{EXIT_CONFIG, EXIT_RUNTIME, TokenCommand};

/// Runs one token command and returns the process's exit code.
pub fn run(
    runtime: &tokio::runtime::Runtime,
    command: TokenCommand,
    config_file: Option<PathBuf>,
    data_dir: Option<PathBuf>,
) -> ExitCode {
    let data_dir = match (data_dir, config_file) {
        (Some(dir), _) => dir,
        (None, Some(config_file)) => {
            let overrides = Overrides { config_file: Some(config_file), ..Overrides::default() };
            match Config::load(&overrides) {
                Ok(config) => config.agent.data_dir,
                Err(error) => {
                    eprintln!("error: {error}");
                    return ExitCode::from(EXIT_CONFIG);
                }
            }
        }
        (None, None) => nhsmail_agent::paths::default_data_dir(),
    };
    match runtime.block_on(execute(command, data_dir)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(EXIT_RUNTIME)
        }
    }
}

async fn execute(command: TokenCommand, data_dir: PathBuf) -> anyhow::Result<()> {
    crate::prepare_data_dir(&data_dir)?;
    let store = Store::open(nhsmail_agent::store::database_path(&data_dir)).context("cannot open the database")?;
    nhsmail_agent::permissions::check_data_dir(&data_dir);
    let authority = TokenAuthority::new(store.clone());

    match command {
        TokenCommand::Create { name, role } => {
            let issued = authority.create(&name, role).await.context("cannot create the token")?;
            record(&store, "token.create", &name, role.as_str()).await?;
            println!(
                "created token {name:?} with role {} (id {}); copy it now, it is not shown again:",
                role.as_str(),
                issued.record.id
            );
            println!("{}", issued.token.expose());
        }
        TokenCommand::List => print_table(&authority.list().await.context("cannot list the tokens")?),
        TokenCommand::Revoke { name } => {
            let revoked = authority.revoke(&name).await.context("cannot revoke the token")?;
            record(&store, "token.revoke", &name, &revoked.role).await?;
            println!("revoked token {name:?} (id {}); calls with it now fail", revoked.id);
        }
    }
    Ok(())
}

async fn record(store: &Store, action: &str, name: &str, role: &str) -> anyhow::Result<()> {
    let user = std::env::var("USER").ok().filter(|user| !user.is_empty()).unwrap_or_else(|| "local".into());
    let event = AuditEvent {
        at: chrono::Utc::now(),
        caller: user,
        role: "local".into(),
        peer: None,
        action: action.into(),
        target: name.into(),
        outcome: "ok".into(),
        detail: Some(format!("token role {role}")),
    };
    store.record_audit(event).await.context("cannot write the audit row")
}

fn print_table(tokens: &[TokenRecord]) {
    let time = |at: chrono::DateTime<chrono::Utc>| at.format("%Y-%m-%d %H:%M:%SZ").to_string();
    let width = tokens.iter().map(|token| token.name.len()).max().unwrap_or(0).max(4);
    println!("{:<width$}  {:<9}  {:<16}  {:<20}  REVOKED", "NAME", "ROLE", "ID", "CREATED");
    for token in tokens {
        let revoked = token.revoked_at.map_or_else(|| "-".to_string(), time);
        println!(
            "{:<width$}  {:<9}  {:<16}  {:<20}  {revoked}",
            token.name,
            token.role,
            token.id,
            time(token.created_at)
        );
    }
}
