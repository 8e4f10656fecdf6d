//! RSA signing keys: generation (aws-lc-rs; ring cannot generate RSA keys, and the `rsa`
//! crate has RUSTSEC-2023-0071), their public JWK form (RFC 7517, RFC 7638 `kid`), and
//! the parsed private key that signs RS256 (*ring*).

use std::fmt;

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rsa::{KeyPair, KeySize};
use aws_lc_rs::signature::KeyPair as _;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::digest;
use ring::rand::SecureRandom;
use ring::signature::{RSA_PKCS1_SHA256, RsaKeyPair};
use secrecy::SecretString;
use serde_json::{Value, json};

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("RSA key generation failed")]
    Generate,
    #[error("not an RSA private key in PKCS#8 PEM")]
    Parse,
    #[error("RS256 signing failed")]
    Sign,
}

/// An RSA private key parsed once, ready to sign RS256 (RFC 7518 §3.3:
/// RSASSA-PKCS1-v1_5 with SHA-256) any number of times.
///
/// *ring* rather than aws-lc-rs: its parse (which checks the structure and part of the
/// math, NIST SP 800-56B §6.4.1.4.3 less primality) costs tens of microseconds where
/// aws-lc-rs's costs hundreds plus a first-signature set-up per key and, in a process
/// that has not used its random generator yet, tens of milliseconds seeding it. What
/// the parse leaves unchecked (`dP`, `dQ` against `e` and `n`) *ring* checks at every
/// signature, which it verifies before returning it; the rotation's testSecret signs
/// with each key before it can sign tokens (`rotation::check_key_pair`).
pub struct RsaPrivateKey(RsaKeyPair);

impl RsaPrivateKey {
    /// A PEM `PRIVATE KEY` (PKCS#8, RFC 5958; what [`generate_signing_key`] writes) or
    /// `RSA PRIVATE KEY` (PKCS#1, RFC 8017 §A.1.2), 2048 to 4096 bits.
    pub fn from_pem(private_key_pem: &str) -> Result<Self, KeyError> {
        #[cfg(test)]
        PARSES.with(|n| n.set(n.get() + 1));
        let parsed = pem::parse(private_key_pem).map_err(|_| KeyError::Parse)?;
        let pair = match parsed.tag() {
            "PRIVATE KEY" => RsaKeyPair::from_pkcs8(parsed.contents()),
            "RSA PRIVATE KEY" => RsaKeyPair::from_der(parsed.contents()),
            _ => return Err(KeyError::Parse),
        };
        pair.map(Self).map_err(|_| KeyError::Parse)
    }

    /// The RS256 signature of `message` (the JWS signing input, RFC 7515 §5.1).
    pub fn sign_rs256(&self, rng: &dyn SecureRandom, message: &[u8]) -> Result<Vec<u8>, KeyError> {
        let mut signature = vec![0u8; self.0.public().modulus_len()];
        self.0
            .sign(&RSA_PKCS1_SHA256, rng, message, &mut signature)
            .map_err(|_| KeyError::Sign)?;
        Ok(signature)
    }
}

#[cfg(test)]
thread_local! {
    static PARSES: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// How many times [`RsaPrivateKey::from_pem`] has run on this thread (unit tests only).
#[cfg(test)]
pub(crate) fn parses_on_this_thread() -> usize {
    PARSES.with(std::cell::Cell::get)
}

impl fmt::Debug for RsaPrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RsaPrivateKey")
            .field("bits", &(self.0.public().modulus_len() * 8))
            .finish_non_exhaustive()
    }
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

    #[test]
    fn a_parsed_key_signs_rs256_that_its_public_jwk_verifies() {
        let key = generate_signing_key().unwrap();
        let parsed = RsaPrivateKey::from_pem(key.private_key_pem.expose_secret()).unwrap();
        let signature = parsed
            .sign_rs256(&ring::rand::SystemRandom::new(), b"message")
            .unwrap();
        assert_eq!(signature.len(), 256);
        let (n, e) = (
            URL_SAFE_NO_PAD
                .decode(key.public_jwk["n"].as_str().unwrap())
                .unwrap(),
            URL_SAFE_NO_PAD
                .decode(key.public_jwk["e"].as_str().unwrap())
                .unwrap(),
        );
        let public = ring::signature::RsaPublicKeyComponents { n: &n, e: &e };
        let alg = &ring::signature::RSA_PKCS1_2048_8192_SHA256;
        public.verify(alg, b"message", &signature).unwrap();
        assert!(public.verify(alg, b"massage", &signature).is_err());
        assert!(!format!("{parsed:?}").contains(key.private_key_pem.expose_secret()));
    }

    #[test]
    fn a_pkcs1_pem_parses_and_anything_else_is_refused() {
        let key = generate_signing_key().unwrap();
        let pkcs8 = pem::parse(key.private_key_pem.expose_secret()).unwrap();
        // PKCS#8 PrivateKeyInfo (RFC 5958): after the algorithm's NULL parameters comes
        // the OCTET STRING holding the RSAPrivateKey, two length bytes for 2048 bits.
        let der = pkcs8.contents();
        let at = der
            .windows(4)
            .position(|w| w == [0x05, 0x00, 0x04, 0x82])
            .unwrap();
        let pkcs1 = pem::encode(&pem::Pem::new("RSA PRIVATE KEY", der[at + 6..].to_vec()));
        assert!(RsaPrivateKey::from_pem(&pkcs1).is_ok());
        let certificate = pem::encode(&pem::Pem::new("CERTIFICATE", der.to_vec()));
        assert!(matches!(
            RsaPrivateKey::from_pem(&certificate),
            Err(KeyError::Parse)
        ));
        assert!(RsaPrivateKey::from_pem("not a key").is_err());
    }
}
