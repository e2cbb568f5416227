//! Settings from the TOML file, the environment and command-line flags, validated once at start-up.
//!
//! Precedence, lowest first: built-in defaults, the file named by `--config`, `NHSMAIL_*` environment variables,
//! then flags. Every error names the key as it is written in the file (`[nhsmail] smtp_port`), the value, and what
//! is expected. The key names are a public interface: scripts and installers depend on them.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::Deserialize;
use url::Url;

use crate::credentials::generator::PasswordPolicy;
use crate::oauth::{DEFAULT_SCOPE, OAuthSettings};
use crate::sms::AddressForm;
use crate::transport::{Endpoint, Security};

/// Default of `[mailbox] processed_folder`.
pub const DEFAULT_PROCESSED_FOLDER: &str = "Processed";

/// Default gRPC listen address: loopback only.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:50051";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("invalid config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid value for {key} (from {origin}): {value:?}; {expected}")]
    Invalid { key: &'static str, origin: String, value: String, expected: String },
    #[error("missing {key}: {hint}")]
    Missing { key: &'static str, hint: &'static str },
}

/// Placement of an SMS's text in the email sent to the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextIn {
    Body,
    Subject,
}

impl FromStr for TextIn {
    type Err = String;
    fn from_str(value: &str) -> Result<Self, String> {
        match value {
            "body" => Ok(TextIn::Body),
            "subject" => Ok(TextIn::Subject),
            _ => Err("expected \"body\" or \"subject\"".into()),
        }
    }
}

/// The sign-in method for SMTP and IMAP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MailboxAuth {
    /// The password itself: SMTP AUTH PLAIN or LOGIN, IMAP LOGIN.
    Password,
    /// An OAuth 2.0 access token obtained with the username and password, used with XOAUTH2.
    OAuth2(OAuthSettings),
}

/// The `[nhsmail] auth` key's values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AuthName {
    Password,
    OAuth2,
}

impl FromStr for AuthName {
    type Err = String;
    fn from_str(value: &str) -> Result<Self, String> {
        match value {
            "password" => Ok(AuthName::Password),
            "oauth2" => Ok(AuthName::OAuth2),
            _ => Err("expected \"password\" or \"oauth2\"".into()),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    /// The file the settings were read from, if any.
    pub source: Option<PathBuf>,
    pub agent: AgentSettings,
    pub nhsmail: NhsmailSettings,
    pub sending: SendingSettings,
    pub password: PasswordSettings,
    pub mailbox: MailboxSettings,
}

#[derive(Debug, Clone)]
pub struct AgentSettings {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    /// Minutes between upload cycles, 1 to 1440.
    pub upload_interval_minutes: u32,
    /// Address of the Prometheus metrics endpoint; `None` leaves it off.
    pub metrics_listen: Option<SocketAddr>,
    /// The source of the latest version for the upload cycle's check; `None` skips the check.
    pub update_feed: Option<UpdateFeed>,
    /// TLS for the gRPC listener; required for an address other than loopback.
    pub tls: Option<ServerTls>,
    /// Days audit rows are kept, 1 to 36500.
    pub audit_retention_days: u32,
}

/// The software update feed: a JSON document naming the latest version, read from a file or fetched over HTTPS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpdateFeed {
    File(PathBuf),
    /// An https:// URL, or http:// for a loopback host.
    Url(Url),
}

impl std::fmt::Display for UpdateFeed {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UpdateFeed::File(path) => write!(formatter, "{}", path.display()),
            UpdateFeed::Url(url) => write!(formatter, "{url}"),
        }
    }
}

/// The gRPC listener's certificate chain and key (PEM files), and the CA that client certificates must be signed
/// by when mutual TLS is on.
#[derive(Debug, Clone)]
pub struct ServerTls {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct NhsmailSettings {
    /// The mailbox account; may be unset until an operator sets it with UpdateConnectivity.
    pub username: Option<String>,
    pub smtp: Endpoint,
    pub imap: Endpoint,
    /// A PEM file of extra CA certificates trusted for SMTP and IMAP, besides the system's.
    pub ca_file: Option<PathBuf>,
    /// Domain of the SMS gateway, `sms.nhs.net` for NHSmail.
    pub sms_domain: String,
    pub address_form: AddressForm,
    pub text_in: TextIn,
    /// Timeout for each SMTP or IMAP network step, and for each request to the token endpoint.
    pub network_timeout: Duration,
    pub auth: MailboxAuth,
    /// Microsoft Graph's base URL, up to and including `/v1.0`, for password changes.
    pub graph_url: Option<Url>,
}

#[derive(Debug, Clone)]
pub struct SendingSettings {
    /// Messages handed to SMTP per minute at most; Exchange Online's default limit is 30.
    pub rate_per_minute: u32,
    /// A message not sent within this time of its submission expires.
    pub max_lifetime: Duration,
    /// Longest accepted text in GSM-7 characters; UCS-2 texts get the same number of parts.
    pub max_text_chars: u32,
    /// Delay before the first retry after a transient SMTP failure. Each later retry doubles it, up to one hour.
    pub retry_base: Duration,
}

/// The `[password]` section: the account's expiry policy, when and how the agent rotates the password, and the
/// rules a generated password meets.
#[derive(Debug, Clone)]
pub struct PasswordSettings {
    /// Days a password stays valid after it is set; NHSmail application accounts allow up to 365.
    pub max_age_days: u32,
    /// Whether the agent changes the password itself before it expires.
    pub auto_manage: bool,
    /// Days before expiry at which an automatic rotation is due.
    pub rotate_days_before_expiry: u32,
    /// Days before expiry on which a warning is raised, largest first.
    pub warn_days: Vec<u32>,
    /// Length and character classes of generated passwords.
    pub policy: PasswordPolicy,
    /// Recent passwords a new one must differ from.
    pub history: u32,
    /// The change endpoint in Microsoft Graph's shape; `<graph_url>/me/changePassword` when not set.
    pub change_url: Option<Url>,
    /// Maximum wait for a changed password to be accepted by SMTP and IMAP, which can lag behind the change.
    pub propagation_wait: Duration,
}

/// Settings for inbound mail once it is recorded: the processed folder, retention and IDLE.
#[derive(Debug, Clone)]
pub struct MailboxSettings {
    /// The folder processed receipts and reports are moved to; created when missing.
    pub processed_folder: String,
    /// Emails in the processed folder older than this many days are deleted, 1 to 3650.
    pub retention_days: u32,
    /// Whether to watch INBOX with IMAP IDLE when the server offers it, so new mail is collected at once.
    pub idle: bool,
}

/// Values given on the command line; each one overrides the file and the environment.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub config_file: Option<PathBuf>,
    pub listen: Option<String>,
    pub data_dir: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    agent: RawAgent,
    #[serde(default)]
    nhsmail: RawNhsmail,
    #[serde(default)]
    sending: RawSending,
    #[serde(default)]
    password: RawPassword,
    #[serde(default)]
    mailbox: RawMailbox,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAgent {
    listen: Option<Scalar>,
    data_dir: Option<Scalar>,
    upload_interval_minutes: Option<Scalar>,
    metrics_listen: Option<Scalar>,
    metrics_allow_remote: Option<Scalar>,
    update_feed: Option<Scalar>,
    tls_cert: Option<Scalar>,
    tls_key: Option<Scalar>,
    tls_client_ca: Option<Scalar>,
    audit_retention_days: Option<Scalar>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNhsmail {
    username: Option<Scalar>,
    smtp_host: Option<Scalar>,
    smtp_port: Option<Scalar>,
    smtp_security: Option<Scalar>,
    imap_host: Option<Scalar>,
    imap_port: Option<Scalar>,
    imap_security: Option<Scalar>,
    ca_file: Option<Scalar>,
    sms_domain: Option<Scalar>,
    address_form: Option<Scalar>,
    text_in: Option<Scalar>,
    network_timeout_seconds: Option<Scalar>,
    auth: Option<Scalar>,
    token_url: Option<Scalar>,
    client_id: Option<Scalar>,
    scope: Option<Scalar>,
    graph_url: Option<Scalar>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSending {
    rate_per_minute: Option<Scalar>,
    max_lifetime_hours: Option<Scalar>,
    max_text_chars: Option<Scalar>,
    retry_base_seconds: Option<Scalar>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPassword {
    max_age_days: Option<Scalar>,
    auto_manage: Option<Scalar>,
    rotate_days_before_expiry: Option<Scalar>,
    warn_days: Option<Vec<Scalar>>,
    min_length: Option<Scalar>,
    required_classes: Option<Vec<Scalar>>,
    history: Option<Scalar>,
    change_url: Option<Scalar>,
    propagation_wait_seconds: Option<Scalar>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMailbox {
    processed_folder: Option<Scalar>,
    retention_days: Option<Scalar>,
    idle: Option<Scalar>,
}

/// A value as written in the config file, in its text form. Numbers, booleans and strings are all accepted here so
/// that the resolver, which knows the key, parses them and names the key in any error; `"15"` and `15` both work.
#[derive(Debug, Clone)]
struct Scalar(String);

impl std::fmt::Display for Scalar {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Scalar, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Value {
            Text(String),
            Integer(i64),
            Float(f64),
            Boolean(bool),
        }
        let text = match Value::deserialize(deserializer)
            .map_err(|_| serde::de::Error::custom("expected a single value (text, number or true/false)"))?
        {
            Value::Text(text) => text,
            Value::Integer(number) => number.to_string(),
            Value::Float(number) => number.to_string(),
            Value::Boolean(flag) => flag.to_string(),
        };
        Ok(Scalar(text))
    }
}

/// One setting's raw value and where it came from, for error messages.
struct Source<T> {
    value: T,
    origin: String,
}

impl Config {
    /// Loads the settings: defaults, then the file, then the process environment, then `overrides`.
    pub fn load(overrides: &Overrides) -> Result<Config, ConfigError> {
        Self::load_with_env(overrides, |name| std::env::var(name).ok())
    }

    /// Loads the settings with `env` standing in for the process environment, so tests need not change it.
    pub fn load_with_env(overrides: &Overrides, env: impl Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let raw = match &overrides.config_file {
            Some(path) => read_file(path)?,
            None => RawConfig::default(),
        };
        let file_origin =
            overrides.config_file.as_ref().map_or_else(|| "default".to_string(), |path| path.display().to_string());
        let resolver = Resolver { env: &env, file_origin: &file_origin };
        let agent = resolve_agent(&resolver, raw.agent, overrides)?;
        let nhsmail = resolve_nhsmail(&resolver, raw.nhsmail)?;
        let sending = resolve_sending(&resolver, raw.sending)?;
        let password = resolve_password(&resolver, raw.password)?;
        let mailbox = resolve_mailbox(&resolver, raw.mailbox)?;
        Ok(Config { source: overrides.config_file.clone(), agent, nhsmail, sending, password, mailbox })
    }
}

fn read_file(path: &Path) -> Result<RawConfig, ConfigError> {
    let text =
        std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
    toml::from_str(&text).map_err(|error| ConfigError::Parse {
        path: path.to_path_buf(),
        message: error.message().to_string() + &span_hint(&text, error.span()),
    })
}

fn span_hint(text: &str, span: Option<std::ops::Range<usize>>) -> String {
    let Some(span) = span else { return String::new() };
    let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
    format!(" (line {line})")
}

/// Picks each setting from the environment or the file and parses it with a message naming the key.
struct Resolver<'a, E: Fn(&str) -> Option<String>> {
    env: &'a E,
    file_origin: &'a str,
}

impl<E: Fn(&str) -> Option<String>> Resolver<'_, E> {
    /// Returns the environment's value for `env_name` if set, else the file's value.
    fn pick<T: ToString>(&self, env_name: &str, from_file: Option<T>) -> Option<Source<String>> {
        if let Some(value) = (self.env)(env_name) {
            return Some(Source { value, origin: format!("environment variable {env_name}") });
        }
        from_file.map(|value| Source { value: value.to_string(), origin: self.file_origin.to_string() })
    }

    fn integer(
        &self,
        key: &'static str,
        env_name: &str,
        from_file: Option<Scalar>,
        range: std::ops::RangeInclusive<i64>,
        unit: &str,
    ) -> Result<Option<i64>, ConfigError> {
        let Some(source) = self.pick(env_name, from_file) else { return Ok(None) };
        let expected = format!("expected a whole number of {unit} from {} to {}", range.start(), range.end());
        match source.value.trim().parse::<i64>() {
            Ok(number) if range.contains(&number) => Ok(Some(number)),
            _ => Err(invalid(key, source, expected)),
        }
    }

    fn parsed<T>(&self, key: &'static str, env_name: &str, from_file: Option<Scalar>) -> Result<Option<T>, ConfigError>
    where
        T: FromStr,
        T::Err: std::fmt::Display,
    {
        let Some(source) = self.pick(env_name, from_file) else { return Ok(None) };
        match source.value.trim().parse::<T>() {
            Ok(value) => Ok(Some(value)),
            Err(expected) => Err(invalid(key, source, expected.to_string())),
        }
    }

    fn boolean(
        &self,
        key: &'static str,
        env_name: &str,
        from_file: Option<Scalar>,
    ) -> Result<Option<bool>, ConfigError> {
        let Some(source) = self.pick(env_name, from_file) else { return Ok(None) };
        match source.value.trim() {
            "true" | "on" | "yes" | "1" => Ok(Some(true)),
            "false" | "off" | "no" | "0" => Ok(Some(false)),
            _ => Err(invalid(key, source, "expected true or false".into())),
        }
    }
}

fn invalid(key: &'static str, source: Source<String>, expected: String) -> ConfigError {
    ConfigError::Invalid { key, origin: source.origin, value: source.value, expected }
}

fn resolve_agent<E: Fn(&str) -> Option<String>>(
    resolver: &Resolver<'_, E>,
    raw: RawAgent,
    overrides: &Overrides,
) -> Result<AgentSettings, ConfigError> {
    let key = "[agent] listen";
    let listen_source = match &overrides.listen {
        Some(value) => Source { value: value.clone(), origin: "flag --listen".into() },
        None => resolver
            .pick("NHSMAIL_LISTEN", raw.listen)
            .unwrap_or(Source { value: DEFAULT_LISTEN.into(), origin: "default".into() }),
    };
    let listen: SocketAddr = match listen_source.value.trim().parse() {
        Ok(address) => address,
        Err(_) => {
            return Err(invalid(key, listen_source, "expected an address and port such as 127.0.0.1:50051".into()));
        }
    };
    let tls = resolve_server_tls(resolver, raw.tls_cert, raw.tls_key, raw.tls_client_ca)?;
    if !listen.ip().is_loopback() && tls.is_none() {
        return Err(invalid(
            key,
            listen_source,
            "an address other than loopback (127.0.0.1 or [::1]) needs TLS: set [agent] tls_cert and [agent] tls_key \
             (NHSMAIL_TLS_CERT, NHSMAIL_TLS_KEY) to PEM files"
                .into(),
        ));
    }

    let data_dir = match &overrides.data_dir {
        Some(dir) => dir.clone(),
        None => resolver
            .pick("NHSMAIL_DATA_DIR", raw.data_dir)
            .map(|source| PathBuf::from(source.value))
            .unwrap_or_else(crate::paths::default_data_dir),
    };
    if data_dir.as_os_str().is_empty() {
        return Err(ConfigError::Missing { key: "[agent] data_dir", hint: "set it to a writable directory" });
    }

    let upload_interval_minutes = resolver
        .integer(
            "[agent] upload_interval_minutes",
            "NHSMAIL_UPLOAD_INTERVAL_MINUTES",
            raw.upload_interval_minutes,
            1..=1440,
            "minutes",
        )?
        .unwrap_or(15) as u32;

    let metrics_listen = resolve_metrics_listen(resolver, raw.metrics_listen, raw.metrics_allow_remote)?;
    let update_feed = resolver.pick("NHSMAIL_UPDATE_FEED", raw.update_feed).map(resolve_update_feed).transpose()?;
    let audit_retention_days = resolver
        .integer(
            "[agent] audit_retention_days",
            "NHSMAIL_AUDIT_RETENTION_DAYS",
            raw.audit_retention_days,
            1..=36500,
            "days",
        )?
        .unwrap_or(400) as u32;
    Ok(AgentSettings {
        listen,
        data_dir,
        upload_interval_minutes,
        metrics_listen,
        update_feed,
        tls,
        audit_retention_days,
    })
}

/// Resolves `[agent] metrics_listen`. The metrics show queue sizes and sign-in failures, so an address other than
/// loopback needs `[agent] metrics_allow_remote = true` as well.
fn resolve_metrics_listen<E: Fn(&str) -> Option<String>>(
    resolver: &Resolver<'_, E>,
    listen: Option<Scalar>,
    allow_remote: Option<Scalar>,
) -> Result<Option<SocketAddr>, ConfigError> {
    let key = "[agent] metrics_listen";
    let allow_remote = resolver
        .boolean("[agent] metrics_allow_remote", "NHSMAIL_METRICS_ALLOW_REMOTE", allow_remote)?
        .unwrap_or(false);
    let Some(source) = resolver.pick("NHSMAIL_METRICS_LISTEN", listen) else { return Ok(None) };
    let address: SocketAddr = match source.value.trim().parse() {
        Ok(address) => address,
        Err(_) => return Err(invalid(key, source, "expected an address and port such as 127.0.0.1:9464".into())),
    };
    if !address.ip().is_loopback() && !allow_remote {
        return Err(invalid(
            key,
            source,
            "only loopback addresses (127.0.0.1 or [::1]) are allowed unless [agent] metrics_allow_remote = true"
                .into(),
        ));
    }
    Ok(Some(address))
}

/// Resolves `[agent] update_feed`: a value starting with http:// or https:// is a URL, anything else a file path.
fn resolve_update_feed(source: Source<String>) -> Result<UpdateFeed, ConfigError> {
    let key = "[agent] update_feed";
    let value = source.value.trim();
    if value.is_empty() {
        return Err(invalid(
            key,
            source,
            "expected a file path or an https:// URL; remove the key to skip the check".into(),
        ));
    }
    let lower = value.to_ascii_lowercase();
    if lower.starts_with("https://") || lower.starts_with("http://") {
        return parse_http_url(key, source).map(UpdateFeed::Url);
    }
    Ok(UpdateFeed::File(PathBuf::from(value)))
}

/// Resolves the listener's TLS files: `tls_cert` and `tls_key` together or neither, and `tls_client_ca` only with
/// them. Each file must exist; its contents are checked when the listener starts.
fn resolve_server_tls<E: Fn(&str) -> Option<String>>(
    resolver: &Resolver<'_, E>,
    cert: Option<Scalar>,
    key: Option<Scalar>,
    client_ca: Option<Scalar>,
) -> Result<Option<ServerTls>, ConfigError> {
    let file = |key: &'static str, env_name: &str, value: Option<Scalar>| -> Result<Option<PathBuf>, ConfigError> {
        let Some(source) = resolver.pick(env_name, value) else { return Ok(None) };
        let path = PathBuf::from(source.value.trim());
        if !path.is_file() {
            return Err(invalid(key, source, "the file does not exist or is not a regular file".into()));
        }
        Ok(Some(path))
    };
    let cert = file("[agent] tls_cert", "NHSMAIL_TLS_CERT", cert)?;
    let key = file("[agent] tls_key", "NHSMAIL_TLS_KEY", key)?;
    let client_ca = file("[agent] tls_client_ca", "NHSMAIL_TLS_CLIENT_CA", client_ca)?;
    match (cert, key) {
        (Some(cert), Some(key)) => Ok(Some(ServerTls { cert, key, client_ca })),
        (None, None) if client_ca.is_some() => Err(ConfigError::Missing {
            key: "[agent] tls_cert",
            hint: "[agent] tls_client_ca needs TLS on: set [agent] tls_cert and [agent] tls_key too",
        }),
        (None, None) => Ok(None),
        (Some(_), None) => Err(ConfigError::Missing {
            key: "[agent] tls_key",
            hint: "[agent] tls_cert is set; set tls_key to the PEM file of its private key",
        }),
        (None, Some(_)) => Err(ConfigError::Missing {
            key: "[agent] tls_cert",
            hint: "[agent] tls_key is set; set tls_cert to the PEM file of the certificate chain",
        }),
    }
}

fn resolve_nhsmail<E: Fn(&str) -> Option<String>>(
    resolver: &Resolver<'_, E>,
    raw: RawNhsmail,
) -> Result<NhsmailSettings, ConfigError> {
    let username = resolver
        .pick("NHSMAIL_USERNAME", raw.username)
        .map(|source| source.value.trim().to_string())
        .filter(|name| !name.is_empty());

    let smtp = resolve_endpoint(
        resolver,
        ("[nhsmail] smtp_host", "NHSMAIL_SMTP_HOST", raw.smtp_host),
        ("[nhsmail] smtp_port", "NHSMAIL_SMTP_PORT", raw.smtp_port, 587),
        ("[nhsmail] smtp_security", "NHSMAIL_SMTP_SECURITY", raw.smtp_security, Security::StartTls),
    )?;
    let imap = resolve_endpoint(
        resolver,
        ("[nhsmail] imap_host", "NHSMAIL_IMAP_HOST", raw.imap_host),
        ("[nhsmail] imap_port", "NHSMAIL_IMAP_PORT", raw.imap_port, 993),
        ("[nhsmail] imap_security", "NHSMAIL_IMAP_SECURITY", raw.imap_security, Security::Tls),
    )?;

    let ca_source = resolver.pick("NHSMAIL_CA_FILE", raw.ca_file);
    let ca_file = ca_source.as_ref().map(|source| PathBuf::from(&source.value));
    if let (Some(path), Some(source)) = (&ca_file, ca_source)
        && !path.is_file()
    {
        return Err(invalid("[nhsmail] ca_file", source, "the file does not exist or is not a regular file".into()));
    }

    let sms_domain = resolver
        .pick("NHSMAIL_SMS_DOMAIN", raw.sms_domain)
        .map(|source| source.value.trim().to_ascii_lowercase())
        .unwrap_or_else(|| "sms.nhs.net".into());
    if sms_domain.is_empty() || sms_domain.contains(['@', ' ', '<', '>']) {
        let source = Source { value: sms_domain, origin: "[nhsmail] sms_domain".into() };
        return Err(invalid("[nhsmail] sms_domain", source, "expected a domain name such as sms.nhs.net".into()));
    }

    let address_form = resolver
        .parsed::<AddressForm>("[nhsmail] address_form", "NHSMAIL_ADDRESS_FORM", raw.address_form)?
        .unwrap_or(AddressForm::National);
    let text_in =
        resolver.parsed::<TextIn>("[nhsmail] text_in", "NHSMAIL_TEXT_IN", raw.text_in)?.unwrap_or(TextIn::Body);
    let timeout_seconds = resolver
        .integer(
            "[nhsmail] network_timeout_seconds",
            "NHSMAIL_NETWORK_TIMEOUT_SECONDS",
            raw.network_timeout_seconds,
            1..=600,
            "seconds",
        )?
        .unwrap_or(30);

    let graph_url = resolver
        .pick("NHSMAIL_GRAPH_URL", raw.graph_url)
        .map(|source| parse_http_url("[nhsmail] graph_url", source))
        .transpose()?;
    let auth = resolve_auth(resolver, raw.auth, raw.token_url, raw.client_id, raw.scope)?;

    Ok(NhsmailSettings {
        username,
        smtp,
        imap,
        ca_file,
        sms_domain,
        address_form,
        text_in,
        network_timeout: Duration::from_secs(timeout_seconds as u64),
        auth,
        graph_url,
    })
}

/// Resolves `auth` and, for `oauth2`, the token endpoint, the client ID and the scope. The OAuth keys are checked
/// whenever they are set, so a typo shows before anyone switches to `oauth2`.
fn resolve_auth<E: Fn(&str) -> Option<String>>(
    resolver: &Resolver<'_, E>,
    auth: Option<Scalar>,
    token_url: Option<Scalar>,
    client_id: Option<Scalar>,
    scope: Option<Scalar>,
) -> Result<MailboxAuth, ConfigError> {
    let auth = resolver.parsed::<AuthName>("[nhsmail] auth", "NHSMAIL_AUTH", auth)?.unwrap_or(AuthName::Password);
    let token_url = resolver
        .pick("NHSMAIL_TOKEN_URL", token_url)
        .map(|source| parse_http_url("[nhsmail] token_url", source))
        .transpose()?;
    let client_id = resolver
        .pick("NHSMAIL_CLIENT_ID", client_id)
        .map(|source| plain_text("[nhsmail] client_id", source, "expected an application (client) ID"))
        .transpose()?;
    let scope = resolver
        .pick("NHSMAIL_SCOPE", scope)
        .map(|source| plain_text("[nhsmail] scope", source, "expected space-separated scopes"))
        .transpose()?
        .unwrap_or_else(|| DEFAULT_SCOPE.to_owned());

    if auth == AuthName::Password {
        return Ok(MailboxAuth::Password);
    }
    let token_url = token_url.ok_or(ConfigError::Missing {
        key: "[nhsmail] token_url",
        hint: "auth = \"oauth2\" needs the OAuth 2.0 token endpoint, for example \
               https://login.microsoftonline.com/TENANT/oauth2/v2.0/token",
    })?;
    let client_id = client_id.ok_or(ConfigError::Missing {
        key: "[nhsmail] client_id",
        hint: "auth = \"oauth2\" needs the application (client) ID registered for the agent",
    })?;
    Ok(MailboxAuth::OAuth2(OAuthSettings { token_url, client_id, scope }))
}

/// Parses an http:// or https:// URL with a host and no user name or password in it. Plain http:// is allowed only
/// for a loopback host, as `plain` is for mail.
fn parse_http_url(key: &'static str, source: Source<String>) -> Result<Url, ConfigError> {
    let url = match Url::parse(source.value.trim()) {
        Ok(url) => url,
        Err(error) => return Err(invalid(key, source, format!("expected an http:// or https:// URL ({error})"))),
    };
    if !url.username().is_empty() || url.password().is_some() {
        // The error shows the value, so it must not show the password.
        let mut redacted = url.clone();
        let _ = redacted.set_username("");
        let _ = redacted.set_password(None);
        let source = Source { value: redacted.to_string(), origin: source.origin };
        return Err(invalid(key, source, "the URL must not contain a user name or password".into()));
    }
    let host = url.host_str().unwrap_or_default().to_owned();
    let problem = match url.scheme() {
        _ if host.is_empty() => Some("expected a URL with a host"),
        _ if url.fragment().is_some() => Some("the URL must not contain a fragment (#...)"),
        "https" => None,
        "http" if is_loopback_host(&host) => None,
        "http" => Some("plain http is allowed only for loopback hosts; use https"),
        _ => Some("expected an http:// or https:// URL"),
    };
    match problem {
        Some(expected) => Err(invalid(key, source, expected.into())),
        None => Ok(url),
    }
}

/// Trims a value and checks it is not empty and contains no control character.
fn plain_text(key: &'static str, source: Source<String>, expected: &str) -> Result<String, ConfigError> {
    let value = source.value.trim().to_owned();
    if value.is_empty() || value.chars().any(char::is_control) {
        return Err(invalid(key, source, format!("{expected}, without control characters")));
    }
    Ok(value)
}

fn resolve_endpoint<E: Fn(&str) -> Option<String>>(
    resolver: &Resolver<'_, E>,
    host: (&'static str, &str, Option<Scalar>),
    port: (&'static str, &str, Option<Scalar>, u16),
    security: (&'static str, &str, Option<Scalar>, Security),
) -> Result<Endpoint, ConfigError> {
    let host_value = resolver
        .pick(host.1, host.2)
        .map(|source| source.value.trim().to_string())
        .filter(|value| !value.is_empty())
        .ok_or(ConfigError::Missing {
            key: host.0,
            hint: "set it to the mail server's host name in the config file or the environment",
        })?;
    let port_value = resolver.integer(port.0, port.1, port.2, 1..=65535, "port")?.unwrap_or(i64::from(port.3)) as u16;
    let security_value = resolver.parsed::<Security>(security.0, security.1, security.2)?.unwrap_or(security.3);
    if security_value == Security::Plain && !is_loopback_host(&host_value) {
        let source = Source { value: "plain".into(), origin: format!("{} with host {host_value}", security.0) };
        return Err(invalid(
            security.0,
            source,
            "plain text is allowed only for loopback hosts; use starttls or tls".into(),
        ));
    }
    Ok(Endpoint { host: host_value, port: port_value, security: security_value })
}

fn is_loopback_host(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host.trim_matches(['[', ']']).parse::<std::net::IpAddr>().is_ok_and(|address| address.is_loopback())
}

fn resolve_sending<E: Fn(&str) -> Option<String>>(
    resolver: &Resolver<'_, E>,
    raw: RawSending,
) -> Result<SendingSettings, ConfigError> {
    let rate = resolver
        .integer(
            "[sending] rate_per_minute",
            "NHSMAIL_RATE_PER_MINUTE",
            raw.rate_per_minute,
            1..=10_000,
            "messages a minute",
        )?
        .unwrap_or(30);
    let lifetime = resolver
        .integer(
            "[sending] max_lifetime_hours",
            "NHSMAIL_MAX_LIFETIME_HOURS",
            raw.max_lifetime_hours,
            1..=720,
            "hours",
        )?
        .unwrap_or(72);
    let max_text = resolver
        .integer(
            "[sending] max_text_chars",
            "NHSMAIL_MAX_TEXT_CHARS",
            raw.max_text_chars,
            1..=1530,
            "GSM-7 characters",
        )?
        .unwrap_or(918);
    let retry_base = resolver
        .integer(
            "[sending] retry_base_seconds",
            "NHSMAIL_RETRY_BASE_SECONDS",
            raw.retry_base_seconds,
            1..=3600,
            "seconds",
        )?
        .map_or(crate::queue::DEFAULT_BACKOFF_BASE, |seconds| Duration::from_secs(seconds as u64));
    Ok(SendingSettings {
        rate_per_minute: rate as u32,
        max_lifetime: Duration::from_secs(lifetime as u64 * 3600),
        max_text_chars: max_text as u32,
        retry_base,
    })
}

fn resolve_password<E: Fn(&str) -> Option<String>>(
    resolver: &Resolver<'_, E>,
    raw: RawPassword,
) -> Result<PasswordSettings, ConfigError> {
    let max_age_days = resolver
        .integer("[password] max_age_days", "NHSMAIL_PASSWORD_MAX_AGE_DAYS", raw.max_age_days, 2..=3650, "days")?
        .unwrap_or(90) as u32;
    let auto_manage =
        resolver.boolean("[password] auto_manage", "NHSMAIL_PASSWORD_AUTO_MANAGE", raw.auto_manage)?.unwrap_or(true);
    // A rotation due on the day of setting would start again as soon as it committed, so it must leave a day.
    let rotate_days_before_expiry = resolver
        .integer(
            "[password] rotate_days_before_expiry",
            "NHSMAIL_PASSWORD_ROTATE_DAYS_BEFORE_EXPIRY",
            raw.rotate_days_before_expiry,
            1..=i64::from(max_age_days - 1),
            "days, less than [password] max_age_days",
        )?
        .unwrap_or(14.min(u64::from(max_age_days) / 2).max(1) as i64) as u32;
    let warn_days = resolve_warn_days(resolver, raw.warn_days, max_age_days)?;
    let min_length = resolver
        .integer("[password] min_length", "NHSMAIL_PASSWORD_MIN_LENGTH", raw.min_length, 12..=128, "characters")?
        .unwrap_or(24) as usize;
    let mut policy = resolve_classes(resolver, raw.required_classes)?;
    policy.min_length = min_length;
    let history = resolver
        .integer("[password] history", "NHSMAIL_PASSWORD_HISTORY", raw.history, 0..=50, "passwords")?
        .unwrap_or(4) as u32;
    let change_url = resolver
        .pick("NHSMAIL_PASSWORD_CHANGE_URL", raw.change_url)
        .map(|source| parse_http_url("[password] change_url", source))
        .transpose()?;
    let propagation_wait = resolver
        .integer(
            "[password] propagation_wait_seconds",
            "NHSMAIL_PASSWORD_PROPAGATION_WAIT_SECONDS",
            raw.propagation_wait_seconds,
            1..=600,
            "seconds",
        )?
        .unwrap_or(60) as u64;
    Ok(PasswordSettings {
        max_age_days,
        auto_manage,
        rotate_days_before_expiry,
        warn_days,
        policy,
        history,
        change_url,
        propagation_wait: Duration::from_secs(propagation_wait),
    })
}

/// Reads `[password] warn_days`, a list in the file or comma-separated in the environment, and sorts it largest
/// first without repeats.
fn resolve_warn_days<E: Fn(&str) -> Option<String>>(
    resolver: &Resolver<'_, E>,
    from_file: Option<Vec<Scalar>>,
    max_age_days: u32,
) -> Result<Vec<u32>, ConfigError> {
    const KEY: &str = "[password] warn_days";
    let joined = from_file.map(|values| values.iter().map(ToString::to_string).collect::<Vec<_>>().join(","));
    let Some(source) = resolver.pick("NHSMAIL_PASSWORD_WARN_DAYS", joined) else {
        return Ok(vec![18, 10, 5, 2, 1]);
    };
    let mut days = Vec::new();
    for part in source.value.split(',').map(str::trim).filter(|part| !part.is_empty()) {
        match part.parse::<u32>() {
            Ok(day) if (1..=max_age_days).contains(&day) => days.push(day),
            _ => {
                let expected = format!("expected whole days from 1 to {max_age_days}, for example [18, 10, 5, 2, 1]");
                return Err(invalid(KEY, source, expected));
            }
        }
    }
    days.sort_unstable_by(|a, b| b.cmp(a));
    days.dedup();
    Ok(days)
}

/// Reads `[password] required_classes`: any of "upper", "lower", "digit" and "symbol"; all four by default.
fn resolve_classes<E: Fn(&str) -> Option<String>>(
    resolver: &Resolver<'_, E>,
    from_file: Option<Vec<Scalar>>,
) -> Result<PasswordPolicy, ConfigError> {
    const KEY: &str = "[password] required_classes";
    let joined = from_file.map(|values| values.iter().map(ToString::to_string).collect::<Vec<_>>().join(","));
    let Some(source) = resolver.pick("NHSMAIL_PASSWORD_REQUIRED_CLASSES", joined) else {
        return Ok(PasswordPolicy::default());
    };
    let mut policy = PasswordPolicy {
        require_upper: false,
        require_lower: false,
        require_digit: false,
        require_symbol: false,
        ..PasswordPolicy::default()
    };
    for class in source.value.split(',').map(str::trim).filter(|class| !class.is_empty()) {
        match class {
            "upper" => policy.require_upper = true,
            "lower" => policy.require_lower = true,
            "digit" => policy.require_digit = true,
            "symbol" => policy.require_symbol = true,
            _ => {
                let expected = "expected a list of \"upper\", \"lower\", \"digit\" and \"symbol\"".to_string();
                return Err(invalid(KEY, source, expected));
            }
        }
    }
    Ok(policy)
}

fn resolve_mailbox<E: Fn(&str) -> Option<String>>(
    resolver: &Resolver<'_, E>,
    raw: RawMailbox,
) -> Result<MailboxSettings, ConfigError> {
    let key = "[mailbox] processed_folder";
    let processed_folder = match resolver.pick("NHSMAIL_PROCESSED_FOLDER", raw.processed_folder) {
        None => DEFAULT_PROCESSED_FOLDER.to_owned(),
        Some(source) if source.value.trim().eq_ignore_ascii_case("INBOX") => {
            return Err(invalid(key, source, "expected a folder other than INBOX".into()));
        }
        Some(source) => plain_text(key, source, "expected an IMAP folder name such as \"Processed\"")?,
    };
    let retention_days = resolver
        .integer("[mailbox] retention_days", "NHSMAIL_RETENTION_DAYS", raw.retention_days, 1..=3650, "days")?
        .unwrap_or(30) as u32;
    let idle = resolver.boolean("[mailbox] idle", "NHSMAIL_IDLE", raw.idle)?.unwrap_or(true);
    Ok(MailboxSettings { processed_folder, retention_days, idle })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    const MINIMAL: &str = "[nhsmail]\nsmtp_host = \"127.0.0.1\"\nimap_host = \"127.0.0.1\"\n";

    fn load(text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.toml");
        std::fs::write(&path, text).unwrap();
        let env: HashMap<String, String> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let overrides = Overrides { config_file: Some(path), data_dir: Some(dir.path().into()), ..Default::default() };
        Config::load_with_env(&overrides, |name| env.get(name).cloned())
    }

    #[test]
    fn defaults_match_nhsmail_limits() {
        let config = load(MINIMAL, &[]).unwrap();
        assert_eq!(config.agent.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(config.agent.upload_interval_minutes, 15);
        assert_eq!(config.sending.rate_per_minute, 30);
        assert_eq!(config.sending.max_lifetime, Duration::from_secs(72 * 3600));
        assert_eq!(config.sending.max_text_chars, 918);
        assert_eq!(config.sending.retry_base, Duration::from_secs(30));
        assert_eq!(config.password.max_age_days, 90);
        assert!(config.password.auto_manage);
        assert_eq!(config.nhsmail.smtp.port, 587);
        assert_eq!(config.nhsmail.smtp.security, Security::StartTls);
        assert_eq!(config.nhsmail.imap.port, 993);
        assert_eq!(config.nhsmail.imap.security, Security::Tls);
        assert_eq!(config.nhsmail.sms_domain, "sms.nhs.net");
        assert_eq!(config.nhsmail.address_form, AddressForm::National);
        assert_eq!(config.nhsmail.text_in, TextIn::Body);
    }

    #[test]
    fn mailbox_defaults_keep_thirty_days() {
        let config = load(MINIMAL, &[]).unwrap();
        assert_eq!(config.mailbox.processed_folder, "Processed");
        assert_eq!(config.mailbox.retention_days, 30);
        assert!(config.mailbox.idle);
    }

    #[test]
    fn mailbox_section_is_read() {
        let text = format!("{MINIMAL}\n[mailbox]\nprocessed_folder = \"Receipts\"\nretention_days = 7\nidle = false\n");
        let config = load(&text, &[]).unwrap();
        assert_eq!(config.mailbox.processed_folder, "Receipts");
        assert_eq!(config.mailbox.retention_days, 7);
        assert!(!config.mailbox.idle);
    }

    #[test]
    fn retention_days_out_of_range_rejected() {
        let text = format!("{MINIMAL}\n[mailbox]\nretention_days = 0\n");
        let message = load(&text, &[]).unwrap_err().to_string();
        assert!(message.contains("[mailbox] retention_days"), "{message}");
    }

    #[test]
    fn inbox_as_processed_folder_rejected() {
        let message = load(MINIMAL, &[("NHSMAIL_PROCESSED_FOLDER", "inbox")]).unwrap_err().to_string();
        assert!(message.contains("[mailbox] processed_folder"), "{message}");
    }

    #[test]
    fn environment_overrides_file() {
        let text = format!("{MINIMAL}smtp_port = 2525\n");
        let config = load(&text, &[("NHSMAIL_SMTP_PORT", "2626")]).unwrap();
        assert_eq!(config.nhsmail.smtp.port, 2626);
    }

    #[test]
    fn invalid_port_names_key_and_value() {
        let text = format!("{MINIMAL}smtp_port = 70000\n");
        let message = load(&text, &[]).unwrap_err().to_string();
        assert!(message.contains("[nhsmail] smtp_port"), "{message}");
        assert!(message.contains("70000"), "{message}");
    }

    #[test]
    fn invalid_environment_value_names_variable() {
        let message = load(MINIMAL, &[("NHSMAIL_UPLOAD_INTERVAL_MINUTES", "0")]).unwrap_err().to_string();
        assert!(message.contains("[agent] upload_interval_minutes"), "{message}");
        assert!(message.contains("NHSMAIL_UPLOAD_INTERVAL_MINUTES"), "{message}");
    }

    #[test]
    fn retry_base_is_read_from_file() {
        let text = format!("{MINIMAL}\n[sending]\nretry_base_seconds = 2\n");
        let config = load(&text, &[]).unwrap();
        assert_eq!(config.sending.retry_base, Duration::from_secs(2));
    }

    #[test]
    fn zero_retry_base_is_rejected() {
        let text = format!("{MINIMAL}\n[sending]\nretry_base_seconds = 0\n");
        let message = load(&text, &[]).unwrap_err().to_string();
        assert!(message.contains("[sending] retry_base_seconds"), "{message}");
    }

    #[test]
    fn unknown_key_is_rejected() {
        let text = format!("{MINIMAL}smtp_hots = \"x\"\n");
        let message = load(&text, &[]).unwrap_err().to_string();
        assert!(message.contains("smtp_hots"), "{message}");
    }

    #[test]
    fn missing_smtp_host_is_reported() {
        let message = load("[nhsmail]\nimap_host = \"127.0.0.1\"\n", &[]).unwrap_err().to_string();
        assert!(message.contains("[nhsmail] smtp_host"), "{message}");
    }

    #[test]
    fn non_loopback_listen_is_rejected() {
        let text = format!("[agent]\nlisten = \"0.0.0.0:50051\"\n{MINIMAL}");
        let message = load(&text, &[]).unwrap_err().to_string();
        assert!(message.contains("[agent] listen"), "{message}");
        assert!(message.contains("loopback"), "{message}");
    }

    #[test]
    fn non_loopback_error_names_tls_keys() {
        let text = format!("[agent]\nlisten = \"0.0.0.0:50051\"\n{MINIMAL}");
        let message = load(&text, &[]).unwrap_err().to_string();
        assert!(message.contains("[agent] tls_cert"), "{message}");
        assert!(message.contains("[agent] tls_key"), "{message}");
    }

    #[test]
    fn non_loopback_listen_accepted_with_tls() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (dir.path().join("agent.crt"), dir.path().join("agent.key"));
        std::fs::write(&cert, "certificate").unwrap();
        std::fs::write(&key, "key").unwrap();
        let text = format!(
            "[agent]\nlisten = \"0.0.0.0:50051\"\ntls_cert = \"{}\"\ntls_key = \"{}\"\n{MINIMAL}",
            cert.display(),
            key.display()
        );
        let tls = load(&text, &[]).unwrap().agent.tls.unwrap();
        assert_eq!(tls.cert, cert);
        assert_eq!(tls.client_ca, None);
    }

    #[test]
    fn tls_cert_without_key_names_key() {
        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("agent.crt");
        std::fs::write(&cert, "certificate").unwrap();
        let text = format!("[agent]\ntls_cert = \"{}\"\n{MINIMAL}", cert.display());
        let message = load(&text, &[]).unwrap_err().to_string();
        assert!(message.starts_with("missing [agent] tls_key"), "{message}");
    }

    #[test]
    fn missing_tls_file_names_key() {
        let text = format!("[agent]\ntls_client_ca = \"/nonexistent/ca.pem\"\n{MINIMAL}");
        let message = load(&text, &[]).unwrap_err().to_string();
        assert!(message.contains("[agent] tls_client_ca"), "{message}");
        assert!(message.contains("does not exist"), "{message}");
    }

    #[test]
    fn audit_retention_defaults_to_400_days() {
        assert_eq!(load(MINIMAL, &[]).unwrap().agent.audit_retention_days, 400);
    }

    #[test]
    fn plain_security_needs_loopback_host() {
        let text =
            "[nhsmail]\nsmtp_host = \"mail.example.org\"\nsmtp_security = \"plain\"\nimap_host = \"127.0.0.1\"\n";
        let message = load(text, &[]).unwrap_err().to_string();
        assert!(message.contains("[nhsmail] smtp_security"), "{message}");
    }

    const OAUTH: &str = "auth = \"oauth2\"\ntoken_url = \"https://login.example.org/tenant/oauth2/v2.0/token\"\n\
                         client_id = \"0b5e4a2c-practice-agent\"\n";

    #[test]
    fn auth_defaults_to_password() {
        let config = load(MINIMAL, &[]).unwrap();
        assert_eq!(config.nhsmail.auth, MailboxAuth::Password);
        assert_eq!(config.nhsmail.graph_url, None);
    }

    #[test]
    fn oauth2_reads_endpoint_and_client() {
        let config = load(&format!("{MINIMAL}{OAUTH}"), &[]).unwrap();
        let MailboxAuth::OAuth2(oauth) = config.nhsmail.auth else { panic!("expected oauth2") };
        assert_eq!(oauth.token_url.as_str(), "https://login.example.org/tenant/oauth2/v2.0/token");
        assert_eq!(oauth.client_id, "0b5e4a2c-practice-agent");
        assert_eq!(oauth.scope, "https://outlook.office365.com/.default offline_access");
    }

    #[test]
    fn oauth2_settings_come_from_environment() {
        let env = [
            ("NHSMAIL_AUTH", "oauth2"),
            ("NHSMAIL_TOKEN_URL", "http://127.0.0.1:8080/token"),
            ("NHSMAIL_CLIENT_ID", "env-client"),
            ("NHSMAIL_SCOPE", "https://outlook.office365.com/IMAP.AccessAsUser.All"),
            ("NHSMAIL_GRAPH_URL", "http://127.0.0.1:8080/v1.0"),
        ];
        let config = load(MINIMAL, &env).unwrap();
        let MailboxAuth::OAuth2(oauth) = config.nhsmail.auth else { panic!("expected oauth2") };
        assert_eq!(oauth.token_url.as_str(), "http://127.0.0.1:8080/token");
        assert_eq!(oauth.client_id, "env-client");
        assert_eq!(oauth.scope, "https://outlook.office365.com/IMAP.AccessAsUser.All");
        assert_eq!(config.nhsmail.graph_url.unwrap().as_str(), "http://127.0.0.1:8080/v1.0");
    }

    #[test]
    fn oauth2_without_token_url_names_key() {
        let text = format!("{MINIMAL}auth = \"oauth2\"\nclient_id = \"agent\"\n");
        let message = load(&text, &[]).unwrap_err().to_string();
        assert!(message.contains("[nhsmail] token_url"), "{message}");
    }

    #[test]
    fn oauth2_without_client_id_names_key() {
        let text = format!("{MINIMAL}auth = \"oauth2\"\ntoken_url = \"https://login.example.org/token\"\n");
        let message = load(&text, &[]).unwrap_err().to_string();
        assert!(message.contains("[nhsmail] client_id"), "{message}");
    }

    #[test]
    fn plain_http_token_url_needs_loopback() {
        let text = format!("{MINIMAL}{OAUTH}").replace("https://login.example.org", "http://login.example.org");
        let message = load(&text, &[]).unwrap_err().to_string();
        assert!(message.contains("[nhsmail] token_url"), "{message}");
        assert!(message.contains("loopback"), "{message}");
    }

    #[test]
    fn password_policy_defaults_follow_nhsmail() {
        let password = load(MINIMAL, &[]).unwrap().password;
        assert_eq!(password.max_age_days, 90);
        assert_eq!(password.rotate_days_before_expiry, 14);
        assert_eq!(password.warn_days, [18, 10, 5, 2, 1]);
        assert_eq!(password.policy, PasswordPolicy::default());
        assert_eq!(password.history, 4);
        assert!(password.auto_manage);
    }

    #[test]
    fn warn_days_sorted_largest_first() {
        let text = format!("{MINIMAL}\n[password]\nwarn_days = [1, 7, 3, 7]\n");
        assert_eq!(load(&text, &[]).unwrap().password.warn_days, [7, 3, 1]);
    }

    #[test]
    fn warn_days_beyond_max_age_rejected() {
        let text = format!("{MINIMAL}\n[password]\nmax_age_days = 30\nwarn_days = [45]\n");
        let message = load(&text, &[]).unwrap_err().to_string();
        assert!(message.contains("[password] warn_days"), "{message}");
        assert!(message.contains("1 to 30"), "{message}");
    }

    #[test]
    fn rotation_after_expiry_rejected() {
        let text = format!("{MINIMAL}\n[password]\nmax_age_days = 30\nrotate_days_before_expiry = 30\n");
        let message = load(&text, &[]).unwrap_err().to_string();
        assert!(message.contains("[password] rotate_days_before_expiry"), "{message}");
    }

    #[test]
    fn unknown_character_class_rejected() {
        let text = format!("{MINIMAL}\n[password]\nrequired_classes = [\"upper\", \"emoji\"]\n");
        let message = load(&text, &[]).unwrap_err().to_string();
        assert!(message.contains("[password] required_classes"), "{message}");
        assert!(message.contains("emoji"), "{message}");
    }

    #[test]
    fn required_classes_from_environment() {
        let policy = load(MINIMAL, &[("NHSMAIL_PASSWORD_REQUIRED_CLASSES", "upper,lower")]).unwrap().password.policy;
        assert_eq!((policy.require_upper, policy.require_digit), (true, false));
    }

    #[test]
    fn invalid_graph_url_names_key() {
        let text = format!("{MINIMAL}graph_url = \"graph.example.org/v1.0\"\n");
        let message = load(&text, &[]).unwrap_err().to_string();
        assert!(message.contains("[nhsmail] graph_url"), "{message}");
    }

    #[test]
    fn token_url_with_password_is_rejected() {
        let text = format!("{MINIMAL}{OAUTH}").replace("https://login", "https://user:Invented-Pw@login");
        let message = load(&text, &[]).unwrap_err().to_string();
        assert!(message.contains("must not contain a user name or password"), "{message}");
        assert!(!message.contains("Invented-Pw"), "{message}");
    }

    #[test]
    fn unknown_auth_lists_choices() {
        let message = load(MINIMAL, &[("NHSMAIL_AUTH", "kerberos")]).unwrap_err().to_string();
        assert!(message.contains("[nhsmail] auth"), "{message}");
        assert!(message.contains("\"oauth2\""), "{message}");
    }

    #[test]
    fn unknown_text_in_lists_choices() {
        let text = format!("{MINIMAL}text_in = \"footer\"\n");
        let message = load(&text, &[]).unwrap_err().to_string();
        assert!(message.contains("[nhsmail] text_in"), "{message}");
        assert!(message.contains("\"subject\""), "{message}");
    }

    #[test]
    fn quoted_number_is_accepted() {
        let text = format!("[agent]\nupload_interval_minutes = \"20\"\n{MINIMAL}");
        assert_eq!(load(&text, &[]).unwrap().agent.upload_interval_minutes, 20);
    }

    #[test]
    fn wrong_type_error_names_key() {
        let text = format!("[agent]\nupload_interval_minutes = \"soon\"\n{MINIMAL}");
        let message = load(&text, &[]).unwrap_err().to_string();
        assert!(message.contains("[agent] upload_interval_minutes"), "{message}");
        assert!(message.contains("soon"), "{message}");
    }

    #[test]
    fn boolean_accepts_on_and_off() {
        let text = format!("{MINIMAL}\n[password]\nauto_manage = \"off\"\n");
        assert!(!load(&text, &[]).unwrap().password.auto_manage);
    }

    #[test]
    fn metrics_listen_off_by_default() {
        assert_eq!(load(MINIMAL, &[]).unwrap().agent.metrics_listen, None);
    }

    #[test]
    fn remote_metrics_listen_is_rejected() {
        let text = format!("[agent]\nmetrics_listen = \"0.0.0.0:9464\"\n{MINIMAL}");
        let message = load(&text, &[]).unwrap_err().to_string();
        assert!(message.contains("[agent] metrics_listen"), "{message}");
        assert!(message.contains("0.0.0.0:9464"), "{message}");
        assert!(message.contains("metrics_allow_remote = true"), "{message}");
    }

    #[test]
    fn remote_metrics_listen_allowed_by_flag() {
        let text = format!("[agent]\nmetrics_listen = \"0.0.0.0:9464\"\nmetrics_allow_remote = true\n{MINIMAL}");
        let listen = load(&text, &[]).unwrap().agent.metrics_listen.unwrap();
        assert_eq!(listen.to_string(), "0.0.0.0:9464");
    }

    #[test]
    fn update_feed_is_file_or_url() {
        let text = format!("[agent]\nupdate_feed = \"/srv/feed/latest.json\"\n{MINIMAL}");
        let feed = load(&text, &[]).unwrap().agent.update_feed;
        assert_eq!(feed, Some(UpdateFeed::File("/srv/feed/latest.json".into())));

        let text = format!("[agent]\nupdate_feed = \"https://updates.example.org/latest.json\"\n{MINIMAL}");
        let feed = load(&text, &[]).unwrap().agent.update_feed.unwrap();
        assert_eq!(feed.to_string(), "https://updates.example.org/latest.json");
    }

    #[test]
    fn plain_http_update_feed_is_rejected() {
        let text = format!("[agent]\nupdate_feed = \"http://updates.example.org/latest.json\"\n{MINIMAL}");
        let message = load(&text, &[]).unwrap_err().to_string();
        assert!(message.contains("[agent] update_feed"), "{message}");
        assert!(message.contains("use https"), "{message}");
    }
}
