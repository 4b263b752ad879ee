//! Rotation dates and version history of every secret, from Secrets Manager
//! (`ListSecrets`' `LastRotatedDate`, `ListSecretVersionIds`), through the client the
//! secret store builds from `[secrets]` (an emulator endpoint gets fixed credentials).
//! Only what does not change by being read is kept (not `LastAccessedDate`), so the same
//! secrets give the same file.

use aws_sdk_secretsmanager::primitives::{DateTime, DateTimeFormat};
use serde::Serialize;

#[derive(Debug, Serialize)]
pub struct Secrets {
    /// The name prefix read.
    pub prefix: String,
    pub secrets: Vec<Secret>,
}

#[derive(Debug, Serialize)]
pub struct Secret {
    pub name: String,
    pub rotation_enabled: bool,
    pub last_rotated: Option<String>,
    pub created: Option<String>,
    /// Every version, oldest first: id, stages (AWSCURRENT, AWSPREVIOUS...) and creation.
    pub versions: Vec<Version>,
}

#[derive(Debug, Serialize)]
pub struct Version {
    pub id: String,
    pub stages: Vec<String>,
    pub created: Option<String>,
}

pub fn read(settings: &secret_store::SecretsSettings, prefix: &str) -> anyhow::Result<Secrets> {
    anyhow::ensure!(
        settings.backend == secret_store::Backend::Aws,
        "rotation dates come from Secrets Manager, and the configuration's [secrets] backend \
         is not `aws` (set PROXY_SECRETS__BACKEND=aws, or leave --secrets-prefix out)"
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(read_async(settings, prefix))
}

fn text(t: Option<&DateTime>) -> Option<String> {
    t.and_then(|t| t.fmt(DateTimeFormat::DateTime).ok())
}

async fn read_async(
    settings: &secret_store::SecretsSettings,
    prefix: &str,
) -> anyhow::Result<Secrets> {
    let client = secret_store::aws::client(settings).await;
    let mut secrets = Vec::new();
    let mut pages = client.list_secrets().into_paginator().send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| anyhow::anyhow!("listing secrets: {e}"))?;
        for entry in page.secret_list() {
            let Some(name) = entry.name().filter(|n| n.starts_with(prefix)) else {
                continue;
            };
            let mut versions = Vec::new();
            let mut vpages = client
                .list_secret_version_ids()
                .secret_id(name)
                .include_deprecated(true)
                .into_paginator()
                .send();
            while let Some(vpage) = vpages.next().await {
                let vpage =
                    vpage.map_err(|e| anyhow::anyhow!("listing the versions of {name}: {e}"))?;
                for v in vpage.versions() {
                    let mut stages = v.version_stages().to_vec();
                    stages.sort();
                    versions.push(Version {
                        id: v.version_id().unwrap_or_default().to_string(),
                        stages,
                        created: text(v.created_date()),
                    });
                }
            }
            versions.sort_by(|a, b| (&a.created, &a.id).cmp(&(&b.created, &b.id)));
            secrets.push(Secret {
                name: name.to_string(),
                rotation_enabled: entry.rotation_enabled().unwrap_or(false),
                last_rotated: text(entry.last_rotated_date()),
                created: text(entry.created_date()),
                versions,
            });
        }
    }
    secrets.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(Secrets {
        prefix: prefix.to_string(),
        secrets,
    })
}
