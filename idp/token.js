#!/usr/bin/env node
// Gets a real ID token from the dev IdP with the authorization-code + PKCE
// flow, over plain HTTP and without a browser. Prints only the JWT.
//
//   node idp/token.js --email alice@example.com [--issuer URL] [--password dev]
//                     [--client dbgw-cli] [--client-secret S] [--redirect-path /callback]
//                     [--scope "openid email profile groups"]
//
// Node built-ins only.
import { createHash, randomBytes } from 'node:crypto';
import { createServer } from 'node:http';
import { parseArgs } from 'node:util';

const OPTIONS = {
  issuer: { type: 'string', default: process.env.IDP_ISSUER || 'http://127.0.0.1:9000' },
  email: { type: 'string' },
  password: { type: 'string', default: 'dev' },
  client: { type: 'string', default: 'dbgw-cli' },
  'client-secret': { type: 'string' },
  'redirect-path': { type: 'string' },
  scope: { type: 'string', default: 'openid email profile groups' },
};

const b64url = (buf) => Buffer.from(buf).toString('base64url');
const random = () => b64url(randomBytes(32));

function fail(message) {
  throw Object.assign(new Error(message), { expected: true });
}

// The few cookies the IdP sets during one flow (interaction + session).
const jar = new Map();
function remember(res) {
  for (const c of res.headers.getSetCookie()) {
    const [pair] = c.split(';');
    const i = pair.indexOf('=');
    const [name, value] = [pair.slice(0, i).trim(), pair.slice(i + 1)];
    if (value) jar.set(name, value);
    else jar.delete(name); // the IdP clears cookies by emptying them
  }
}
const cookieHeader = () => [...jar].map(([k, v]) => `${k}=${v}`).join('; ');

// fetch with a cookie jar, following redirects by hand until either a
// non-redirect response or a redirect to our own redirect_uri.
async function walk(url, init, redirectUri) {
  for (let hops = 0; hops < 20; hops++) {
    const res = await fetch(url, { ...init, redirect: 'manual', headers: { ...init?.headers, cookie: cookieHeader() } });
    remember(res);
    const location = res.headers.get('location');
    if (res.status < 300 || res.status >= 400 || !location) return { res, url };
    url = new URL(location, url).href;
    init = undefined; // 302/303: continue with GET
    if (url.startsWith(`${redirectUri}?`)) return { callback: new URL(url) };
  }
  fail('too many redirects');
}

// Throwaway loopback listener (RFC 8252 §7.3): reserves the port for the
// redirect_uri. We read the code from the redirect instead of letting the
// request land, but the URI is one a browser could really be sent to.
function listen() {
  return new Promise((resolve, reject) => {
    const server = createServer((_req, res) => res.end('You can close this window.\n'));
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => resolve(server));
  });
}

async function main() {
  let opt;
  try {
    ({ values: opt } = parseArgs({ options: OPTIONS }));
  } catch (err) {
    fail(err.message);
  }
  if (!opt.email) fail('--email is required');
  const issuer = opt.issuer.replace(/\/$/, '');
  const secret = opt['client-secret']
    ?? (opt.client === 'dbgw-approvals' ? process.env.IDP_APPROVALS_CLIENT_SECRET || 'dev-approvals-secret' : undefined);
  const redirectPath = opt['redirect-path'] ?? (opt.client === 'dbgw-approvals' ? '/auth/callback' : '/callback');

  const meta = await fetch(`${issuer}/.well-known/openid-configuration`)
    .then((r) => (r.ok ? r.json() : fail(`HTTP ${r.status}`)))
    .catch((err) => fail(`cannot read discovery from ${issuer}: ${err.cause?.message ?? err.message}`));
  if (meta.issuer !== issuer) fail(`issuer mismatch: discovery says ${meta.issuer}`);

  const server = await listen();
  try {
    const redirectUri = `http://127.0.0.1:${server.address().port}${redirectPath}`;
    const verifier = random();
    const state = random();
    const nonce = random();
    const auth = new URL(meta.authorization_endpoint);
    auth.search = new URLSearchParams({
      client_id: opt.client,
      response_type: 'code',
      scope: opt.scope,
      redirect_uri: redirectUri,
      code_challenge: b64url(createHash('sha256').update(verifier).digest()),
      code_challenge_method: 'S256',
      state,
      nonce,
    });

    // 1. authorization request -> redirected to the login form
    let step = await walk(auth.href, undefined, redirectUri);
    if (!step.callback) {
      if (step.res.status !== 200 || !/\/interaction\/[^/]+$/.test(new URL(step.url).pathname)) {
        fail(`authorization request failed: HTTP ${step.res.status}: ${(await step.res.text()).trim().slice(0, 300)}`);
      }
      // 2. post the form -> login, automatic consent, redirect with ?code=
      step = await walk(`${step.url}/login`, {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded' },
        body: new URLSearchParams({ email: opt.email, password: opt.password }),
      }, redirectUri);
      if (!step.callback) {
        const why = step.res.status === 401 ? 'invalid email or password' : `HTTP ${step.res.status}`;
        fail(`login failed: ${why}`);
      }
    }

    const q = step.callback.searchParams;
    if (q.get('error')) fail(`authorization error: ${q.get('error')}: ${q.get('error_description') ?? ''}`);
    if (q.get('state') !== state) fail('state mismatch');
    if (q.get('iss') && q.get('iss') !== issuer) fail('iss mismatch in authorization response');

    // 3. code -> tokens
    const headers = { 'content-type': 'application/x-www-form-urlencoded' };
    const form = new URLSearchParams({
      grant_type: 'authorization_code',
      code: q.get('code'),
      redirect_uri: redirectUri,
      code_verifier: verifier,
    });
    if (secret === undefined) form.set('client_id', opt.client);
    else headers.authorization = `Basic ${Buffer.from(`${encodeURIComponent(opt.client)}:${encodeURIComponent(secret)}`).toString('base64')}`;
    const res = await fetch(meta.token_endpoint, { method: 'POST', headers, body: form });
    const body = await res.json().catch(() => ({}));
    if (!res.ok || !body.id_token) fail(`token request failed: HTTP ${res.status}: ${body.error ?? ''} ${body.error_description ?? ''}`);

    const payload = JSON.parse(Buffer.from(body.id_token.split('.')[1], 'base64url'));
    if (payload.nonce !== nonce) fail('nonce mismatch in ID token');
    process.stdout.write(`${body.id_token}\n`);
  } finally {
    server.close();
  }
}

main().catch((err) => {
  process.stderr.write(`token.js: ${err.expected ? err.message : err.stack || err}\n`);
  process.exitCode = 1;
});
