#!/usr/bin/env bash
# The main job: installs what is missing, builds bucketmount, starts a local
# object server and OIDC issuer on 127.0.0.1, seeds a bucket, mounts it with
# web-identity credentials only, runs the Python sandbox check against /data,
# then unmounts and stops everything. Needs root (FUSE mount, mount namespace).
#
# Usage: test/demo.sh [s3|gcs] [--keep]
#   s3 is the default. --keep leaves the mount, the servers and the daemon's
#   metrics endpoint running until Ctrl-C, for trying things by hand, then
#   prints the daemon's log.
set -euo pipefail

# Usage needs nothing installed, so it is printed before the set-up.
for argument in "$@"; do
  case $argument in
    -h|--help) sed -n '7,10p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
  esac
done

repository="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repository"

test/env/install.sh

export PATH="$repository/node_modules/.bin:$PATH"
npm run --silent build

exec node dist/test/demo/main.js "$@"
