//! The access-token check of this service's own access-token endpoints (CONTRACT §7):
//! `GET /sessions`, `POST /sessions/revoke` and `POST /account/delete` take
//! `Authorization: Bearer <accessToken>`.
//!
//! A token is accepted only if all of these hold, checked in this order:
//!
//! - the header's scheme is `Bearer` (in any case) followed by exactly one token
//!   (RFC 6750 §2.1);
//! - the token is at most 4 KiB and a compact JWS (RFC 7515 §7.1): three base64url
//!   segments without padding;
//! - its header is a JSON object with `alg` exactly `RS256` (never `none`, never HS256
//!   keyed with the public key: the algorithm is ours to choose, not the token's,
//!   RFC 8725 §3.1), `typ` `at+jwt` or `application/at+jwt` (RFC 9068 §4, compared
//!   without case as media types are, RFC 7515 §4.1.9), no `crit` (this check
//!   understands no extension, so a token that demands one is refused, RFC 7515
//!   §4.1.11), and the `kid` of an RSA key in the JWK Set of `JWKS_SECRET_ID` (these
//!   functions hold no private key). Keys come from that set only: `jku`, `jwk`, `x5u`
//!   and `x5c` in a header are ignored;
//! - the RS256 signature (RFC 7518 §3.3) of `header.claims` verifies with that key,
//!   before anything the claims say is read;
//! - the claims are a JSON object with `iss` = `JWT_ISSUER`; `aud` = `JWT_AUDIENCE` as a
//!   single string (the issuer writes a string, CONTRACT §4, so an array is refused even
//!   when it holds the audience); `exp` a NumericDate less than 60 s ago (the clock skew
//!   RFC 7519 §4.1.4 allows for, and no more); `sub` and `sid` non-empty strings; `iat`
//!   and `auth_time` NumericDates (non-negative integers: a float or a string is
//!   refused).
//!
//! That the session `sid` is live and belongs to `sub` is the caller's check, in the
//! store. Whatever the reason, a refusal is 401 `INVALID_ACCESS_TOKEN`; [`Refused`]
//! names the reason for the logs only, and never quotes the token.

use std::collections::HashMap;
use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::signature::{RSA_PKCS1_2048_8192_SHA256, RsaPublicKeyComponents};
use serde_json::{Map, Value};

use crate::domain::UnixMillis;

/// The longest token accepted, in bytes (CONTRACT §7). The issuer's are about 900.
pub const MAX_ACCESS_TOKEN_BYTES: usize = 4096;

/// How long after its `exp` a token is still accepted: the clock skew between the
/// signer and the function checking (CONTRACT §7).
pub const EXP_LEEWAY_SECONDS: u64 = 60;

/// The RSA public keys of the JWK Set secret, parsed once per secret read.
pub struct PublicKeys {
    by_kid: HashMap<String, RsaPublicKeyComponents<Vec<u8>>>,
}

impl PublicKeys {
    /// The keys of a JWK Set (RFC 7517 §5). A key that is not RSA, lacks `kid`, `n` or
    /// `e` (base64url), or is marked for another `use` or `alg` than RS256 signatures
    /// (RFC 7517 §4.2, §4.4) is skipped; of two keys with one `kid`, the first is kept.
    /// Not JSON, or no `keys` array, is an error naming the problem.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let set: Value = serde_json::from_str(raw).map_err(|_| "not JSON".to_owned())?;
        let keys = set
            .get("keys")
            .and_then(Value::as_array)
            .ok_or_else(|| "expected {\"keys\":[...]}".to_owned())?;
        let mut by_kid = HashMap::with_capacity(keys.len());
        for (kid, key) in keys.iter().filter_map(rs256_key) {
            by_kid.entry(kid).or_insert(key);
        }
        Ok(Self { by_kid })
    }

    pub fn len(&self) -> usize {
        self.by_kid.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_kid.is_empty()
    }
}

impl fmt::Debug for PublicKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PublicKeys")
            .field("kids", &self.by_kid.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// The `kid` and public key of one JWK, if it is an RSA key for RS256 signatures.
fn rs256_key(jwk: &Value) -> Option<(String, RsaPublicKeyComponents<Vec<u8>>)> {
    let jwk = jwk.as_object()?;
    if string(jwk, "kty") != Some("RSA") {
        return None;
    }
    let other =
        |name: &str, wanted: &str| jwk.get(name).is_some_and(|v| v.as_str() != Some(wanted));
    if other("use", "sig") || other("alg", "RS256") {
        return None;
    }
    let kid = string(jwk, "kid").filter(|kid| !kid.is_empty())?;
    let n = URL_SAFE_NO_PAD.decode(string(jwk, "n")?).ok()?;
    let e = URL_SAFE_NO_PAD.decode(string(jwk, "e")?).ok()?;
    Some((kid.to_owned(), RsaPublicKeyComponents { n, e }))
}

/// What a verified access token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedAccess {
    pub sub: String,
    pub sid: String,
    pub auth_time: u64,
    pub iat: u64,
    pub exp: u64,
}

/// Why a token was refused: for the logs only, never shown to the caller, and never
/// quoting the token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused(pub &'static str);

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

/// Checks access tokens against the issuer and audience of this deployment
/// (`JWT_ISSUER`, `JWT_AUDIENCE`).
#[derive(Debug, Clone)]
pub struct AccessTokenVerifier {
    issuer: String,
    audience: String,
}

impl AccessTokenVerifier {
    pub fn new(issuer: impl Into<String>, audience: impl Into<String>) -> Self {
        Self {
            issuer: issuer.into(),
            audience: audience.into(),
        }
    }

    /// The claims of the bearer token in `authorization` (the raw `Authorization` header
    /// value, `None` when absent) if every rule of the module holds at `now`.
    pub fn verify(
        &self,
        keys: &PublicKeys,
        authorization: Option<&str>,
        now: UnixMillis,
    ) -> Result<VerifiedAccess, Refused> {
        let token = bearer_token(authorization)?;
        if token.len() > MAX_ACCESS_TOKEN_BYTES {
            return Err(Refused("token longer than 4 KiB"));
        }
        // RFC 7515 §5.2: the signing input is everything before the last dot.
        let (signing_input, signature) =
            token.rsplit_once('.').ok_or(Refused("not a compact JWS"))?;
        let (header, claims) = signing_input
            .split_once('.')
            .ok_or(Refused("not a compact JWS"))?;
        if claims.contains('.') {
            return Err(Refused("not a compact JWS"));
        }
        let header = json_object(header).ok_or(Refused("header is not a base64url JSON object"))?;
        let key = signing_key(&header, keys)?;
        let signature = URL_SAFE_NO_PAD
            .decode(signature)
            .map_err(|_| Refused("signature is not base64url"))?;
        key.verify(
            &RSA_PKCS1_2048_8192_SHA256,
            signing_input.as_bytes(),
            &signature,
        )
        .map_err(|_| Refused("bad signature"))?;
        // Signed by a key of the set: only now are the claims read.
        let claims =
            json_object(claims).ok_or(Refused("claims are not a base64url JSON object"))?;
        self.check_claims(&claims, now)
    }

    fn check_claims(
        &self,
        claims: &Map<String, Value>,
        now: UnixMillis,
    ) -> Result<VerifiedAccess, Refused> {
        if string(claims, "iss") != Some(self.issuer.as_str()) {
            return Err(Refused("iss is not JWT_ISSUER"));
        }
        if string(claims, "aud") != Some(self.audience.as_str()) {
            return Err(Refused("aud is not the string JWT_AUDIENCE"));
        }
        let exp = numeric_date(claims, "exp").ok_or(Refused("exp is not a NumericDate"))?;
        if now >= UnixMillis::from_secs(exp).plus_secs(EXP_LEEWAY_SECONDS) {
            return Err(Refused("expired"));
        }
        let sub = string(claims, "sub")
            .filter(|s| !s.is_empty())
            .ok_or(Refused("sub is not a non-empty string"))?;
        let sid = string(claims, "sid")
            .filter(|s| !s.is_empty())
            .ok_or(Refused("sid is not a non-empty string"))?;
        let iat = numeric_date(claims, "iat").ok_or(Refused("iat is not a NumericDate"))?;
        let auth_time =
            numeric_date(claims, "auth_time").ok_or(Refused("auth_time is not a NumericDate"))?;
        Ok(VerifiedAccess {
            sub: sub.to_owned(),
            sid: sid.to_owned(),
            auth_time,
            iat,
            exp,
        })
    }
}

/// The token of a `Bearer` credential (RFC 6750 §2.1: `"Bearer" 1*SP b64token`, the
/// scheme in any case, RFC 9110 §11.1).
fn bearer_token(authorization: Option<&str>) -> Result<&str, Refused> {
    let value = authorization.ok_or(Refused("no Authorization header"))?;
    // A field value has no leading or trailing whitespace (RFC 9110 §5.5).
    let value = value.trim_matches([' ', '\t']);
    let (scheme, token) = value.split_once(' ').unwrap_or((value, ""));
    if !scheme.eq_ignore_ascii_case("Bearer") {
        return Err(Refused("not a Bearer credential"));
    }
    let token = token.trim_start_matches(' ');
    if token.is_empty() {
        return Err(Refused("no bearer token"));
    }
    if token.contains([' ', '\t']) {
        return Err(Refused("more than one bearer token"));
    }
    Ok(token)
}

/// A base64url segment (no padding) holding a JSON object.
fn json_object(segment: &str) -> Option<Map<String, Value>> {
    let bytes = URL_SAFE_NO_PAD.decode(segment).ok()?;
    match serde_json::from_slice(&bytes).ok()? {
        Value::Object(object) => Some(object),
        _ => None,
    }
}

/// The key of the set that the header names, if the header is one this check accepts.
fn signing_key<'k>(
    header: &Map<String, Value>,
    keys: &'k PublicKeys,
) -> Result<&'k RsaPublicKeyComponents<Vec<u8>>, Refused> {
    if string(header, "alg") != Some("RS256") {
        return Err(Refused("alg is not RS256"));
    }
    let typ = string(header, "typ").ok_or(Refused("no typ"))?;
    if !typ.eq_ignore_ascii_case("at+jwt") && !typ.eq_ignore_ascii_case("application/at+jwt") {
        return Err(Refused("typ is not at+jwt"));
    }
    if header.contains_key("crit") {
        return Err(Refused("crit names an extension not understood"));
    }
    let kid = string(header, "kid").ok_or(Refused("no kid"))?;
    keys.by_kid.get(kid).ok_or(Refused("unknown kid"))
}

fn string<'a>(object: &'a Map<String, Value>, name: &str) -> Option<&'a str> {
    object.get(name).and_then(Value::as_str)
}

/// A NumericDate as the issuer writes it: whole seconds, an integer (CONTRACT §4).
fn numeric_date(object: &Map<String, Value>, name: &str) -> Option<u64> {
    object.get(name).and_then(Value::as_u64)
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::indexing_slicing,
        clippy::panic
    )]
    use std::sync::OnceLock;

    use ring::hmac;
    use ring::rand::SystemRandom;
    use secrecy::ExposeSecret;
    use serde_json::json;

    use super::*;
    use crate::keys::{GeneratedKey, RsaPrivateKey, generate_signing_key};

    const ISSUER: &str = "https://api.foodsave.kz/api/v1/auth";
    const AUDIENCE: &str = "foodsave";
    const NOW_SECS: u64 = 1_767_225_600;

    /// Two keys, generated once for the whole run (RSA generation is slow in debug).
    struct Fixture {
        key: GeneratedKey,
        signer: RsaPrivateKey,
        other: GeneratedKey,
        other_signer: RsaPrivateKey,
        /// The JWK Set holds both keys.
        keys: PublicKeys,
    }

    fn fixture() -> &'static Fixture {
        static FIXTURE: OnceLock<Fixture> = OnceLock::new();
        FIXTURE.get_or_init(|| {
            let key = generate_signing_key().unwrap();
            let other = generate_signing_key().unwrap();
            let signer = RsaPrivateKey::from_pem(key.private_key_pem.expose_secret()).unwrap();
            let other_signer =
                RsaPrivateKey::from_pem(other.private_key_pem.expose_secret()).unwrap();
            let set = json!({"keys": [key.public_jwk, other.public_jwk]});
            let keys = PublicKeys::parse(&set.to_string()).unwrap();
            Fixture {
                key,
                signer,
                other,
                other_signer,
                keys,
            }
        })
    }

    fn verifier() -> AccessTokenVerifier {
        AccessTokenVerifier::new(ISSUER, AUDIENCE)
    }

    fn now() -> UnixMillis {
        UnixMillis::from_secs(NOW_SECS)
    }

    fn header() -> Value {
        json!({"alg": "RS256", "typ": "at+jwt", "kid": fixture().key.kid})
    }

    /// The claims the issuer writes (CONTRACT §4).
    fn claims() -> Value {
        json!({
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": "user-1",
            "phone_number": "+77001234567",
            "sid": "session-1",
            "iat": NOW_SECS - 10,
            "exp": NOW_SECS + 3590,
            "jti": "jti-1",
            "client_id": "foodsave-app",
            "auth_time": NOW_SECS - 100,
        })
    }

    fn encode(value: &Value) -> String {
        URL_SAFE_NO_PAD.encode(value.to_string())
    }

    /// The compact JWS of `header` and `claims` signed RS256 with `signer`.
    fn sign_with(signer: &RsaPrivateKey, header: &Value, claims: &Value) -> String {
        let input = format!("{}.{}", encode(header), encode(claims));
        let signature = signer
            .sign_rs256(&SystemRandom::new(), input.as_bytes())
            .unwrap();
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature))
    }

    fn sign(header: &Value, claims: &Value) -> String {
        sign_with(&fixture().signer, header, claims)
    }

    fn check(token: &str) -> Result<VerifiedAccess, Refused> {
        check_at(token, now())
    }

    fn check_at(token: &str, now: UnixMillis) -> Result<VerifiedAccess, Refused> {
        verifier().verify(&fixture().keys, Some(&format!("Bearer {token}")), now)
    }

    fn with_claim(name: &str, value: Value) -> String {
        let mut claims = claims();
        claims[name] = value;
        sign(&header(), &claims)
    }

    fn without_claim(name: &str) -> String {
        let mut claims = claims();
        claims.as_object_mut().unwrap().remove(name);
        sign(&header(), &claims)
    }

    fn with_header(name: &str, value: Value) -> String {
        let mut header = header();
        header[name] = value;
        sign(&header, &claims())
    }

    #[test]
    fn a_good_token_is_accepted_with_what_it_says() {
        let token = sign(&header(), &claims());
        assert_eq!(
            check(&token),
            Ok(VerifiedAccess {
                sub: "user-1".into(),
                sid: "session-1".into(),
                auth_time: NOW_SECS - 100,
                iat: NOW_SECS - 10,
                exp: NOW_SECS + 3590,
            })
        );
        // Signed by the other key of the set, under its own kid.
        let mut header = header();
        header["kid"] = json!(fixture().other.kid);
        let token = sign_with(&fixture().other_signer, &header, &claims());
        assert_eq!(check(&token).unwrap().sub, "user-1");
    }

    #[test]
    fn the_scheme_is_bearer_in_any_case_with_exactly_one_token() {
        let token = sign(&header(), &claims());
        let verify =
            |authorization: Option<&str>| verifier().verify(&fixture().keys, authorization, now());
        for good in [
            format!("Bearer {token}"),
            format!("bearer {token}"),
            format!("BEARER {token}"),
            format!("Bearer   {token}"),
            format!(" Bearer {token}\t"),
        ] {
            assert!(verify(Some(&good)).is_ok(), "{good:?}");
        }
        assert_eq!(verify(None), Err(Refused("no Authorization header")));
        for (bad, why) in [
            (format!("Basic {token}"), "not a Bearer credential"),
            ("Basic dXNlcjpwYXNz".to_owned(), "not a Bearer credential"),
            (token.clone(), "not a Bearer credential"),
            (format!("Bearer\t{token}"), "not a Bearer credential"),
            (format!("Bearer{token}"), "not a Bearer credential"),
            ("Bearer".to_owned(), "no bearer token"),
            ("Bearer ".to_owned(), "no bearer token"),
            ("Bearer    ".to_owned(), "no bearer token"),
            (String::new(), "not a Bearer credential"),
            (
                format!("Bearer {token} {token}"),
                "more than one bearer token",
            ),
            (format!("Bearer {token} x"), "more than one bearer token"),
        ] {
            assert_eq!(verify(Some(&bad)), Err(Refused(why)), "{bad:?}");
        }
    }

    #[test]
    fn a_malformed_token_is_refused() {
        let token = sign(&header(), &claims());
        let (input, signature) = token.rsplit_once('.').unwrap();
        let (head, body) = input.split_once('.').unwrap();
        for bad in [
            "x".to_owned(),
            input.to_owned(),
            format!("{head}.{body}"),
            format!("{token}."),
            format!("{token}.{signature}"),
            "..".to_owned(),
            // A JWE's five segments.
            format!("{head}.{body}.{signature}.{body}.{signature}"),
        ] {
            assert!(check(&bad).is_err(), "{bad:?}");
        }
        assert_eq!(check("x"), Err(Refused("not a compact JWS")));
        assert_eq!(check(input), Err(Refused("not a compact JWS")));
        // Not base64url: the standard alphabet, padding, a stray character.
        let padded = format!("{}=", encode(&header()));
        assert_eq!(
            check(&format!("{padded}.{body}.{signature}")),
            Err(Refused("header is not a base64url JSON object"))
        );
        let plus = format!("{}+", &head[..head.len() - 1]);
        assert!(check(&format!("{plus}.{body}.{signature}")).is_err());
        assert_eq!(
            check(&format!("{head}.{body}.{signature}!")),
            Err(Refused("signature is not base64url"))
        );
        assert_eq!(
            check(&format!("{head}.{body}.")),
            Err(Refused("bad signature"))
        );
        // Base64url, but not a JSON object.
        for not_json in ["not json", "[1,2]", "\"RS256\"", ""] {
            let head = URL_SAFE_NO_PAD.encode(not_json);
            assert_eq!(
                check(&format!("{head}.{body}.{signature}")),
                Err(Refused("header is not a base64url JSON object")),
                "{not_json:?}"
            );
        }
        // Claims that are not a JSON object, under a good signature.
        let input = format!("{head}.{}", URL_SAFE_NO_PAD.encode("not json"));
        let signature = fixture()
            .signer
            .sign_rs256(&SystemRandom::new(), input.as_bytes())
            .unwrap();
        let token = format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature));
        assert_eq!(
            check(&token),
            Err(Refused("claims are not a base64url JSON object"))
        );
    }

    #[test]
    fn a_token_longer_than_4_kib_is_refused() {
        // Tokens of exactly 4096 and 4097 bytes: the claims padded, and the header too,
        // since not every length is the base64url of some number of bytes.
        let sized = |length: usize| {
            for header_pad in 0..3 {
                let mut header = header();
                header["x"] = json!("h".repeat(header_pad));
                for claims_pad in 0..4096 {
                    let mut claims = claims();
                    claims["pad"] = json!("c".repeat(claims_pad));
                    // 342 characters: the base64url of a 2048-bit signature.
                    let unsigned = encode(&header).len() + 1 + encode(&claims).len() + 1 + 342;
                    if unsigned == length {
                        let token = sign(&header, &claims);
                        assert_eq!(token.len(), length);
                        return token;
                    }
                }
            }
            panic!("no token of {length} bytes");
        };
        assert!(check(&sized(MAX_ACCESS_TOKEN_BYTES)).is_ok());
        assert_eq!(
            check(&sized(MAX_ACCESS_TOKEN_BYTES + 1)),
            Err(Refused("token longer than 4 KiB"))
        );
        // Refused for its length before anything is decoded.
        let junk = "a".repeat(MAX_ACCESS_TOKEN_BYTES + 1);
        assert_eq!(check(&junk), Err(Refused("token longer than 4 KiB")));
    }

    #[test]
    fn alg_none_is_refused() {
        for alg in ["none", "None", "NONE"] {
            let mut header = header();
            header["alg"] = json!(alg);
            let unsigned = format!("{}.{}.", encode(&header), encode(&claims()));
            assert_eq!(check(&unsigned), Err(Refused("alg is not RS256")));
            // And with the RS256 signature kept.
            let token = with_header("alg", json!(alg));
            assert_eq!(check(&token), Err(Refused("alg is not RS256")));
        }
    }

    #[test]
    fn hs256_keyed_with_the_public_key_is_refused() {
        let f = fixture();
        let mut header = header();
        header["alg"] = json!("HS256");
        let input = format!("{}.{}", encode(&header), encode(&claims()));
        // The classic confusion: the public key's own bytes as the HMAC secret.
        for secret in [
            f.key.public_jwk.to_string().into_bytes(),
            URL_SAFE_NO_PAD
                .decode(f.key.public_jwk["n"].as_str().unwrap())
                .unwrap(),
        ] {
            let tag = hmac::sign(
                &hmac::Key::new(hmac::HMAC_SHA256, &secret),
                input.as_bytes(),
            );
            let token = format!("{input}.{}", URL_SAFE_NO_PAD.encode(tag));
            assert_eq!(check(&token), Err(Refused("alg is not RS256")));
        }
        for alg in ["rs256", "RS384", "RS512", "PS256", "ES256"] {
            assert_eq!(
                check(&with_header("alg", json!(alg))),
                Err(Refused("alg is not RS256")),
                "{alg}"
            );
        }
        let mut header = self::header();
        header.as_object_mut().unwrap().remove("alg");
        assert_eq!(
            check(&sign(&header, &claims())),
            Err(Refused("alg is not RS256"))
        );
    }

    #[test]
    fn typ_must_be_at_jwt() {
        for typ in [
            "at+jwt",
            "AT+JWT",
            "application/at+jwt",
            "Application/AT+JWT",
        ] {
            assert!(check(&with_header("typ", json!(typ))).is_ok(), "{typ}");
        }
        for typ in ["JWT", "jwt", "application/jwt", "at+jwt ", "", "dpop+jwt"] {
            assert_eq!(
                check(&with_header("typ", json!(typ))),
                Err(Refused("typ is not at+jwt")),
                "{typ}"
            );
        }
        assert_eq!(
            check(&with_header("typ", json!(["at+jwt"]))),
            Err(Refused("no typ"))
        );
        let mut header = header();
        header.as_object_mut().unwrap().remove("typ");
        assert_eq!(check(&sign(&header, &claims())), Err(Refused("no typ")));
    }

    #[test]
    fn a_crit_header_is_refused() {
        for crit in [json!(["b64"]), json!([]), json!("exp")] {
            assert_eq!(
                check(&with_header("crit", crit)),
                Err(Refused("crit names an extension not understood"))
            );
        }
    }

    #[test]
    fn the_kid_must_name_a_key_of_the_set() {
        assert_eq!(
            check(&with_header("kid", json!("not-a-kid"))),
            Err(Refused("unknown kid"))
        );
        assert_eq!(check(&with_header("kid", json!(7))), Err(Refused("no kid")));
        let mut header = header();
        header.as_object_mut().unwrap().remove("kid");
        assert_eq!(check(&sign(&header, &claims())), Err(Refused("no kid")));
        // A key carried in the token itself is never used.
        let mut header = self::header();
        header["kid"] = json!("attacker");
        header["jwk"] = fixture().key.public_jwk.clone();
        assert_eq!(
            check(&sign(&header, &claims())),
            Err(Refused("unknown kid"))
        );
        // The same token against a set without its key.
        let token = sign(&self::header(), &claims());
        let only_other =
            PublicKeys::parse(&json!({"keys": [fixture().other.public_jwk]}).to_string()).unwrap();
        assert_eq!(
            verifier().verify(&only_other, Some(&format!("Bearer {token}")), now()),
            Err(Refused("unknown kid"))
        );
    }

    #[test]
    fn a_bad_signature_is_refused() {
        // Signed by another key, under the kid of a key of the set.
        let token = sign_with(&fixture().other_signer, &header(), &claims());
        assert_eq!(check(&token), Err(Refused("bad signature")));
        // One bit of the signature flipped.
        let token = sign(&header(), &claims());
        let (input, signature) = token.rsplit_once('.').unwrap();
        let mut bytes = URL_SAFE_NO_PAD.decode(signature).unwrap();
        bytes[100] ^= 0x01;
        let flipped = format!("{input}.{}", URL_SAFE_NO_PAD.encode(&bytes));
        assert_eq!(check(&flipped), Err(Refused("bad signature")));
        // A truncated signature.
        let short = format!("{input}.{}", URL_SAFE_NO_PAD.encode(&bytes[..255]));
        assert_eq!(check(&short), Err(Refused("bad signature")));
    }

    #[test]
    fn a_tampered_token_is_refused() {
        let token = sign(&header(), &claims());
        let mut parts = token.split('.');
        let (head, _, signature) = (
            parts.next().unwrap(),
            parts.next().unwrap(),
            parts.next().unwrap(),
        );
        // Other claims under the original signature.
        let mut claims = claims();
        claims["sub"] = json!("user-2");
        let forged = format!("{head}.{}.{signature}", encode(&claims));
        assert_eq!(check(&forged), Err(Refused("bad signature")));
        // Another header under the original signature (the other key's kid).
        let mut header = header();
        header["kid"] = json!(fixture().other.kid);
        let forged = format!(
            "{}.{}.{signature}",
            encode(&header),
            token.split('.').nth(1).unwrap()
        );
        assert_eq!(check(&forged), Err(Refused("bad signature")));
    }

    #[test]
    fn exp_is_accepted_until_60_seconds_after_it() {
        let exp = NOW_SECS + 3590;
        let token = sign(&header(), &claims());
        let at = |secs: u64, millis: u64| UnixMillis::from_secs(secs).plus_millis(millis);
        assert!(check_at(&token, at(exp - 1, 0)).is_ok());
        assert!(check_at(&token, at(exp, 0)).is_ok(), "within the leeway");
        assert!(
            check_at(&token, at(exp + 59, 999)).is_ok(),
            "within the leeway"
        );
        assert_eq!(check_at(&token, at(exp + 60, 0)), Err(Refused("expired")));
        assert_eq!(
            check_at(&token, at(exp + 86_400, 0)),
            Err(Refused("expired"))
        );
        // Already expired when checked at the test's now.
        let expired = with_claim("exp", json!(NOW_SECS - 60));
        assert_eq!(check(&expired), Err(Refused("expired")));
        let within = with_claim("exp", json!(NOW_SECS - 59));
        assert!(check(&within).is_ok());
    }

    #[test]
    fn exp_must_be_an_integer_numeric_date() {
        for exp in [
            json!(null),
            json!("1767229190"),
            json!(1_767_229_190.0),
            json!(1.7e9),
            json!(-1),
        ] {
            assert_eq!(
                check(&with_claim("exp", exp.clone())),
                Err(Refused("exp is not a NumericDate")),
                "{exp}"
            );
        }
        assert_eq!(
            check(&without_claim("exp")),
            Err(Refused("exp is not a NumericDate"))
        );
    }

    #[test]
    fn iss_and_aud_must_be_this_deployments() {
        assert_eq!(
            check(&with_claim("iss", json!("https://evil.example"))),
            Err(Refused("iss is not JWT_ISSUER"))
        );
        assert_eq!(
            check(&with_claim("iss", json!(format!("{ISSUER}/")))),
            Err(Refused("iss is not JWT_ISSUER"))
        );
        assert_eq!(
            check(&without_claim("iss")),
            Err(Refused("iss is not JWT_ISSUER"))
        );
        for aud in [
            json!("another-api"),
            json!("FOODSAVE"),
            json!([AUDIENCE]),
            json!([AUDIENCE, "another-api"]),
            json!(null),
        ] {
            assert_eq!(
                check(&with_claim("aud", aud.clone())),
                Err(Refused("aud is not the string JWT_AUDIENCE")),
                "{aud}"
            );
        }
        assert_eq!(
            check(&without_claim("aud")),
            Err(Refused("aud is not the string JWT_AUDIENCE"))
        );
    }

    #[test]
    fn sub_sid_iat_and_auth_time_must_be_present() {
        for (name, why) in [
            ("sub", "sub is not a non-empty string"),
            ("sid", "sid is not a non-empty string"),
            ("iat", "iat is not a NumericDate"),
            ("auth_time", "auth_time is not a NumericDate"),
        ] {
            assert_eq!(check(&without_claim(name)), Err(Refused(why)), "{name}");
            assert_eq!(
                check(&with_claim(name, json!(null))),
                Err(Refused(why)),
                "{name}"
            );
        }
        for (name, value) in [("sub", json!("")), ("sid", json!("")), ("sub", json!(7))] {
            assert!(check(&with_claim(name, value)).is_err(), "{name}");
        }
        for value in [
            json!("1767225500"),
            json!(1_767_225_500.5),
            json!(-1),
            json!(true),
        ] {
            assert_eq!(
                check(&with_claim("auth_time", value.clone())),
                Err(Refused("auth_time is not a NumericDate")),
                "{value}"
            );
            assert_eq!(
                check(&with_claim("iat", value.clone())),
                Err(Refused("iat is not a NumericDate")),
                "{value}"
            );
        }
        // Zero is a NumericDate.
        assert_eq!(
            check(&with_claim("auth_time", json!(0))).unwrap().auth_time,
            0
        );
    }

    #[test]
    fn a_refusal_never_quotes_the_token() {
        let token = sign(&header(), &claims());
        let (input, signature) = token.rsplit_once('.').unwrap();
        for bad in [
            format!("{input}.{}", &signature[1..]),
            format!("{input}x.{signature}"),
            with_claim("aud", json!("other")),
        ] {
            let refused = check(&bad).unwrap_err();
            for part in bad.split('.') {
                assert!(!format!("{refused} {refused:?}").contains(part));
            }
        }
    }

    #[test]
    fn the_jwk_set_keeps_rsa_signing_keys_only() {
        let f = fixture();
        assert_eq!(f.keys.len(), 2);
        assert!(!f.keys.is_empty());
        let rsa = &f.key.public_jwk;
        let mut enc = rsa.clone();
        enc["use"] = json!("enc");
        enc["kid"] = json!("enc");
        let mut rs512 = rsa.clone();
        rs512["alg"] = json!("RS512");
        rs512["kid"] = json!("rs512");
        let mut bare = json!({"kty": "RSA", "kid": "bare", "n": rsa["n"], "e": rsa["e"]});
        let mut no_n = rsa.clone();
        no_n.as_object_mut().unwrap().remove("n");
        no_n["kid"] = json!("no-n");
        let mut bad_e = rsa.clone();
        bad_e["e"] = json!("A=");
        bad_e["kid"] = json!("bad-e");
        let set = json!({"keys": [
            rsa,
            {"kty": "EC", "kid": "ec", "crv": "P-256", "x": "AA", "y": "AA"},
            {"kty": "oct", "kid": "oct", "k": "c2VjcmV0"},
            {"kty": "RSA", "n": rsa["n"], "e": rsa["e"]},
            {"kty": "RSA", "kid": "", "n": rsa["n"], "e": rsa["e"]},
            enc,
            rs512,
            bare.take(),
            no_n,
            bad_e,
            "not a key",
            7,
        ]});
        let keys = PublicKeys::parse(&set.to_string()).unwrap();
        let mut kids: Vec<&str> = keys.by_kid.keys().map(String::as_str).collect();
        kids.sort_unstable();
        let mut expected = ["bare", f.key.kid.as_str()];
        expected.sort_unstable();
        assert_eq!(kids, expected);
        assert!(format!("{keys:?}").contains(&f.key.kid));

        let empty = PublicKeys::parse(r#"{"keys":[]}"#).unwrap();
        assert!(empty.is_empty());
        assert_eq!(empty.len(), 0);
        assert_eq!(PublicKeys::parse("not json").err().unwrap(), "not JSON");
        for bad in [r#"{}"#, r#"{"keys":{}}"#, "[]", "null"] {
            assert_eq!(
                PublicKeys::parse(bad).err().unwrap(),
                "expected {\"keys\":[...]}",
                "{bad}"
            );
        }
        // Nothing verifies against an empty set.
        let token = sign(&header(), &claims());
        assert_eq!(
            verifier().verify(&empty, Some(&format!("Bearer {token}")), now()),
            Err(Refused("unknown kid"))
        );
    }

    #[test]
    fn of_two_keys_with_one_kid_the_first_is_kept() {
        let f = fixture();
        let mut impostor = f.other.public_jwk.clone();
        impostor["kid"] = json!(f.key.kid);
        let token = sign(&header(), &claims());
        let first =
            PublicKeys::parse(&json!({"keys": [f.key.public_jwk, impostor]}).to_string()).unwrap();
        assert_eq!(first.len(), 1);
        assert!(
            verifier()
                .verify(&first, Some(&format!("Bearer {token}")), now())
                .is_ok()
        );
    }

    #[test]
    fn arbitrary_input_is_refused_without_panicking() {
        let token = sign(&header(), &claims());
        for cut in 0..token.len() {
            let _ = check(&token[..cut]);
        }
        for junk in [
            "\u{0}",
            "é.é.é",
            "Bearer",
            "....",
            "e30.e30.e30",
            "e30.e30.",
            "W10.W10.W10",
        ] {
            assert!(check(junk).is_err(), "{junk:?}");
            assert!(
                verifier()
                    .verify(&fixture().keys, Some(junk), now())
                    .is_err()
            );
        }
    }
}
