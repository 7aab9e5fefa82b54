#!/usr/bin/env sh
# Builds the addon with node-gyp unless the built file is newer than every
# source, so repeated test and demo runs skip the 10 to 25 s compile.
set -eu
cd "$(dirname "$0")"

built=build/Release/bucketmount_fuse.node
if [ -f "$built" ] && [ -z "$(find binding.gyp src -newer "$built" -print -quit)" ]; then
  exit 0
fi

exec node-gyp rebuild
