// A real OpenID Connect provider for hark's tests: panva/node-oidc-provider on plain HTTP on loopback.
//
// Environment:
//   OIDC_PORT            port to listen on (127.0.0.1); the issuer is http://127.0.0.1:<port>
//   OIDC_CLIENT_ID       the one confidential client
//   OIDC_CLIENT_SECRET
//   OIDC_REDIRECT_URI    its redirect URI, or a comma-separated list of them
//   OIDC_POST_LOGOUT_REDIRECT_URI  optional, comma-separated, for RP-initiated logout
//   OIDC_USERS           JSON map: account id -> claims, e.g.
//                        {"alice": {"email": "alice@example.org", "name": "Alice", "groups": ["ops"], "sites": ["north"]}}
//
// Scopes: openid, profile, email, plus `groups` (claim `groups`) and `sites` (claim `sites`). Every granted claim is put
// in the ID token itself (conformIdTokenClaims: false), not only in the userinfo response.
//
// Logins use the provider's built-in development interactions: GET /interaction/<uid> serves an HTML form that POSTs
// prompt=login&login=<account id>&password=<anything> to the same URL, then a consent form (prompt=consent).
// Any account id logs in; unknown ones get only `sub`.

import * as crypto from 'node:crypto';
import process from 'node:process';

import Provider from 'oidc-provider';

function fail(message) {
  process.stderr.write(`oidc provider: ${message}\n`);
  process.exit(2);
}

function required(name) {
  const value = process.env[name];
  if (!value) fail(`environment variable ${name} is required`);
  return value;
}

function list(value) {
  return (value || '').split(',').map((item) => item.trim()).filter(Boolean);
}

const port = Number.parseInt(required('OIDC_PORT'), 10);
if (!Number.isInteger(port) || port <= 0 || port > 65535) fail(`bad OIDC_PORT ${process.env.OIDC_PORT}`);
const host = '127.0.0.1';
const issuer = `http://${host}:${port}`;

let users;
try {
  users = JSON.parse(process.env.OIDC_USERS || '{}');
} catch (err) {
  fail(`OIDC_USERS is not valid JSON: ${err.message}`);
}
if (users === null || typeof users !== 'object' || Array.isArray(users)) fail('OIDC_USERS must be a JSON object');

const redirectUris = list(required('OIDC_REDIRECT_URI'));
if (!redirectUris.length) fail('OIDC_REDIRECT_URI has no URI');

const client = {
  client_id: required('OIDC_CLIENT_ID'),
  client_secret: required('OIDC_CLIENT_SECRET'),
  redirect_uris: redirectUris,
  grant_types: ['authorization_code'],
  response_types: ['code'],
  // The provider also accepts client_secret_post from a client registered with client_secret_basic.
  token_endpoint_auth_method: 'client_secret_basic',
  id_token_signed_response_alg: 'RS256',
};
const postLogout = list(process.env.OIDC_POST_LOGOUT_REDIRECT_URI);
if (postLogout.length) client.post_logout_redirect_uris = postLogout;

// A fresh RS256 signing key for this run (no development keystore).
const { privateKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
const signingKey = { ...privateKey.export({ format: 'jwk' }), kid: crypto.randomUUID(), alg: 'RS256', use: 'sig' };

const configuration = {
  clients: [client],
  jwks: { keys: [signingKey] },
  cookies: { keys: [crypto.randomBytes(32).toString('hex')] },
  claims: {
    openid: ['sub'],
    profile: ['name', 'given_name', 'family_name', 'preferred_username', 'locale', 'zoneinfo', 'updated_at'],
    email: ['email', 'email_verified'],
    groups: ['groups'],
    sites: ['sites'],
  },
  // Put the scope-granted claims in the ID token, not only at the userinfo endpoint.
  conformIdTokenClaims: false,
  // Explicit lifetimes (seconds), which also keeps the provider from logging a notice for each default it uses.
  ttl: {
    AuthorizationCode: 60, AccessToken: 600, IdToken: 600, Interaction: 600, Session: 3600, Grant: 3600,
  },
  pkce: { required: () => true }, // S256 is the only method this version supports
  features: {
    devInteractions: { enabled: true },
    rpInitiatedLogout: { enabled: true },
  },
  async findAccount(ctx, id) {
    const claims = Object.hasOwn(users, id) ? users[id] : {};
    return {
      accountId: id,
      async claims() {
        return { ...claims, sub: id };
      },
    };
  },
};

const provider = new Provider(issuer, configuration);

for (const event of ['server_error', 'authorization.error', 'grant.error', 'end_session.error', 'userinfo.error']) {
  provider.on(event, (ctx, err) => {
    process.stderr.write(`oidc provider ${event}: ${err.name} ${err.message} ${err.error_description || ''}\n`);
  });
}

const server = provider.listen(port, host, () => {
  process.stdout.write(`oidc provider ready ${issuer}\n`);
});
server.on('error', (err) => fail(`cannot listen on ${host}:${port}: ${err.message}`));

function shutdown() {
  server.close(() => process.exit(0));
  server.closeAllConnections();
  setTimeout(() => process.exit(0), 2000).unref();
}
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);
