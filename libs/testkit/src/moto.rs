//! A moto server (the Secrets Manager emulator) per test, a client for it with static
//! credentials, and secrets with rotation enabled in the AWS layout.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use aws_sdk_secretsmanager::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_secretsmanager::Client;
use secret_store::{Backend, SecretsSettings};

/// A moto server on a free loopback port, stopped when dropped.
pub struct Moto {
    child: Child,
    pub endpoint: String,
}

impl Moto {
    /// Starts `moto_server` (installed by scripts/install.sh test) and waits until it answers.
    pub async fn start() -> Moto {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let child = Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("moto_server on PATH (scripts/install.sh test installs it)");
        let moto = Moto {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
        };
        crate::eventually("moto_server answers", Duration::from_secs(30), async || {
            tokio::net::TcpStream::connect(("127.0.0.1", port)).await
        })
        .await;
        moto
    }

    /// Secret-store settings for this server (the `aws` backend), with a cache of `ttl_ms`.
    pub fn settings(&self, cache_ttl_ms: u64) -> SecretsSettings {
        SecretsSettings {
            backend: Backend::Aws,
            region: Some("us-east-1".into()),
            endpoint_url: Some(self.endpoint.clone()),
            cache_ttl_ms,
            min_refresh_ms: 0,
            ..Default::default()
        }
    }

    /// Environment for a child process using this server.
    pub fn env(&self, prefix: &str) -> Vec<(String, String)> {
        vec![
            (format!("{prefix}SECRETS__BACKEND"), "aws".into()),
            (format!("{prefix}SECRETS__REGION"), "us-east-1".into()),
            (
                format!("{prefix}SECRETS__ENDPOINT_URL"),
                self.endpoint.clone(),
            ),
            ("AWS_ACCESS_KEY_ID".into(), "testing".into()),
            ("AWS_SECRET_ACCESS_KEY".into(), "testing".into()),
            ("AWS_EC2_METADATA_DISABLED".into(), "true".into()),
        ]
    }

    /// A client with static credentials (no credential chain in tests).
    pub fn client(&self) -> Client {
        let config = aws_sdk_secretsmanager::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .endpoint_url(&self.endpoint)
            .credentials_provider(Credentials::new("testing", "testing", None, None, "test"))
            .http_client(secret_store::aws::http_client())
            .build();
        Client::from_conf(config)
    }

    /// A secret store on this server.
    pub fn store(&self, cache_ttl_ms: u64) -> secret_store::SecretStore {
        secret_store::SecretStore::Aws(secret_store::AwsStore::with_client(
            self.settings(cache_ttl_ms),
            self.client(),
        ))
    }

    /// Creates secret `id` with `value` and turns rotation on (moto has no Lambda to call,
    /// so `RotateSecret` answers with an error, but it records the rotation as enabled; see
    /// [`secret_store::SecretStore::enable_rotation`]).
    pub async fn rotated_secret(&self, id: &str, value: &serde_json::Value) {
        self.client()
            .create_secret()
            .name(id)
            .secret_string(value.to_string())
            .send()
            .await
            .expect("create secret");
        self.enable_rotation(id).await;
    }

    /// Turns rotation on for an existing secret (see [`Moto::rotated_secret`]).
    pub async fn enable_rotation(&self, id: &str) {
        self.store(0)
            .enable_rotation(id, FUNCTION_ARN, 30)
            .await
            .expect("moto enables rotation");
    }
}

/// The rotation function's ARN in tests (moto has no function behind it).
pub const FUNCTION_ARN: &str = "arn:aws:lambda:us-east-1:123456789012:function:dbgw-rotation";

/// A secret value in the layout of AWS's RDS rotation functions.
pub fn layout(
    host: &str,
    port: u16,
    creds: &secret_store::DbCredentials,
    dbname: &str,
    master: Option<&str>,
) -> serde_json::Value {
    let mut v = serde_json::json!({
        "engine": "postgres",
        "host": host,
        "port": port,
        "username": creds.username,
        "password": secrecy::ExposeSecret::expose_secret(&creds.password),
        "dbname": dbname,
    });
    if let Some(m) = master {
        v["masterarn"] = serde_json::json!(m);
    }
    v
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
