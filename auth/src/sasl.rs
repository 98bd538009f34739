//! One SASL exchange: a mechanism picked by the client, its messages
//! answered in turn, ending in a principal or a refusal. The listener
//! carries the messages (Kafka's SaslAuthenticate); this module knows
//! nothing of frames.

use async_trait::async_trait;
use sluice_metadata::model::Catalog;
use sluice_metadata::users::{ScramCredential, ScramMechanism};

use crate::plain;
use crate::principal::Principal;
use crate::scram::{self, ServerExchange};

/// A SASL mechanism sluice serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Mechanism {
    /// PLAIN (RFC 4616).
    Plain,
    /// SCRAM-SHA-256 or SCRAM-SHA-512.
    Scram(ScramMechanism),
}

impl Mechanism {
    /// Every mechanism served, in the order they are listed to clients.
    pub const ALL: [Mechanism; 3] = [
        Mechanism::Plain,
        Mechanism::Scram(ScramMechanism::Sha256),
        Mechanism::Scram(ScramMechanism::Sha512),
    ];

    /// The SASL name.
    pub fn name(self) -> &'static str {
        match self {
            Mechanism::Plain => "PLAIN",
            Mechanism::Scram(m) => m.name(),
        }
    }

    /// By SASL name (case-insensitive).
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|m| m.name().eq_ignore_ascii_case(name))
    }
}

impl std::fmt::Display for Mechanism {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Where stored credentials are looked up.
#[async_trait]
pub trait Credentials: Send + Sync {
    /// `user`'s credential for `mechanism`; `Err` when the store could
    /// not be read.
    async fn scram(
        &self,
        user: &str,
        mechanism: ScramMechanism,
    ) -> Result<Option<ScramCredential>, String>;
}

#[async_trait]
impl Credentials for Catalog {
    async fn scram(
        &self,
        user: &str,
        mechanism: ScramMechanism,
    ) -> Result<Option<ScramCredential>, String> {
        self.user_credential(user, mechanism)
            .await
            .map_err(|e| e.to_string())
    }
}

/// What one message of an exchange led to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Send this challenge; the exchange goes on.
    Continue(Vec<u8>),
    /// Authenticated: send `reply` (possibly empty) and act as `principal`.
    Done {
        /// Who the connection acts as.
        principal: Principal,
        /// The last message to the client.
        reply: Vec<u8>,
    },
    /// Refused, with the reason the client is told.
    Failed(String),
}

const INVALID: &str = "Authentication failed: invalid credentials";

#[derive(Debug)]
enum State {
    Start,
    ScramFirst(Box<ServerExchange>),
    Over,
}

/// One exchange on one connection.
#[derive(Debug)]
pub struct Exchange {
    mechanism: Mechanism,
    state: State,
}

impl Exchange {
    /// An exchange of `mechanism`, before the client's first message.
    pub fn new(mechanism: Mechanism) -> Self {
        Self {
            mechanism,
            state: State::Start,
        }
    }

    /// The mechanism.
    pub fn mechanism(&self) -> Mechanism {
        self.mechanism
    }

    /// Answer the client's next message. After `Done` or `Failed` every
    /// further message fails.
    pub async fn step(&mut self, message: &[u8], credentials: &dyn Credentials) -> Step {
        let state = std::mem::replace(&mut self.state, State::Over);
        match (self.mechanism, state) {
            (Mechanism::Plain, State::Start) => plain_step(message, credentials).await,
            (Mechanism::Scram(m), State::Start) => {
                let first = match scram::parse_client_first(message) {
                    Ok(first) => first,
                    Err(error) => {
                        tracing::debug!(%error, "SCRAM client-first refused");
                        return Step::Failed(error.reason());
                    }
                };
                let credential = match credentials.scram(&first.user, m).await {
                    Ok(Some(credential)) => credential,
                    Ok(None) => return Step::Failed(INVALID.into()),
                    Err(error) => return Step::Failed(unavailable(&error)),
                };
                let (exchange, reply) =
                    ServerExchange::start(m, first, credential, &scram::server_nonce());
                self.state = State::ScramFirst(Box::new(exchange));
                Step::Continue(reply)
            }
            (Mechanism::Scram(_), State::ScramFirst(exchange)) => match exchange.finish(message) {
                Ok(reply) => Step::Done {
                    principal: Principal::user(exchange.user()),
                    reply,
                },
                Err(error) => {
                    tracing::debug!(%error, user = exchange.user(), "SCRAM client-final refused");
                    Step::Failed(error.reason())
                }
            },
            (_, _) => Step::Failed("Authentication failed: the exchange is over".into()),
        }
    }
}

fn unavailable(error: &str) -> String {
    format!("Authentication failed: credentials could not be read ({error})")
}

async fn plain_step(message: &[u8], credentials: &dyn Credentials) -> Step {
    let parsed = match plain::parse(message) {
        Ok(parsed) => parsed,
        Err(error) => return Step::Failed(format!("Authentication failed: {error}")),
    };
    match check_password(credentials, &parsed.user, &parsed.password).await {
        Ok(true) => Step::Done {
            principal: Principal::user(parsed.user),
            reply: Vec::new(),
        },
        Ok(false) => Step::Failed(INVALID.into()),
        Err(error) => Step::Failed(unavailable(&error)),
    }
}

/// Whether `password` is `user`'s, checked against the user's stored SCRAM
/// credential (the strongest there is): one PBKDF2 of the stored
/// iterations, off the async threads. `Err` when the store could not be read.
pub async fn check_password(
    credentials: &dyn Credentials,
    user: &str,
    password: &[u8],
) -> Result<bool, String> {
    for m in ScramMechanism::ALL {
        let Some(credential) = credentials.scram(user, m).await? else {
            continue;
        };
        let password = password.to_vec();
        return Ok(tokio::task::spawn_blocking(move || {
            scram::verify_password(m, &credential, &password)
        })
        .await
        .unwrap_or(false));
    }
    Ok(false)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::scram::tests::client_final;

    struct Users(HashMap<(String, ScramMechanism), ScramCredential>);

    #[async_trait]
    impl Credentials for Users {
        async fn scram(
            &self,
            user: &str,
            mechanism: ScramMechanism,
        ) -> Result<Option<ScramCredential>, String> {
            Ok(self.0.get(&(user.to_string(), mechanism)).cloned())
        }
    }

    fn users() -> Users {
        let m = ScramMechanism::Sha256;
        Users(HashMap::from([(
            ("alice".to_string(), m),
            scram::credential(m, b"pw", 4096),
        )]))
    }

    #[tokio::test]
    async fn plain_logs_in_with_the_scram_credential() {
        let users = users();
        let mut ok = Exchange::new(Mechanism::Plain);
        assert_eq!(
            ok.step(b"\0alice\0pw", &users).await,
            Step::Done {
                principal: Principal::user("alice"),
                reply: vec![]
            }
        );
        // the exchange is over
        assert!(matches!(
            ok.step(b"\0alice\0pw", &users).await,
            Step::Failed(_)
        ));
        for bad in [&b"\0alice\0nope"[..], b"\0bob\0pw", b"garbage"] {
            let mut exchange = Exchange::new(Mechanism::Plain);
            assert!(matches!(exchange.step(bad, &users).await, Step::Failed(_)));
        }
    }

    #[tokio::test]
    async fn scram_takes_two_round_trips() {
        let users = users();
        let m = ScramMechanism::Sha256;
        let mut exchange = Exchange::new(Mechanism::Scram(m));
        let Step::Continue(server_first) = exchange.step(b"n,,n=alice,r=abc", &users).await else {
            panic!("no challenge")
        };
        let server_first = String::from_utf8(server_first).unwrap();
        let (last, _) = client_final(m, "pw", "n=alice,r=abc", &server_first);
        let Step::Done { principal, reply } = exchange.step(last.as_bytes(), &users).await else {
            panic!("refused")
        };
        assert_eq!(principal, Principal::user("alice"));
        assert!(reply.starts_with(b"v="));
        // unknown user, and a user with no credential of this mechanism
        for user in ["bob", "alice"] {
            let mut other = Exchange::new(Mechanism::Scram(ScramMechanism::Sha512));
            let first = format!("n,,n={user},r=abc");
            assert_eq!(
                other.step(first.as_bytes(), &users).await,
                Step::Failed(INVALID.into())
            );
        }
    }

    #[test]
    fn mechanisms_by_name() {
        assert_eq!(Mechanism::parse("plain"), Some(Mechanism::Plain));
        assert_eq!(
            Mechanism::parse("SCRAM-SHA-512"),
            Some(Mechanism::Scram(ScramMechanism::Sha512))
        );
        assert_eq!(Mechanism::parse("GSSAPI"), None);
    }
}
