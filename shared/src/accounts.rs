//! What is done to an account (CONTRACT §7), the same for the functions and the operator
//! command line: erasing it, and revoking its live sessions. Each is a read of the
//! account's item collection and one transaction, decided again after a lost race, and
//! recognising its own effect when an answer was lost (CONTRACT §1).

use crate::adapters::DynamoDbStore;
use crate::adapters::dynamodb::{Account, Deletion, MAX_TRANSACTION_ITEMS, OtpItem};
use crate::api::{Round, settle, within};
use crate::budget::Budget;
use crate::domain::events::{Change, Reason};
use crate::domain::session::SessionId;
use crate::domain::{AuthError, PhoneNumber};
use crate::events::Events;
use crate::ports::{Clock, StoreError};

/// What the rounds of one erasure know.
struct Attempt {
    /// The account as last read (`None`: read it again).
    account: Option<Account>,
    /// An erasure of this call was sent: it may have been applied.
    sent: bool,
    /// What the phone's OTP item is expected to be.
    otp: OtpItem,
}

/// Erase the account `sub`: every session, the account item, the phone's mapping to it,
/// and the phone's active code with its `Idempotency-Key`; the send window, the guess
/// count and a block stay. `read` is a fresh read of the account, if the caller has
/// one. Answers the live sessions it ended, or `None` when there is no such account.
/// With `events`, the erasure stores and puts `SessionsRevoked` (reason
/// `account_deleted`, when live sessions ended) and `AccountDeleted` (CONTRACT §7).
pub async fn erase(
    store: &DynamoDbStore,
    clock: &dyn Clock,
    budget: &Budget,
    sub: &str,
    read: Option<Account>,
    events: Option<&Events>,
) -> Result<Option<Vec<SessionId>>, AuthError> {
    let mut first = Some(Attempt {
        account: read,
        sent: false,
        otp: OtpItem::Clear,
    });
    settle(budget, |known: Option<Attempt>| {
        let attempt = known.or_else(|| first.take()).unwrap_or(Attempt {
            account: None,
            sent: true,
            otp: OtpItem::Clear,
        });
        erase_round(store, clock, budget, sub, attempt, events)
    })
    .await
}

/// One round: from the account as read, the transaction.
async fn erase_round(
    store: &DynamoDbStore,
    clock: &dyn Clock,
    budget: &Budget,
    sub: &str,
    attempt: Attempt,
    events: Option<&Events>,
) -> Result<Round<Attempt, Option<Vec<SessionId>>>, AuthError> {
    let now = clock.now();
    let account = match attempt.account {
        Some(account) => account,
        None => within(budget, store.load_account(sub)).await?,
    };
    let (Some(version), Some(phone)) = (account.version, account.phone.as_deref()) else {
        // Gone: erased by this call's own write (its answer lost) or by another at the
        // same moment; either way the account is erased. Never there: no such account.
        return Ok(Round::Done(attempt.sent.then(Vec::new)));
    };
    let phone = PhoneNumber::parse(phone).map_err(|_| StoreError::Corrupt("phone"))?;
    let live: Vec<SessionId> = account
        .live_sessions(now)
        .into_iter()
        .map(|s| s.id.clone())
        .collect();
    // Every session item goes, live ones first; what does not fit one transaction (with
    // the account item, the phone's two items and the events item) is already dead
    // (revoked or expired) and leaves with its TTL.
    // A live one only while still not revoked: a logout in between is a lost race, so
    // that the deletion's `SessionsRevoked` names only sessions it ended.
    let mut delete: Vec<(SessionId, bool)> = live.iter().map(|s| (s.clone(), true)).collect();
    delete.extend(
        account
            .sessions
            .iter()
            .filter(|s| !live.contains(&s.id))
            .map(|s| (s.id.clone(), false)),
    );
    delete.truncate(MAX_TRANSACTION_ITEMS - 4);
    let pending = Events::stage(
        events,
        now,
        [
            Change::SessionsRevoked {
                sub: sub.to_owned(),
                session_ids: live.iter().map(|s| s.as_str().to_owned()).collect(),
                reason: Reason::AccountDeleted,
            },
            Change::AccountDeleted {
                sub: sub.to_owned(),
            },
        ],
    )?;
    match within(
        budget,
        store.delete_account(
            &account,
            &phone,
            version,
            &delete,
            attempt.otp,
            pending.as_ref(),
        ),
    )
    .await
    {
        Ok(Deletion::Deleted) => {
            crate::events::deliver(events, store, budget, pending.as_ref()).await;
            Ok(Round::Done(Some(live)))
        }
        // The OTP item is not as expected: the same erasure expecting the other, from
        // the same read (a send that made one meanwhile gets its code cleared).
        Ok(Deletion::OtpItemOtherwise) => Ok(Round::Lost(Some(Attempt {
            account: Some(account),
            sent: attempt.sent,
            otp: attempt.otp.flipped(),
        }))),
        // A login, a logout or a refresh changed the account meanwhile, or a
        // transaction held an item: read again and decide anew.
        Err(StoreError::Conflict) => Ok(Round::Lost(Some(Attempt {
            account: None,
            sent: true,
            otp: attempt.otp,
        }))),
        Err(e) => Err(e.into()),
    }
}

/// Revoke the live sessions of the account `sub` (only `only`, when given) in one
/// transaction tagged `write_id`. Answers the sessions revoked: none when there were
/// none live (or `only` is not one of them). With `events`, the revocation stores and
/// puts `SessionsRevoked` with `reason` (CONTRACT §7).
#[allow(clippy::too_many_arguments)]
pub async fn revoke_live(
    store: &DynamoDbStore,
    clock: &dyn Clock,
    budget: &Budget,
    sub: &str,
    only: Option<&SessionId>,
    write_id: &str,
    events: Option<&Events>,
    reason: Reason,
) -> Result<Vec<SessionId>, AuthError> {
    settle(budget, |_: Option<()>| async {
        let now = clock.now();
        let account = within(budget, store.load_account(sub)).await?;
        // This call's own transaction, applied with its answer lost.
        let ours: Vec<SessionId> = account
            .sessions
            .iter()
            .filter(|s| s.revoked_by.as_deref() == Some(write_id))
            .map(|s| s.id.clone())
            .collect();
        if !ours.is_empty() {
            return Ok(Round::Done(ours));
        }
        let targets: Vec<SessionId> = account
            .live_sessions(now)
            .into_iter()
            .filter(|s| only.is_none_or(|id| s.id == *id))
            .map(|s| s.id.clone())
            .collect();
        if targets.is_empty() {
            return Ok(Round::Done(targets));
        }
        let pending = Events::stage(
            events,
            now,
            [Change::SessionsRevoked {
                sub: sub.to_owned(),
                session_ids: targets.iter().map(|s| s.as_str().to_owned()).collect(),
                reason,
            }],
        )?;
        match within(
            budget,
            store.revoke_sessions(&targets, None, write_id, now, pending.as_ref()),
        )
        .await
        {
            Ok(()) => {
                crate::events::deliver(events, store, budget, pending.as_ref()).await;
                Ok(Round::Done(targets))
            }
            Err(StoreError::Conflict) => Ok(Round::Lost(None)),
            Err(e) => Err(e.into()),
        }
    })
    .await
}
