#!/usr/bin/env node
// A stand-in for a person at a browser, for tests of login tools: given the sign-in URL a
// tool would open, it signs in at the dev IdP as DEV_BROWSER_EMAIL (password
// DEV_BROWSER_PASSWORD, default `dev`) and then visits the redirect, delivering the code to
// the tool's loopback listener, as a browser would. When the tool asks for multi-factor
// (acr_values=mfa), it answers the one-time code (DEV_BROWSER_OTP, default the dev code).
//
//   BROWSER="node idp/dev-browser.js" dbgw login
import { signIn } from './flow.js';

async function main() {
  const authUrl = process.argv[2];
  if (!authUrl) throw new Error('usage: dev-browser.js <authorization URL>');
  const redirectUri = new URL(authUrl).searchParams.get('redirect_uri');
  const email = process.env.DEV_BROWSER_EMAIL || 'alice@example.com';
  // Asked for multi-factor, the person types the one-time code too.
  const mfa = (new URL(authUrl).searchParams.get('acr_values') ?? '').split(' ').includes('mfa');
  const extra = mfa ? { otp: process.env.DEV_BROWSER_OTP || '000000' } : {};
  const callback = await signIn(authUrl, redirectUri, email, process.env.DEV_BROWSER_PASSWORD || 'dev', extra);
  const res = await fetch(callback, { redirect: 'manual' });
  await res.text();
  if (!res.ok) throw new Error(`the login tool answered HTTP ${res.status}`);
}

main().catch((err) => {
  process.stderr.write(`dev-browser.js: ${err.message}\n`);
  process.exitCode = 1;
});
