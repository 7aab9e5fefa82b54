/**
 * Entry of the start-up snapshot for GCS mounts: the modules imported here
 * and by snapshot-main.ts, with google-auth-library and the Cloud Storage
 * client library, are loaded in the snapshot.
 */

import '../credentials/gcp-wif.js';
import '../store/gcs.js';
import { registerSnapshotMain } from './snapshot-main.js';

registerSnapshotMain();
