# syntax=docker/dockerfile:1
#
# Image of the bucketmount daemon, run as a sidecar that mounts a bucket at
# /data (see deploy/ and docs/deployment.md).
#
# Two stages: the builder compiles the C addon against libfuse3 and the
# TypeScript, then drops the development dependencies; the runtime stage
# holds only Node.js, the fuse3 user-space tools and the built application.

ARG NODE_IMAGE_TAG=24-bookworm

# ---------------------------------------------------------------- builder
FROM node:${NODE_IMAGE_TAG} AS builder

# libfuse3-dev and pkg-config for the addon's compiler flags; python3, make
# and g++ for node-gyp. Versions come from the pinned Debian release of the
# base image, so they are not repeated here.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends fuse3 libfuse3-dev python3 make g++ pkg-config \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app

# Dependencies first, so that a source change does not invalidate this layer.
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund

COPY tsconfig.json ./
COPY native/binding.gyp native/
COPY native/src native/src
COPY src src

# node-gyp finds the headers of the Node.js that runs it under
# /usr/local/include/node in this image, so nothing is downloaded; the
# nodedir setting makes that explicit. Only src/ is copied in, so the
# TypeScript build leaves tests and benchmarks out of the image.
ENV npm_config_nodedir=/usr/local
RUN npm run build:native \
    && npm run build:ts \
    && npm run build:snapshot

# Keep only the production dependencies for the runtime stage.
RUN npm prune --omit=dev --no-audit --no-fund

# ---------------------------------------------------------------- runtime
FROM node:${NODE_IMAGE_TAG}-slim AS runtime

# fuse3 brings libfuse3 and the setuid fusermount3 helper; tini forwards
# SIGTERM to the daemon and reaps the fusermount3 children it starts.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends fuse3 tini \
    && rm -rf /var/lib/apt/lists/* \
    && echo user_allow_other >> /etc/fuse.conf

# The daemon runs as an unprivileged user by default. Mounting through
# /dev/fuse then needs one of:
#   - CAP_SYS_ADMIN, or the setuid fusermount3 from fuse3 (the container
#     must allow privilege escalation for the setuid bit to work), plus
#     access to /dev/fuse; or
#   - an already-opened /dev/fuse descriptor handed over by a privileged
#     helper, with the mount point given as /dev/fd/N, so the daemon
#     needs no privilege at all.
# user_allow_other above lets a non-root daemon use --allow-other, so that
# a sandbox container running as another user can read the mount.
RUN groupadd --gid 65532 bucketmount \
    && useradd --uid 65532 --gid 65532 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin bucketmount

WORKDIR /app

# findRepositoryRoot() in src/fuse/native.ts locates the addon through
# package.json and native/ in the same directory, so both are copied.
COPY --from=builder /app/package.json /app/package.json
COPY --from=builder /app/node_modules /app/node_modules
COPY --from=builder /app/dist /app/dist
COPY --from=builder /app/src/startup/bucketmount /app/src/startup/bucketmount
COPY --from=builder /app/native/build/Release/bucketmount_fuse.node /app/native/build/Release/bucketmount_fuse.node

# The start-up snapshot must be made by the Node.js binary that runs it, so
# it is made again here from the builder's bundle (esbuild is not needed for
# that step). The launcher checks the binary's stamp and otherwise loads the
# modules, which is slower but works.
RUN node /app/dist/src/startup/build-snapshot.js --snapshot-only

# Node's compile cache, filled here because the pod's root filesystem is
# read-only and its home directory does not exist: a cache written at run
# time would be lost, and every start would compile the SDKs again (about
# 35 ms of CPU). Importing the modules compiles them; nothing is mounted.
# A start from the snapshot does not use the cache, but the Google Cloud
# libraries and a fallback start from the modules do.
ENV NODE_COMPILE_CACHE=/app/compile-cache
RUN node --input-type=module -e "await Promise.all(['cli/mount.js', 'cli/check.js', 'store/s3.js', 'store/gcs.js', 'credentials/aws-web-identity.js', 'credentials/gcp-wif.js', 'fs/filesystem.js', 'fuse/session.js', 'observability/metrics.js'].map((path) => import('/app/dist/src/' + path)))" \
    && test -n "$(ls -A /app/compile-cache)"

USER 65532:65532

# The metrics and health endpoint is on by default in the image, on
# loopback; deploy/ binds it to the pod IP so that kubelet can probe it.
ENV BUCKETMOUNT_METRICS_PORT=9464 \
    NODE_ENV=production

EXPOSE 9464

# Healthy while the FUSE session is mounted and the event loop answers
# (/healthz). The image has no curl, so Node.js itself sends the request.
# Kubernetes ignores this instruction; the probes in deploy/ call /healthz
# and /readyz directly.
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["node", "-e", "fetch('http://127.0.0.1:' + process.env.BUCKETMOUNT_METRICS_PORT + '/healthz').then((response) => process.exit(response.ok ? 0 : 1), () => process.exit(1))"]

# Arguments: the bucket URL and the mount point, then options, for example
#   s3://BUCKET/PREFIX /data --role-arn ARN
ENTRYPOINT ["/usr/bin/tini", "--", "/app/src/startup/bucketmount", "mount"]
