//! A principal: who a connection or an HTTP request acts as, written the
//! way Kafka's ACLs write it (`User:alice`).

use std::fmt;

/// Who is acting.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Principal {
    /// The principal type; `User` for everything sluice authenticates.
    pub kind: String,
    /// The name: a SASL user, or a certificate's subject.
    pub name: String,
}

/// The name of the principal of a connection that did not authenticate.
pub const ANONYMOUS: &str = "ANONYMOUS";
/// That principal, written out.
pub const ANONYMOUS_USER: &str = "User:ANONYMOUS";

impl Principal {
    /// `User:<name>`.
    pub fn user(name: impl Into<String>) -> Self {
        Self {
            kind: "User".into(),
            name: name.into(),
        }
    }

    /// `User:ANONYMOUS`: a PLAINTEXT connection, or TLS without a client
    /// certificate.
    pub fn anonymous() -> Self {
        Self::user(ANONYMOUS)
    }

    /// Parse `Type:name` (the name may contain `:`).
    pub fn parse(text: &str) -> Option<Self> {
        let (kind, name) = text.split_once(':')?;
        (!kind.is_empty() && !name.is_empty()).then(|| Self {
            kind: kind.into(),
            name: name.into(),
        })
    }
}

impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.kind, self.name)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn principals_print_and_parse_the_kafka_way() {
        assert_eq!(Principal::user("alice").to_string(), "User:alice");
        assert_eq!(Principal::anonymous().to_string(), ANONYMOUS_USER);
        let dn = Principal::parse("User:CN=a,O=b:c").unwrap();
        assert_eq!(dn.name, "CN=a,O=b:c");
        assert_eq!(Principal::parse("alice"), None);
        assert_eq!(Principal::parse("User:"), None);
    }
}
