//! RDS IAM authentication for the proxy's own login to the database: instead of a password
//! from the secret store, a token (a SigV4-presigned `connect` URL, valid 15 minutes) signed
//! with the task's AWS credentials by `aws-sdk-rds`. RDS checks it against the role's
//! `rds_iam` membership, so people's roles can have no password at all. The token is sent as
//! a cleartext password, so only inside verified TLS (checked in `Settings::validate`).

use aws_sdk_rds::auth_token::{AuthTokenGenerator, Config};
use secrecy::SecretString;

/// Signs tokens with the AWS SDK's default credential chain (the ECS task role).
pub struct IamSigner {
    region: Option<String>,
    sdk: tokio::sync::OnceCell<aws_config::SdkConfig>,
}

impl IamSigner {
    pub fn new(region: Option<String>) -> Self {
        IamSigner {
            region,
            sdk: tokio::sync::OnceCell::new(),
        }
    }

    /// A signer on a configuration made elsewhere (tests: static credentials).
    pub fn with_config(region: Option<String>, sdk: aws_config::SdkConfig) -> Self {
        IamSigner {
            region,
            sdk: tokio::sync::OnceCell::new_with(Some(sdk)),
        }
    }

    async fn sdk(&self) -> &aws_config::SdkConfig {
        self.sdk
            .get_or_init(|| async {
                let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
                    .http_client(secret_store::aws::http_client());
                if let Some(region) = &self.region {
                    loader = loader.region(aws_config::Region::new(region.clone()));
                }
                loader.load().await
            })
            .await
    }

    /// A token for `user` on `host:port`. The error never holds credentials.
    pub async fn token(&self, host: &str, port: u16, user: &str) -> anyhow::Result<SecretString> {
        let mut config = Config::builder()
            .hostname(host)
            .port(port.into())
            .username(user);
        if let Some(region) = &self.region {
            config = config.region(aws_config::Region::new(region.clone()));
        }
        let config = config
            .build()
            .map_err(|e| anyhow::anyhow!("RDS auth token settings: {e}"))?;
        let token = AuthTokenGenerator::new(config)
            .auth_token(self.sdk().await)
            .await
            .map_err(|e| anyhow::anyhow!("signing an RDS auth token: {e}"))?;
        Ok(SecretString::from(token.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_rds::config::Credentials;

    #[tokio::test]
    async fn tokens_are_presigned_connect_urls_for_the_user() {
        let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .credentials_provider(Credentials::new(
                "AKIDEXAMPLE",
                "wJalrXUtnFEMI",
                None,
                None,
                "test",
            ))
            .region(aws_config::Region::new("eu-west-1"))
            .http_client(secret_store::aws::http_client())
            .load()
            .await;
        let signer = IamSigner::with_config(Some("eu-west-1".into()), sdk);
        let token = signer.token("db.internal", 5432, "alice_p1").await.unwrap();
        let t = secrecy::ExposeSecret::expose_secret(&token);
        assert!(
            t.starts_with("db.internal:5432/?Action=connect&DBUser=alice_p1&"),
            "{t}"
        );
        assert!(t.contains("X-Amz-Credential=AKIDEXAMPLE%2F"), "{t}");
        assert!(t.contains("%2Feu-west-1%2Frds-db%2Faws4_request"), "{t}");
        assert!(
            t.contains("X-Amz-Expires=900") && t.contains("X-Amz-Signature="),
            "{t}"
        );
        assert!(
            !t.contains("wJalrXUtnFEMI"),
            "the secret key leaked into the token"
        );
        let other = signer.token("db.internal", 5432, "bob_p2").await.unwrap();
        assert_ne!(secrecy::ExposeSecret::expose_secret(&other), t);
    }
}
