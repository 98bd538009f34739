//! The SASL messages a client sends before it has authenticated: PLAIN,
//! SCRAM client-first, and SCRAM client-final against an exchange in
//! progress. Must return errors, never panic or abort. The first byte
//! picks the parser; the rest is the message.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use sluice_auth::scram::{self, ServerExchange};
use sluice_auth::{plain, ScramCredential, ScramMechanism};

/// The node's allocator (see sluice-alloc).
#[global_allocator]
static ALLOCATOR: sluice_alloc::ReservingAllocator = sluice_alloc::ReservingAllocator;

/// One credential per mechanism, derived once (PBKDF2 is slow on purpose).
fn credential(mechanism: ScramMechanism) -> ScramCredential {
    static CREDENTIALS: OnceLock<[ScramCredential; 2]> = OnceLock::new();
    let [sha256, sha512] = CREDENTIALS.get_or_init(|| {
        [
            scram::derive(ScramMechanism::Sha256, b"pencil", b"salt", 4096),
            scram::derive(ScramMechanism::Sha512, b"pencil", b"salt", 4096),
        ]
    });
    match mechanism {
        ScramMechanism::Sha256 => sha256.clone(),
        ScramMechanism::Sha512 => sha512.clone(),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, message)) = data.split_first() else {
        return;
    };
    match which % 4 {
        0 => {
            let _ = plain::parse(message);
        }
        1 => {
            let _ = scram::parse_client_first(message);
        }
        _ => {
            let mechanism = if which % 4 == 2 {
                ScramMechanism::Sha256
            } else {
                ScramMechanism::Sha512
            };
            let first = scram::parse_client_first(b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO")
                .expect("a valid client-first");
            let (exchange, _) =
                ServerExchange::start(mechanism, first, credential(mechanism), "snonce");
            let _ = exchange.finish(message);
        }
    }
});
