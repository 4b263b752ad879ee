// End-to-end tests: real server.js processes, real HTTP, real tokens.
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { createHash, createPublicKey, verify } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';

const IDP_DIR = path.dirname(path.dirname(fileURLToPath(import.meta.url)));
const SERVER = path.join(IDP_DIR, 'server.js');
const TOKEN = path.join(IDP_DIR, 'token.js');

// Starts server.js on a free port (IDP_PORT=0) and resolves once it prints
// its "idp listening on <issuer>" line.
function startIdp(stateDir, env = {}) {
  const proc = spawn(process.execPath, [SERVER], {
    env: { ...process.env, IDP_PORT: '0', IDP_STATE_DIR: stateDir, IDP_ISSUER: '', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stderr = '';
  proc.stderr.on('data', (d) => { stderr += d; });
  const exited = new Promise((resolve) => proc.on('exit', (code, signal) => resolve({ code, signal })));
  return new Promise((resolve, reject) => {
    // Upper bound only: a hung start must fail instead of stalling the suite.
    const timer = setTimeout(() => {
      proc.kill('SIGKILL');
      reject(new Error(`server.js did not report listening within 30s: ${stderr}`));
    }, 30_000);
    exited.then(({ code }) => {
      clearTimeout(timer);
      reject(new Error(`server.js exited early (${code}): ${stderr}`));
    });
    let out = '';
    proc.stdout.on('data', (d) => {
      out += d;
      const m = out.match(/^idp listening on (\S+)$/m);
      if (!m) return;
      clearTimeout(timer);
      resolve({
        issuer: m[1],
        async stop() {
          proc.kill('SIGTERM');
          return exited;
        },
      });
    });
  });
}

// Runs token.js; resolves to { code, stdout, stderr } instead of throwing.
function token(issuer, ...args) {
  return new Promise((resolve) => {
    execFile(process.execPath, [TOKEN, '--issuer', issuer, ...args], (err, stdout, stderr) => {
      resolve({ code: err ? err.code : 0, stdout, stderr });
    });
  });
}

async function tokenFor(issuer, ...args) {
  const r = await token(issuer, ...args);
  assert.equal(r.code, 0, `token.js failed: ${r.stderr}`);
  assert.equal(r.stderr, '');
  const jwt = r.stdout.trim();
  assert.match(jwt, /^[\w-]+\.[\w-]+\.[\w-]+$/, 'stdout must be exactly one JWT');
  return jwt;
}

function decode(jwt) {
  const [h, p, s] = jwt.split('.');
  return {
    header: JSON.parse(Buffer.from(h, 'base64url')),
    payload: JSON.parse(Buffer.from(p, 'base64url')),
    signed: Buffer.from(`${h}.${p}`),
    signature: Buffer.from(s, 'base64url'),
  };
}

const getJson = async (url) => {
  const res = await fetch(url);
  assert.equal(res.status, 200, url);
  return res.json();
};

async function jwks(issuer) {
  const meta = await getJson(`${issuer}/.well-known/openid-configuration`);
  return getJson(meta.jwks_uri);
}

// Verifies an RS256 JWT against the published JWKS; returns the decoded token.
async function verifyJwt(issuer, jwt) {
  const t = decode(jwt);
  assert.equal(t.header.alg, 'RS256');
  const { keys } = await jwks(issuer);
  const jwk = keys.find((k) => k.kid === t.header.kid);
  assert.ok(jwk, `kid ${t.header.kid} not in JWKS`);
  assert.equal(jwk.d, undefined, 'JWKS must not publish private key material');
  const ok = verify('sha256', t.signed, createPublicKey({ key: jwk, format: 'jwk' }), t.signature);
  assert.ok(ok, 'signature does not verify against the JWKS key');
  return t;
}

// An authorization request URL with sensible defaults.
function authUrl(issuer, params) {
  const url = new URL(`${issuer}/auth`);
  url.search = new URLSearchParams({
    response_type: 'code',
    scope: 'openid email',
    code_challenge: createHash('sha256').update('x'.repeat(43)).digest('base64url'),
    code_challenge_method: 'S256',
    state: 'st',
    ...params,
  });
  return url.href;
}

// Sends an authorization request; returns the IdP's first response.
const authorize = (issuer, params) => fetch(authUrl(issuer, params), { redirect: 'manual' });

// A hand-driven code + PKCE flow for dbgw-cli, so a test can act between
// the steps: begin() lands on the login form, finish() posts it and redeems the code.
async function manualFlow(issuer, extra = {}) {
  const jar = new Map();
  const go = async (url, init) => {
    const cookie = [...jar].map(([k, v]) => `${k}=${v}`).join('; ');
    const res = await fetch(url, { ...init, redirect: 'manual', headers: { ...init?.headers, cookie } });
    for (const c of res.headers.getSetCookie()) {
      const [pair] = c.split(';');
      jar.set(pair.slice(0, pair.indexOf('=')), pair.slice(pair.indexOf('=') + 1));
    }
    return res;
  };
  const verifier = 'v'.repeat(43);
  const redirectUri = 'http://127.0.0.1:50505/callback';
  const first = await go(authUrl(issuer, {
    client_id: 'dbgw-cli',
    redirect_uri: redirectUri,
    code_challenge: createHash('sha256').update(verifier).digest('base64url'),
    ...extra,
  }));
  assert.equal(first.status, 303);
  const form = new URL(first.headers.get('location'), issuer).href;
  assert.equal((await go(form)).status, 200);

  return async function finish() {
    let res = await go(`${form}/login`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ email: 'alice@example.com', password: 'dev' }),
    });
    for (;;) {
      assert.equal(res.status, 303);
      const next = new URL(res.headers.get('location'), issuer);
      if (next.href.startsWith(redirectUri)) {
        const tokens = await fetch(`${issuer}/token`, {
          method: 'POST',
          body: new URLSearchParams({
            grant_type: 'authorization_code',
            client_id: 'dbgw-cli',
            code: next.searchParams.get('code'),
            redirect_uri: redirectUri,
            code_verifier: verifier,
          }),
        });
        assert.equal(tokens.status, 200);
        return tokens.json();
      }
      res = await go(next.href);
    }
  };
}

const tmpState = () => fs.mkdtempSync(path.join(os.tmpdir(), 'dbgw-idp-test-'));

describe('dev IdP', () => {
  let stateDir;
  let idp;

  before(async () => {
    stateDir = tmpState();
    idp = await startIdp(stateDir);
  });
  after(async () => {
    await idp?.stop();
    fs.rmSync(stateDir, { recursive: true, force: true });
  });

  it('serves /healthz', async () => {
    const res = await fetch(`${idp.issuer}/healthz`);
    assert.equal(res.status, 200);
  });

  it('publishes a discovery document', async () => {
    const meta = await getJson(`${idp.issuer}/.well-known/openid-configuration`);
    assert.equal(meta.issuer, idp.issuer);
    assert.equal(meta.jwks_uri, `${idp.issuer}/jwks`);
    assert.deepEqual(meta.code_challenge_methods_supported, ['S256']);
    assert.deepEqual(meta.id_token_signing_alg_values_supported, ['RS256']);
    assert.deepEqual(meta.response_types_supported, ['code']);
    for (const s of ['openid', 'email', 'profile', 'groups']) assert.ok(meta.scopes_supported.includes(s), s);
  });

  it('persists the signing key set with mode 0600', () => {
    const file = path.join(stateDir, 'jwks.json');
    assert.equal(fs.statSync(file).mode & 0o777, 0o600);
    const { keys } = JSON.parse(fs.readFileSync(file, 'utf8'));
    assert.equal(keys.length, 1);
    assert.equal(keys[0].kty, 'RSA');
    assert.equal(keys[0].alg, 'RS256');
  });

  it('issues a signed ID token for alice through code + PKCE', async () => {
    const { header, payload } = await verifyJwt(idp.issuer, await tokenFor(idp.issuer, '--email', 'alice@example.com'));
    assert.equal(header.alg, 'RS256');
    assert.equal(payload.iss, idp.issuer);
    assert.equal(payload.aud, 'dbgw-cli');
    assert.equal(payload.sub, '3f1c2a9e-6b1d-4c57-9d0a-a11ce0000001');
    assert.equal(payload.email, 'alice@example.com');
    assert.equal(payload.email_verified, true);
    assert.equal(payload.name, 'Alice Example');
    assert.deepEqual(payload.groups, ['engineering']);
    assert.equal(payload.exp - payload.iat, 600);
    assert.ok(Math.abs(payload.iat - Date.now() / 1000) < 60);
  });

  it('issues tokens to the approvals web client with its secret', async () => {
    const { payload } = await verifyJwt(idp.issuer,
      await tokenFor(idp.issuer, '--email', 'dana@example.com', '--client', 'dbgw-approvals'));
    assert.equal(payload.aud, 'dbgw-approvals');
    assert.equal(payload.name, 'Dana Security');
    assert.deepEqual(payload.groups, ['data-security']);
  });

  it('gives the approvals client an access token it alone may introspect', async () => {
    const r = await token(idp.issuer, '--email', 'dana@example.com', '--client', 'dbgw-approvals', '--access-token');
    assert.equal(r.code, 0, r.stderr);
    const access = r.stdout.trim();
    assert.doesNotMatch(access, /^[\w-]+\.[\w-]+\.[\w-]+$/, 'an opaque access token, not the ID token');
    const basic = `Basic ${Buffer.from('dbgw-approvals:dev-approvals-secret').toString('base64')}`;
    const introspect = (tok) => fetch(`${idp.issuer}/token/introspection`, {
      method: 'POST',
      headers: { authorization: basic, 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ token: tok }),
    }).then((res) => res.json());
    const info = await introspect(access);
    assert.equal(info.active, true);
    assert.equal(info.client_id, 'dbgw-approvals');
    assert.equal(info.sub, 'c9d8e7f6-1a2b-4c3d-8e9f-da7a00000003');
    // The CLI's tokens are not the approvals client's to look at: inactive for it.
    const cli = await token(idp.issuer, '--email', 'dana@example.com', '--access-token');
    assert.equal(cli.code, 0, cli.stderr);
    assert.deepEqual(await introspect(cli.stdout.trim()), { active: false });
    // An ID token (a JWT) is no access token at all.
    assert.notEqual((await introspect(await tokenFor(idp.issuer, '--email', 'dana@example.com'))).active, true);
  });

  it('rejects the approvals client with a wrong secret', async () => {
    const r = await token(idp.issuer, '--email', 'dana@example.com', '--client', 'dbgw-approvals', '--client-secret', 'nope');
    assert.equal(r.code, 1);
    assert.equal(r.stdout, '');
    assert.match(r.stderr, /invalid_client/);
  });

  it('says how alice signed in: password only, or with the one-time code (--mfa)', async () => {
    const pwd = decode(await tokenFor(idp.issuer, '--email', 'alice@example.com')).payload;
    assert.deepEqual(pwd.amr, ['pwd']);
    assert.equal(pwd.acr, 'pwd');
    assert.ok(Math.abs(pwd.auth_time - Date.now() / 1000) < 60);
    const mfa = decode(await tokenFor(idp.issuer, '--email', 'alice@example.com', '--mfa')).payload;
    assert.deepEqual(mfa.amr, ['pwd', 'otp', 'mfa']);
    assert.equal(mfa.acr, 'mfa');
  });

  it('backdates the sign-in with --auth-age (auth_time)', async () => {
    const { payload } = decode(await tokenFor(idp.issuer, '--email', 'alice@example.com', '--mfa', '--auth-age', '3600'));
    assert.ok(Math.abs(payload.auth_time - (Date.now() / 1000 - 3600)) < 60, `${payload.auth_time}`);
    assert.ok(Math.abs(payload.iat - Date.now() / 1000) < 60);
  });

  it('refuses a wrong one-time code', async () => {
    const r = await token(idp.issuer, '--email', 'alice@example.com', '--mfa', '--otp', '123456');
    assert.equal(r.code, 1);
    assert.match(r.stderr, /invalid one-time code/);
  });

  it('refuses a wrong password', async () => {
    const r = await token(idp.issuer, '--email', 'alice@example.com', '--password', 'wrong');
    assert.equal(r.code, 1);
    assert.equal(r.stdout, '');
    assert.match(r.stderr, /invalid email or password/);
  });

  it('refuses an unknown user', async () => {
    const r = await token(idp.issuer, '--email', 'mallory@example.com');
    assert.equal(r.code, 1);
    assert.equal(r.stdout, '');
    assert.match(r.stderr, /invalid email or password/);
  });

  it('accepts any loopback port for registered redirect paths', async () => {
    for (const [client_id, redirect_uri] of [
      ['dbgw-cli', 'http://127.0.0.1:51234/callback'],
      ['dbgw-cli', 'http://[::1]:40000/callback'],
      ['dbgw-approvals', 'http://127.0.0.1:8080/auth/callback'],
      ['dbgw-approvals', 'http://127.0.0.1:43210/auth/callback'],
    ]) {
      const res = await authorize(idp.issuer, { client_id, redirect_uri });
      assert.equal(res.status, 303, `${client_id} ${redirect_uri}`);
      assert.match(res.headers.get('location'), /^\/interaction\/[\w-]+$/);
    }
  });

  it('refuses non-loopback and non-matching redirect URIs', async () => {
    for (const [client_id, redirect_uri] of [
      ['dbgw-cli', 'http://evil.example:51234/callback'],
      ['dbgw-cli', 'http://localhost:51234/callback'],
      ['dbgw-cli', 'http://127.0.0.1:51234/other'],
      ['dbgw-cli', 'https://127.0.0.1:51234/callback'],
      ['dbgw-approvals', 'http://evil.example:8080/auth/callback'],
      ['dbgw-approvals', 'http://127.0.0.1:43210/callback'],
    ]) {
      const res = await authorize(idp.issuer, { client_id, redirect_uri });
      assert.equal(res.status, 400, `${client_id} ${redirect_uri}`);
      assert.equal(res.headers.get('location'), null);
      assert.match(await res.text(), /invalid_redirect_uri/);
    }
  });

  it('requires PKCE', async () => {
    const res = await authorize(idp.issuer, {
      client_id: 'dbgw-cli',
      redirect_uri: 'http://127.0.0.1:51234/callback',
      code_challenge: '',
      code_challenge_method: '',
    });
    assert.equal(res.status, 303);
    const loc = new URL(res.headers.get('location'));
    assert.equal(loc.origin, 'http://127.0.0.1:51234');
    assert.equal(loc.searchParams.get('error'), 'invalid_request');
    assert.match(loc.searchParams.get('error_description'), /PKCE/);

    const plain = await authorize(idp.issuer, {
      client_id: 'dbgw-cli',
      redirect_uri: 'http://127.0.0.1:51234/callback',
      code_challenge: 'x'.repeat(43),
      code_challenge_method: 'plain',
    });
    assert.equal(new URL(plain.headers.get('location')).searchParams.get('error'), 'invalid_request');
  });

  it('rotates keys without a restart, keeping the old key published', async () => {
    const before = decode(await tokenFor(idp.issuer, '--email', 'bob@example.com'));

    const res = await fetch(`${idp.issuer}/dev/rotate-keys`, { method: 'POST' });
    assert.equal(res.status, 200);
    const { kid, kids } = await res.json();
    assert.notEqual(kid, before.header.kid);
    assert.deepEqual(kids, [kid, before.header.kid]);

    const published = (await jwks(idp.issuer)).keys.map((k) => k.kid).sort();
    assert.deepEqual(published, [kid, before.header.kid].sort());

    const afterRotation = await verifyJwt(idp.issuer, await tokenFor(idp.issuer, '--email', 'bob@example.com'));
    assert.equal(afterRotation.header.kid, kid);
    // tokens signed before the rotation still verify against the JWKS
    await verifyJwt(idp.issuer, `${before.signed}.${before.signature.toString('base64url')}`);

    const onDisk = JSON.parse(fs.readFileSync(path.join(stateDir, 'jwks.json'), 'utf8'));
    assert.deepEqual(onDisk.keys.map((k) => k.kid), [kid, before.header.kid]);
  });

  it('completes a login that was in progress across a rotation', async () => {
    const finish = await manualFlow(idp.issuer);
    const { kid } = await (await fetch(`${idp.issuer}/dev/rotate-keys`, { method: 'POST' })).json();
    const { id_token: idToken } = await finish();
    const { header, payload } = await verifyJwt(idp.issuer, idToken);
    assert.equal(header.kid, kid);
    assert.equal(payload.email, 'alice@example.com');
  });

  it('issues a refresh token for offline_access with prompt=consent', async () => {
    const finish = await manualFlow(idp.issuer, { scope: 'openid email groups offline_access', prompt: 'consent' });
    const first = await finish();
    assert.ok(first.refresh_token, 'no refresh_token');
    const res = await fetch(`${idp.issuer}/token`, {
      method: 'POST',
      body: new URLSearchParams({ grant_type: 'refresh_token', client_id: 'dbgw-cli', refresh_token: first.refresh_token }),
    });
    assert.equal(res.status, 200);
    const { payload } = await verifyJwt(idp.issuer, (await res.json()).id_token);
    assert.deepEqual(payload.groups, ['engineering']);
  });

  it('answers GET /dev/rotate-keys with 405', async () => {
    const res = await fetch(`${idp.issuer}/dev/rotate-keys`);
    assert.equal(res.status, 405);
  });
});

describe('dev IdP restart', () => {
  it('keeps its keys across a restart and honours IDP_ID_TOKEN_TTL', async () => {
    const stateDir = tmpState();
    try {
      const first = await startIdp(stateDir);
      const kid1 = decode(await tokenFor(first.issuer, '--email', 'alice@example.com')).header.kid;
      assert.deepEqual(await first.stop(), { code: 0, signal: null }, 'graceful exit on SIGTERM');

      const second = await startIdp(stateDir, { IDP_ID_TOKEN_TTL: '120' });
      try {
        const { header, payload } = await verifyJwt(second.issuer,
          await tokenFor(second.issuer, '--email', 'alice@example.com'));
        assert.equal(header.kid, kid1);
        assert.equal(payload.exp - payload.iat, 120);
        assert.deepEqual((await jwks(second.issuer)).keys.map((k) => k.kid), [kid1]);
      } finally {
        await second.stop();
      }
    } finally {
      fs.rmSync(stateDir, { recursive: true, force: true });
    }
  });
});

describe('dev IdP users', () => {
  it('has two data-security approvers', async () => {
    const { users } = JSON.parse(fs.readFileSync(path.join(IDP_DIR, 'users.json'), 'utf8'));
    const approvers = users.filter((u) => u.groups.includes('data-security')).map((u) => u.email);
    assert.deepEqual(approvers.sort(), ['dana@example.com', 'sam@example.com']);
  });

  it('reads IDP_USERS_FILE at every sign-in, so groups can change while it runs', async () => {
    const stateDir = tmpState();
    const usersFile = path.join(stateDir, 'users.json');
    fs.copyFileSync(path.join(IDP_DIR, 'users.json'), usersFile);
    const idp = await startIdp(stateDir, { IDP_USERS_FILE: usersFile });
    try {
      const before = decode(await tokenFor(idp.issuer, '--email', 'sam@example.com')).payload;
      assert.deepEqual(before.groups, ['data-security']);
      const edited = JSON.parse(fs.readFileSync(usersFile, 'utf8'));
      edited.users.find((u) => u.email === 'sam@example.com').groups = [];
      fs.writeFileSync(usersFile, JSON.stringify(edited));
      const after = decode(await tokenFor(idp.issuer, '--email', 'sam@example.com')).payload;
      assert.deepEqual(after.groups, []);
    } finally {
      await idp.stop();
      fs.rmSync(stateDir, { recursive: true, force: true });
    }
  });
});
