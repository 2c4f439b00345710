"""An unmodified boto3 client: resolves credentials through its default chain (whatever
the environment points it at: a credential_process profile or the container-credentials
endpoint), calls KMS ListKeys at the endpoint given as argv[1], and prints the access key
id it signed with and, on a second line, the account id the credentials carried ("None"
without one). Used by the AWS e2e suite to prove Steeple's credentials reach real SDKs.
"""

import sys

import boto3


def main() -> int:
    endpoint = sys.argv[1]
    session = boto3.Session(region_name="us-east-1")
    credentials = session.get_credentials()
    if credentials is None:
        print("no credentials resolved", file=sys.stderr)
        return 1
    frozen = credentials.get_frozen_credentials()
    kms = session.client("kms", endpoint_url=endpoint)
    kms.list_keys()
    print(frozen.access_key)
    print(getattr(frozen, "account_id", None))
    return 0


if __name__ == "__main__":
    sys.exit(main())
