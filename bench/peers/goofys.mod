// Scratch module that builds goofys for the benchmark: test/env/install.sh
// --bench copies this file to go.mod in a temporary directory. The goofys
// tag has no go.mod of its own, so the versions below pin its dependencies
// to those of the go.mod that the goofys repository added in May 2020, one
// month after the tag, including its replacement of jacobsa/fuse by the
// author's fork. The AWS SDK and go-autorest pins of that file are pseudo-
// versions that the Go module proxy does not serve, so those take the
// releases that the repository's 2021 go.mod names.
module bucketmount.local/bench/goofys

go 1.21

require (
	github.com/kahing/goofys v0.24.0
	github.com/Azure/azure-pipeline-go v0.2.2
	github.com/Azure/azure-sdk-for-go v32.1.0+incompatible
	github.com/Azure/azure-storage-blob-go v0.7.1-0.20190724222048-33c102d4ffd2
	github.com/Azure/go-autorest/autorest v0.11.18
	github.com/Azure/go-autorest/autorest/adal v0.9.13
	github.com/Azure/go-autorest/autorest/azure/auth v0.5.7
	github.com/Azure/go-autorest/autorest/azure/cli v0.4.2
	github.com/Azure/go-autorest/autorest/to v0.4.0
	github.com/Azure/go-autorest/autorest/validation v0.3.1
	github.com/aws/aws-sdk-go v1.38.7
	github.com/google/uuid v1.1.1
	github.com/jacobsa/fuse v0.0.0-20200423191118-1d001802f70a
	github.com/kardianos/osext v0.0.0-20190222173326-2bc1f35cddc0
	github.com/mitchellh/go-homedir v1.1.0
	github.com/satori/go.uuid v1.2.1-0.20181028125025-b2ce2384e17b
	github.com/sevlyar/go-daemon v0.1.5
	github.com/shirou/gopsutil v2.20.4+incompatible
	github.com/sirupsen/logrus v1.6.0
	github.com/urfave/cli v1.22.4
	golang.org/x/sys v0.0.0-20200511232937-7e40ca221e25
	gopkg.in/ini.v1 v1.56.0
)

replace github.com/jacobsa/fuse v0.0.0-20200423191118-1d001802f70a => github.com/kahing/fusego v0.0.0-20200327063725-ca77844c7bcc
