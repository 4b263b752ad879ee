#!/usr/bin/env node
// Gets a real ID token from the dev IdP with the authorization-code + PKCE
// flow, over plain HTTP and without a browser. Prints only the JWT.
//
//   node idp/token.js --email alice@example.com [--issuer URL] [--password dev]
//                     [--client dbgw-cli] [--client-secret S] [--redirect-path /callback]
//                     [--scope "openid email profile groups"] [--access-token]
//                     [--mfa [--otp 000000]] [--auth-age SECONDS]
//
// --mfa asks for multi-factor (acr_values=mfa) and answers the one-time code: the ID
// token's amr is ["pwd","otp","mfa"] instead of ["pwd"]. --auth-age backdates the
// sign-in (the token's auth_time) by that many seconds: for tests of max_auth_age_secs.
//
// --access-token prints the access token instead of the ID token: with
// --client dbgw-approvals, that is the bearer token of the approvals API.
//
// Node built-ins only.
import { createHash, randomBytes } from 'node:crypto';
import { createServer } from 'node:http';
import { parseArgs } from 'node:util';
import { fail, signIn } from './flow.js';

const OPTIONS = {
  issuer: { type: 'string', default: process.env.IDP_ISSUER || 'http://127.0.0.1:9000' },
  email: { type: 'string' },
  password: { type: 'string', default: 'dev' },
  client: { type: 'string', default: 'dbgw-cli' },
  'client-secret': { type: 'string' },
  'redirect-path': { type: 'string' },
  scope: { type: 'string', default: 'openid email profile groups' },
  'access-token': { type: 'boolean', default: false },
  mfa: { type: 'boolean', default: false },
  otp: { type: 'string', default: process.env.IDP_DEV_OTP || '000000' },
  'auth-age': { type: 'string' },
};

const b64url = (buf) => Buffer.from(buf).toString('base64url');
const random = () => b64url(randomBytes(32));

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
    if (opt.mfa) auth.searchParams.set('acr_values', 'mfa');

    const extra = {};
    if (opt.mfa) extra.otp = opt.otp;
    if (opt['auth-age'] !== undefined) extra.dev_auth_age = opt['auth-age'];

    // 1-2. authorization request, login form, automatic consent -> redirect with ?code=
    const step = { callback: await signIn(auth.href, redirectUri, opt.email, opt.password, extra) };

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
    if (opt['access-token']) {
      if (!body.access_token) fail('the token response has no access token');
      process.stdout.write(`${body.access_token}\n`);
    } else {
      process.stdout.write(`${body.id_token}\n`);
    }
  } finally {
    server.close();
  }
}

main().catch((err) => {
  process.stderr.write(`token.js: ${err.expected ? err.message : err.stack || err}\n`);
  process.exitCode = 1;
});
