// Command go_imds_probe is an unmodified aws-sdk-go-v2 client: it resolves credentials
// through the SDK's default chain (whatever the environment points it at; the IMDS
// suite sets AWS_EC2_METADATA_SERVICE_ENDPOINT and nothing else), calls STS
// GetCallerIdentity at the endpoint given as the only argument, and prints, one per line:
// the access key id it signed with, the account id the credentials carried ("None"
// without one), the provider that supplied them, and the caller ARN STS answered with.
// Used by the AWS e2e suites to prove Steeple's credentials reach a Go SDK.
package main

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/sts"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: go_imds_probe STS_ENDPOINT")
		os.Exit(2)
	}
	if err := run(os.Args[1]); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

func run(stsEndpoint string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cfg, err := config.LoadDefaultConfig(ctx, config.WithRegion("us-east-1"))
	if err != nil {
		return fmt.Errorf("loading the SDK config: %w", err)
	}
	creds, err := cfg.Credentials.Retrieve(ctx)
	if err != nil {
		return fmt.Errorf("resolving credentials: %w", err)
	}
	client := sts.NewFromConfig(cfg, func(o *sts.Options) {
		o.BaseEndpoint = aws.String(stsEndpoint)
	})
	identity, err := client.GetCallerIdentity(ctx, &sts.GetCallerIdentityInput{})
	if err != nil {
		return fmt.Errorf("GetCallerIdentity: %w", err)
	}
	account := creds.AccountID
	if account == "" {
		account = "None"
	}
	fmt.Println(creds.AccessKeyID)
	fmt.Println(account)
	fmt.Println(creds.Source)
	fmt.Println(aws.ToString(identity.Arn))
	return nil
}
