//! SASL PLAIN (RFC 4616): `[authzid] NUL authcid NUL password`, checked
//! against the user's stored SCRAM credential. PLAIN sends the password
//! itself, so it belongs on TLS listeners (SASL_SSL).

/// Longest PLAIN message accepted (RFC 4616 allows 255 bytes per field).
pub const MESSAGE_MAX_BYTES: usize = 3 * 256;

/// A parsed PLAIN message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlainMessage {
    /// The user.
    pub user: String,
    /// The password.
    pub password: Vec<u8>,
}

/// Why a PLAIN message was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlainError {
    /// Not `authzid NUL authcid NUL password`.
    #[error("malformed PLAIN message: {0}")]
    Malformed(&'static str),
}

/// Parse a PLAIN message. An authorization identity, if given, must be
/// the user's own (sluice has no impersonation).
pub fn parse(message: &[u8]) -> Result<PlainMessage, PlainError> {
    if message.len() > MESSAGE_MAX_BYTES {
        return Err(PlainError::Malformed("message too long"));
    }
    let mut parts = message.split(|&b| b == 0);
    let (Some(authzid), Some(user), Some(password), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(PlainError::Malformed("expected three NUL-separated fields"));
    };
    let user = std::str::from_utf8(user).map_err(|_| PlainError::Malformed("user not UTF-8"))?;
    if user.is_empty() || password.is_empty() {
        return Err(PlainError::Malformed("empty user or password"));
    }
    if !authzid.is_empty() && authzid != user.as_bytes() {
        return Err(PlainError::Malformed(
            "authorization identity differs from the user",
        ));
    }
    Ok(PlainMessage {
        user: user.to_string(),
        password: password.to_vec(),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn plain_messages_parse_strictly() {
        let m = parse(b"\0alice\0pw").unwrap();
        assert_eq!((m.user.as_str(), &m.password[..]), ("alice", &b"pw"[..]));
        assert!(parse(b"alice\0alice\0pw").is_ok());
        for bad in [
            &b""[..],
            b"alice",
            b"\0alice",
            b"\0alice\0pw\0x",
            b"\0\0pw",
            b"\0alice\0",
            b"bob\0alice\0pw",
            b"\0\xff\0pw",
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
        assert!(parse(&vec![b'a'; MESSAGE_MAX_BYTES + 1]).is_err());
    }
}
