//! `password set`, `password rotate` and `password reveal`. A typed password is read without echo; only `reveal`
//! ever prints one, and only to a terminal unless forced.

use std::fmt;
use std::io::{self, BufRead, IsTerminal};

use nhsmail_agent::proto::{
    RevealPasswordRequest, RotatePasswordRequest, RotatePasswordResponse, UpdatePasswordRequest, UpdatePasswordResponse,
};

use crate::cli::{OutputFormat, PasswordRevealArgs, PasswordSetArgs};
use crate::connect::Agent;
use crate::convert::{connectivity_json, update_password_json};
use crate::error::CtlError;
use crate::output;

/// A password typed or piped in; `Debug` prints nothing of it.
struct Password(String);

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password([redacted])")
    }
}

pub async fn set(agent: &Agent, format: OutputFormat, args: PasswordSetArgs) -> anyhow::Result<()> {
    let (password, confirmation) = if args.password_stdin {
        let password = read_stdin_line()?;
        (Password(password.0.clone()), password)
    } else {
        prompt_twice()?
    };

    let request = agent.request(UpdatePasswordRequest {
        password: password.0,
        confirmation: confirmation.0,
        skip_verification: args.skip_verification,
    });
    let response = agent.call(agent.connectivity_service().update_password(request)).await?;

    output::print_result(format, || update_password_json(&response), || render(&response));
    match &response.connectivity {
        Some(connectivity) => output::print_warnings(&connectivity.warnings),
        None => super::print_status_warnings(agent).await,
    }
    Ok(())
}

pub async fn rotate(agent: &Agent, format: OutputFormat) -> anyhow::Result<()> {
    let request = agent.request(RotatePasswordRequest {});
    let response = agent.call(agent.connectivity_service().rotate_password(request)).await?;
    output::print_result(format, || rotate_json(&response), || render_rotation(&response));
    match &response.connectivity {
        Some(connectivity) => output::print_warnings(&connectivity.warnings),
        None => super::print_status_warnings(agent).await,
    }
    if response.rotated {
        Ok(())
    } else {
        Err(CtlError::Rejected(format!("the password was not changed: {}", response.outcome)).into())
    }
}

fn rotate_json(response: &RotatePasswordResponse) -> serde_json::Value {
    serde_json::json!({
        "rotated": response.rotated,
        "outcome": response.outcome,
        "connectivity": response.connectivity.as_ref().map(connectivity_json),
    })
}

fn render_rotation(response: &RotatePasswordResponse) -> String {
    let headline = if response.rotated { "Password changed" } else { "Password not changed" };
    let details = response.connectivity.as_ref().map(super::connectivity::render).unwrap_or_default();
    format!("{headline}: {}\n\n{details}", response.outcome)
}

pub async fn reveal(agent: &Agent, format: OutputFormat, args: PasswordRevealArgs) -> anyhow::Result<()> {
    if !args.force && !io::stdout().is_terminal() {
        return Err(CtlError::Input(
            "stdout is not a terminal, so the password was not requested; add --force to print it anyway".into(),
        )
        .into());
    }
    let request = agent.request(RevealPasswordRequest {});
    let response = agent.call(agent.connectivity_service().reveal_password(request)).await?;
    let pending = (!response.pending_password.is_empty()).then_some(&response.pending_password);
    match format {
        OutputFormat::Json => {
            println!("{}", serde_json::json!({ "password": response.password, "pending_password": pending }))
        }
        OutputFormat::Table => {
            println!("{}", response.password);
            if let Some(pending) = pending {
                eprintln!("note: an unconfirmed change left a new password, which NHSmail may hold instead:");
                println!("{pending}");
            }
        }
    }
    super::print_status_warnings(agent).await;
    Ok(())
}

/// Reads one line from stdin, without its line ending, as both password and confirmation.
fn read_stdin_line() -> Result<Password, CtlError> {
    let mut line = String::new();
    io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(|err| CtlError::Input(format!("cannot read the password from stdin: {err}")))?;

    let password = line.strip_suffix('\n').unwrap_or(&line);
    let password = password.strip_suffix('\r').unwrap_or(password);
    if password.is_empty() {
        return Err(CtlError::Input("no password on stdin; nothing was changed".into()));
    }
    Ok(Password(password.to_string()))
}

fn prompt_twice() -> Result<(Password, Password), CtlError> {
    if !io::stdin().is_terminal() {
        return Err(CtlError::Input(
            "stdin is not a terminal, so the password cannot be prompted for; pass --password-stdin to read it \
             from stdin"
                .into(),
        ));
    }

    let password = prompt("New mailbox password: ")?;
    if password.0.is_empty() {
        return Err(CtlError::Input("the password is empty; nothing was changed".into()));
    }
    let confirmation = prompt("Type it again: ")?;
    if password.0 != confirmation.0 {
        return Err(CtlError::Input("the two passwords do not match; nothing was changed".into()));
    }
    Ok((password, confirmation))
}

fn prompt(text: &str) -> Result<Password, CtlError> {
    rpassword::prompt_password(text)
        .map(Password)
        .map_err(|err| CtlError::Input(format!("cannot read the password from the terminal: {err}")))
}

fn render(response: &UpdatePasswordResponse) -> String {
    let outcome = if response.verified {
        "Password stored after an SMTP and an IMAP sign-in succeeded with it.\n"
    } else {
        "Password stored without checking it against the servers.\n"
    };
    match &response.connectivity {
        Some(connectivity) => format!("{outcome}\n{}", super::connectivity::render(connectivity)),
        None => outcome.to_string(),
    }
}
