//! The global SMS budget (CONTRACT §3b): never more than `OTP_GLOBAL_SEND_LIMIT_PER_HOUR`
//! SMS in any sliding hour, all phones together; once it is spent, a 429 with the wait
//! until a slot frees (≤ 3600 s), in at most three DynamoDB requests and never a 5xx,
//! however many shards the limit spans.
//!
//! Every decision about the budget lives here: how the limit is split into shard items,
//! which slot a send claims, when the budget is full, the wait a refusal answers, and
//! what a container's memory of the shards (the hint) may decide. The store only reads
//! and writes the items; `api::otp_send` asks [`GlobalBudget::choose`] what to do next
//! and tells the [`View`] what each DynamoDB request found.
//!
//! ## Shards
//! A budget of `limit` is `limit` slots ([`Slots`]: each holds the time of the send that
//! claimed it), spread over shard items of at most [`SHARD_SLOTS`] so that no single
//! partition takes every send and a claim stays one write unit; and over at most
//! [`MAX_SHARDS`] items, so that one `BatchGetItem` (100 keys) reads every shard together
//! with the phone's and the IP's items. Above `MAX_SHARDS × SHARD_SLOTS` per hour the
//! shards grow instead (and a claim costs more write units). The quotas add up to exactly
//! `limit`, and a claim is a write conditioned on its slot being free, so no more than
//! `limit` sends are ever inside any hour.
//!
//! ## Deciding (one request's rounds)
//! - Only what this request read can make the budget full: a batch read, or the item a
//!   failed claim returned (`ReturnValuesOnConditionCheckFailure`). Every shard read and
//!   none with a free slot is full; the wait is until the first slot of any shard frees,
//!   which with every shard full is the oldest send inside the hour.
//! - The hint (what this container last saw of each shard, and its own claims) only
//!   chooses where the first claim of a request goes. When it shows no free slot
//!   anywhere, the first round reads every shard instead of writing. It never refuses a
//!   send and never makes a round repeat.
//! - A claim that lost to a full shard (or to a transaction holding it) is followed by
//!   one read of every shard not read yet, so the next round decides from the whole
//!   budget; a first claim that lost a slot to another send in a shard with room takes
//!   another of that shard's free slots, and a second lost claim reads the rest.
//! - After two lost claims, with the whole budget read, a send refuses if the free slots
//!   it read add up to at most a tenth of the limit (the contract allows refusing that
//!   early), with a wait of one second. At the edge of the budget, where many sends race
//!   for its last slots, a refused send so costs three requests (claim, read, claim; or
//!   claim, claim, read) unless more than a tenth of the limit is still free.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, PoisonError};

use ring::rand::SecureRandom;

use super::slots::{Slots, random_below};
use super::time::UnixMillis;

/// The budget's window: an hour.
pub const WINDOW_SECS: u64 = 3600;

/// The most slots a shard holds while the limit allows: 80 keep a full shard under 1 KB
/// (about 11 bytes a slot), so claiming a slot is one write unit, two in the send's
/// transaction (shared/tests/capacity.rs).
pub const SHARD_SLOTS: u32 = 80;

/// The most shards a budget has: one `BatchGetItem` reads at most 100 items, and a read
/// round also reads the phone's and the IP's items.
pub const MAX_SHARDS: u32 = 98;

/// After this many lost claims a send may refuse with free slots left, if they are at
/// most [`EARLY_REFUSAL_PERCENT`] of the limit.
const LOST_CLAIMS_BEFORE_EARLY_REFUSAL: u32 = 2;
/// How early the contract lets the budget refuse: 10 % of the limit.
const EARLY_REFUSAL_PERCENT: u64 = 10;

/// The quota of each shard of a global budget of `limit`.
pub fn shard_quotas(limit: u32) -> Vec<u32> {
    if limit == 0 {
        return Vec::new();
    }
    let shards = limit.div_ceil(SHARD_SLOTS).min(MAX_SHARDS);
    let (base, extra) = (limit / shards, limit % shards);
    (0..shards).map(|i| base + u32::from(i < extra)).collect()
}

/// The key (`pk`) of a shard's item.
pub fn shard_key(shard: u32) -> String {
    format!("GLOBAL#{shard}")
}

/// A slot of a shard that a send claims.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShardClaim {
    pub shard: u32,
    pub slot: u32,
    /// The shard's number of slots.
    pub quota: u32,
}

/// What a round does about the global budget.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Choice {
    /// Claim this slot with the send's write.
    Claim(ShardClaim),
    /// Read these shards first (every shard this request has not read), then decide.
    Read(Vec<u32>),
    /// Spent: refuse (or, record-only, note it) with this wait.
    Full { retry_after_secs: u64 },
}

/// What one request has learned of the budget, round by round.
#[derive(Debug, Clone, Default)]
pub struct View {
    /// Shards read in this request, as they stood.
    read: BTreeMap<u32, Slots>,
    /// Claims of this request that a condition (or a transaction holding the item) refused.
    lost: u32,
    /// A claim whose condition held in a write that failed for another item: tried again.
    kept: Option<ShardClaim>,
}

impl View {
    /// The write failed for another item while this claim's condition held.
    pub fn claim_held(&mut self, claim: ShardClaim) {
        self.kept = Some(claim);
    }

    /// The claim's condition failed: its shard as it stood (`None`: no item, every slot
    /// free), as the failed write returned it.
    pub fn claim_lost(&mut self, claim: ShardClaim, found: Option<Slots>) {
        self.lost += 1;
        self.read.insert(
            claim.shard,
            found.unwrap_or_else(|| Slots::empty(claim.quota)),
        );
    }

    /// The claim met a transaction holding its shard: what it holds is not known.
    pub fn claim_unknown(&mut self) {
        self.lost += 1;
    }

    /// A shard as a read in this request found it (`None`: no item).
    pub fn shard_read(&mut self, shard: u32, quota: u32, found: Option<Slots>) {
        let slots = found
            .filter(|s| s.0.len() == quota as usize)
            .unwrap_or_else(|| Slots::empty(quota));
        self.read.insert(shard, slots);
    }
}

/// One container's global budget: its shards, and its memory of them.
#[derive(Debug)]
pub struct GlobalBudget {
    limit: u32,
    quotas: Vec<u32>,
    /// The shards as this container last read or wrote them: a hint for the first claim
    /// of the next send, so that it does not pick a slot already known to be taken.
    hint: Mutex<HashMap<u32, Slots>>,
}

impl GlobalBudget {
    /// `None` when the budget is off (a limit of 0).
    pub fn new(limit: u32) -> Option<Self> {
        (limit > 0).then(|| Self {
            limit,
            quotas: shard_quotas(limit),
            hint: Mutex::new(HashMap::new()),
        })
    }

    pub fn shards(&self) -> u32 {
        u32::try_from(self.quotas.len()).unwrap_or(u32::MAX)
    }

    /// Shard `shard`'s number of slots.
    pub fn quota(&self, shard: u32) -> u32 {
        self.quotas.get(shard as usize).copied().unwrap_or(0)
    }

    /// What this round does (see the module's "Deciding").
    pub fn choose(&self, view: &mut View, now: UnixMillis, rng: &dyn SecureRandom) -> Choice {
        if let Some(kept) = view.kept.take() {
            return Choice::Claim(kept);
        }
        if view.read.is_empty() && view.lost == 0 {
            // The first round: the hint may choose the slot, or choose to read first.
            let hinted = self.hinted();
            return match pick(&hinted, now, rng) {
                Some(claim) => Choice::Claim(claim),
                None => Choice::Read(self.unread(view)),
            };
        }
        let free = free_count(view.read.iter().map(|(s, slots)| (*s, slots)), now);
        let unread = self.unread(view);
        let claim_read = free > 0
            && if unread.is_empty() {
                // The whole budget read: refuse early only after two lost claims, and
                // only with at most a tenth of the limit left.
                !(view.lost >= LOST_CLAIMS_BEFORE_EARLY_REFUSAL
                    && free.saturating_mul(100)
                        <= u64::from(self.limit).saturating_mul(EARLY_REFUSAL_PERCENT))
            } else {
                // One more try in a shard with room; after that, read the rest.
                view.lost < LOST_CLAIMS_BEFORE_EARLY_REFUSAL
            };
        if claim_read {
            let read: Vec<(u32, Slots)> = view
                .read
                .iter()
                .map(|(s, slots)| (*s, slots.clone()))
                .collect();
            if let Some(claim) = pick(&read, now, rng) {
                return Choice::Claim(claim);
            }
        }
        if !unread.is_empty() {
            return Choice::Read(unread);
        }
        if free > 0 {
            return Choice::Full {
                retry_after_secs: 1,
            };
        }
        // Every shard read in this request, none with a free slot.
        let first_free = view
            .read
            .values()
            .map(|slots| slots.retry_after(now, WINDOW_SECS))
            .min()
            .unwrap_or(1);
        Choice::Full {
            retry_after_secs: first_free.clamp(1, WINDOW_SECS),
        }
    }

    /// Remember what a request read or a failed write returned of the shards.
    pub fn remember(&self, view: &View) {
        let mut hint = self.hint.lock().unwrap_or_else(PoisonError::into_inner);
        for (shard, slots) in &view.read {
            hint.insert(*shard, slots.clone());
        }
    }

    /// Remember a slot this container claimed as taken from `at`.
    pub fn claimed(&self, claim: ShardClaim, at: UnixMillis) {
        let mut hint = self.hint.lock().unwrap_or_else(PoisonError::into_inner);
        let slots = hint
            .entry(claim.shard)
            .or_insert_with(|| Slots::empty(claim.quota));
        if slots.0.len() != claim.quota as usize {
            *slots = Slots::empty(claim.quota);
        }
        if let Some(held) = slots.0.get_mut(claim.slot as usize) {
            *held = Some(at);
        }
    }

    /// Every shard as the hint shows it (a shard it does not know: every slot free).
    fn hinted(&self) -> Vec<(u32, Slots)> {
        let hint = self.hint.lock().unwrap_or_else(PoisonError::into_inner);
        (0..self.shards())
            .map(|shard| {
                let quota = self.quota(shard);
                let slots = hint
                    .get(&shard)
                    .filter(|s| s.0.len() == quota as usize)
                    .cloned()
                    .unwrap_or_else(|| Slots::empty(quota));
                (shard, slots)
            })
            .collect()
    }

    fn unread(&self, view: &View) -> Vec<u32> {
        (0..self.shards())
            .filter(|shard| !view.read.contains_key(shard))
            .collect()
    }
}

fn free_count<'a>(shards: impl Iterator<Item = (u32, &'a Slots)>, now: UnixMillis) -> u64 {
    shards
        .map(|(_, slots)| slots.free(now, WINDOW_SECS).len() as u64)
        .sum()
}

/// A free slot chosen uniformly among every free slot of `shards`, so that concurrent
/// sends spread over the whole budget and rarely contend for one slot.
fn pick(shards: &[(u32, Slots)], now: UnixMillis, rng: &dyn SecureRandom) -> Option<ShardClaim> {
    let free: Vec<(u32, Vec<u32>, u32)> = shards
        .iter()
        .map(|(shard, slots)| {
            let quota = u32::try_from(slots.0.len()).unwrap_or(0);
            (*shard, slots.free(now, WINDOW_SECS), quota)
        })
        .filter(|(_, free, _)| !free.is_empty())
        .collect();
    let total: usize = free.iter().map(|(_, f, _)| f.len()).sum();
    let mut index = random_below(u32::try_from(total).ok()?, rng) as usize;
    for (shard, slots, quota) in free {
        match slots.get(index) {
            Some(slot) => {
                return Some(ShardClaim {
                    shard,
                    slot: *slot,
                    quota,
                });
            }
            None => index -= slots.len(),
        }
    }
    None
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]
    use super::*;
    use ring::rand::SystemRandom;

    const NOW: UnixMillis = UnixMillis(10_000_000);

    fn full(quota: u32, at: UnixMillis) -> Slots {
        Slots(vec![Some(at); quota as usize])
    }

    #[test]
    fn shard_quotas_add_up_to_the_limit_and_stay_small() {
        for limit in [1, 50, 80, 81, 160, 999, 2000, 7840, 7841, 12_345, 100_000] {
            let quotas = shard_quotas(limit);
            assert_eq!(quotas.iter().sum::<u32>(), limit, "{limit}");
            assert!(quotas.len() <= MAX_SHARDS as usize);
            if limit <= MAX_SHARDS * SHARD_SLOTS {
                assert!(quotas.iter().all(|q| *q >= 1 && *q <= SHARD_SLOTS));
            }
        }
        assert_eq!(shard_quotas(2000).len(), 25);
        assert_eq!(shard_quotas(160), vec![80, 80]);
        assert!(shard_quotas(0).is_empty());
        assert!(GlobalBudget::new(0).is_none());
    }

    /// Whatever the hint believes, the first round claims or reads; never full.
    #[test]
    fn the_hint_chooses_a_slot_or_a_read_never_a_refusal() {
        let rng = SystemRandom::new();
        let budget = GlobalBudget::new(2000).unwrap();
        let mut view = View::default();
        assert!(matches!(
            budget.choose(&mut view, NOW, &rng),
            Choice::Claim(_)
        ));
        // The hint has seen every shard full: the first round reads them all.
        let mut seen = View::default();
        for shard in 0..budget.shards() {
            seen.shard_read(shard, 80, Some(full(80, NOW)));
        }
        budget.remember(&seen);
        let mut view = View::default();
        assert_eq!(
            budget.choose(&mut view, NOW, &rng),
            Choice::Read((0..25).collect())
        );
        // An hour later the hint's sends have left the window: it claims again.
        let mut view = View::default();
        assert!(matches!(
            budget.choose(&mut view, NOW.plus_secs(3600), &rng),
            Choice::Claim(_)
        ));
    }

    #[test]
    fn a_claim_lost_to_a_full_shard_reads_every_other_shard_once() {
        let rng = SystemRandom::new();
        let budget = GlobalBudget::new(2000).unwrap();
        let mut view = View::default();
        let Choice::Claim(claim) = budget.choose(&mut view, NOW, &rng) else {
            panic!("first round claims");
        };
        view.claim_lost(claim, Some(full(80, NOW)));
        let Choice::Read(shards) = budget.choose(&mut view, NOW, &rng) else {
            panic!("then reads");
        };
        assert_eq!(shards.len(), 24);
        assert!(!shards.contains(&claim.shard));
        for shard in shards {
            view.shard_read(shard, 80, Some(full(80, NOW.plus_secs(shard.into()))));
        }
        // Every shard full: the wait is until the oldest send leaves the hour.
        assert_eq!(
            budget.choose(&mut view, NOW.plus_secs(600), &rng),
            Choice::Full {
                retry_after_secs: 3000
            }
        );
    }

    #[test]
    fn a_slot_collision_in_a_shard_with_room_claims_another_of_its_slots() {
        let rng = SystemRandom::new();
        let budget = GlobalBudget::new(2000).unwrap();
        let mut view = View::default();
        let Choice::Claim(claim) = budget.choose(&mut view, NOW, &rng) else {
            panic!("first round claims");
        };
        let mut slots = Slots::empty(80);
        slots.0[claim.slot as usize] = Some(NOW);
        view.claim_lost(claim, Some(slots));
        let Choice::Claim(again) = budget.choose(&mut view, NOW, &rng) else {
            panic!("claims again");
        };
        assert_eq!(again.shard, claim.shard);
        assert_ne!(again.slot, claim.slot);
    }

    #[test]
    fn a_second_lost_claim_reads_the_rest_of_the_budget() {
        let rng = SystemRandom::new();
        let budget = GlobalBudget::new(2000).unwrap();
        let mut view = View::default();
        let claim = ShardClaim {
            shard: 7,
            slot: 0,
            quota: 80,
        };
        let mut roomy = full(80, NOW);
        roomy.0[1] = None;
        roomy.0[2] = None;
        view.claim_lost(claim, Some(roomy.clone()));
        let Choice::Claim(again) = budget.choose(&mut view, NOW, &rng) else {
            panic!("one more try in the shard with room");
        };
        assert_eq!(again.shard, 7);
        roomy.0[again.slot as usize] = Some(NOW);
        view.claim_lost(again, Some(roomy));
        let Choice::Read(rest) = budget.choose(&mut view, NOW, &rng) else {
            panic!("then the rest is read");
        };
        assert_eq!(rest.len(), 24);
    }

    #[test]
    fn after_two_lost_claims_a_tenth_of_the_limit_left_may_refuse() {
        let rng = SystemRandom::new();
        let budget = GlobalBudget::new(160).unwrap();
        let mut nearly = full(80, NOW);
        nearly.0[3] = None;
        let mut view = View::default();
        view.claim_lost(
            ShardClaim {
                shard: 0,
                slot: 0,
                quota: 80,
            },
            Some(full(80, NOW)),
        );
        view.shard_read(1, 80, Some(nearly.clone()));
        // One lost claim: the free slot is tried.
        assert_eq!(
            budget.choose(&mut view, NOW, &rng),
            Choice::Claim(ShardClaim {
                shard: 1,
                slot: 3,
                quota: 80
            })
        );
        // Lost again (another send took slot 3, slot 5 freed meanwhile): 1 of 160 left.
        let mut after = full(80, NOW);
        after.0[5] = None;
        view.claim_lost(
            ShardClaim {
                shard: 1,
                slot: 3,
                quota: 80,
            },
            Some(after),
        );
        assert_eq!(
            budget.choose(&mut view, NOW, &rng),
            Choice::Full {
                retry_after_secs: 1
            }
        );
    }

    #[test]
    fn a_claim_whose_condition_held_is_tried_again_as_it_was() {
        let rng = SystemRandom::new();
        let budget = GlobalBudget::new(160).unwrap();
        let mut view = View::default();
        let Choice::Claim(claim) = budget.choose(&mut view, NOW, &rng) else {
            panic!("first round claims");
        };
        view.claim_held(claim);
        assert_eq!(budget.choose(&mut view, NOW, &rng), Choice::Claim(claim));
    }

    #[test]
    fn a_claim_that_met_a_transaction_reads_the_budget_next() {
        let rng = SystemRandom::new();
        let budget = GlobalBudget::new(160).unwrap();
        let mut view = View::default();
        view.claim_unknown();
        assert_eq!(
            budget.choose(&mut view, NOW, &rng),
            Choice::Read(vec![0, 1])
        );
    }

    /// A warm container's own claims steer its next sends to other slots.
    #[test]
    fn claimed_slots_are_not_chosen_again_from_the_hint() {
        let rng = SystemRandom::new();
        let budget = GlobalBudget::new(80).unwrap();
        let mut taken = std::collections::HashSet::new();
        for _ in 0..80 {
            let mut view = View::default();
            let Choice::Claim(claim) = budget.choose(&mut view, NOW, &rng) else {
                panic!("a free slot is left");
            };
            assert!(taken.insert(claim.slot), "slot {} chosen twice", claim.slot);
            budget.claimed(claim, NOW);
        }
        let mut view = View::default();
        assert_eq!(budget.choose(&mut view, NOW, &rng), Choice::Read(vec![0]));
    }
}
