//! How a client proves who it is to Kafka and how the link is encrypted: TLS (a CA, a
//! client certificate) and SASL (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512).
//!
//! In: [`KafkaSecurity`], from flags, `AUGUR_KAFKA_*` environment variables or the
//! deployment file, and the `--librdkafka` pass-through properties beside it. Out: the
//! librdkafka properties every client of the command gets, after [`KafkaSecurity::check`]
//! has named every inconsistent or unreadable setting by its flag. (Whether the
//! brokers accept them is [`super::access`]'s question.)
//!
//! Guarantee: a password is held as a [`Secret`], which prints as `***` in `Debug`,
//! `Display` and serialised forms, so it cannot reach a log line, an error or a metric by
//! accident; it leaves this module only as the librdkafka property itself.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use rdkafka::config::ClientConfig;
use serde::{Deserialize, Serialize};

/// A value that must never be shown: `Debug`, `Display` and `Serialize` print `***`.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The value itself, for the one place that hands it to the Kafka client.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("***")
    }
}

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self::new(s))
    }
}

/// How the client talks to the brokers (librdkafka's `security.protocol`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[value(rename_all = "snake_case")]
pub enum SecurityProtocol {
    /// No encryption, no authentication.
    Plaintext,
    /// TLS; the client authenticates with a certificate if one is given.
    Ssl,
    /// SASL authentication over an unencrypted link.
    SaslPlaintext,
    /// SASL authentication over TLS.
    SaslSsl,
}

impl SecurityProtocol {
    fn property(self) -> &'static str {
        match self {
            Self::Plaintext => "plaintext",
            Self::Ssl => "ssl",
            Self::SaslPlaintext => "sasl_plaintext",
            Self::SaslSsl => "sasl_ssl",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        <Self as clap::ValueEnum>::from_str(s, true).ok()
    }

    fn uses_tls(self) -> bool {
        matches!(self, Self::Ssl | Self::SaslSsl)
    }

    fn uses_sasl(self) -> bool {
        matches!(self, Self::SaslPlaintext | Self::SaslSsl)
    }
}

/// How a SASL client proves its identity (librdkafka's `sasl.mechanism`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
pub enum SaslMechanism {
    /// Username and password in clear: only over sasl_ssl.
    #[value(name = "PLAIN")]
    #[serde(rename = "PLAIN")]
    Plain,
    #[value(name = "SCRAM-SHA-256")]
    #[serde(rename = "SCRAM-SHA-256")]
    ScramSha256,
    #[value(name = "SCRAM-SHA-512")]
    #[serde(rename = "SCRAM-SHA-512")]
    ScramSha512,
}

impl SaslMechanism {
    fn property(self) -> &'static str {
        match self {
            Self::Plain => "PLAIN",
            Self::ScramSha256 => "SCRAM-SHA-256",
            Self::ScramSha512 => "SCRAM-SHA-512",
        }
    }
}

/// A first-class security setting: its flag, its environment variable and the
/// librdkafka properties it sets (a pass-through of one of these conflicts with it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Setting {
    pub flag: &'static str,
    pub env: &'static str,
    pub properties: &'static [&'static str],
}

impl fmt::Display for Setting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "--{} ({})", self.flag, self.env)
    }
}

pub const PROTOCOL: Setting =
    Setting { flag: "security-protocol", env: "AUGUR_KAFKA_SECURITY_PROTOCOL", properties: &["security.protocol"] };
pub const MECHANISM: Setting = Setting {
    flag: "sasl-mechanism",
    env: "AUGUR_KAFKA_SASL_MECHANISM",
    // librdkafka takes both spellings for the same property.
    properties: &["sasl.mechanism", "sasl.mechanisms"],
};
pub const USERNAME: Setting =
    Setting { flag: "sasl-username", env: "AUGUR_KAFKA_SASL_USERNAME", properties: &["sasl.username"] };
pub const PASSWORD: Setting =
    Setting { flag: "sasl-password", env: "AUGUR_KAFKA_SASL_PASSWORD", properties: &["sasl.password"] };
pub const CA_FILE: Setting =
    Setting { flag: "ssl-ca-file", env: "AUGUR_KAFKA_SSL_CA_FILE", properties: &["ssl.ca.location", "ssl.ca.pem"] };
pub const CERT_FILE: Setting = Setting {
    flag: "ssl-cert-file",
    env: "AUGUR_KAFKA_SSL_CERT_FILE",
    properties: &["ssl.certificate.location", "ssl.certificate.pem"],
};
pub const KEY_FILE: Setting =
    Setting { flag: "ssl-key-file", env: "AUGUR_KAFKA_SSL_KEY_FILE", properties: &["ssl.key.location", "ssl.key.pem"] };
pub const KEY_PASSWORD: Setting =
    Setting { flag: "ssl-key-password", env: "AUGUR_KAFKA_SSL_KEY_PASSWORD", properties: &["ssl.key.password"] };

/// Every first-class setting, in the order of the flags.
pub const SETTINGS: [Setting; 8] =
    [PROTOCOL, MECHANISM, USERNAME, PASSWORD, CA_FILE, CERT_FILE, KEY_FILE, KEY_PASSWORD];

/// The security settings of a Kafka connection. Everything is optional: none given is a
/// plaintext connection, as before these settings existed.
#[derive(Debug, Clone, Default, PartialEq, clap::Args, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSecurity {
    /// Kafka security protocol: plaintext, ssl (TLS), sasl_plaintext (SASL without TLS)
    /// or sasl_ssl (SASL over TLS). Default: plaintext.
    #[arg(long, env = "AUGUR_KAFKA_SECURITY_PROTOCOL", value_enum, ignore_case = true, value_name = "PROTOCOL")]
    #[serde(default)]
    pub security_protocol: Option<SecurityProtocol>,
    /// Kafka SASL mechanism: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512; needs
    /// --sasl-username and --sasl-password.
    #[arg(long, env = "AUGUR_KAFKA_SASL_MECHANISM", value_enum, ignore_case = true, value_name = "MECHANISM")]
    #[serde(default)]
    pub sasl_mechanism: Option<SaslMechanism>,
    /// Kafka SASL username.
    #[arg(long, env = "AUGUR_KAFKA_SASL_USERNAME", value_name = "NAME")]
    #[serde(default)]
    pub sasl_username: Option<String>,
    /// Kafka SASL password; prefer the environment variable (or the deployment file) to
    /// the flag, which other users of the machine can read in the process list.
    #[arg(long, env = "AUGUR_KAFKA_SASL_PASSWORD", hide_env_values = true, value_name = "PASSWORD")]
    #[serde(default)]
    pub sasl_password: Option<Secret>,
    /// PEM file of the certificate authorities that sign the brokers' certificates
    /// (default: the system's trust store).
    #[arg(long, env = "AUGUR_KAFKA_SSL_CA_FILE", value_name = "FILE", value_hint = clap::ValueHint::FilePath)]
    #[serde(default)]
    pub ssl_ca_file: Option<PathBuf>,
    /// PEM file of this client's certificate, for brokers that require TLS client
    /// authentication; needs --ssl-key-file.
    #[arg(long, env = "AUGUR_KAFKA_SSL_CERT_FILE", value_name = "FILE", value_hint = clap::ValueHint::FilePath)]
    #[serde(default)]
    pub ssl_cert_file: Option<PathBuf>,
    /// PEM file of the private key of --ssl-cert-file.
    #[arg(long, env = "AUGUR_KAFKA_SSL_KEY_FILE", value_name = "FILE", value_hint = clap::ValueHint::FilePath)]
    #[serde(default)]
    pub ssl_key_file: Option<PathBuf>,
    /// Password of an encrypted --ssl-key-file.
    #[arg(long, env = "AUGUR_KAFKA_SSL_KEY_PASSWORD", hide_env_values = true, value_name = "PASSWORD")]
    #[serde(default)]
    pub ssl_key_password: Option<Secret>,
}

/// A security setting that cannot work, named by its flag and environment variable.
#[derive(Debug, thiserror::Error)]
pub enum SecurityError {
    #[error("{setting} needs --security-protocol {needs}")]
    NeedsProtocol { setting: Setting, needs: &'static str },
    #[error("{setting} needs {other}")]
    Needs { setting: Setting, other: Setting },
    #[error("{setting} {}: cannot read it: {source}", path.display())]
    Unreadable {
        setting: Setting,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{setting} {}: not a file", path.display())]
    NotAFile { setting: Setting, path: PathBuf },
    #[error("{setting} contains a NUL character")]
    Nul { setting: Setting },
    #[error("--librdkafka {property}=... sets what {setting} sets: give only one of them")]
    Conflict { setting: Setting, property: String },
    #[error("--librdkafka security.protocol={value:?} is not one of plaintext, ssl, sasl_plaintext, sasl_ssl")]
    UnknownProtocol { value: String },
}

impl SecurityError {
    /// The setting at fault (its flag names the key of a deployment file).
    pub fn setting(&self) -> Setting {
        match self {
            Self::NeedsProtocol { setting, .. }
            | Self::Needs { setting, .. }
            | Self::Unreadable { setting, .. }
            | Self::NotAFile { setting, .. }
            | Self::Nul { setting }
            | Self::Conflict { setting, .. } => *setting,
            Self::UnknownProtocol { .. } => PROTOCOL,
        }
    }
}

impl KafkaSecurity {
    /// Whether anything was set: a plain default connection needs no access check.
    pub fn is_set(&self) -> bool {
        *self != Self::default()
    }

    /// Every problem of these settings together with the pass-through properties,
    /// without touching the network: contradictions, missing partners, unreadable
    /// files, and pass-through properties that would silently override a flag.
    pub fn check(&self, passthrough: &BTreeMap<String, String>) -> Vec<SecurityError> {
        let mut errors = Vec::new();
        self.check_conflicts(passthrough, &mut errors);
        let protocol = match (self.security_protocol, passthrough.get("security.protocol")) {
            (Some(p), _) => p,
            (None, Some(value)) => match SecurityProtocol::parse(value) {
                Some(p) => p,
                None => {
                    errors.push(SecurityError::UnknownProtocol { value: value.clone() });
                    return errors;
                }
            },
            (None, None) => SecurityProtocol::Plaintext,
        };
        let passthrough_mechanism = MECHANISM.properties.iter().any(|p| passthrough.contains_key(*p));

        let sasl_given = [
            (MECHANISM, self.sasl_mechanism.is_some()),
            (USERNAME, self.sasl_username.is_some()),
            (PASSWORD, self.sasl_password.is_some()),
        ];
        if !protocol.uses_sasl() {
            for (setting, given) in sasl_given {
                if given {
                    errors.push(SecurityError::NeedsProtocol { setting, needs: "sasl_plaintext or sasl_ssl" });
                }
            }
        } else if self.sasl_mechanism.is_none() && !passthrough_mechanism {
            errors.push(SecurityError::Needs { setting: PROTOCOL, other: MECHANISM });
        }
        if protocol.uses_sasl() {
            if self.sasl_mechanism.is_some() {
                // Every mechanism named here authenticates with a username and a password.
                for (other, given) in
                    [(USERNAME, self.sasl_username.is_some()), (PASSWORD, self.sasl_password.is_some())]
                {
                    if !given {
                        errors.push(SecurityError::Needs { setting: MECHANISM, other });
                    }
                }
            } else if !passthrough_mechanism {
                for (setting, given) in
                    [(USERNAME, self.sasl_username.is_some()), (PASSWORD, self.sasl_password.is_some())]
                {
                    if given {
                        errors.push(SecurityError::Needs { setting, other: MECHANISM });
                    }
                }
            }
        }

        let tls_given = [
            (CA_FILE, self.ssl_ca_file.is_some()),
            (CERT_FILE, self.ssl_cert_file.is_some()),
            (KEY_FILE, self.ssl_key_file.is_some()),
            (KEY_PASSWORD, self.ssl_key_password.is_some()),
        ];
        if !protocol.uses_tls() {
            for (setting, given) in tls_given {
                if given {
                    errors.push(SecurityError::NeedsProtocol { setting, needs: "ssl or sasl_ssl" });
                }
            }
        }
        match (self.ssl_cert_file.is_some(), self.ssl_key_file.is_some()) {
            (true, false) => errors.push(SecurityError::Needs { setting: CERT_FILE, other: KEY_FILE }),
            (false, true) => errors.push(SecurityError::Needs { setting: KEY_FILE, other: CERT_FILE }),
            _ => {}
        }
        if self.ssl_key_password.is_some() && self.ssl_key_file.is_none() {
            errors.push(SecurityError::Needs { setting: KEY_PASSWORD, other: KEY_FILE });
        }

        for (setting, path) in
            [(CA_FILE, &self.ssl_ca_file), (CERT_FILE, &self.ssl_cert_file), (KEY_FILE, &self.ssl_key_file)]
        {
            if let Some(path) = path {
                if let Err(e) = readable(setting, path) {
                    errors.push(e);
                }
            }
        }
        // librdkafka takes C strings: a NUL would fail deep inside client creation, with
        // an error that carries the value itself.
        let texts = [
            (USERNAME, self.sasl_username.as_deref()),
            (PASSWORD, self.sasl_password.as_ref().map(Secret::expose)),
            (KEY_PASSWORD, self.ssl_key_password.as_ref().map(Secret::expose)),
        ];
        for (setting, text) in texts {
            if text.is_some_and(|t| t.contains('\0')) {
                errors.push(SecurityError::Nul { setting });
            }
        }
        errors
    }

    fn check_conflicts(&self, passthrough: &BTreeMap<String, String>, errors: &mut Vec<SecurityError>) {
        let given = [
            (PROTOCOL, self.security_protocol.is_some()),
            (MECHANISM, self.sasl_mechanism.is_some()),
            (USERNAME, self.sasl_username.is_some()),
            (PASSWORD, self.sasl_password.is_some()),
            (CA_FILE, self.ssl_ca_file.is_some()),
            (CERT_FILE, self.ssl_cert_file.is_some()),
            (KEY_FILE, self.ssl_key_file.is_some()),
            (KEY_PASSWORD, self.ssl_key_password.is_some()),
        ];
        for (setting, is_given) in given {
            if !is_given {
                continue;
            }
            for property in setting.properties {
                if passthrough.contains_key(*property) {
                    errors.push(SecurityError::Conflict { setting, property: (*property).to_owned() });
                }
            }
        }
    }

    /// Sets the librdkafka properties of the settings given; the others stay unset, so
    /// librdkafka's defaults (or the pass-through properties) apply.
    pub fn apply(&self, c: &mut ClientConfig) {
        if let Some(p) = self.security_protocol {
            c.set("security.protocol", p.property());
        }
        if let Some(m) = self.sasl_mechanism {
            c.set("sasl.mechanism", m.property());
        }
        if let Some(u) = &self.sasl_username {
            c.set("sasl.username", u);
        }
        if let Some(p) = &self.sasl_password {
            c.set("sasl.password", p.expose());
        }
        let path = |p: &Path| p.to_string_lossy().into_owned();
        if let Some(p) = &self.ssl_ca_file {
            c.set("ssl.ca.location", path(p));
        }
        if let Some(p) = &self.ssl_cert_file {
            c.set("ssl.certificate.location", path(p));
        }
        if let Some(p) = &self.ssl_key_file {
            c.set("ssl.key.location", path(p));
        }
        if let Some(p) = &self.ssl_key_password {
            c.set("ssl.key.password", p.expose());
        }
    }
}

fn readable(setting: Setting, path: &Path) -> Result<(), SecurityError> {
    let unreadable = |source| SecurityError::Unreadable { setting, path: path.to_owned(), source };
    // Opening, not only stat: a file the process may not read fails here, not at the
    // first TLS handshake.
    let file = std::fs::File::open(path).map_err(unreadable)?;
    if !file.metadata().map_err(unreadable)?.is_file() {
        return Err(SecurityError::NotAFile { setting, path: path.to_owned() });
    }
    Ok(())
}

/// Whether a pass-through property holds a secret: its value is shown as `***`.
pub fn is_sensitive(property: &str) -> bool {
    property.contains("password")
        || property.contains("secret")
        || (property.ends_with(".pem") && property.contains("key"))
        || property == "sasl.jaas.config"
        || property == "sasl.oauthbearer.config"
}

/// The pass-through properties as they may be shown: secrets replaced by `***`.
pub fn redacted(passthrough: &BTreeMap<String, String>) -> BTreeMap<&str, &str> {
    passthrough.iter().map(|(k, v)| (k.as_str(), if is_sensitive(k) { "***" } else { v.as_str() })).collect()
}

#[cfg(test)]
#[path = "security_tests.rs"]
mod tests;
