//! The providers under test, each a [`Subject`] built on its real peer: `local` in
//! process, `kms_envelope` on moto, `vault_transit` and `vault_delegate` on OpenBao.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use ring::rand::{SecureRandom as _, SystemRandom};
use steeple_e2e::moto::Moto;
use steeple_e2e::openbao::OpenBao;
use steeple_plugin_api::{
    AwsCredentials, BoxFuture, EncryptionContext, EnvelopeResolver, EnvelopeRow, SecretBytes,
    VaultAllowRule, VaultAllowlist,
};
use steeple_plugin_aws::{
    KmsConfig, KmsEnvelopeResolver, MAX_DIRECT_PLAINTEXT, SealOptions, seal_with_kms,
};
use steeple_plugin_local::{LocalKey, LocalResolver};
use steeple_plugin_vault::{
    KvVersion, StaticToken, TRANSIT_DIRECT_MAX, VaultClient, VaultClientConfig, VaultKvResolver,
    VaultTransitResolver, seal_with_transit,
};
use tokio::sync::watch;

use super::checks::{Class, Expected, Subject};

/// The transit key: derived, so Vault authenticates the context (a key that is not
/// derived ignores it, and only the registry's path binding stands between a row and
/// another name).
const TRANSIT_KEY: &str = "conformance";
/// What the workload's token may do: decrypt with the one key, read the suite's secrets.
const POLICY: &str = r#"
path "transit/decrypt/conformance" { capabilities = ["update"] }
path "secret/data/conformance-*" { capabilities = ["read"] }
"#;

/// `local`: AES-256-GCM under a random master key, no upstream.
pub struct Local {
    key: LocalKey,
    resolver: LocalResolver,
}

impl Local {
    pub fn new() -> anyhow::Result<Self> {
        let mut master = [0u8; 32];
        SystemRandom::new()
            .fill(&mut master)
            .map_err(|_| anyhow::anyhow!("no randomness"))?;
        let encoded = base64::engine::general_purpose::STANDARD.encode(master);
        Ok(Self {
            key: LocalKey::from_base64(&encoded, "conformance")?,
            resolver: LocalResolver::new(LocalKey::from_base64(&encoded, "conformance")?),
        })
    }
}

impl Subject for Local {
    fn name(&self) -> &'static str {
        "local"
    }
    fn resolver(&self) -> &dyn EnvelopeResolver {
        &self.resolver
    }
    fn seal<'a>(
        &'a self,
        logical_path: &'a str,
        context: &'a EncryptionContext,
        plaintext: &'a [u8],
    ) -> BoxFuture<'a, anyhow::Result<EnvelopeRow>> {
        Box::pin(async move { Ok(self.key.seal(logical_path, context, plaintext)?) })
    }
    fn stop_upstream(&mut self) -> anyhow::Result<bool> {
        // Resolved in process: there is no upstream to lose.
        Ok(false)
    }
    fn peer_logs(&self) -> String {
        String::new()
    }
    fn expected(&self) -> Expected {
        // The AES-GCM associated data binds path and context; nothing is in `aad`'s
        // binding key, so every hostile row reaches the AEAD and fails there. The whole
        // payload is one AES-GCM seal: there is no separate data-key layer.
        Expected {
            wrong_context: Some(Class::Undecryptable),
            moved: Some(Class::Undecryptable),
            relabelled: Some(Class::Undecryptable),
            data_key_above: None,
            has_ciphertext: true,
            garbage: Ok(Class::Undecryptable),
        }
    }
}

/// `kms_envelope` on moto, signing with static credentials (moto checks no signature).
pub struct Kms {
    moto: Moto,
    key: String,
    resolver: KmsEnvelopeResolver,
    _credentials: watch::Sender<Option<AwsCredentials>>,
}

impl Kms {
    pub async fn start() -> anyhow::Result<Self> {
        let moto = Moto::start().await?;
        let key = moto.create_key("us-east-1").await?;
        let (prefix, _) = key
            .split_once(":key/")
            .ok_or_else(|| anyhow::anyhow!("{key} is not a key ARN"))?;
        let credentials = AwsCredentials {
            access_key_id: "AKIACONFORMANCE".into(),
            secret_access_key: SecretBytes::copy_from(b"conformance-secret-key"),
            session_token: SecretBytes::copy_from(b"conformance-session"),
            expiration: SystemTime::now() + Duration::from_secs(3600),
            account_id: None,
        };
        let (tx, rx) = watch::channel(Some(credentials));
        let resolver = KmsEnvelopeResolver::new(
            KmsConfig {
                key_arn_allowlist: vec![format!("{prefix}:key/")],
                endpoint: Some(moto.endpoint()),
                ..KmsConfig::default()
            },
            Arc::new(rx),
        )?;
        Ok(Self {
            moto,
            key,
            resolver,
            _credentials: tx,
        })
    }
}

impl Subject for Kms {
    fn name(&self) -> &'static str {
        "kms_envelope"
    }
    fn resolver(&self) -> &dyn EnvelopeResolver {
        &self.resolver
    }
    fn seal<'a>(
        &'a self,
        logical_path: &'a str,
        context: &'a EncryptionContext,
        plaintext: &'a [u8],
    ) -> BoxFuture<'a, anyhow::Result<EnvelopeRow>> {
        Box::pin(async move {
            let options = SealOptions {
                endpoint: Some(self.moto.endpoint()),
                sdk_config: Some(self.moto.sdk_config("us-east-1")),
            };
            Ok(seal_with_kms(&options, &self.key, logical_path, context, plaintext).await?)
        })
    }
    fn stop_upstream(&mut self) -> anyhow::Result<bool> {
        self.moto.stop()?;
        Ok(true)
    }
    fn peer_logs(&self) -> String {
        self.moto.logs()
    }
    fn expected(&self) -> Expected {
        // KMS authenticates the context (InvalidCiphertextException); a moved row still
        // binds its old path, which the registry refuses before any call.
        Expected {
            wrong_context: Some(Class::Undecryptable),
            moved: Some(Class::Refused),
            relabelled: Some(Class::Undecryptable),
            data_key_above: Some(MAX_DIRECT_PLAINTEXT),
            has_ciphertext: true,
            garbage: Ok(Class::Undecryptable),
        }
    }
}

/// An OpenBao with a derived transit key, the suite's policy, and a token holding only
/// that policy (the workload's view; sealing uses the root token, as an operator would).
pub struct Bao {
    bao: OpenBao,
    client: VaultClient,
    root: SecretBytes,
    workload: Arc<StaticToken>,
    allowlist: Arc<VaultAllowlist>,
}

impl Bao {
    pub fn start() -> anyhow::Result<Self> {
        let bao = OpenBao::start()?;
        let admin = bao.admin();
        admin.enable_transit("transit")?;
        admin.create_transit_key("transit", TRANSIT_KEY, true)?;
        admin.write_policy("conformance", POLICY)?;
        let token = admin.cli(&["token", "create", "-policy=conformance", "-field=token"])?;
        let client = VaultClientConfig {
            addr: bao.addr(),
            ca_file: bao.ca_file(),
            namespace: None,
            timeout: Duration::from_secs(5),
        }
        .build()?;
        let rule = |mount: &str| VaultAllowRule {
            namespace: None,
            mount: mount.to_owned(),
            paths: vec!["*".to_owned()],
        };
        let allowlist = Arc::new(VaultAllowlist::new(vec![rule("secret"), rule("transit")])?);
        Ok(Self {
            root: SecretBytes::copy_from(bao.root_token().as_bytes()),
            workload: Arc::new(StaticToken(SecretBytes::copy_from(token.trim().as_bytes()))),
            bao,
            client,
            allowlist,
        })
    }
}

/// `vault_transit` with the derived key.
pub struct Transit {
    bao: Bao,
    resolver: VaultTransitResolver,
}

impl Transit {
    pub fn start() -> anyhow::Result<Self> {
        let bao = Bao::start()?;
        let resolver = VaultTransitResolver::new(
            bao.client.clone(),
            bao.workload.clone(),
            bao.allowlist.clone(),
        );
        Ok(Self { bao, resolver })
    }
}

impl Subject for Transit {
    fn name(&self) -> &'static str {
        "vault_transit"
    }
    fn resolver(&self) -> &dyn EnvelopeResolver {
        &self.resolver
    }
    fn seal<'a>(
        &'a self,
        logical_path: &'a str,
        context: &'a EncryptionContext,
        plaintext: &'a [u8],
    ) -> BoxFuture<'a, anyhow::Result<EnvelopeRow>> {
        Box::pin(async move {
            let (client, root) = (&self.bao.client, &self.bao.root);
            let row = seal_with_transit(
                client,
                root,
                "transit",
                TRANSIT_KEY,
                logical_path,
                context,
                plaintext,
            )
            .await?;
            Ok(row)
        })
    }
    fn stop_upstream(&mut self) -> anyhow::Result<bool> {
        self.bao.bao.stop()?;
        Ok(true)
    }
    fn peer_logs(&self) -> String {
        self.bao.bao.logs()
    }
    fn expected(&self) -> Expected {
        // The derived key authenticates the context; the moved row is refused by its
        // binding, as for KMS.
        Expected {
            wrong_context: Some(Class::Undecryptable),
            moved: Some(Class::Refused),
            relabelled: Some(Class::Undecryptable),
            data_key_above: Some(TRANSIT_DIRECT_MAX),
            has_ciphertext: true,
            garbage: Ok(Class::Undecryptable),
        }
    }
}

/// `vault_delegate` (KV v2): "sealing" writes the secret with the root token and
/// returns a row naming it.
pub struct Kv {
    bao: Bao,
    resolver: VaultKvResolver,
}

impl Kv {
    pub fn start() -> anyhow::Result<Self> {
        let bao = Bao::start()?;
        let resolver = VaultKvResolver::new(
            bao.client.clone(),
            bao.workload.clone(),
            KvVersion::V2,
            bao.allowlist.clone(),
        );
        Ok(Self { bao, resolver })
    }
}

impl Subject for Kv {
    fn name(&self) -> &'static str {
        "vault_delegate"
    }
    fn resolver(&self) -> &dyn EnvelopeResolver {
        &self.resolver
    }
    fn seal<'a>(
        &'a self,
        logical_path: &'a str,
        _context: &'a EncryptionContext,
        plaintext: &'a [u8],
    ) -> BoxFuture<'a, anyhow::Result<EnvelopeRow>> {
        Box::pin(async move {
            let name = format!("conformance-{}", logical_path.replace('/', "-"));
            let value = std::str::from_utf8(plaintext)?;
            self.bao
                .bao
                .admin()
                .kv_put("secret", &name, &[("value", value)])?;
            Ok(EnvelopeRow {
                logical_path: logical_path.to_owned(),
                provider: "vault_delegate".into(),
                key_id: format!("secret/{name}"),
                field: Some("value".into()),
                ..EnvelopeRow::default()
            })
        })
    }
    fn stop_upstream(&mut self) -> anyhow::Result<bool> {
        self.bao.bao.stop()?;
        Ok(true)
    }
    fn peer_logs(&self) -> String {
        self.bao.bao.logs()
    }
    fn expected(&self) -> Expected {
        // A KV row is a reference, not a ciphertext: no context is involved, and a row
        // under another name serves the same secret by design (what guards it is the
        // Vault policy and `[[vault.allow]]`). Nothing is sealed, so there is no data-key
        // layer and no ciphertext for the size limit.
        Expected {
            wrong_context: None,
            moved: None,
            relabelled: None,
            data_key_above: None,
            has_ciphertext: false,
            garbage: Err("a KV row names a secret by path; it carries no ciphertext to garble"),
        }
    }
}
