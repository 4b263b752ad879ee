//! The production backend: AWS Secrets Manager, through `aws-sdk-secretsmanager`.
//!
//! - Every read names its version stage (`AWSCURRENT`, `AWSPREVIOUS`, `AWSPENDING`): a read
//!   without one can return a stale version on some emulators, and naming it says what the
//!   caller relies on.
//! - Reads are cached for `cache_ttl` per (secret, stage), so a service opening hundreds of
//!   connections a minute makes a few API calls a minute; [`AwsStore::refresh`] drops a
//!   secret's entries when a login with it failed (a rotation may have moved the stages).
//! - The SDK's HTTP client is built here with rustls and the ring provider, the one crypto
//!   provider of every dbgw binary (the SDK's default client would bring aws-lc too).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_sdk_secretsmanager::error::ProvideErrorMetadata;
use aws_sdk_secretsmanager::Client;
use secrecy::{ExposeSecret, SecretString};

use crate::{Error, Result, SecretsSettings, Stage, Version};

/// The SDK's HTTP client: hyper with rustls on the ring provider.
pub fn http_client() -> aws_sdk_secretsmanager::config::SharedHttpClient {
    use aws_smithy_http_client::tls::{rustls_provider::CryptoMode, Provider};
    aws_smithy_http_client::Builder::new()
        .tls_provider(Provider::Rustls(CryptoMode::Ring))
        .build_https()
}

/// A Secrets Manager client from the default credential chain (environment, ECS task role,
/// Lambda role...), with the region and endpoint of `settings` when they are set.
///
/// An endpoint on a loopback address is an emulator (moto in the local stack): it takes any
/// credentials, so fixed ones are used and the chain is never asked. Nothing local then
/// reaches for the instance metadata service, and every command works in a fresh shell.
pub async fn client(settings: &SecretsSettings) -> Client {
    let mut loader =
        aws_config::defaults(aws_config::BehaviorVersion::latest()).http_client(http_client());
    if let Some(region) = &settings.region {
        loader = loader.region(aws_config::Region::new(region.clone()));
    }
    if let Some(endpoint) = &settings.endpoint_url {
        loader = loader.endpoint_url(endpoint);
        if is_emulator(endpoint) {
            loader = loader.credentials_provider(aws_sdk_secretsmanager::config::Credentials::new(
                "dev",
                "dev",
                None,
                None,
                "dbgw-local-emulator",
            ));
            if settings.region.is_none() {
                loader = loader.region(aws_config::Region::new("us-east-1"));
            }
        }
    }
    Client::new(&loader.load().await)
}

/// An endpoint on this machine: `http(s)://localhost`, `127.x.x.x` or `[::1]`.
pub fn is_emulator(endpoint: &str) -> bool {
    let rest = endpoint
        .strip_prefix("http://")
        .or_else(|| endpoint.strip_prefix("https://"))
        .unwrap_or(endpoint);
    let host = match rest.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => rest.split([':', '/']).next().unwrap_or(""),
    };
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

type Cache = HashMap<(String, Stage), (Instant, Version)>;
/// A turn to read per (secret, stage).
type Turns = HashMap<(String, Stage), Arc<tokio::sync::Mutex<()>>>;

#[derive(Clone)]
pub struct AwsStore {
    settings: SecretsSettings,
    /// Made at first use: loading the credential chain is async, constructing a store is not.
    client: Arc<tokio::sync::OnceCell<Client>>,
    cache: Arc<Mutex<Cache>>,
    /// One read at a time per (secret, stage): a burst of logins at expiry makes one call.
    reading: Arc<Mutex<Turns>>,
    /// API calls made (reads and writes), for the benchmark and the metrics.
    calls: Arc<std::sync::atomic::AtomicU64>,
}

impl std::fmt::Debug for AwsStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AwsStore")
            .field("region", &self.settings.region)
            .field("endpoint_url", &self.settings.endpoint_url)
            .finish()
    }
}

impl AwsStore {
    pub fn new(settings: SecretsSettings) -> Self {
        AwsStore {
            settings,
            client: Arc::default(),
            cache: Arc::default(),
            reading: Arc::default(),
            calls: Arc::default(),
        }
    }

    /// A store on a client made elsewhere (tests with static credentials).
    pub fn with_client(settings: SecretsSettings, client: Client) -> Self {
        let store = AwsStore::new(settings);
        store.client.set(client).expect("a new cell is empty");
        store
    }

    pub async fn client(&self) -> &Client {
        self.client.get_or_init(|| client(&self.settings)).await
    }

    fn ttl(&self) -> Duration {
        Duration::from_millis(self.settings.cache_ttl_ms)
    }

    /// API calls made so far.
    pub fn api_calls(&self) -> u64 {
        self.calls.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn count(&self) {
        self.calls
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// The version of `id` at `stage`, from the cache while it is fresh.
    pub(crate) async fn version(&self, id: &str, stage: Stage) -> Result<Version> {
        let key = (id.to_string(), stage);
        if let Some(v) = self.cached(&key) {
            return Ok(v);
        }
        let turn = self
            .reading
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(key.clone())
            .or_default()
            .clone();
        let _turn = turn.lock().await;
        // Whoever read while we waited filled the cache.
        if let Some(v) = self.cached(&key) {
            return Ok(v);
        }
        let v = self.read(id, stage).await?;
        lock(&self.cache).insert(key, (Instant::now(), v.clone()));
        Ok(v)
    }

    fn cached(&self, key: &(String, Stage)) -> Option<Version> {
        match lock(&self.cache).get(key) {
            Some((at, v)) if at.elapsed() < self.ttl() => Some(v.clone()),
            _ => None,
        }
    }

    /// Reads `id` at `stage` from Secrets Manager, bypassing the cache.
    pub async fn read(&self, id: &str, stage: Stage) -> Result<Version> {
        self.count();
        let out = self
            .client()
            .await
            .get_secret_value()
            .secret_id(id)
            .version_stage(stage.label())
            .send()
            .await
            .map_err(|e| sdk_error(id, e))?;
        let (Some(version), Some(value)) = (out.version_id, out.secret_string) else {
            return Err(Error::Malformed {
                id: id.into(),
                reason: format!("the {} version has no text value", stage.label()),
            });
        };
        Ok(Version {
            id: version,
            value: SecretString::from(value),
        })
    }

    /// Drops the cached versions of `id` (those older than `min_refresh_ms`), so the next
    /// read asks Secrets Manager.
    pub fn refresh(&self, id: &str) {
        let floor = Duration::from_millis(self.settings.min_refresh_ms);
        lock(&self.cache).retain(|(cached, _), (at, _)| cached != id || at.elapsed() < floor);
    }

    /// Stores a new `AWSCURRENT` version, creating the secret when it does not exist.
    pub(crate) async fn put(&self, id: &str, value: &SecretString) -> Result<()> {
        let client = self.client().await;
        // A store that deletes with a recovery window may find its secret scheduled for
        // deletion (a person granted again inside the window): bring it back first.
        if self.settings.recovery_window_days > 0 && self.scheduled(id).await? {
            self.count();
            client
                .restore_secret()
                .secret_id(id)
                .send()
                .await
                .map_err(|e| sdk_error(id, e))?;
        }
        self.count();
        let put = client
            .put_secret_value()
            .secret_id(id)
            .secret_string(value.expose_secret())
            .send()
            .await;
        match put {
            Ok(_) => {}
            Err(e) if e.code() == Some("ResourceNotFoundException") => {
                self.count();
                client
                    .create_secret()
                    .name(id)
                    .set_kms_key_id(self.settings.kms_key_id.clone())
                    .secret_string(value.expose_secret())
                    .send()
                    .await
                    .map_err(|e| sdk_error(id, e))?;
            }
            Err(e) => return Err(sdk_error(id, e)),
        }
        self.forget(id);
        Ok(())
    }

    /// Whether `id` is scheduled for deletion (deleted with a recovery window); a secret
    /// that does not exist is not.
    async fn scheduled(&self, id: &str) -> Result<bool> {
        self.count();
        match self
            .client()
            .await
            .describe_secret()
            .secret_id(id)
            .send()
            .await
        {
            Ok(described) => Ok(described.deleted_date().is_some()),
            Err(e) if e.code() == Some("ResourceNotFoundException") => Ok(false),
            Err(e) => Err(sdk_error(id, e)),
        }
    }

    /// Turns rotation on, as Terraform's `aws_secretsmanager_secret_rotation` does:
    /// `function_arn` rotates `id` every `days` days from the next window (`RotateImmediately`
    /// off). Secrets Manager then tests the function with a pending version and removes it;
    /// an emulator may leave it staged, and a stray `AWSPENDING` would be taken for a
    /// rotation to resume, so one on a version that is not current is removed here. Nothing
    /// to do when rotation is on with that function already.
    pub(crate) async fn enable_rotation(
        &self,
        id: &str,
        function_arn: &str,
        days: i64,
    ) -> Result<()> {
        let client = self.client().await;
        let describe = || async {
            self.count();
            client
                .describe_secret()
                .secret_id(id)
                .send()
                .await
                .map_err(|e| sdk_error(id, e))
        };
        let on = |d: &aws_sdk_secretsmanager::operation::describe_secret::DescribeSecretOutput| {
            d.rotation_enabled == Some(true)
                && d.rotation_lambda_arn.as_deref() == Some(function_arn)
        };
        if on(&describe().await?) {
            return Ok(());
        }
        self.count();
        let rotate = client
            .rotate_secret()
            .secret_id(id)
            .rotation_lambda_arn(function_arn)
            .rotation_rules(
                aws_sdk_secretsmanager::types::RotationRulesType::builder()
                    .automatically_after_days(days)
                    .build(),
            )
            .rotate_immediately(false)
            .send()
            .await;
        let d = describe().await?;
        match rotate {
            Ok(_) => {}
            // The function's test run can fail (an emulator has no function to call) after
            // rotation was turned on; the secret's description says whether it was.
            Err(e) if on(&d) => {
                tracing::warn!(
                    secret = id,
                    code = e.code().unwrap_or_default(),
                    message = e.message().unwrap_or_default(),
                    "rotation is on; its test run failed"
                );
            }
            Err(e) => return Err(sdk_error(id, e)),
        }
        let stages = d.version_ids_to_stages.unwrap_or_default();
        let stray = stages.iter().find(|(_, s)| {
            s.iter().any(|s| s == "AWSPENDING") && !s.iter().any(|s| s == "AWSCURRENT")
        });
        if let Some((version, _)) = stray {
            self.count();
            client
                .update_secret_version_stage()
                .secret_id(id)
                .version_stage("AWSPENDING")
                .remove_from_version_id(version)
                .send()
                .await
                .map_err(|e| sdk_error(id, e))?;
        }
        Ok(())
    }

    /// The names of every secret the credentials can list, sorted.
    pub(crate) async fn list(&self) -> Result<Vec<String>> {
        let client = self.client().await;
        let mut names = Vec::new();
        let mut next: Option<String> = None;
        loop {
            self.count();
            let page = client
                .list_secrets()
                .set_next_token(next.take())
                .send()
                .await
                .map_err(|e| sdk_error("(all)", e))?;
            names.extend(
                page.secret_list()
                    .iter()
                    .filter_map(|s| s.name().map(str::to_owned)),
            );
            match page.next_token() {
                Some(token) => next = Some(token.to_owned()),
                None => break,
            }
        }
        names.sort();
        Ok(names)
    }

    /// Drops every cached version of `id` (after our own write).
    fn forget(&self, id: &str) {
        lock(&self.cache).retain(|(cached, _), _| cached != id);
    }

    /// Deletes a secret, at once or with `recovery_window_days`; one that does not exist
    /// is deleted.
    pub(crate) async fn delete(&self, id: &str) -> Result<()> {
        self.count();
        let days = self.settings.recovery_window_days;
        let request = self.client().await.delete_secret().secret_id(id);
        let request = match days {
            0 => request.force_delete_without_recovery(true),
            // Secrets Manager takes 7 to 30 days.
            days => request.recovery_window_in_days(days.clamp(7, 30) as i64),
        };
        let deleted = request.send().await;
        self.forget(id);
        match deleted {
            Ok(_) => Ok(()),
            Err(e) if e.code() == Some("ResourceNotFoundException") => Ok(()),
            Err(e) => Err(sdk_error(id, e)),
        }
    }
}

/// An SDK error as ours. The SDK's messages name the secret and the failure, never a value.
pub fn sdk_error<E, R>(id: &str, e: aws_sdk_secretsmanager::error::SdkError<E, R>) -> Error
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    if e.code() == Some("ResourceNotFoundException") {
        return Error::NotFound(id.into());
    }
    Error::Aws {
        id: id.into(),
        message: one_line(&e),
    }
}

/// An SDK error as one readable line: the service's code and message, or the chain of
/// causes ("dispatch failure: io error: ... Connection refused"), without debug dumps.
fn one_line<E, R>(e: &aws_sdk_secretsmanager::error::SdkError<E, R>) -> String
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    if let (Some(code), Some(message)) = (e.code(), e.message()) {
        return format!("{code}: {message}");
    }
    let mut parts: Vec<String> = vec![e.to_string()];
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        let text = c.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        cause = c.source();
    }
    parts.join(": ").replace('\n', " ")
}

/// The cache holds no invariant a panic could break halfway.
fn lock(m: &Mutex<Cache>) -> std::sync::MutexGuard<'_, Cache> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_endpoints_are_emulators() {
        for e in [
            "http://127.0.0.1:5000",
            "http://localhost:5000/",
            "http://[::1]:5000",
            "https://127.1.2.3",
        ] {
            assert!(is_emulator(e), "{e}");
        }
        for e in [
            "https://secretsmanager.eu-west-1.amazonaws.com",
            "https://10.0.0.5",
            "http://localhost.evil.example",
        ] {
            assert!(!is_emulator(e), "{e}");
        }
    }
}
