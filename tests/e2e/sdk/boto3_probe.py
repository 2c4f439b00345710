"""An unmodified boto3 client: resolves credentials through its default chain (whatever
the environment points it at: a credential_process profile, the container-credentials
endpoint or IMDS), calls KMS ListKeys at the endpoint given as argv[1], and prints the
access key id it signed with and, on a second line, the account id the credentials
carried ("None" without one). With an STS endpoint as argv[2] it also prints the
provider that supplied the credentials and, after calling GetCallerIdentity there, the
caller ARN. Used by the AWS e2e suites to prove Steeple's credentials reach real SDKs.
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
    if len(sys.argv) > 2:
        sts = session.client("sts", endpoint_url=sys.argv[2])
        print(credentials.method)
        print(sts.get_caller_identity()["Arn"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
