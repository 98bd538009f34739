//! Kafka listeners named the Kafka way: `PLAINTEXT`, `SSL`,
//! `SASL_PLAINTEXT`, `SASL_SSL`, written `PROTOCOL://host:port` and given
//! as a comma-separated list (`listeners` / `advertised.listeners`). A
//! listener's name is its security protocol, so a node has at most one
//! listener of each.

use std::fmt;

/// How a listener secures its connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SecurityProtocol {
    /// No TLS, no authentication.
    Plaintext,
    /// TLS; the principal is the client certificate's subject, if any.
    Ssl,
    /// SASL authentication without TLS.
    SaslPlaintext,
    /// SASL authentication over TLS.
    SaslSsl,
}

impl SecurityProtocol {
    /// Every protocol.
    pub const ALL: [SecurityProtocol; 4] = [
        SecurityProtocol::Plaintext,
        SecurityProtocol::Ssl,
        SecurityProtocol::SaslPlaintext,
        SecurityProtocol::SaslSsl,
    ];

    /// Kafka's name.
    pub fn name(self) -> &'static str {
        match self {
            SecurityProtocol::Plaintext => "PLAINTEXT",
            SecurityProtocol::Ssl => "SSL",
            SecurityProtocol::SaslPlaintext => "SASL_PLAINTEXT",
            SecurityProtocol::SaslSsl => "SASL_SSL",
        }
    }

    /// By Kafka's name (case-insensitive).
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|p| p.name().eq_ignore_ascii_case(name))
    }

    /// Whether connections are TLS.
    pub fn uses_tls(self) -> bool {
        matches!(self, SecurityProtocol::Ssl | SecurityProtocol::SaslSsl)
    }

    /// Whether connections must authenticate with SASL.
    pub fn uses_sasl(self) -> bool {
        matches!(
            self,
            SecurityProtocol::SaslPlaintext | SecurityProtocol::SaslSsl
        )
    }
}

impl fmt::Display for SecurityProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One `PROTOCOL://host:port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerSpec {
    /// The security protocol (and name).
    pub protocol: SecurityProtocol,
    /// Host; empty = every interface.
    pub host: String,
    /// Port (0 = any free port, for binding).
    pub port: u16,
}

impl ListenerSpec {
    /// Parse `PROTOCOL://host:port` (`[v6]:port` for IPv6).
    pub fn parse(text: &str) -> Result<Self, String> {
        let (name, address) = text
            .trim()
            .split_once("://")
            .ok_or_else(|| format!("listener {text:?} is not PROTOCOL://host:port"))?;
        let protocol = SecurityProtocol::parse(name).ok_or_else(|| {
            format!(
                "listener {text:?}: {name:?} is not one of PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL"
            )
        })?;
        let (host, port) = address
            .rsplit_once(':')
            .ok_or_else(|| format!("listener {text:?} has no port"))?;
        let port = port
            .parse()
            .map_err(|_| format!("listener {text:?}: {port:?} is not a port"))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        Ok(Self {
            protocol,
            host: host.to_string(),
            port,
        })
    }

    /// The address to bind.
    pub fn bind_addr(&self) -> String {
        match self.host.as_str() {
            "" => format!("0.0.0.0:{}", self.port),
            host if host.contains(':') => format!("[{host}]:{}", self.port),
            host => format!("{host}:{}", self.port),
        }
    }
}

impl fmt::Display for ListenerSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "{}://[{}]:{}", self.protocol, self.host, self.port)
        } else {
            write!(f, "{}://{}:{}", self.protocol, self.host, self.port)
        }
    }
}

/// Parse a listener list; each protocol at most once.
pub fn parse_listeners(items: &[String]) -> Result<Vec<ListenerSpec>, String> {
    let mut specs: Vec<ListenerSpec> = Vec::new();
    for item in items.iter().flat_map(|item| item.split(',')) {
        if item.trim().is_empty() {
            continue;
        }
        let spec = ListenerSpec::parse(item)?;
        if specs.iter().any(|s| s.protocol == spec.protocol) {
            return Err(format!("listener {} is given twice", spec.protocol));
        }
        specs.push(spec);
    }
    Ok(specs)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn listeners_parse_the_kafka_way() {
        let specs = parse_listeners(&[
            "PLAINTEXT://127.0.0.1:9092,SASL_SSL://:9093".to_string(),
            "ssl://[::1]:9094".to_string(),
        ])
        .unwrap();
        assert_eq!(specs.len(), 3);
        assert_eq!(specs[0].protocol, SecurityProtocol::Plaintext);
        assert_eq!(specs[0].bind_addr(), "127.0.0.1:9092");
        assert_eq!(specs[1].bind_addr(), "0.0.0.0:9093");
        assert_eq!(specs[2].bind_addr(), "[::1]:9094");
        assert_eq!(specs[2].to_string(), "SSL://[::1]:9094");
        assert!(specs[1].protocol.uses_tls() && specs[1].protocol.uses_sasl());
        for bad in [
            "PLAINTEXT://127.0.0.1",
            "127.0.0.1:9092",
            "KERBEROS://h:1",
            "PLAINTEXT://h:port",
            "PLAINTEXT://a:1,PLAINTEXT://b:2",
        ] {
            assert!(parse_listeners(&[bad.to_string()]).is_err(), "{bad}");
        }
    }
}
