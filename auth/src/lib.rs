//! sluice's security primitives, free of any listener:
//!
//! - [`principal`]: who a connection or request acts as (`User:alice`), as
//!   Kafka's ACLs name it.
//! - [`scram`]: SCRAM-SHA-256/512 (RFC 5802, RFC 7677): credentials derived
//!   from a password, and the server side of an exchange.
//! - [`plain`]: SASL PLAIN (RFC 4616), checked against the same stored
//!   SCRAM credentials (no password is ever stored).
//! - [`sasl`]: one SASL exchange on one connection: mechanism chosen,
//!   messages in, a principal (or a refusal) out.
//! - [`authorizer`]: Kafka's ACL decision (deny wins, implied DESCRIBE,
//!   super users).
//! - [`token`]: bearer tokens of the HTTP API (stored by digest).
//! - [`tls`]: rustls server settings from PEM files, reloadable, with
//!   optional client certificates whose subject becomes the principal.
//!
//! The hashing (PBKDF2, HMAC, SHA-2), the randomness and TLS come from
//! `ring` and `rustls`; this crate parses messages and composes them.

pub mod authorizer;
pub mod plain;
pub mod principal;
pub mod sasl;
pub mod scram;
pub mod tls;
pub mod token;

pub use authorizer::Authorizer;
pub use principal::Principal;
pub use sasl::{Credentials, Exchange, Mechanism, Step};
pub use sluice_metadata::users::{ScramCredential, ScramMechanism};
