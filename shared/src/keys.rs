//! RSA signing keys: generation (aws-lc-rs; ring cannot generate RSA keys, and the `rsa`
//! crate has RUSTSEC-2023-0071) and their public JWK form (RFC 7517, RFC 7638 `kid`).

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rsa::{KeyPair, KeySize};
use aws_lc_rs::signature::KeyPair as _;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::digest;
use secrecy::SecretString;
use serde_json::{Value, json};

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("RSA key generation failed")]
    Generate,
    #[error("not an RSA private key in PKCS#8 PEM")]
    Parse,
}

/// A freshly generated signing key.
pub struct GeneratedKey {
    pub kid: String,
    pub private_key_pem: SecretString,
    pub public_jwk: Value,
}

/// A new RSA-2048 key; its `kid` is its RFC 7638 thumbprint.
pub fn generate_signing_key() -> Result<GeneratedKey, KeyError> {
    let pair = KeyPair::generate(KeySize::Rsa2048).map_err(|_| KeyError::Generate)?;
    let der =
        AsDer::<aws_lc_rs::encoding::Pkcs8V1Der>::as_der(&pair).map_err(|_| KeyError::Generate)?;
    let pem = pem::encode_config(
        &pem::Pem::new("PRIVATE KEY", der.as_ref().to_vec()),
        pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
    );
    let public_jwk = jwk_of(&pair);
    let kid = public_jwk
        .get("kid")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    Ok(GeneratedKey {
        kid,
        private_key_pem: SecretString::from(pem),
        public_jwk,
    })
}

/// The public JWK of a PKCS#8 PEM private key, with the given `kid`.
pub fn public_jwk_from_pem(kid: &str, private_key_pem: &str) -> Result<Value, KeyError> {
    let parsed = pem::parse(private_key_pem).map_err(|_| KeyError::Parse)?;
    let pair = KeyPair::from_pkcs8(parsed.contents()).map_err(|_| KeyError::Parse)?;
    let mut jwk = jwk_of(&pair);
    if let Some(fields) = jwk.as_object_mut() {
        fields.insert("kid".into(), json!(kid));
    }
    Ok(jwk)
}

fn jwk_of(pair: &KeyPair) -> Value {
    let public = pair.public_key();
    let n = URL_SAFE_NO_PAD.encode(public.modulus().big_endian_without_leading_zero());
    let e = URL_SAFE_NO_PAD.encode(public.exponent().big_endian_without_leading_zero());
    // RFC 7638 §3.2: the required members in lexicographic order, no whitespace.
    let canonical = format!(r#"{{"e":"{e}","kty":"RSA","n":"{n}"}}"#);
    let kid = URL_SAFE_NO_PAD.encode(digest::digest(&digest::SHA256, canonical.as_bytes()));
    json!({ "kty": "RSA", "use": "sig", "alg": "RS256", "kid": kid, "n": n, "e": e })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use secrecy::ExposeSecret;

    #[test]
    fn a_generated_key_signs_and_its_jwk_matches() {
        let key = generate_signing_key().unwrap();
        let pem = key.private_key_pem.expose_secret();
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----\n"));
        assert_eq!(key.public_jwk["kid"], key.kid.as_str());
        assert_eq!(key.public_jwk["e"], "AQAB");
        assert_eq!(public_jwk_from_pem(&key.kid, pem).unwrap(), key.public_jwk);
        assert!(jsonwebtoken::EncodingKey::from_rsa_pem(pem.as_bytes()).is_ok());
    }
}
