//! The one ID-token verifier against the development provider (oidc-provider, real keys and
//! flows): what it accepts, and the forgeries a person could type as a password.

use base64::Engine;
use dev_idp::DevIdp;
use oidc::{TokenError, Verifier, VerifierSettings};

const ALICE: &str = "alice@example.com";

fn b64(s: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s)
}

fn parts(token: &str) -> Vec<String> {
    token.split('.').map(str::to_string).collect()
}

#[tokio::test]
async fn a_real_token_verifies_and_forgeries_do_not() {
    let idp = DevIdp::start().unwrap();
    let token = idp.token(ALICE).unwrap();
    let cli = Verifier::new(VerifierSettings::new(idp.issuer(), "dbgw-cli")).unwrap();

    let claims = cli.verify(&token).await.unwrap();
    assert_eq!(claims.verified_email(true).unwrap(), ALICE);
    assert_eq!(claims.iss, idp.issuer());
    assert_eq!(claims.amr, ["pwd"]);
    assert!(
        claims.nonce.is_some(),
        "the flow's nonce is handed to the caller"
    );

    // Another relying party's verifier refuses the CLI's token.
    let approvals = Verifier::new(VerifierSettings::new(idp.issuer(), "dbgw-approvals")).unwrap();
    assert_eq!(approvals.verify(&token).await, Err(TokenError::Audience));

    // The payload changed (another email), the signature kept.
    let p = parts(&token);
    let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(&p[1])
        .unwrap();
    let forged = String::from_utf8(payload)
        .unwrap()
        .replace(ALICE, "mallory@example.com");
    let tampered = format!("{}.{}.{}", p[0], b64(forged.as_bytes()), p[2]);
    assert_eq!(cli.verify(&tampered).await, Err(TokenError::Signature));

    // alg none and HMAC, whatever the key id says.
    let none = format!("{}.{}.", b64(br#"{"alg":"none","kid":"x"}"#), p[1]);
    assert_eq!(cli.verify(&none).await, Err(TokenError::Unsigned));
    let hs = format!("{}.{}.{}", b64(br#"{"alg":"HS256","kid":"x"}"#), p[1], p[2]);
    assert_eq!(
        cli.verify(&hs).await,
        Err(TokenError::Algorithm("HS256".into()))
    );
    assert_eq!(cli.verify("not a token").await, Err(TokenError::Malformed));
}

#[tokio::test]
async fn a_new_signing_key_is_fetched_when_a_token_names_it() {
    let idp = DevIdp::start().unwrap();
    let cli = Verifier::new(VerifierSettings::new(idp.issuer(), "dbgw-cli")).unwrap();
    cli.verify(&idp.token(ALICE).unwrap()).await.unwrap();
    idp.rotate_keys().unwrap();
    let after = idp.token(ALICE).unwrap();
    assert_eq!(
        cli.verify(&after).await.unwrap().email.as_deref(),
        Some(ALICE)
    );
}

#[test]
fn an_issuer_over_plain_http_is_refused_off_loopback() {
    let err = Verifier::new(VerifierSettings::new("http://idp.example.com", "dbgw-cli"))
        .err()
        .expect("refused");
    assert!(err.to_string().contains("https"), "{err}");
}
