//! SaslHandshake and SaslAuthenticate: a client names a mechanism, then
//! sends that mechanism's messages wrapped in SaslAuthenticate until it is
//! authenticated or refused (KIP-152). A refusal is answered with
//! SASL_AUTHENTICATION_FAILED and closes the connection, as Kafka does. A
//! connection may authenticate again (KIP-368) as the same principal; when
//! the listener gives sessions a lifetime, SaslAuthenticate v1+ tells the
//! client, and an expired session is closed at its next request.

use bytes::Bytes;
use kafka_protocol::messages::{
    SaslAuthenticateRequest, SaslAuthenticateResponse, SaslHandshakeRequest, SaslHandshakeResponse,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use sluice_auth::{Exchange, Mechanism, Step};
use tracing::info;

use super::session::Session;
use super::KafkaContext;

fn mechanism_names(context: &KafkaContext) -> Vec<StrBytes> {
    context
        .sasl_mechanisms
        .iter()
        .map(|m| StrBytes::from_static_str(m.name()))
        .collect()
}

/// Answer a SaslHandshake: start an exchange of the named mechanism.
/// Version 0 (the SASL tokens then follow as raw frames, not wrapped in
/// SaslAuthenticate) is refused with UNSUPPORTED_VERSION and the
/// connection closed: every client that speaks v1 uses it, and librdkafka
/// only looks for v0 in ApiVersions before it does.
pub fn handshake(
    context: &KafkaContext,
    session: &Session,
    version: i16,
    request: SaslHandshakeRequest,
) -> SaslHandshakeResponse {
    let response = SaslHandshakeResponse::default().with_mechanisms(mechanism_names(context));
    if version == 0 {
        session.close_after_reply();
        return response.with_error_code(ResponseError::UnsupportedVersion.code());
    }
    if !session.protocol.uses_sasl() {
        session.close_after_reply();
        return response
            .with_error_code(ResponseError::IllegalSaslState.code())
            .with_mechanisms(Vec::new());
    }
    match Mechanism::parse(&request.mechanism).filter(|m| context.sasl_mechanisms.contains(m)) {
        Some(mechanism) => {
            session.begin(Exchange::new(mechanism));
            response
        }
        None => response.with_error_code(ResponseError::UnsupportedSaslMechanism.code()),
    }
}

/// Answer a SaslAuthenticate: one step of the exchange the handshake began.
pub async fn authenticate(
    context: &KafkaContext,
    session: &Session,
    version: i16,
    request: SaslAuthenticateRequest,
) -> SaslAuthenticateResponse {
    let refuse = |error: ResponseError, message: String| {
        session.close_after_reply();
        SaslAuthenticateResponse::default()
            .with_error_code(error.code())
            .with_error_message(Some(StrBytes::from_string(message)))
    };
    let Some(mut exchange) = session.take_exchange() else {
        return refuse(
            ResponseError::IllegalSaslState,
            "SaslAuthenticate without a SaslHandshake".into(),
        );
    };
    let mechanism = exchange.mechanism();
    match exchange.step(&request.auth_bytes, &context.catalog).await {
        Step::Continue(challenge) => {
            session.resume(exchange);
            SaslAuthenticateResponse::default().with_auth_bytes(Bytes::from(challenge))
        }
        Step::Done { principal, reply } => {
            let lifetime = context.config.sasl_session_lifetime;
            if !session.authenticate(principal.clone(), lifetime) {
                return refuse(
                    ResponseError::SaslAuthenticationFailed,
                    "Authentication failed: a re-authentication must be of the same principal"
                        .into(),
                );
            }
            info!(%principal, %mechanism, peer = ?session.peer, "kafka connection authenticated");
            let response = SaslAuthenticateResponse::default().with_auth_bytes(Bytes::from(reply));
            match lifetime {
                Some(lifetime) if version >= 1 => response.with_session_lifetime_ms(
                    i64::try_from(lifetime.as_millis()).unwrap_or(i64::MAX),
                ),
                _ => response,
            }
        }
        Step::Failed(reason) => {
            info!(%mechanism, peer = ?session.peer, %reason, "kafka authentication failed");
            crate::metrics::AUTHENTICATION_FAILURES.inc();
            refuse(ResponseError::SaslAuthenticationFailed, reason)
        }
    }
}
