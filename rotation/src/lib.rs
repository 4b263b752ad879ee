//! Password rotation for database secrets in AWS Secrets Manager.
//!
//! Secrets Manager rotates a secret by calling a function four times with the same
//! `ClientRequestToken` (the id of the new version): `createSecret`, `setSecret`,
//! `testSecret`, `finishSecret` ([`steps`]). Each step is idempotent, so a step that failed or
//! a function that crashed between steps is resumed by calling it again. Two strategies
//! ([`strategy`]), chosen by the function's configuration and the secret's name, never by
//! what the secret's writer put in it ([`policy`]: the function acts only for the owner of the
//! secret's current password, with a master the configuration allows, on that master's own
//! server):
//!
//! - **alternating users** for the secrets configured so: the new version names the
//!   other user of the pair (`rates_api` / `rates_api_clone`, the clone created on first use
//!   like the original), and the master changes that user's password, so the user in use
//!   keeps working throughout;
//! - **single user** otherwise: the user changes its own password, or the secret's master
//!   changes it (people's roles, the control-plane logins). Sessions already open keep
//!   working; new logins need the new one.
//!
//! The same code runs as the Lambda function (`bootstrap`, no arguments) and as a local
//! command (`bootstrap rotate SECRET_ID`, [`local`]).

pub mod local;
pub mod policy;
pub mod settings;
pub mod steps;
pub mod strategy;
pub mod value;

pub use settings::Settings;
pub use steps::{Rotator, Step};

/// Why a step did not complete. Never carries a password.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request does not fit the secret's state: rotation off, unknown or stale token.
    #[error("refused: {0}")]
    Refused(String),
    #[error(transparent)]
    Store(#[from] secret_store::Error),
    #[error("database: {0:#}")]
    Database(anyhow::Error),
}
