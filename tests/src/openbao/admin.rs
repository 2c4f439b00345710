//! Admin steps against a running [`OpenBao`], done with its own CLI as the root token:
//! namespaces, KV mounts and writes, transit keys, policies, JWT auth and roles, token
//! revocation.

use std::process::{Command, Output, Stdio};

use anyhow::Context as _;

use super::OpenBao;

/// Admin steps against one namespace, as the root token, through the `bao` CLI.
#[derive(Debug)]
pub struct Admin<'a> {
    pub(super) bao: &'a OpenBao,
    pub(super) namespace: Option<String>,
}

/// Where the JWT auth method gets its keys.
#[derive(Debug, Clone)]
pub enum JwtKeys {
    /// `jwt_validation_pubkeys`: PEM public keys.
    Pubkeys(Vec<String>),
    /// `jwks_url`, e.g. SPIRE's OIDC discovery provider's `/keys`.
    JwksUrl(String),
}

/// A JWT auth role (`role_type=jwt`, `user_claim=sub`).
#[derive(Debug, Clone, Default)]
pub struct JwtRole {
    /// The role name.
    pub name: String,
    /// `bound_audiences`.
    pub bound_audiences: Vec<String>,
    /// `bound_subject` (the SPIFFE ID).
    pub bound_subject: String,
    /// `token_ttl`, Go syntax (`"30s"`).
    pub token_ttl: String,
    /// `token_max_ttl`.
    pub token_max_ttl: String,
    /// `token_policies`.
    pub policies: Vec<String>,
}

impl Admin<'_> {
    /// Runs `bao <args>` and returns its stdout; a non-zero exit is an error with its
    /// output.
    pub fn cli(&self, args: &[&str]) -> anyhow::Result<String> {
        let output = self.run(args)?;
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        anyhow::ensure!(
            output.status.success(),
            "`bao {}` failed ({}):\n{stdout}{}",
            args.first().copied().unwrap_or_default(),
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        Ok(stdout)
    }

    /// `bao write <path> @body.json` with `body` as the request data.
    pub fn write_json(&self, path: &str, body: &serde_json::Value) -> anyhow::Result<String> {
        let file = self.bao.dir.path().join("request.json");
        std::fs::write(&file, serde_json::to_vec(body)?).context("writing request body")?;
        self.cli(&[
            "write",
            "-format=json",
            path,
            &format!("@{}", file.display()),
        ])
    }

    /// Creates child namespace `name` here.
    pub fn create_namespace(&self, name: &str) -> anyhow::Result<()> {
        self.cli(&["namespace", "create", name]).map(drop)
    }

    /// Mounts a KV engine of `version` (1 or 2) at `mount`.
    pub fn enable_kv(&self, mount: &str, version: u8) -> anyhow::Result<()> {
        let kind = if version == 1 { "kv" } else { "kv-v2" };
        self.cli(&["secrets", "enable", &format!("-path={mount}"), kind])
            .map(drop)
    }

    /// Writes `fields` at `path` of KV mount `mount` (v1 or v2, as `bao kv` detects).
    pub fn kv_put(&self, mount: &str, path: &str, fields: &[(&str, &str)]) -> anyhow::Result<()> {
        let mut args = vec![
            "kv".to_owned(),
            "put".to_owned(),
            format!("-mount={mount}"),
            path.to_owned(),
        ];
        args.extend(fields.iter().map(|(k, v)| format!("{k}={v}")));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.cli(&args).map(drop)
    }

    /// Mounts transit at `mount`.
    pub fn enable_transit(&self, mount: &str) -> anyhow::Result<()> {
        self.cli(&["secrets", "enable", &format!("-path={mount}"), "transit"])
            .map(drop)
    }

    /// Creates transit key `name` (aes256-gcm96), `derived` if asked.
    pub fn create_transit_key(&self, mount: &str, name: &str, derived: bool) -> anyhow::Result<()> {
        let body = serde_json::json!({ "derived": derived });
        self.write_json(&format!("{mount}/keys/{name}"), &body)
            .map(drop)
    }

    /// Rotates transit key `name` (old versions keep decrypting).
    pub fn rotate_transit_key(&self, mount: &str, name: &str) -> anyhow::Result<()> {
        self.cli(&["write", "-f", &format!("{mount}/keys/{name}/rotate")])
            .map(drop)
    }

    /// Writes ACL policy `name`.
    pub fn write_policy(&self, name: &str, hcl: &str) -> anyhow::Result<()> {
        let file = self.bao.dir.path().join(format!("policy-{name}.hcl"));
        std::fs::write(&file, hcl).context("writing policy")?;
        self.cli(&["policy", "write", name, &file.display().to_string()])
            .map(drop)
    }

    /// Enables JWT auth at `mount`, validating with `keys`, requiring `bound_issuer`.
    pub fn enable_jwt_auth(
        &self,
        mount: &str,
        keys: &JwtKeys,
        bound_issuer: Option<&str>,
    ) -> anyhow::Result<()> {
        self.cli(&["auth", "enable", &format!("-path={mount}"), "jwt"])?;
        let mut config = match keys {
            JwtKeys::Pubkeys(pems) => serde_json::json!({ "jwt_validation_pubkeys": pems }),
            JwtKeys::JwksUrl(url) => serde_json::json!({ "jwks_url": url }),
        };
        if let Some(issuer) = bound_issuer {
            config["bound_issuer"] = issuer.into();
        }
        self.write_json(&format!("auth/{mount}/config"), &config)
            .map(drop)
    }

    /// Writes `role` at JWT auth `mount`.
    pub fn write_jwt_role(&self, mount: &str, role: &JwtRole) -> anyhow::Result<()> {
        let body = serde_json::json!({
            "role_type": "jwt",
            "user_claim": "sub",
            "bound_audiences": role.bound_audiences,
            "bound_subject": role.bound_subject,
            "token_ttl": role.token_ttl,
            "token_max_ttl": role.token_max_ttl,
            "token_policies": role.policies,
        });
        self.write_json(&format!("auth/{mount}/role/{}", role.name), &body)
            .map(drop)
    }

    /// Revokes the token with `accessor` (out of band, as an operator would).
    pub fn revoke_accessor(&self, accessor: &str) -> anyhow::Result<()> {
        self.cli(&["token", "revoke", "-accessor", accessor])
            .map(drop)
    }

    /// Runs `bao <args>` with the address, root token, namespace and CA set; any exit code.
    pub(super) fn run(&self, args: &[&str]) -> anyhow::Result<Output> {
        let bao = self.bao;
        let mut command = Command::new(&bao.bin);
        command
            .args(args)
            .env("BAO_ADDR", bao.addr())
            .env("BAO_TOKEN", &bao.root_token)
            .env("BAO_CLIENT_TIMEOUT", "20s")
            .env_remove("BAO_NAMESPACE")
            .env_remove("VAULT_NAMESPACE")
            .stdin(Stdio::null());
        if let Some(namespace) = &self.namespace {
            command.env("BAO_NAMESPACE", namespace);
        }
        if let Some(ca) = bao.ca_file() {
            command.env("BAO_CACERT", ca);
        }
        command.output().with_context(|| {
            format!(
                "running {} {}",
                bao.bin.display(),
                args.first().copied().unwrap_or_default()
            )
        })
    }
}
