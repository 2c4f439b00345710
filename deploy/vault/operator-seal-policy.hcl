# Policy for the operator or pipeline that runs
#   steeple envelope seal --provider vault_transit --key-id payments-api
# with its own VAULT_TOKEN (never the agent's): encrypt up to 32 KiB directly, or get a
# data key for larger payloads. The agent's policy (policy.hcl) has neither.
path "transit/encrypt/payments-api" {
  capabilities = ["update"]
}
path "transit/datakey/plaintext/payments-api" {
  capabilities = ["update"]
}
