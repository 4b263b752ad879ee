//! Rotation without Lambda: the local command plays Secrets Manager's part (pick or resume
//! the pending version, call the four steps, clear `AWSPENDING`), and a schedule repeats it.

use std::time::Duration;

use secret_store::aws::sdk_error;

use crate::steps::{CURRENT, PENDING};
use crate::{Error, Rotator, Step};

/// Rotates `id` now and returns the new version's id. A rotation left halfway (a version
/// still pending) is resumed with its token instead of starting another.
pub async fn rotate(rotator: &Rotator, id: &str) -> Result<String, Error> {
    let versions = rotator.versions(id).await?;
    let pending = versions
        .iter()
        .find(|(_, s)| s.iter().any(|s| s == PENDING) && !s.iter().any(|s| s == CURRENT))
        .map(|(v, _)| v.clone());
    let (token, new) = match pending {
        Some(token) => {
            tracing::info!(secret = id, version = %token, "resuming a pending rotation");
            (token, false)
        }
        None => (new_token(), true),
    };
    for step in Step::ALL {
        rotator.run(id, &token, step, new).await?;
    }
    clear_pending(rotator, id, &token).await?;
    Ok(token)
}

/// Removes `AWSPENDING` from a finished version, as Secrets Manager does after
/// `finishSecret`.
pub async fn clear_pending(rotator: &Rotator, id: &str, token: &str) -> Result<(), Error> {
    rotator
        .sm
        .update_secret_version_stage()
        .secret_id(id)
        .version_stage(PENDING)
        .remove_from_version_id(token)
        .send()
        .await
        .map_err(|e| sdk_error(id, e))?;
    Ok(())
}

/// A version id as Secrets Manager makes them (32 to 64 characters).
pub fn new_token() -> String {
    let bytes: [u8; 16] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Rotates every secret in `ids` (none: every secret with rotation on) every `every`, until
/// the process is stopped. A failed rotation is logged and tried again at the next tick (it
/// resumes where it stopped).
pub async fn schedule(rotator: &Rotator, ids: &[String], every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        let due = if ids.is_empty() {
            match rotating(rotator).await {
                Ok(found) => found,
                Err(e) => {
                    tracing::error!(error = %e, "listing the secrets failed");
                    continue;
                }
            }
        } else {
            ids.to_vec()
        };
        for id in &due {
            match rotate(rotator, id).await {
                Ok(version) => tracing::info!(secret = %id, %version, "rotated"),
                Err(e) => tracing::error!(secret = %id, error = %e, "rotation failed"),
            }
        }
    }
}

/// The secrets with rotation on.
async fn rotating(rotator: &Rotator) -> Result<Vec<String>, Error> {
    let store = rotator.store();
    let mut on = Vec::new();
    for id in store.list().await? {
        match rotator.versions(&id).await {
            Ok(_) => on.push(id),
            Err(Error::Refused(_)) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(on)
}
