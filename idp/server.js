// Development-only OpenID Connect provider for dbgw. Never deploy this:
// every user shares one published password and keys sit in a local file.
import { createHash, generateKeyPairSync, randomBytes, timingSafeEqual } from 'node:crypto';
import fs from 'node:fs';
import { createServer } from 'node:http';
import path from 'node:path';
import Provider from 'oidc-provider';

const HOST = process.env.IDP_HOST || '127.0.0.1';
const PORT = Number(process.env.IDP_PORT || 9000); // 0 = any free port
const STATE_DIR = path.resolve(process.env.IDP_STATE_DIR || '.dev/idp');
const JWKS_FILE = path.join(STATE_DIR, 'jwks.json');
const ID_TOKEN_TTL = Number(process.env.IDP_ID_TOKEN_TTL || 600);
const APPROVALS_SECRET = process.env.IDP_APPROVALS_CLIENT_SECRET || 'dev-approvals-secret';
// The second factor of every dev account: a fixed one-time code (development only).
const DEV_OTP = process.env.IDP_DEV_OTP || '000000';

// Users are read again at every use, so a test (or a developer) can change someone's
// groups while the IdP runs: IDP_USERS_FILE points at a copy to edit.
const USERS_FILE = process.env.IDP_USERS_FILE || new URL('./users.json', import.meta.url);
function readUsers() {
  return JSON.parse(fs.readFileSync(USERS_FILE, 'utf8'));
}
readUsers(); // fail at start, not at the first login, if the file is unreadable

if (!Number.isInteger(ID_TOKEN_TTL) || ID_TOKEN_TTL <= 0) {
  throw new Error('IDP_ID_TOKEN_TTL must be a positive integer (seconds)');
}

// ---- signing keys -------------------------------------------------------

function newSigningKey() {
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const jwk = privateKey.export({ format: 'jwk' });
  // RFC 7638 thumbprint: a stable kid derived from the public key.
  const kid = createHash('sha256')
    .update(JSON.stringify({ e: jwk.e, kty: jwk.kty, n: jwk.n }))
    .digest('base64url');
  return { ...jwk, kid, alg: 'RS256', use: 'sig' };
}

function saveJwks(jwks) {
  fs.mkdirSync(STATE_DIR, { recursive: true, mode: 0o700 });
  // Write-then-rename so a crash never leaves a half-written key file.
  const tmp = `${JWKS_FILE}.${process.pid}.tmp`;
  fs.writeFileSync(tmp, `${JSON.stringify(jwks, null, 2)}\n`, { mode: 0o600 });
  fs.renameSync(tmp, JWKS_FILE);
}

function loadOrCreateJwks() {
  if (fs.existsSync(JWKS_FILE)) {
    fs.chmodSync(JWKS_FILE, 0o600); // private keys: owner only, even if loosened by hand
    return JSON.parse(fs.readFileSync(JWKS_FILE, 'utf8'));
  }
  const jwks = { keys: [newSigningKey()] };
  saveJwks(jwks);
  return jwks;
}

// keys[0] signs. Older keys stay published (so tokens they signed still
// verify) but key_ops ["verify"] keeps oidc-provider from signing with them.
function rotate(jwks) {
  const [current] = jwks.keys;
  return { keys: [newSigningKey(), { ...current, key_ops: ['verify'] }] };
}

// ---- accounts -----------------------------------------------------------

function findUserByEmail(email) {
  return readUsers().users.find((u) => u.email === String(email).trim().toLowerCase());
}

function passwordOk(given) {
  const a = createHash('sha256').update(String(given)).digest();
  const b = createHash('sha256').update(readUsers().password).digest();
  return timingSafeEqual(a, b);
}

async function findAccount(_ctx, sub) {
  const user = readUsers().users.find((u) => u.sub === sub);
  if (!user) return undefined;
  return {
    accountId: user.sub,
    claims: async () => ({
      sub: user.sub,
      email: user.email,
      email_verified: user.email_verified,
      name: user.name,
      groups: user.groups,
    }),
  };
}

// ---- redirect URIs --------------------------------------------------------

const LOOPBACK_HOSTS = new Set(['127.0.0.1', '[::1]']);

// "http://127.0.0.1/callback" for any loopback redirect URI (port dropped), else null.
function loopbackKey(uri) {
  let u;
  try { u = new URL(uri); } catch { return null; }
  if (u.protocol !== 'http:' || !LOOPBACK_HOSTS.has(u.hostname) || u.username || u.password || u.hash) {
    return null;
  }
  return `http://${u.hostname}${u.pathname}${u.search}`;
}

// RFC 8252 §7.3: a loopback redirect URI may use any port, chosen at request
// time. oidc-provider already does this for application_type "native"
// (dbgw-cli); this dev IdP extends it to every client so the approvals web
// app can run on a random port in tests. Everything else must match exactly.
function allowAnyLoopbackPort(Client) {
  const exact = Client.prototype.redirectUriAllowed;
  Client.prototype.redirectUriAllowed = function redirectUriAllowed(uri) {
    if (exact.call(this, uri)) return true;
    const key = loopbackKey(uri);
    return key !== null && this.redirectUris.some((r) => loopbackKey(r) === key);
  };
}

// ---- provider -------------------------------------------------------------

// Key rotation builds a new Provider. oidc-provider's built-in memory adapter
// gives every instance its own store, which would drop sessions, pending
// logins and unredeemed codes; this one store is shared by all instances.
// In memory only: everything but the keys is gone after a restart.
const store = new Map(); // "<Model>:<id>" -> { payload, expiresAt }

// The payload under key, or undefined (dropping it) once it has expired.
function live(key) {
  const entry = store.get(key);
  if (entry && entry.expiresAt <= Date.now()) {
    store.delete(key);
    return undefined;
  }
  return entry?.payload;
}

class SharedMemoryAdapter {
  constructor(model) { this.model = model; }

  key(id) { return `${this.model}:${id}`; }

  async upsert(id, payload, expiresIn) {
    for (const k of store.keys()) live(k); // sweep expired entries; dev-sized store
    store.set(this.key(id), { payload, expiresAt: expiresIn ? Date.now() + expiresIn * 1000 : Infinity });
  }

  async find(id) { return live(this.key(id)); }

  #findBy(field, value) {
    for (const k of store.keys()) {
      if (k.startsWith(`${this.model}:`) && live(k)?.[field] === value) return live(k);
    }
    return undefined;
  }

  async findByUid(uid) { return this.#findBy('uid', uid); }

  async findByUserCode(userCode) { return this.#findBy('userCode', userCode); }

  async consume(id) {
    const payload = live(this.key(id));
    if (payload) payload.consumed = Math.floor(Date.now() / 1000);
  }

  async destroy(id) { store.delete(this.key(id)); }

  async revokeByGrantId(grantId) {
    for (const [k, { payload }] of store) if (payload.grantId === grantId) store.delete(k);
  }
}

// Same cookie keys for every Provider instance, so flows survive a key rotation.
const COOKIE_KEYS = [randomBytes(32).toString('base64url')];

function buildProvider(issuer, jwks) {
  const provider = new Provider(issuer, {
    jwks,
    adapter: SharedMemoryAdapter,
    findAccount,
    clients: [
      {
        client_id: 'dbgw-cli',
        application_type: 'native',
        token_endpoint_auth_method: 'none',
        grant_types: ['authorization_code', 'refresh_token'],
        response_types: ['code'],
        redirect_uris: ['http://127.0.0.1/callback', 'http://[::1]/callback'],
      },
      {
        client_id: 'dbgw-approvals',
        client_secret: APPROVALS_SECRET,
        application_type: 'web',
        token_endpoint_auth_method: 'client_secret_basic',
        grant_types: ['authorization_code'],
        response_types: ['code'],
        redirect_uris: ['http://127.0.0.1:8080/auth/callback'],
      },
    ],
    clientAuthMethods: ['none', 'client_secret_basic', 'client_secret_post'],
    responseTypes: ['code'],
    pkce: { required: () => true }, // oidc-provider 9 only implements S256
    scopes: ['openid', 'offline_access', 'email', 'profile', 'groups'],
    // How and when the person signed in (amr, acr, auth_time) goes in every ID token:
    // dbgw's grants may ask for multi-factor or a recent sign-in.
    acrValues: ['pwd', 'mfa'],
    claims: {
      openid: ['sub', 'acr', 'amr', 'auth_time'],
      email: ['email', 'email_verified'],
      profile: ['name'],
      groups: ['groups'],
    },
    conformIdTokenClaims: false, // put scope claims in the ID token itself
    enabledJWA: { idTokenSigningAlgValues: ['RS256'] },
    cookies: { keys: COOKIE_KEYS },
    ttl: {
      IdToken: ID_TOKEN_TTL,
      AccessToken: ID_TOKEN_TTL,
      AuthorizationCode: 60,
      Interaction: 600,
      Session: 8 * 3600,
      Grant: 8 * 3600,
      RefreshToken: 8 * 3600,
    },
    features: {
      devInteractions: { enabled: false },
      // RFC 7662: the approvals API checks each bearer access token here (active, and
      // issued to dbgw-approvals). A client may look only at its own tokens.
      introspection: {
        enabled: true,
        allowedPolicy: async (ctx, client, token) => token.clientId === client.clientId,
      },
      rpInitiatedLogout: { enabled: false },
    },
    interactions: { url: (_ctx, interaction) => `/interaction/${interaction.uid}` },
  });
  allowAnyLoopbackPort(provider.Client);
  provider.on('server_error', (_ctx, err) => console.error('idp server_error:', err));
  return provider;
}

// ---- interactions (login form + automatic consent) -----------------------

const esc = (s) => String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

// The one-time code field is shown when the client asked for multi-factor
// (acr_values=mfa, as `dbgw login --mfa` does); filled in, it is used either way.
// `dev_auth_age` (seconds, tests only) backdates the sign-in, so a test can get a token
// whose auth_time is old.
function loginPage(uid, clientId, mfa, email = '', error = '') {
  return `<!doctype html>
<html><head><meta charset="utf-8"><title>dbgw dev IdP</title></head>
<body>
<h1>dbgw development IdP</h1>
<p><strong>Development only.</strong> Sign in to <code>${esc(clientId)}</code>.</p>
${error ? `<p role="alert">${esc(error)}</p>` : ''}
<form method="post" action="/interaction/${esc(uid)}/login">
  <label>Email <input type="email" name="email" value="${esc(email)}" autofocus required></label>
  <label>Password <input type="password" name="password" required></label>
  ${mfa ? '<label>One-time code <input name="otp" inputmode="numeric" autocomplete="one-time-code" required></label>' : ''}
  <button type="submit">Sign in</button>
</form>
</body></html>
`;
}

const wantsMfa = (params) => String(params.acr_values ?? '').split(' ').includes('mfa');

// amr (RFC 8176) and acr of a sign-in: the password, plus the one-time code if given.
function methods(otp) {
  return otp ? { amr: ['pwd', 'otp', 'mfa'], acr: 'mfa' } : { amr: ['pwd'], acr: 'pwd' };
}

function otpOk(given) {
  const a = createHash('sha256').update(String(given)).digest();
  const b = createHash('sha256').update(DEV_OTP).digest();
  return timingSafeEqual(a, b);
}

function send(res, status, type, body) {
  res.writeHead(status, { 'content-type': type, 'cache-control': 'no-store' });
  res.end(body);
}

async function readForm(req) {
  let body = '';
  for await (const chunk of req) {
    body += chunk;
    if (body.length > 16384) throw new Error('form too large');
  }
  return new URLSearchParams(body);
}

// Grants whatever the first-party client asked for, as the consent prompt
// would if the user clicked "allow".
async function autoConsent(provider, req, res, details) {
  const { prompt, params, session, grantId } = details;
  const grant = grantId
    ? await provider.Grant.find(grantId)
    : new provider.Grant({ accountId: session.accountId, clientId: params.client_id });
  const { missingOIDCScope, missingOIDCClaims, missingResourceScopes } = prompt.details;
  if (missingOIDCScope) grant.addOIDCScope(missingOIDCScope.join(' '));
  if (missingOIDCClaims) grant.addOIDCClaims(missingOIDCClaims);
  for (const [indicator, scopes] of Object.entries(missingResourceScopes ?? {})) {
    grant.addResourceScope(indicator, scopes.join(' '));
  }
  const consent = { grantId: await grant.save() };
  await provider.interactionFinished(req, res, { consent }, { mergeWithLastSubmission: true });
}

async function interaction(provider, req, res, uid, action) {
  const details = await provider.interactionDetails(req, res);
  if (details.uid !== uid) return send(res, 400, 'text/plain', 'interaction mismatch\n');
  const { prompt, params } = details;

  if (req.method === 'GET' && !action) {
    if (prompt.name === 'login') return send(res, 200, 'text/html; charset=utf-8', loginPage(uid, params.client_id, wantsMfa(params)));
    if (prompt.name === 'consent') return autoConsent(provider, req, res, details);
    return send(res, 400, 'text/plain', `unsupported prompt ${prompt.name}\n`);
  }

  if (req.method === 'POST' && action === 'login' && prompt.name === 'login') {
    const form = await readForm(req);
    const user = findUserByEmail(form.get('email') ?? '');
    const mfa = wantsMfa(params);
    const otp = form.get('otp') ?? '';
    const refuse = (why) => send(res, 401, 'text/html; charset=utf-8',
      loginPage(uid, params.client_id, mfa, form.get('email') ?? '', why));
    if (!user || !passwordOk(form.get('password') ?? '')) return refuse('Invalid email or password.');
    if ((mfa || otp) && !otpOk(otp)) return refuse('Invalid one-time code.');
    const age = Number(form.get('dev_auth_age') ?? 0);
    if (!Number.isInteger(age) || age < 0) return refuse('dev_auth_age must be a number of seconds.');
    const ts = Math.floor(Date.now() / 1000) - age;
    return provider.interactionFinished(req, res,
      { login: { accountId: user.sub, ts, ...methods(otp) } },
      { mergeWithLastSubmission: false });
  }

  return send(res, 400, 'text/plain', `unexpected ${req.method} during the ${prompt.name} prompt\n`);
}

// ---- HTTP server ------------------------------------------------------------

let jwks = loadOrCreateJwks();
let provider; // replaced on key rotation; requests always use the latest
let handle;
let issuer;

function install(next) {
  jwks = next;
  provider = buildProvider(issuer, jwks);
  handle = provider.callback();
}

async function route(req, res) {
  const { pathname } = new URL(req.url, 'http://idp.invalid');

  if (pathname === '/healthz') return send(res, 200, 'text/plain', 'ok\n');
  if (!provider) return send(res, 503, 'text/plain', 'starting\n');

  if (pathname === '/dev/rotate-keys') {
    if (req.method !== 'POST') return send(res, 405, 'text/plain', 'use POST\n');
    const next = rotate(jwks);
    saveJwks(next); // persist first: a key that is not on disk must never sign
    install(next);
    const body = { kid: next.keys[0].kid, kids: next.keys.map((k) => k.kid) };
    console.error(`idp rotated signing key, now ${body.kid}`);
    return send(res, 200, 'application/json', `${JSON.stringify(body)}\n`);
  }

  const m = pathname.match(/^\/interaction\/([\w-]+)(?:\/(login))?$/);
  if (m) return interaction(provider, req, res, m[1], m[2]);

  return handle(req, res);
}

const server = createServer((req, res) => {
  route(req, res).catch((err) => {
    const status = err.statusCode || err.status || 500;
    if (status >= 500) console.error('idp error:', err);
    if (!res.headersSent) send(res, status, 'text/plain', `${err.error || 'error'}: ${err.error_description || err.message}\n`);
    else res.end();
  });
});

server.listen(PORT, HOST, () => {
  // IDP_PORT=0 picks a free port; the default issuer then uses the real one.
  const port = server.address().port;
  issuer = process.env.IDP_ISSUER || `http://127.0.0.1:${port}`;
  install(jwks);
  console.log(`idp listening on ${issuer}`);
});

function shutdown(signal) {
  console.error(`idp: ${signal}, shutting down`);
  server.close(() => process.exit(0));
  server.closeAllConnections();
}
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);
