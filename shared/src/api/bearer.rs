//! The access-token check of the access-token endpoints (CONTRACT §7), in one place:
//! the token itself ([`AccessTokenVerifier`]: RS256 with a key of the public JWK Set,
//! `typ`, `iss`, `aud`, `exp`, the required claims), then its session, read with the
//! rest of its account's item collection in one Query: live, and of the token's `sub`.
//! Anything else is 401 `INVALID_ACCESS_TOKEN`. These functions read only the public JWK
//! Set secret (`JWKS_SECRET_ID`), never a private key.

use std::sync::Arc;

use aws_config::SdkConfig;
use lambda_http::Request;

use super::{InitError, current_secret, within};
use crate::adapters::DynamoDbStore;
use crate::adapters::access_token::{AccessTokenVerifier, PublicKeys, VerifiedAccess};
use crate::adapters::dynamodb::Account;
use crate::adapters::secrets::SecretCache;
use crate::budget::Budget;
use crate::config::{Env, TokenConfig, jwks_secret_id};
use crate::domain::session::SessionId;
use crate::domain::{AuthError, UnixMillis};
use crate::http::header_str;
use crate::ports::Clock;

/// Checks bearer access tokens for one function.
pub struct Bearer {
    keys: SecretCache<PublicKeys>,
    verifier: AccessTokenVerifier,
}

/// A caller whose token and session passed the check.
pub struct Caller {
    pub access: VerifiedAccess,
    pub sid: SessionId,
    /// The caller's account as read by the check (its sessions included).
    pub account: Account,
}

impl Bearer {
    pub fn new(keys: SecretCache<PublicKeys>, tokens: &TokenConfig) -> Self {
        Self {
            keys,
            verifier: AccessTokenVerifier::new(tokens.issuer.clone(), tokens.audience.clone()),
        }
    }

    /// Read the public JWK Set secret (a function that cannot read it fails its init).
    pub async fn load(
        aws: &SdkConfig,
        env: &dyn Env,
        tokens: &TokenConfig,
        clock: &Arc<dyn Clock>,
    ) -> Result<Self, InitError> {
        let keys = SecretCache::load(
            aws_sdk_secretsmanager::Client::new(aws),
            jwks_secret_id(env)?,
            PublicKeys::parse,
            Arc::clone(clock),
        )
        .await?;
        Ok(Self::new(keys, tokens))
    }

    /// The token of `req` checked at `now`, then its session with one Query.
    pub async fn check(
        &self,
        req: &Request,
        budget: &Budget,
        store: &DynamoDbStore,
        now: UnixMillis,
    ) -> Result<Caller, AuthError> {
        let keys = current_secret(budget, &self.keys).await;
        let access = self
            .verifier
            .verify(&keys, header_str(req, "authorization"), now)
            .map_err(|refused| AuthError::InvalidAccessToken(refused.0))?;
        let sid = SessionId::parse(&access.sid)
            .filter(|sid| sid.account() == access.sub)
            .ok_or(AuthError::InvalidAccessToken("sid is not a session of sub"))?;
        let account = within(budget, store.load_account(&access.sub)).await?;
        let live = account
            .session(&sid)
            .is_some_and(|s| s.sub == access.sub && s.is_live(now));
        if !live {
            return Err(AuthError::InvalidAccessToken("session not live"));
        }
        Ok(Caller {
            access,
            sid,
            account,
        })
    }
}
