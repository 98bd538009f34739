//! One connection's security state: the listener it came in on, its peer,
//! and who it acts as. On PLAINTEXT and SSL listeners the principal is
//! known when the connection opens (anonymous, or the client certificate's
//! subject); on SASL listeners it is known once SaslAuthenticate succeeds,
//! and until then only ApiVersions and the SASL APIs are answered
//! ([`Session::admits`]). A SASL session may have a lifetime (KIP-368):
//! once it is over, only a re-authentication is answered.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use kafka_protocol::messages::ApiKey;
use sluice_auth::{Exchange, Principal};

use super::listener::SecurityProtocol;

/// Largest frame a connection that has not authenticated may send (as
/// Kafka's `sasl.server.max.receive.size`).
pub const UNAUTHENTICATED_FRAME_MAX_BYTES: usize = 512 * 1024;

#[derive(Debug, Default)]
struct AuthState {
    principal: Option<Principal>,
    exchange: Option<Exchange>,
    expires_at: Option<Instant>,
}

/// What a connection is allowed to do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Handle the request.
    Admit,
    /// Close the connection: it has not authenticated.
    Unauthenticated,
    /// Close the connection: its SASL session is over.
    Expired,
}

/// One connection's security state.
#[derive(Debug)]
pub struct Session {
    /// The listener's protocol.
    pub protocol: SecurityProtocol,
    /// The client's address, when known.
    pub peer: Option<SocketAddr>,
    state: Mutex<AuthState>,
    closing: AtomicBool,
    /// Quota throttle owed: the connection reads nothing more until then.
    muted_until: Mutex<Option<Instant>>,
}

impl Session {
    /// A connection on a `protocol` listener; `principal` is who it acts
    /// as from the start (`None` on SASL listeners).
    pub fn new(
        protocol: SecurityProtocol,
        peer: Option<SocketAddr>,
        principal: Option<Principal>,
    ) -> Self {
        Self {
            protocol,
            peer,
            state: Mutex::new(AuthState {
                principal,
                ..AuthState::default()
            }),
            closing: AtomicBool::new(false),
            muted_until: Mutex::new(None),
        }
    }

    /// A PLAINTEXT connection acting as `User:ANONYMOUS` (tests, and the
    /// single-listener shorthand).
    pub fn plaintext() -> Self {
        Self::new(
            SecurityProtocol::Plaintext,
            None,
            Some(Principal::anonymous()),
        )
    }

    fn state(&self) -> std::sync::MutexGuard<'_, AuthState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Who the connection acts as; `None` until it has authenticated.
    pub fn principal(&self) -> Option<Principal> {
        self.state().principal.clone()
    }

    /// Whether the connection has authenticated (or needs not).
    pub fn authenticated(&self) -> bool {
        self.state().principal.is_some()
    }

    /// Whether a request of `key` may be handled now.
    pub fn admits(&self, key: ApiKey) -> Admission {
        if matches!(
            key,
            ApiKey::ApiVersions | ApiKey::SaslHandshake | ApiKey::SaslAuthenticate
        ) {
            return Admission::Admit;
        }
        let state = self.state();
        if state.principal.is_none() {
            return Admission::Unauthenticated;
        }
        match state.expires_at {
            Some(at) if Instant::now() >= at => Admission::Expired,
            _ => Admission::Admit,
        }
    }

    /// Start an exchange (SaslHandshake), replacing any unfinished one.
    pub fn begin(&self, exchange: Exchange) {
        self.state().exchange = Some(exchange);
    }

    /// Take the pending exchange to step it (SaslAuthenticate).
    pub fn take_exchange(&self) -> Option<Exchange> {
        self.state().exchange.take()
    }

    /// Put back an exchange that goes on.
    pub fn resume(&self, exchange: Exchange) {
        self.state().exchange = Some(exchange);
    }

    /// Record a successful authentication, valid for `lifetime` if any. A
    /// re-authentication must be of the same principal; `false` if not.
    pub fn authenticate(&self, principal: Principal, lifetime: Option<Duration>) -> bool {
        let mut state = self.state();
        if state.principal.as_ref().is_some_and(|p| *p != principal) {
            return false;
        }
        state.principal = Some(principal);
        state.expires_at = lifetime.map(|l| Instant::now() + l);
        true
    }

    /// Close the connection once the response being written is sent.
    pub fn close_after_reply(&self) {
        self.closing.store(true, Ordering::Release);
    }

    /// Whether the connection is to close after its current response.
    pub fn closing(&self) -> bool {
        self.closing.load(Ordering::Acquire)
    }

    /// Mute the connection for `wait` (a quota throttle, KIP-219): the
    /// response goes out now, the next request is read after.
    pub fn mute_for(&self, wait: Duration) {
        let until = Instant::now() + wait;
        let mut muted = self.muted_until.lock().unwrap_or_else(|e| e.into_inner());
        *muted = Some(muted.map_or(until, |current| current.max(until)));
    }

    /// The mute owed, if any (taken: the connection serves it once).
    pub fn take_mute(&self) -> Option<Duration> {
        let until = self
            .muted_until
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()?;
        Some(until.saturating_duration_since(Instant::now()))
    }

    /// Largest frame the connection may send now.
    pub fn frame_max_bytes(&self, authenticated_max: usize) -> usize {
        if self.authenticated() {
            authenticated_max
        } else {
            authenticated_max.min(UNAUTHENTICATED_FRAME_MAX_BYTES)
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_sasl_connection_gets_only_the_sasl_apis_until_it_authenticates() {
        let session = Session::new(SecurityProtocol::SaslSsl, None, None);
        assert_eq!(session.admits(ApiKey::Metadata), Admission::Unauthenticated);
        assert_eq!(session.admits(ApiKey::ApiVersions), Admission::Admit);
        assert_eq!(session.admits(ApiKey::SaslHandshake), Admission::Admit);
        assert_eq!(
            session.frame_max_bytes(1 << 30),
            UNAUTHENTICATED_FRAME_MAX_BYTES
        );
        assert!(session.authenticate(Principal::user("alice"), Some(Duration::ZERO)));
        assert_eq!(session.admits(ApiKey::Metadata), Admission::Expired);
        assert!(session.authenticate(Principal::user("alice"), None));
        assert_eq!(session.admits(ApiKey::Produce), Admission::Admit);
        assert_eq!(session.frame_max_bytes(1 << 30), 1 << 30);
        // a re-authentication cannot change who the connection is
        assert!(!session.authenticate(Principal::user("mallory"), None));
        assert_eq!(session.principal(), Some(Principal::user("alice")));
    }
}
