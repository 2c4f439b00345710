# Policy "steeple-payments-api": what Steeple reads for the workload
# spiffe://example.org/payments-api, and nothing else. Attach it through the JWT role
# (jwt-role.json, token_policies). Replace "payments-api" with your workload's paths.

# vault_delegate envelopes (KV v2): GET secret/data/<path>[?version=N]. Only data/ is
# read; metadata/ is never touched. For a KV v1 mount the path has no data/ segment:
#   path "kv/payments-api/*" { capabilities = ["read"] }
path "secret/data/payments-api/*" {
  capabilities = ["read"]
}

# vault_transit envelopes: POST transit/decrypt/<key> (a ciphertext, or the wrapped data
# key of the data-key layer). Never encrypt, datakey, rewrap or keys/.
path "transit/decrypt/payments-api" {
  capabilities = ["update"]
}

# Token upkeep by the agent itself: renew ahead of expiry, check the token when a secret
# path answers 403 (a token revoked out of band is replaced at once; a valid one means the
# 403 is this policy's answer), revoke on shutdown (vault.revoke_on_shutdown). The
# "default" policy grants these too; they are listed for roles with
# token_no_default_policy = true.
path "auth/token/lookup-self" {
  capabilities = ["read"]
}
path "auth/token/renew-self" {
  capabilities = ["update"]
}
path "auth/token/revoke-self" {
  capabilities = ["update"]
}
