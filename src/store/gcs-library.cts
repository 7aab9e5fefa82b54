/**
 * The Google Cloud Storage client library, as its CommonJS build (gcs.ts
 * explains why that build). A CommonJS module of its own, because then both
 * Node.js and the bundler of the start-up snapshot resolve the package's
 * `require` build, with no `createRequire` call that a bundler cannot follow.
 */

import storage = require('@google-cloud/storage');

export = storage;
