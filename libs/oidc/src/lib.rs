//! The one way dbgw talks to the company's OpenID Connect provider.
//!
//! - [`http`]: the HTTP client every OIDC call uses (redirects never followed) and its adapter
//!   for the `openidconnect` crate's flows (the approvals app's sign-in, the CLI's).
//! - [`id_token`]: the ID-token verifier: the provider's keys fetched and cached, signature,
//!   algorithm, issuer, audience, `azp`, expiry. The proxy (a token typed as a psql password),
//!   the approvals app (the token of a sign-in) and the CLI (the token it caches) each verify
//!   with it and add their own policy on the claims it returns (email, nonce, `amr`).

pub mod http;
pub mod id_token;

pub use id_token::{Claims, TokenError, Verifier, VerifierSettings};
