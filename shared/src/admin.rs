//! The operator's actions on one phone (CONTRACT §7, "Operator command line" and
//! "Blocked phones"), behind `foodsave-auth-admin` (`tools/admin`). They are the
//! functions' own storage rules (`DynamoDbStore`, `accounts`), not a second copy: the
//! same conditions, the same recognition of a write whose answer was lost.

use std::sync::Arc;
use std::time::Duration;

use ring::rand::SystemRandom;

use crate::accounts;
use crate::adapters::DynamoDbStore;
use crate::api::{Round, rng_failed, settle, within};
use crate::budget::Budget;
use crate::domain::events::Reason;
use crate::domain::otp::GUESS_WINDOW_SECS;
use crate::domain::session::SessionId;
use crate::domain::{AuthError, PhoneNumber, Session, random_id};
use crate::events::Events;
use crate::ports::{Clock, Conditional};

/// How long one action may take, retries and back-off included.
const ACTION_TIME: Duration = Duration::from_secs(30);

/// Why an action did not happen.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The phone has no account, or the account no such live session (exit status 1).
    #[error("{0}")]
    NotFound(&'static str),
    /// AWS failed or refused (exit status 3).
    #[error(transparent)]
    Failed(#[from] AuthError),
}

/// The operator's actions, against one table.
pub struct Admin {
    store: DynamoDbStore,
    clock: Arc<dyn Clock>,
    /// `OTP_SEND_WINDOW_SECONDS`: an unblocked phone's item lives at least this long.
    send_window_secs: u64,
    /// `EVENT_BUS_NAME`: the changes' events are the functions' (CONTRACT §7).
    events: Option<Events>,
}

impl Admin {
    pub fn new(store: DynamoDbStore, clock: Arc<dyn Clock>, send_window_secs: u64) -> Self {
        Self {
            store,
            clock,
            send_window_secs,
            events: None,
        }
    }

    /// Put account and session events on this bus (CONTRACT §7 "Events").
    #[must_use]
    pub fn with_events(mut self, events: Option<Events>) -> Self {
        self.events = events;
        self
    }

    fn budget() -> Budget {
        Budget::within(ACTION_TIME)
    }

    /// The `sub` of the phone's account.
    async fn account_of(&self, budget: &Budget, phone: &PhoneNumber) -> Result<String, AdminError> {
        within(budget, self.store.load_login(phone))
            .await
            .map_err(AuthError::from)?
            .sub
            .ok_or(AdminError::NotFound("no account for this phone"))
    }

    /// The account's live sessions, most recently used first.
    pub async fn sessions(&self, phone: &PhoneNumber) -> Result<Vec<Session>, AdminError> {
        let budget = Self::budget();
        let sub = self.account_of(&budget, phone).await?;
        let account = within(&budget, self.store.load_account(&sub))
            .await
            .map_err(AuthError::from)?;
        let now = self.clock.now();
        Ok(account.live_sessions(now).into_iter().cloned().collect())
    }

    /// Revoke every live session of the phone's account, or only `session`: its `sub`
    /// and the sessions revoked.
    pub async fn revoke(
        &self,
        phone: &PhoneNumber,
        session: Option<&str>,
    ) -> Result<(String, Vec<SessionId>), AdminError> {
        let budget = Self::budget();
        let sub = self.account_of(&budget, phone).await?;
        let only = match session {
            Some(raw) => Some(
                SessionId::parse(raw)
                    .filter(|sid| sid.account() == sub)
                    .ok_or(AdminError::NotFound("no such live session"))?,
            ),
            None => None,
        };
        let write_id = random_id(&SystemRandom::new()).map_err(rng_failed)?;
        let revoked = accounts::revoke_live(
            &self.store,
            &*self.clock,
            &budget,
            &sub,
            only.as_ref(),
            &write_id,
            self.events.as_ref(),
            Reason::Admin,
        )
        .await?;
        if only.is_some() && revoked.is_empty() {
            return Err(AdminError::NotFound("no such live session"));
        }
        Ok((sub, revoked))
    }

    /// Erase the phone's account as `/account/delete` does, without re-authentication:
    /// its `sub` and the live sessions it ended.
    pub async fn delete_account(
        &self,
        phone: &PhoneNumber,
    ) -> Result<(String, Vec<SessionId>), AdminError> {
        let budget = Self::budget();
        let sub = self.account_of(&budget, phone).await?;
        let ended = accounts::erase(
            &self.store,
            &*self.clock,
            &budget,
            &sub,
            None,
            self.events.as_ref(),
        )
        .await?
        .ok_or(AdminError::NotFound("no account for this phone"))?;
        Ok((sub, ended))
    }

    /// Clear the phone's guess count and send window. `false`: nothing to clear.
    pub async fn unlock(&self, phone: &PhoneNumber) -> Result<bool, AdminError> {
        let budget = Self::budget();
        Ok(settle(&budget, |_: Option<()>| async {
            Ok(
                match within(&budget, self.store.unlock_phone(phone)).await? {
                    Conditional::Applied(()) => Round::Done(true),
                    Conditional::Failed(_) => Round::Done(false),
                    Conditional::Held => Round::Lost(None),
                },
            )
        })
        .await?)
    }

    /// Block the phone (with or without an account), then revoke its account's live
    /// sessions: the `sub`, if it has an account, and the sessions revoked. Blocking
    /// first means no login can add a session after the revocation.
    pub async fn block(
        &self,
        phone: &PhoneNumber,
        reason: Option<&str>,
    ) -> Result<(Option<String>, Vec<SessionId>), AdminError> {
        let budget = Self::budget();
        settle(&budget, |_: Option<()>| async {
            let now = self.clock.now();
            Ok(
                match within(&budget, self.store.block_phone(phone, reason, now)).await? {
                    Conditional::Applied(()) | Conditional::Failed(_) => Round::Done(()),
                    Conditional::Held => Round::Lost(None),
                },
            )
        })
        .await?;
        let sub = match self.account_of(&budget, phone).await {
            Ok(sub) => sub,
            Err(AdminError::NotFound(_)) => return Ok((None, Vec::new())),
            Err(e) => return Err(e),
        };
        let write_id = random_id(&SystemRandom::new()).map_err(rng_failed)?;
        let revoked = accounts::revoke_live(
            &self.store,
            &*self.clock,
            &budget,
            &sub,
            None,
            &write_id,
            self.events.as_ref(),
            Reason::Admin,
        )
        .await?;
        Ok((Some(sub), revoked))
    }

    /// Lift a block. `false`: the phone was not blocked.
    pub async fn unblock(&self, phone: &PhoneNumber) -> Result<bool, AdminError> {
        let budget = Self::budget();
        let keep = GUESS_WINDOW_SECS.max(self.send_window_secs);
        let write_id = random_id(&SystemRandom::new()).map_err(rng_failed)?;
        let write_id = write_id.as_str();
        Ok(settle(&budget, |_: Option<()>| async {
            let now = self.clock.now();
            Ok(
                match within(
                    &budget,
                    self.store.unblock_phone(phone, now, keep, write_id),
                )
                .await?
                {
                    Conditional::Applied(()) => Round::Done(true),
                    Conditional::Failed(_) => Round::Done(false),
                    Conditional::Held => Round::Lost(None),
                },
            )
        })
        .await?)
    }
}
