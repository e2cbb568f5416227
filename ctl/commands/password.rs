//! `password set`: stores a new mailbox password. The password is read without echo and never printed.

use std::fmt;
use std::io::{self, BufRead, IsTerminal};

use nhsmail_agent::proto::{UpdatePasswordRequest, UpdatePasswordResponse};

use crate::cli::{OutputFormat, PasswordSetArgs};
use crate::connect::Agent;
use crate::convert::update_password_json;
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
