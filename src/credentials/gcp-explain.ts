/**
 * Plain-language explanations of GCP Workload Identity Federation failures,
 * each naming the value or the IAM binding to change and the gcloud command
 * that changes it.
 *
 * The STS rejects every token problem with `invalid_grant`, and the only
 * structured difference between an untrusted issuer, a wrong audience and an
 * expired token is the prose of `error_description`. These explanations are
 * therefore chosen from what this process knows for certain: the claims of
 * the token it read from the file, the audience it sent, and the clock. The
 * STS description is quoted after the explanation, with the token removed.
 */

import type { TokenClaims } from './token-file.js';

export interface WorkloadIdentityProvider {
  /** `projects/N/locations/global/workloadIdentityPools/POOL/providers/PROVIDER`. */
  name: string;
  projectNumber: string;
  pool: string;
  provider: string;
}

const PROVIDER_PATTERN = /^projects\/([^/]+)\/locations\/([^/]+)\/workloadIdentityPools\/([^/]+)\/providers\/([^/]+)$/;

/** Parses a provider resource name, or an STS audience `//iam.googleapis.com/<name>`; returns undefined when it is neither. */
export function parseProviderName(value: string): WorkloadIdentityProvider | undefined {
  const name = value.replace(/^(?:https:)?\/\/iam\.googleapis\.com\//, '');
  const match = PROVIDER_PATTERN.exec(name);
  if (match === null || match[2] !== 'global') return undefined;
  return { name, projectNumber: match[1]!, pool: match[3]!, provider: match[4]! };
}

/** Returns the `principal://` member of one federated subject. */
export function principalMember(provider: WorkloadIdentityProvider, subject: string): string {
  return `principal://iam.googleapis.com/projects/${provider.projectNumber}/locations/global/workloadIdentityPools/${provider.pool}/subject/${subject}`;
}

/** Returns the `principalSet://` member of every identity of the pool. */
export function poolPrincipalSetMember(provider: WorkloadIdentityProvider): string {
  return `principalSet://iam.googleapis.com/projects/${provider.projectNumber}/locations/global/workloadIdentityPools/${provider.pool}/*`;
}

/** Returns the project id of a service account email `NAME@PROJECT.iam.gserviceaccount.com`, if it has that form. */
function projectOfServiceAccount(serviceAccount: string): string | undefined {
  return /^[^@]+@([^.]+)\.iam\.gserviceaccount\.com$/.exec(serviceAccount)?.[1];
}

function providerFlags(provider: WorkloadIdentityProvider): string {
  return `${provider.provider} --project=${provider.projectNumber} --location=global --workload-identity-pool=${provider.pool}`;
}

/** Returns the audiences a provider accepts when no allowed audiences are configured on it. */
export function defaultProviderAudiences(provider: WorkloadIdentityProvider): string[] {
  return [`//iam.googleapis.com/${provider.name}`, `https://iam.googleapis.com/${provider.name}`];
}

export function explainTokenExpired(claims: TokenClaims, path: string, now: Date): string {
  return (
    `the token in ${path} expired at ${claims.expiresAt?.toISOString() ?? '(no exp claim)'} (now ${now.toISOString()}), so STS rejects it; ` +
    'kubelet renews projected tokens well before expiry, so check that the token volume is still mounted and that this machine\'s clock is synchronized'
  );
}

export function explainAudienceMismatch(claims: TokenClaims, provider: WorkloadIdentityProvider): string {
  const tokenAudience = claims.audience.length === 0 ? '(none)' : claims.audience.map((value) => `"${value}"`).join(', ');
  const expected = `//iam.googleapis.com/${provider.name}`;
  return (
    `the token has audience ${tokenAudience}, but provider ${provider.name} expects "${expected}" ` +
    '(or one of the allowed audiences configured on the provider). ' +
    `Either set the projected token's audience to ${expected} (serviceAccountToken.audience in the pod's projected volume), ` +
    `or allow the token's audience on the provider: gcloud iam workload-identity-pools providers update-oidc ${providerFlags(provider)} ` +
    `--allowed-audiences=${claims.audience[0] ?? 'AUDIENCE'}`
  );
}

export function explainUntrustedIssuer(claims: TokenClaims, provider: WorkloadIdentityProvider): string {
  const issuer = claims.issuer ?? '(none)';
  return (
    `STS did not accept the token issued by "${issuer}": provider ${provider.name} must trust exactly this issuer URL ` +
    'and be able to verify the token signature with its JWKS (fetched from the issuer, or uploaded to the provider when the issuer is not public). ' +
    `Set the issuer with: gcloud iam workload-identity-pools providers update-oidc ${providerFlags(provider)} --issuer-uri=${issuer}` +
    ' (add --jwk-json-path=JWKS_FILE for a cluster whose issuer is not reachable from the internet)'
  );
}

export function explainUnknownProvider(provider: WorkloadIdentityProvider): string {
  return (
    `STS does not know the workload identity provider ${provider.name}, or it is disabled or deleted; ` +
    'check --gcp-wif-provider: it needs the project number (not the project id), the pool id and the provider id, ' +
    `as listed by: gcloud iam workload-identity-pools providers list --project=${provider.projectNumber} --location=global --workload-identity-pool=${provider.pool}`
  );
}

export function explainMissingWorkloadIdentityUser(provider: WorkloadIdentityProvider, serviceAccount: string, subject: string | undefined): string {
  const project = projectOfServiceAccount(serviceAccount);
  const principal = subject === undefined ? undefined : principalMember(provider, subject);
  const principalSet = poolPrincipalSetMember(provider);
  const member = principal ?? principalSet;
  return (
    `the federated identity ${principal ?? `of pool ${provider.pool}`} may not impersonate service account ${serviceAccount}: ` +
    'it needs roles/iam.workloadIdentityUser on the service account (or the service account does not exist). ' +
    `Bind it with: gcloud iam service-accounts add-iam-policy-binding ${serviceAccount}${project === undefined ? '' : ` --project=${project}`} ` +
    `--role=roles/iam.workloadIdentityUser --member="${member}"` +
    (principal === undefined ? '' : `; to allow every identity of the pool, use --member="${principalSet}"`)
  );
}

export function explainLifetimeRejected(serviceAccount: string, lifetimeSeconds: number | undefined): string {
  return (
    `generateAccessToken for ${serviceAccount} rejected the requested token lifetime${lifetimeSeconds === undefined ? '' : ` of ${lifetimeSeconds} s`}: ` +
    'lifetimes above 3600 s need the organization policy constraints/iam.allowServiceAccountCredentialLifetimeExtension to list the service account; ' +
    'lower --token-lifetime to 3600 or extend the policy'
  );
}

/** Explains a storage 403: the impersonated service account lacks a role on the bucket. */
export function explainBucketAccessDenied(serviceAccount: string, bucket: string, write: boolean): string {
  const role = write ? 'roles/storage.objectAdmin' : 'roles/storage.objectViewer';
  const need = write ? 'which reading and writing objects need' : 'which reading objects needs (writing needs roles/storage.objectAdmin)';
  return (
    `service account ${serviceAccount} lacks ${role} on gs://${bucket}, ${need}. ` +
    `Grant it with: gcloud storage buckets add-iam-policy-binding gs://${bucket} --member=serviceAccount:${serviceAccount} --role=${role}`
  );
}
