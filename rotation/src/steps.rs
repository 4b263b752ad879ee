//! The four steps of a Secrets Manager rotation and their contract.
//!
//! Before any step, the secret must have rotation enabled and the token must name a version
//! staged `AWSPENDING`; a version already `AWSCURRENT` means the rotation is done (the step
//! does nothing), any other version is refused (a stale or wrong token).
//!
//! - `createSecret`: the pending version, unless it exists: the current one with a new
//!   password (and, alternating, the other user).
//! - `setSecret`: the pending password into the database, unless it already logs in; with a
//!   master, only for the secret's owner: the configuration allows the master, the secret
//!   names the master's server, and its current (or previous) credentials log in
//!   ([`crate::policy`]).
//! - `testSecret`: the pending login works.
//! - `finishSecret`: `AWSCURRENT` moves to the pending version (Secrets Manager moves
//!   `AWSPREVIOUS` with it), unless it is there already.

use std::collections::HashMap;

use aws_sdk_secretsmanager::Client;
use secret_store::aws::sdk_error;
use secret_store::DbCredentials;
use serde::Deserialize;
use serde_json::Value;

use crate::policy::{Named, Policy, Scheme};
use crate::value::{credentials, SecretValue};
use crate::{strategy, Error, Settings};

pub const CURRENT: &str = "AWSCURRENT";
pub const PENDING: &str = "AWSPENDING";
pub const PREVIOUS: &str = "AWSPREVIOUS";

/// One step, as Secrets Manager names it in the event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Step {
    CreateSecret,
    SetSecret,
    TestSecret,
    FinishSecret,
}

impl Step {
    pub const ALL: [Step; 4] = [
        Step::CreateSecret,
        Step::SetSecret,
        Step::TestSecret,
        Step::FinishSecret,
    ];
}

/// The event Secrets Manager sends to a rotation function.
#[derive(Debug, Deserialize)]
pub struct Event {
    #[serde(rename = "Step")]
    pub step: Step,
    #[serde(rename = "SecretId")]
    pub secret_id: String,
    #[serde(rename = "ClientRequestToken")]
    pub token: String,
}

pub struct Rotator {
    pub sm: Client,
    pub settings: Settings,
    /// Whom the function acts for ([`crate::policy`]).
    pub policy: Policy,
}

impl Rotator {
    /// A rotator with the default policy: the local stack's secret names.
    pub fn new(sm: Client, settings: Settings) -> Self {
        Self::with_policy(sm, settings, Policy::default())
    }

    pub fn with_policy(sm: Client, settings: Settings, policy: Policy) -> Self {
        Rotator {
            sm,
            settings,
            policy,
        }
    }

    /// The workspace's secret store on the same client (listing, turning rotation on).
    pub fn store(&self) -> secret_store::SecretStore {
        secret_store::SecretStore::Aws(secret_store::AwsStore::with_client(
            self.settings.secrets.clone(),
            self.sm.clone(),
        ))
    }

    /// Runs one step as the Lambda function does: the version must exist and be pending.
    pub async fn handle(&self, secret_id: &str, token: &str, step: Step) -> Result<(), Error> {
        self.run(secret_id, token, step, false).await
    }

    /// Runs one step. `new_version` lets `createSecret` make a version Secrets Manager did
    /// not stage (the local command, which plays Secrets Manager's part); the Lambda handler
    /// never sets it.
    pub async fn run(
        &self,
        id: &str,
        token: &str,
        step: Step,
        new_version: bool,
    ) -> Result<(), Error> {
        let (secret, versions) = self.describe(id).await?;
        match versions.get(token) {
            None if new_version && step == Step::CreateSecret => {}
            None => {
                return Err(Error::Refused(format!(
                    "secret {id} has no version {token} to rotate to"
                )))
            }
            Some(stages) if stages.iter().any(|s| s == CURRENT) => {
                tracing::info!(
                    secret = id,
                    version = token,
                    ?step,
                    "already current: nothing to do"
                );
                return Ok(());
            }
            Some(stages) if !stages.iter().any(|s| s == PENDING) => {
                return Err(Error::Refused(format!(
                    "version {token} of secret {id} is not pending (stages {stages:?})"
                )))
            }
            Some(_) => {}
        }
        tracing::info!(secret = id, version = token, ?step, "rotation step");
        match step {
            Step::CreateSecret => self.create(id, token, &secret).await,
            Step::SetSecret => self.set(id, token, &secret).await,
            Step::TestSecret => self.test(id, token, &secret).await,
            Step::FinishSecret => self.finish(id, token, &versions).await,
        }
    }

    /// Version ids and their stages; refused unless rotation is enabled.
    pub async fn versions(&self, id: &str) -> Result<HashMap<String, Vec<String>>, Error> {
        Ok(self.describe(id).await?.1)
    }

    /// The secret's name and ARN, and its versions; refused unless rotation is enabled.
    pub async fn describe(&self, id: &str) -> Result<(Named, HashMap<String, Vec<String>>), Error> {
        let d = self
            .sm
            .describe_secret()
            .secret_id(id)
            .send()
            .await
            .map_err(|e| sdk_error(id, e))?;
        if d.rotation_enabled != Some(true) {
            return Err(Error::Refused(format!("rotation is not enabled on {id}")));
        }
        let secret = Named {
            name: d.name.unwrap_or_else(|| id.to_string()),
            arn: d.arn.unwrap_or_default(),
        };
        Ok((secret, d.version_ids_to_stages.unwrap_or_default()))
    }

    async fn create(&self, id: &str, token: &str, secret: &Named) -> Result<(), Error> {
        let current = self.value(id, None, CURRENT).await?.ok_or_else(|| {
            Error::Refused(format!("secret {id} has no current value to rotate from"))
        })?;
        if self.value(id, Some(token), PENDING).await?.is_some() {
            tracing::info!(secret = id, version = token, "pending version exists");
            return Ok(());
        }
        let plan = self.policy.plan(secret, &credentials(id, &current)?)?;
        let next = strategy::next_value(&current, plan.scheme == Scheme::Alternating)?;
        self.sm
            .put_secret_value()
            .secret_id(id)
            .client_request_token(token)
            .secret_string(Value::Object(next).to_string())
            .version_stages(PENDING)
            .send()
            .await
            .map_err(|e| sdk_error(id, e))?;
        tracing::info!(secret = id, version = token, "pending version created");
        Ok(())
    }

    async fn set(&self, id: &str, token: &str, secret: &Named) -> Result<(), Error> {
        let pending = self.required(id, Some(token), PENDING).await?;
        let pending_creds = credentials(id, &pending)?;
        let current = self.required(id, None, CURRENT).await?;
        let current_creds = credentials(id, &current)?;
        let policy = &self.policy;
        let plan = policy.plan(secret, &current_creds)?;
        plan.check_pending(&current_creds, &pending_creds)?;
        let previous = match self.value(id, None, PREVIOUS).await? {
            Some(v) => Some(credentials(id, &v)?).filter(|p| plan.proves(&current_creds, p)),
            None => None,
        };
        let Some(master_id) = current_creds.masterarn.as_deref() else {
            if strategy::logs_in(&self.settings, &pending_creds).await {
                tracing::info!(secret = id, version = token, "pending password already set");
                return Ok(());
            }
            // The user changes its own password: with the current one, or, when an earlier
            // attempt got as far as the database but not further, the previous.
            strategy::set_single(
                &self.settings,
                &current_creds,
                previous.as_ref(),
                &pending_creds,
            )
            .await?;
            tracing::info!(secret = id, version = token, user = %pending_creds.username, "password set");
            return Ok(());
        };
        // A master: one the configuration allows, on its own server, which the secret must
        // name; and only for whoever holds the secret's current password.
        let (master_name, master) = self.master(id, master_id).await?;
        if !policy.master_allowed(&plan, secret, &master_name) {
            return Err(Error::Refused(format!(
                "secret {}: its master {} is not one the configuration allows for it \
                 (policy.{})",
                secret.name,
                master_name.name,
                if plan.person {
                    "person_masters"
                } else {
                    "masters"
                }
            )));
        }
        let server = strategy::master_server(&self.settings, &master);
        strategy::same_server(&self.settings, &server, &current_creds).map_err(|e| match e {
            Error::Refused(why) => Error::Refused(format!("secret {}: {why}", secret.name)),
            other => other,
        })?;
        if strategy::logs_in(&self.settings, &strategy::at(&server, &pending_creds)).await {
            tracing::info!(secret = id, version = token, "pending password already set");
            return Ok(());
        }
        let purpose = strategy::Purpose {
            secret: &secret.name,
            version: token,
            step: "setSecret",
        };
        strategy::prove(
            &self.settings,
            &server,
            &current_creds,
            previous.as_ref(),
            purpose,
        )
        .await
        .map_err(|e| match e {
            Error::Refused(why) => Error::Refused(format!("secret {}: {why}", secret.name)),
            other => other,
        })?;
        strategy::set_by_master(
            &self.settings,
            &strategy::at(&server, &master),
            &current_creds,
            &pending_creds,
            plan.scheme == Scheme::Alternating,
        )
        .await?;
        tracing::info!(secret = id, version = token, user = %pending_creds.username, "password set");
        Ok(())
    }

    /// The master secret's current login, and its name and ARN as Secrets Manager has them.
    async fn master(&self, id: &str, master_id: &str) -> Result<(Named, DbCredentials), Error> {
        let out = self
            .sm
            .get_secret_value()
            .secret_id(master_id)
            .version_stage(CURRENT)
            .send()
            .await
            .map_err(|e| sdk_error(master_id, e))?;
        let named = Named {
            name: out.name.clone().unwrap_or_default(),
            arn: out.arn.clone().unwrap_or_default(),
        };
        let value = match out
            .secret_string
            .as_deref()
            .map(serde_json::from_str::<Value>)
        {
            Some(Ok(Value::Object(map))) => map,
            _ => {
                return Err(Error::Refused(format!(
                    "secret {id}: its master {master_id} holds no login"
                )))
            }
        };
        Ok((named, credentials(master_id, &value)?))
    }

    async fn test(&self, id: &str, token: &str, secret: &Named) -> Result<(), Error> {
        let pending = credentials(id, &self.required(id, Some(token), PENDING).await?)?;
        let purpose = strategy::Purpose {
            secret: &secret.name,
            version: token,
            step: "testSecret",
        };
        strategy::test_login(&self.settings, &pending, purpose).await?;
        tracing::info!(secret = id, version = token, "pending login works");
        Ok(())
    }

    async fn finish(
        &self,
        id: &str,
        token: &str,
        versions: &HashMap<String, Vec<String>>,
    ) -> Result<(), Error> {
        let current = versions
            .iter()
            .find(|(_, stages)| stages.iter().any(|s| s == CURRENT))
            .map(|(v, _)| v.clone());
        let mut update = self
            .sm
            .update_secret_version_stage()
            .secret_id(id)
            .version_stage(CURRENT)
            .move_to_version_id(token);
        if let Some(current) = &current {
            update = update.remove_from_version_id(current);
        }
        update.send().await.map_err(|e| sdk_error(id, e))?;
        tracing::info!(secret = id, version = token, previous = ?current, "rotation finished");
        Ok(())
    }

    /// A version's JSON object: by stage, or by version id and stage. `None` when there is
    /// no such version or it holds no value (Secrets Manager's placeholder before
    /// `createSecret`).
    pub async fn value(
        &self,
        id: &str,
        version: Option<&str>,
        stage: &str,
    ) -> Result<Option<SecretValue>, Error> {
        let out = self
            .sm
            .get_secret_value()
            .secret_id(id)
            .set_version_id(version.map(str::to_string))
            .version_stage(stage)
            .send()
            .await;
        let out = match out {
            Ok(out) => out,
            Err(e) => match sdk_error(id, e) {
                secret_store::Error::NotFound(_) => return Ok(None),
                other => return Err(other.into()),
            },
        };
        let Some(text) = out.secret_string.filter(|t| !t.is_empty()) else {
            return Ok(None);
        };
        match serde_json::from_str::<Value>(&text) {
            Ok(Value::Object(map)) => Ok(Some(map)),
            _ => Err(Error::Store(secret_store::Error::Malformed {
                id: id.into(),
                reason: format!("the {stage} version is not a JSON object"),
            })),
        }
    }

    async fn required(
        &self,
        id: &str,
        version: Option<&str>,
        stage: &str,
    ) -> Result<SecretValue, Error> {
        self.value(id, version, stage).await?.ok_or_else(|| {
            Error::Refused(format!(
                "secret {id} has no {stage} value{}",
                version
                    .map(|v| format!(" for version {v}"))
                    .unwrap_or_default()
            ))
        })
    }
}
