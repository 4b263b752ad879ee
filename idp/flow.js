// The headless half of a browser for the dev IdP: follows the authorization request
// to the login form, posts it, and returns the redirect to the client's redirect_uri.
// Used by token.js and dev-browser.js. Node built-ins only.

export function fail(message) {
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

// Signs in at `authUrl` as `email`; returns the URL the IdP redirects to (on
// `redirectUri`, carrying `code` or `error`).
// `extra`: more form fields (`otp`, the one-time code; `dev_auth_age`).
export async function signIn(authUrl, redirectUri, email, password, extra = {}) {
  let step = await walk(authUrl, undefined, redirectUri);
  if (!step.callback) {
    if (step.res.status !== 200 || !/\/interaction\/[^/]+$/.test(new URL(step.url).pathname)) {
      fail(`authorization request failed: HTTP ${step.res.status}: ${(await step.res.text()).trim().slice(0, 300)}`);
    }
    step = await walk(`${step.url}/login`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ email, password, ...extra }),
    }, redirectUri);
    if (!step.callback) {
      const alert = (await step.res.text()).match(/role="alert">([^<]*)</)?.[1];
      const why = step.res.status === 401
        ? (alert?.replace(/\.$/, '').toLowerCase() ?? 'invalid email or password')
        : `HTTP ${step.res.status}`;
      fail(`login failed: ${why}`);
    }
  }
  return step.callback;
}
