//! SCRAM-SHA-256 and SCRAM-SHA-512 (RFC 5802, RFC 7677), server side.
//!
//! A credential is derived once from a password ([`credential`]) and stored;
//! an exchange is two round trips:
//!
//! ```text
//! client-first   n,,n=<user>,r=<client nonce>
//! server-first   r=<client nonce><server nonce>,s=<salt>,i=<iterations>
//! client-final   c=<base64 gs2 header>,r=<both nonces>,p=<proof>
//! server-final   v=<server signature>
//! ```
//!
//! Channel binding is not offered (`p=` in the gs2 header is refused, `y`
//! and `n` are accepted), nor are extensions such as Kafka's delegation
//! tokens (`tokenauth`). Every message is parsed strictly: attributes in
//! RFC order, printable nonces, user names with only `=2C`/`=3D` escapes.

use std::num::NonZeroU32;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use rand::RngCore;
use ring::{digest, hmac, pbkdf2};
use subtle::ConstantTimeEq;

use sluice_metadata::users::{ScramCredential, ScramMechanism, ITERATIONS_MIN};

/// Bytes of salt a new credential gets.
pub const SALT_BYTES: usize = 32;
/// Bytes of randomness in a server nonce (printed as base64).
pub const NONCE_BYTES: usize = 24;
/// Longest SCRAM message accepted.
pub const MESSAGE_MAX_BYTES: usize = 4096;

/// Why an exchange failed. The client is told only [`ScramError::reason`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScramError {
    /// A message that does not parse.
    #[error("malformed SCRAM message: {0}")]
    Malformed(&'static str),
    /// The client asked for channel binding, which is not offered.
    #[error("channel binding is not supported")]
    ChannelBinding,
    /// An extension (e.g. `tokenauth`) that is not supported.
    #[error("SCRAM extensions are not supported")]
    Extension,
    /// The client-final's nonce is not the one of this exchange.
    #[error("nonce mismatch")]
    Nonce,
    /// The proof does not match the stored credential (wrong password).
    #[error("invalid credentials")]
    Proof,
}

impl ScramError {
    /// What the client is told.
    pub fn reason(&self) -> String {
        match self {
            ScramError::Proof | ScramError::Nonce => {
                "Authentication failed: invalid credentials".to_string()
            }
            other => format!("Authentication failed: {other}"),
        }
    }
}

fn algorithms(
    mechanism: ScramMechanism,
) -> (
    pbkdf2::Algorithm,
    hmac::Algorithm,
    &'static digest::Algorithm,
) {
    match mechanism {
        ScramMechanism::Sha256 => (
            pbkdf2::PBKDF2_HMAC_SHA256,
            hmac::HMAC_SHA256,
            &digest::SHA256,
        ),
        ScramMechanism::Sha512 => (
            pbkdf2::PBKDF2_HMAC_SHA512,
            hmac::HMAC_SHA512,
            &digest::SHA512,
        ),
    }
}

fn hmac_of(mechanism: ScramMechanism, key: &[u8], data: &[u8]) -> Vec<u8> {
    let (_, algorithm, _) = algorithms(mechanism);
    hmac::sign(&hmac::Key::new(algorithm, key), data)
        .as_ref()
        .to_vec()
}

fn hash_of(mechanism: ScramMechanism, data: &[u8]) -> Vec<u8> {
    let (_, _, algorithm) = algorithms(mechanism);
    digest::digest(algorithm, data).as_ref().to_vec()
}

/// The credential of `password` with `salt` and `iterations` (at least 1).
pub fn derive(
    mechanism: ScramMechanism,
    password: &[u8],
    salt: &[u8],
    iterations: u32,
) -> ScramCredential {
    let (algorithm, _, _) = algorithms(mechanism);
    let mut salted = vec![0u8; mechanism.hash_len()];
    let rounds = NonZeroU32::new(iterations).unwrap_or(NonZeroU32::MIN);
    pbkdf2::derive(algorithm, rounds, salt, password, &mut salted);
    from_salted_password(mechanism, &salted, salt, iterations)
}

/// The credential of an already salted password (`Hi(password, salt, i)`),
/// as Kafka's AlterUserScramCredentials sends it (KIP-554).
pub fn from_salted_password(
    mechanism: ScramMechanism,
    salted_password: &[u8],
    salt: &[u8],
    iterations: u32,
) -> ScramCredential {
    let client_key = hmac_of(mechanism, salted_password, b"Client Key");
    ScramCredential {
        salt: salt.to_vec(),
        iterations,
        stored_key: hash_of(mechanism, &client_key),
        server_key: hmac_of(mechanism, salted_password, b"Server Key"),
    }
}

/// A new credential for `password`: a fresh random salt, `iterations`
/// (raised to [`ITERATIONS_MIN`]).
pub fn credential(mechanism: ScramMechanism, password: &[u8], iterations: u32) -> ScramCredential {
    let mut salt = [0u8; SALT_BYTES];
    rand::rng().fill_bytes(&mut salt);
    derive(mechanism, password, &salt, iterations.max(ITERATIONS_MIN))
}

/// Whether `password` is the one `credential` was derived from (PLAIN's
/// check: one PBKDF2 with the stored salt and iterations).
pub fn verify_password(
    mechanism: ScramMechanism,
    credential: &ScramCredential,
    password: &[u8],
) -> bool {
    let derived = derive(mechanism, password, &credential.salt, credential.iterations);
    bool::from(derived.stored_key.ct_eq(&credential.stored_key))
}

/// A client-first message, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientFirst {
    /// The user (authentication identity), unescaped.
    pub user: String,
    /// The client's nonce.
    pub nonce: String,
    /// The gs2 header as sent (`n,,` or `y,,`, possibly with `a=`).
    gs2_header: String,
    /// The message without its gs2 header.
    bare: String,
}

/// `=2C` and `=3D` back to `,` and `=`; any other `=` is an error.
fn unescape_name(name: &str) -> Result<String, ScramError> {
    let mut out = String::with_capacity(name.len());
    let mut rest = name;
    while let Some(at) = rest.find(['=', ',']) {
        out.push_str(&rest[..at]);
        let tail = &rest[at..];
        if tail.starts_with("=2C") {
            out.push(',');
        } else if tail.starts_with("=3D") {
            out.push('=');
        } else {
            return Err(ScramError::Malformed("bad escape in a user name"));
        }
        rest = &tail[3..];
    }
    out.push_str(rest);
    Ok(out)
}

/// A nonce: printable ASCII except `,`.
fn valid_nonce(nonce: &str) -> bool {
    !nonce.is_empty()
        && nonce
            .bytes()
            .all(|b| (0x21..=0x7e).contains(&b) && b != b',')
}

/// The value of attribute `name` at the front of `field` (`name=value`).
fn attribute(field: Option<&str>, name: char) -> Result<&str, ScramError> {
    let field = field
        .filter(|f| !f.is_empty())
        .ok_or(ScramError::Malformed("missing attribute"))?;
    let mut chars = field.chars();
    if chars.next() != Some(name) || chars.next() != Some('=') {
        return Err(ScramError::Malformed("attributes out of order"));
    }
    Ok(&field[2..])
}

/// Parse a client-first message.
pub fn parse_client_first(message: &[u8]) -> Result<ClientFirst, ScramError> {
    if message.len() > MESSAGE_MAX_BYTES {
        return Err(ScramError::Malformed("message too long"));
    }
    let text = std::str::from_utf8(message).map_err(|_| ScramError::Malformed("not UTF-8"))?;
    let mut parts = text.splitn(3, ',');
    let flag = parts.next().unwrap_or_default();
    let authzid = parts.next().ok_or(ScramError::Malformed("no gs2 header"))?;
    let bare = parts.next().ok_or(ScramError::Malformed("no gs2 header"))?;
    match flag {
        "n" | "y" => {}
        flag if flag.starts_with("p=") => return Err(ScramError::ChannelBinding),
        _ => return Err(ScramError::Malformed("bad gs2 flag")),
    }
    let authzid = match authzid {
        "" => None,
        a => Some(unescape_name(
            a.strip_prefix("a=")
                .ok_or(ScramError::Malformed("bad authorization identity"))?,
        )?),
    };
    let mut fields = bare.split(',');
    if bare.starts_with("m=") {
        return Err(ScramError::Extension);
    }
    let user = unescape_name(attribute(fields.next(), 'n')?)?;
    let nonce = attribute(fields.next(), 'r')?;
    if user.is_empty() {
        return Err(ScramError::Malformed("empty user name"));
    }
    if !valid_nonce(nonce) {
        return Err(ScramError::Malformed("bad nonce"));
    }
    if fields.next().is_some() {
        return Err(ScramError::Extension);
    }
    if authzid.is_some_and(|a| a != user) {
        return Err(ScramError::Malformed(
            "authorization identity differs from the user",
        ));
    }
    let gs2_len = text.len() - bare.len();
    Ok(ClientFirst {
        user,
        nonce: nonce.to_string(),
        gs2_header: text[..gs2_len].to_string(),
        bare: bare.to_string(),
    })
}

/// The server's side of one exchange, between server-first and
/// client-final.
#[derive(Debug, Clone)]
pub struct ServerExchange {
    mechanism: ScramMechanism,
    credential: ScramCredential,
    first: ClientFirst,
    server_first: String,
    nonce: String,
}

/// A fresh server nonce.
pub fn server_nonce() -> String {
    let mut bytes = [0u8; NONCE_BYTES];
    rand::rng().fill_bytes(&mut bytes);
    STANDARD.encode(bytes)
}

impl ServerExchange {
    /// Answer `first` for a user whose credential is `credential`: the
    /// exchange and the server-first message.
    pub fn start(
        mechanism: ScramMechanism,
        first: ClientFirst,
        credential: ScramCredential,
        server_nonce: &str,
    ) -> (Self, Vec<u8>) {
        let nonce = format!("{}{server_nonce}", first.nonce);
        let server_first = format!(
            "r={nonce},s={},i={}",
            STANDARD.encode(&credential.salt),
            credential.iterations
        );
        let message = server_first.clone().into_bytes();
        (
            Self {
                mechanism,
                credential,
                first,
                server_first,
                nonce,
            },
            message,
        )
    }

    /// The authenticated user once [`Self::finish`] succeeds.
    pub fn user(&self) -> &str {
        &self.first.user
    }

    /// Check the client-final message: the server-final message when the
    /// proof is right.
    pub fn finish(&self, message: &[u8]) -> Result<Vec<u8>, ScramError> {
        if message.len() > MESSAGE_MAX_BYTES {
            return Err(ScramError::Malformed("message too long"));
        }
        let text = std::str::from_utf8(message).map_err(|_| ScramError::Malformed("not UTF-8"))?;
        let (without_proof, proof) = text
            .rsplit_once(",p=")
            .ok_or(ScramError::Malformed("no proof"))?;
        let mut fields = without_proof.split(',');
        let binding = attribute(fields.next(), 'c')?;
        let nonce = attribute(fields.next(), 'r')?;
        if fields.next().is_some() {
            return Err(ScramError::Extension);
        }
        let binding = STANDARD
            .decode(binding)
            .map_err(|_| ScramError::Malformed("channel binding is not base64"))?;
        if binding != self.first.gs2_header.as_bytes() {
            return Err(ScramError::ChannelBinding);
        }
        // librdkafka (to 2.x at least) sends its own nonce again in front
        // of the combined one; Kafka's broker accepts that, so does sluice
        // (and nothing else: the rest must be this exchange's nonce)
        let librdkafka = nonce
            .strip_prefix(self.first.nonce.as_str())
            .is_some_and(|rest| rest == self.nonce);
        if nonce != self.nonce && !librdkafka {
            return Err(ScramError::Nonce);
        }
        let proof = STANDARD
            .decode(proof)
            .map_err(|_| ScramError::Malformed("proof is not base64"))?;
        if proof.len() != self.mechanism.hash_len() {
            return Err(ScramError::Proof);
        }
        let auth_message = format!("{},{},{without_proof}", self.first.bare, self.server_first);
        let signature = hmac_of(
            self.mechanism,
            &self.credential.stored_key,
            auth_message.as_bytes(),
        );
        let client_key: Vec<u8> = proof.iter().zip(&signature).map(|(p, s)| p ^ s).collect();
        let stored_key = hash_of(self.mechanism, &client_key);
        if !bool::from(stored_key.ct_eq(&self.credential.stored_key)) {
            return Err(ScramError::Proof);
        }
        let server_signature = hmac_of(
            self.mechanism,
            &self.credential.server_key,
            auth_message.as_bytes(),
        );
        Ok(format!("v={}", STANDARD.encode(server_signature)).into_bytes())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(crate) mod tests {
    use super::*;

    /// A client's side of an exchange, for tests: client-final for the
    /// server-first, and the expected server signature.
    pub(crate) fn client_final(
        mechanism: ScramMechanism,
        password: &str,
        client_first_bare: &str,
        server_first: &str,
    ) -> (String, Vec<u8>) {
        let nonce = &server_first.split(',').next().unwrap()[2..];
        client_final_with(mechanism, password, client_first_bare, server_first, nonce)
    }

    /// [`client_final`] sending `nonce` back.
    pub(crate) fn client_final_with(
        mechanism: ScramMechanism,
        password: &str,
        client_first_bare: &str,
        server_first: &str,
        nonce: &str,
    ) -> (String, Vec<u8>) {
        let fields: Vec<&str> = server_first.split(',').collect();
        let salt = STANDARD.decode(&fields[1][2..]).unwrap();
        let iterations: u32 = fields[2][2..].parse().unwrap();
        let (algorithm, _, _) = algorithms(mechanism);
        let mut salted = vec![0u8; mechanism.hash_len()];
        pbkdf2::derive(
            algorithm,
            NonZeroU32::new(iterations).unwrap(),
            &salt,
            password.as_bytes(),
            &mut salted,
        );
        let client_key = hmac_of(mechanism, &salted, b"Client Key");
        let stored_key = hash_of(mechanism, &client_key);
        let without_proof = format!("c=biws,r={nonce}");
        let auth_message = format!("{client_first_bare},{server_first},{without_proof}");
        let signature = hmac_of(mechanism, &stored_key, auth_message.as_bytes());
        let proof: Vec<u8> = client_key
            .iter()
            .zip(&signature)
            .map(|(k, s)| k ^ s)
            .collect();
        let server_key = hmac_of(mechanism, &salted, b"Server Key");
        let expected = hmac_of(mechanism, &server_key, auth_message.as_bytes());
        (
            format!("{without_proof},p={}", STANDARD.encode(proof)),
            expected,
        )
    }

    fn exchange(mechanism: ScramMechanism, stored: &str, tried: &str) -> Result<(), ScramError> {
        let credential = credential(mechanism, stored.as_bytes(), 4096);
        let first = parse_client_first(b"n,,n=alice,r=fyko+d2lbbFgONRv9qkxdawL").unwrap();
        let (server, server_first) =
            ServerExchange::start(mechanism, first, credential, &server_nonce());
        let server_first = String::from_utf8(server_first).unwrap();
        let (last, expected) = client_final(
            mechanism,
            tried,
            "n=alice,r=fyko+d2lbbFgONRv9qkxdawL",
            &server_first,
        );
        let reply = server.finish(last.as_bytes())?;
        assert_eq!(
            reply,
            format!("v={}", STANDARD.encode(expected)).into_bytes()
        );
        Ok(())
    }

    #[test]
    fn a_right_password_passes_and_a_wrong_one_fails() {
        for mechanism in ScramMechanism::ALL {
            exchange(mechanism, "s3cret", "s3cret").unwrap();
            assert_eq!(
                exchange(mechanism, "s3cret", "s3cret!"),
                Err(ScramError::Proof)
            );
        }
    }

    /// RFC 7677's SCRAM-SHA-256 example, end to end with its fixed nonces
    /// and salt: the same server-first, and the server accepts the RFC's
    /// proof and answers the RFC's signature.
    #[test]
    fn rfc_7677_test_vector() {
        let m = ScramMechanism::Sha256;
        let salt = STANDARD.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        let credential = derive(m, b"pencil", &salt, 4096);
        let first = parse_client_first(b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO").unwrap();
        let (server, server_first) =
            ServerExchange::start(m, first, credential, "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0");
        assert_eq!(
            String::from_utf8(server_first).unwrap(),
            "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
        );
        let reply = server
            .finish(
                b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
                  p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
            )
            .unwrap();
        assert_eq!(
            reply,
            b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=".to_vec()
        );
    }

    #[test]
    fn client_first_is_parsed_strictly() {
        let first = parse_client_first(b"n,,n=a=2Cb=3Dc,r=abc").unwrap();
        assert_eq!(first.user, "a,b=c");
        assert_eq!(first.nonce, "abc");
        assert!(parse_client_first(b"y,,n=u,r=x").is_ok());
        assert!(parse_client_first(b"n,a=u,n=u,r=x").is_ok());
        for (bad, error) in [
            (
                &b"n,,r=x,n=u"[..],
                ScramError::Malformed("attributes out of order"),
            ),
            (
                b"p=tls-server-end-point,,n=u,r=x",
                ScramError::ChannelBinding,
            ),
            (b"x,,n=u,r=x", ScramError::Malformed("bad gs2 flag")),
            (b"n,,n=u", ScramError::Malformed("missing attribute")),
            (b"n,,n=u,r=a,b", ScramError::Extension),
            (b"n,,n=u,r=x,tokenauth=true", ScramError::Extension),
            (b"n,,m=ext,n=u,r=x", ScramError::Extension),
            (
                b"n,,n=u=zz,r=x",
                ScramError::Malformed("bad escape in a user name"),
            ),
            (b"n,,n=,r=x", ScramError::Malformed("empty user name")),
            (b"n,,n=u,r=", ScramError::Malformed("bad nonce")),
            (
                b"n,a=v,n=u,r=x",
                ScramError::Malformed("authorization identity differs from the user"),
            ),
            (b"\xff,,n=u,r=x", ScramError::Malformed("not UTF-8")),
            (b"n,,", ScramError::Malformed("missing attribute")),
            (b"", ScramError::Malformed("no gs2 header")),
        ] {
            assert_eq!(
                parse_client_first(bad),
                Err(error),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        assert!(parse_client_first(&vec![b'a'; MESSAGE_MAX_BYTES + 1]).is_err());
    }

    #[test]
    fn client_final_must_carry_this_exchanges_nonce_and_binding() {
        let m = ScramMechanism::Sha512;
        let credential = credential(m, b"pw", 4096);
        let first = parse_client_first(b"n,,n=u,r=cnonce").unwrap();
        let (server, server_first) = ServerExchange::start(m, first, credential, "snonce");
        let server_first = String::from_utf8(server_first).unwrap();
        let (good, _) = client_final(m, "pw", "n=u,r=cnonce", &server_first);
        assert!(server.finish(good.as_bytes()).is_ok());
        let other_nonce = good.replace("r=cnoncesnonce", "r=cnonceXnonce");
        assert_eq!(
            server.finish(other_nonce.as_bytes()),
            Err(ScramError::Nonce)
        );
        // librdkafka's form (its nonce twice) is read; only that one
        let (librdkafka, _) =
            client_final_with(m, "pw", "n=u,r=cnonce", &server_first, "cnoncecnoncesnonce");
        assert!(server.finish(librdkafka.as_bytes()).is_ok());
        for other in ["r=Xcnoncesnonce", "r=cnoncecnoncecnoncesnonce", "r=snonce"] {
            let tampered = good.replace("r=cnoncesnonce", other);
            assert_eq!(
                server.finish(tampered.as_bytes()),
                Err(ScramError::Nonce),
                "{other}"
            );
        }
        let other_binding = good.replace("c=biws", "c=eSws");
        assert_eq!(
            server.finish(other_binding.as_bytes()),
            Err(ScramError::ChannelBinding)
        );
        // one bit of the proof flipped
        let (head, proof) = good.rsplit_once(",p=").unwrap();
        let mut bytes = STANDARD.decode(proof).unwrap();
        bytes[0] ^= 1;
        let flipped = format!("{head},p={}", STANDARD.encode(&bytes));
        assert_eq!(server.finish(flipped.as_bytes()), Err(ScramError::Proof));
        let short = format!("{head},p={}", STANDARD.encode(&bytes[..10]));
        assert_eq!(server.finish(short.as_bytes()), Err(ScramError::Proof));
        for bad in ["", "c=biws", "p=abc", "c=%%%,r=x,p=abc", "r=x,c=biws,p=abc"] {
            assert!(server.finish(bad.as_bytes()).is_err(), "{bad}");
        }
    }

    #[test]
    fn plain_passwords_check_against_the_stored_credential() {
        for m in ScramMechanism::ALL {
            let stored = credential(m, b"hunter2", 4096);
            assert!(verify_password(m, &stored, b"hunter2"));
            assert!(!verify_password(m, &stored, b"hunter3"));
            assert_eq!(stored.stored_key.len(), m.hash_len());
            assert_eq!(stored.salt.len(), SALT_BYTES);
        }
    }
}
