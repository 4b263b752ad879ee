//! SCRAM-SHA-256 (RFC 5802, RFC 7677) on both legs: the server side that checks a client's
//! proof against credentials the proxy holds, and the client side the proxy uses to log in to
//! the database. Channel binding is not offered to clients (they still verify the proxy's
//! certificate); towards the database the proxy says it does not use binding (`n,,`).

use std::collections::HashMap;
use std::sync::Mutex;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

pub const MECHANISM: &str = "SCRAM-SHA-256";
/// PostgreSQL's default iteration count.
pub const ITERATIONS: u32 = 4096;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ScramError {
    #[error("malformed SCRAM message: {0}")]
    Malformed(&'static str),
    #[error("channel binding is not supported by this server")]
    ChannelBinding,
    #[error("password authentication failed")]
    BadProof,
    #[error("the server's SCRAM signature is wrong")]
    BadServerSignature,
}

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut m = Hmac::<Sha256>::new_from_slice(key).expect("any key length");
    m.update(data);
    m.finalize().into_bytes().into()
}

fn salted_password(password: &str, salt: &[u8], iterations: u32) -> [u8; 32] {
    // SASLprep is skipped, as PostgreSQL does for passwords that are not valid UTF-8 or
    // contain nothing to normalise; dbgw's generated passwords are ASCII.
    let mut out = [0u8; 32];
    pbkdf2::pbkdf2_hmac::<Sha256>(password.as_bytes(), salt, iterations, &mut out);
    out
}

fn nonce() -> String {
    let bytes: [u8; 18] = rand::random();
    B64.encode(bytes)
}

/// What the server side keeps of a password: salt, iterations, StoredKey, ServerKey.
#[derive(Clone)]
pub struct Verifier {
    salt: Vec<u8>,
    iterations: u32,
    stored_key: [u8; 32],
    server_key: [u8; 32],
}

impl Verifier {
    /// Derives a verifier with a fresh random salt (one PBKDF2 run: cache the result).
    pub fn new(password: &str) -> Verifier {
        let salt: [u8; 16] = rand::random();
        Self::with_salt(password, &salt, ITERATIONS)
    }

    pub fn with_salt(password: &str, salt: &[u8], iterations: u32) -> Verifier {
        let salted = salted_password(password, salt, iterations);
        let client_key = hmac(&salted, b"Client Key");
        Verifier {
            salt: salt.to_vec(),
            iterations,
            stored_key: Sha256::digest(client_key).into(),
            server_key: hmac(&salted, b"Server Key"),
        }
    }
}

/// Server side, between the client's first and final messages.
pub struct ServerExchange {
    verifier: Verifier,
    gs2_header: String,
    client_first_bare: String,
    server_first: String,
    nonce: String,
}

impl ServerExchange {
    /// Reads client-first-message and answers server-first-message.
    pub fn start(verifier: Verifier, client_first: &[u8]) -> Result<(Self, String), ScramError> {
        let msg =
            std::str::from_utf8(client_first).map_err(|_| ScramError::Malformed("not UTF-8"))?;
        // gs2-header: cbind-flag "," [authzid] ","
        let (flag, rest) = msg
            .split_once(',')
            .ok_or(ScramError::Malformed("no gs2 header"))?;
        match flag {
            "n" | "y" => {}
            f if f.starts_with("p=") => return Err(ScramError::ChannelBinding),
            _ => return Err(ScramError::Malformed("bad channel binding flag")),
        }
        let (authzid, bare) = rest
            .split_once(',')
            .ok_or(ScramError::Malformed("no gs2 header"))?;
        if !authzid.is_empty() {
            return Err(ScramError::Malformed(
                "authorization identity is not supported",
            ));
        }
        let gs2_header = format!("{flag},,");
        let client_nonce = bare
            .split(',')
            .find_map(|a| a.strip_prefix("r="))
            .filter(|n| !n.is_empty())
            .ok_or(ScramError::Malformed("no client nonce"))?;
        if bare.starts_with("m=") {
            return Err(ScramError::Malformed(
                "mandatory extensions are not supported",
            ));
        }
        let nonce = format!("{client_nonce}{}", nonce());
        let server_first = format!(
            "r={nonce},s={},i={}",
            B64.encode(&verifier.salt),
            verifier.iterations
        );
        Ok((
            ServerExchange {
                verifier,
                gs2_header,
                client_first_bare: bare.to_string(),
                server_first: server_first.clone(),
                nonce,
            },
            server_first,
        ))
    }

    /// Checks client-final-message; on success returns server-final-message.
    pub fn finish(self, client_final: &[u8]) -> Result<String, ScramError> {
        let msg =
            std::str::from_utf8(client_final).map_err(|_| ScramError::Malformed("not UTF-8"))?;
        let (without_proof, proof) = msg
            .rsplit_once(",p=")
            .ok_or(ScramError::Malformed("no proof"))?;
        let mut channel = None;
        let mut nonce = None;
        for attr in without_proof.split(',') {
            if let Some(v) = attr.strip_prefix("c=") {
                channel = Some(v);
            } else if let Some(v) = attr.strip_prefix("r=") {
                nonce = Some(v);
            }
        }
        if channel != Some(B64.encode(&self.gs2_header).as_str()) {
            return Err(ScramError::Malformed("channel binding data does not match"));
        }
        if nonce != Some(self.nonce.as_str()) {
            return Err(ScramError::Malformed("nonce does not match"));
        }
        let proof = B64
            .decode(proof)
            .map_err(|_| ScramError::Malformed("proof is not base64"))?;
        if proof.len() != 32 {
            return Err(ScramError::Malformed("proof has the wrong length"));
        }
        let auth_message = format!(
            "{},{},{}",
            self.client_first_bare, self.server_first, without_proof
        );
        let signature = hmac(&self.verifier.stored_key, auth_message.as_bytes());
        let mut client_key = [0u8; 32];
        for i in 0..32 {
            client_key[i] = proof[i] ^ signature[i];
        }
        let stored: [u8; 32] = Sha256::digest(client_key).into();
        if !bool::from(stored.ct_eq(&self.verifier.stored_key)) {
            return Err(ScramError::BadProof);
        }
        let server_signature = hmac(&self.verifier.server_key, auth_message.as_bytes());
        Ok(format!("v={}", B64.encode(server_signature)))
    }
}

/// Client side, for the proxy's own login to the database.
pub struct ClientExchange {
    client_first_bare: String,
    nonce: String,
}

/// Salted passwords the client side has computed, keyed by a hash of (password, salt,
/// iterations): a new upstream login skips PBKDF2 when the server's salt is unchanged.
static SALTED: Mutex<Option<HashMap<[u8; 32], [u8; 32]>>> = Mutex::new(None);

fn cached_salted_password(password: &str, salt: &[u8], iterations: u32) -> [u8; 32] {
    let mut key = Sha256::new();
    key.update((password.len() as u64).to_be_bytes());
    key.update(password.as_bytes());
    key.update(salt);
    key.update(iterations.to_be_bytes());
    let key: [u8; 32] = key.finalize().into();
    if let Some(hit) = startup::sync::lock(&SALTED)
        .as_ref()
        .and_then(|m| m.get(&key))
    {
        return *hit;
    }
    let salted = salted_password(password, salt, iterations);
    let mut guard = startup::sync::lock(&SALTED);
    let map = guard.get_or_insert_with(HashMap::new);
    if map.len() > 10_000 {
        map.clear();
    }
    map.insert(key, salted);
    salted
}

/// The state after client-final: what the server's final message must prove.
pub struct ClientFinal {
    expected_server_signature: [u8; 32],
}

impl ClientExchange {
    /// client-first-message.
    pub fn start() -> (Self, String) {
        let nonce = nonce();
        let bare = format!("n=,r={nonce}");
        let first = format!("n,,{bare}");
        (
            ClientExchange {
                client_first_bare: bare,
                nonce,
            },
            first,
        )
    }

    /// Answers server-first-message with client-final-message.
    pub fn respond(
        self,
        password: &str,
        server_first: &[u8],
    ) -> Result<(ClientFinal, String), ScramError> {
        let msg =
            std::str::from_utf8(server_first).map_err(|_| ScramError::Malformed("not UTF-8"))?;
        let (mut nonce, mut salt, mut iterations) = (None, None, None);
        for attr in msg.split(',') {
            if let Some(v) = attr.strip_prefix("r=") {
                nonce = Some(v);
            } else if let Some(v) = attr.strip_prefix("s=") {
                salt = Some(
                    B64.decode(v)
                        .map_err(|_| ScramError::Malformed("salt is not base64"))?,
                );
            } else if let Some(v) = attr.strip_prefix("i=") {
                iterations = Some(
                    v.parse::<u32>()
                        .map_err(|_| ScramError::Malformed("bad iterations"))?,
                );
            }
        }
        let nonce = nonce.ok_or(ScramError::Malformed("no nonce"))?;
        let salt = salt.ok_or(ScramError::Malformed("no salt"))?;
        let iterations = iterations.ok_or(ScramError::Malformed("no iterations"))?;
        if !nonce.starts_with(&self.nonce) || nonce.len() == self.nonce.len() {
            return Err(ScramError::Malformed("server nonce does not extend ours"));
        }
        if iterations == 0 || iterations > 10_000_000 {
            return Err(ScramError::Malformed("unreasonable iteration count"));
        }
        let salted = cached_salted_password(password, &salt, iterations);
        let client_key = hmac(&salted, b"Client Key");
        let stored_key: [u8; 32] = Sha256::digest(client_key).into();
        let without_proof = format!("c=biws,r={nonce}");
        let auth_message = format!("{},{msg},{without_proof}", self.client_first_bare);
        let signature = hmac(&stored_key, auth_message.as_bytes());
        let mut proof = [0u8; 32];
        for i in 0..32 {
            proof[i] = client_key[i] ^ signature[i];
        }
        let server_key = hmac(&salted, b"Server Key");
        Ok((
            ClientFinal {
                expected_server_signature: hmac(&server_key, auth_message.as_bytes()),
            },
            format!("{without_proof},p={}", B64.encode(proof)),
        ))
    }
}

impl ClientFinal {
    /// Checks server-final-message, so a server that does not know the password is caught.
    pub fn verify(self, server_final: &[u8]) -> Result<(), ScramError> {
        let msg =
            std::str::from_utf8(server_final).map_err(|_| ScramError::Malformed("not UTF-8"))?;
        let v = msg
            .strip_prefix("v=")
            .ok_or(ScramError::Malformed("no server signature"))?;
        let sig = B64
            .decode(v)
            .map_err(|_| ScramError::Malformed("signature is not base64"))?;
        if bool::from(sig.as_slice().ct_eq(&self.expected_server_signature)) {
            Ok(())
        } else {
            Err(ScramError::BadServerSignature)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_and_server_agree_on_the_right_password_only() {
        let verifier = Verifier::new("correct horse");
        let (client, first) = ClientExchange::start();
        let (server, server_first) =
            ServerExchange::start(verifier.clone(), first.as_bytes()).unwrap();
        let (fin, client_final) = client
            .respond("correct horse", server_first.as_bytes())
            .unwrap();
        let server_final = server.finish(client_final.as_bytes()).unwrap();
        fin.verify(server_final.as_bytes()).unwrap();

        let (client, first) = ClientExchange::start();
        let (server, server_first) = ServerExchange::start(verifier, first.as_bytes()).unwrap();
        let (_, client_final) = client.respond("wrong", server_first.as_bytes()).unwrap();
        assert_eq!(
            server.finish(client_final.as_bytes()),
            Err(ScramError::BadProof)
        );
    }

    #[test]
    fn rfc7677_test_vector() {
        // RFC 7677 section 3: user "user", password "pencil".
        let salt = B64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        let verifier = Verifier::with_salt("pencil", &salt, 4096);
        let client_first = "n,,n=user,r=rOprNGfwEbeRWgbNEkqO";
        let (mut server, _) = ServerExchange::start(verifier, client_first.as_bytes()).unwrap();
        // Pin the server nonce to the RFC's.
        server.nonce = "rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0".into();
        server.server_first = format!("r={},s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096", server.nonce);
        let client_final = "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
                            p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
        assert_eq!(
            server.finish(client_final.as_bytes()).unwrap(),
            "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
        );
    }

    #[test]
    fn refuses_channel_binding_and_garbage() {
        let v = Verifier::new("x");
        assert_eq!(
            ServerExchange::start(v.clone(), b"p=tls-server-end-point,,n=,r=abc").err(),
            Some(ScramError::ChannelBinding)
        );
        assert!(ServerExchange::start(v.clone(), b"n,,n=,").is_err());
        assert!(ServerExchange::start(v.clone(), b"garbage").is_err());
        assert!(ServerExchange::start(v, &[0xff, 0xfe]).is_err());
    }
}
