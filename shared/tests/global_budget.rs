//! The global SMS budget at the sizes it is deployed with (CONTRACT §3b): once spent, a
//! 429 `RATE_LIMIT` with an honest wait in at most three DynamoDB requests, never a 5xx,
//! however many shards it spans and whatever a container's hint believes; at its edge,
//! never more than the limit through and never refusing more than a tenth early;
//! record-only lets the send through. The template's default (2,000 an hour, 25 shards)
//! is reached by writing the shard items directly (`devstack::seed::fill_global_budget`).
//! Every send is a container of its own with its own request counter, so each test
//! reports what each request cost (`--nocapture` prints it).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use std::sync::Arc;

use common::{Answer, RoundTrips, Stack, call, random_phone, sample_event};
use foodsave_auth::api::otp_send::OtpSend;
use foodsave_auth::devstack::seed::fill_global_budget;
use foodsave_auth::domain::UnixMillis;
use std::time::Duration;

use foodsave_auth::ports::Clock;
use lambda_http::lambda_runtime::Context;
use lambda_http::{Request, RequestExt};
use serde_json::{Value, json};

/// The template's default, and a budget of two shards.
const SIZES: [u32; 2] = [2000, 160];

/// How long each send may take. moto serves one request at a time, about 0.1 s for a
/// read of 25 full shards, so a burst of 40 sends queues there for several seconds (more
/// on a loaded 2-core CI machine), which DynamoDB, answering in milliseconds and in
/// parallel, never does. Each invocation gets a deadline long enough for moto's queue, so
/// that what is asserted is the budget's decision, not moto's speed; the functions' own
/// deadline handling is tested through the fault proxy (`lost_answers`, `real_aws`).
const DEADLINE: Duration = Duration::from_secs(120);

/// The tests of this file one at a time: each loads moto with bursts of its own.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn send_request(phone: &str) -> Request {
    let mut event = sample_event("otp-send");
    event["body"] = Value::String(json!({ "phone": phone }).to_string());
    let mut context = Context::default();
    let now = foodsave_auth::clock::SystemClock.now().as_millis();
    context.deadline = now + u64::try_from(DEADLINE.as_millis()).unwrap();
    foodsave_auth::http::event::request_from_json(&event.to_string())
        .unwrap()
        .with_lambda_context(context)
}

fn limit_env(limit: u32, record_only: bool) -> &'static [(&'static str, &'static str)] {
    let limit: &'static str = Box::leak(limit.to_string().into_boxed_str());
    let mut env = vec![("OTP_GLOBAL_SEND_LIMIT_PER_HOUR", limit)];
    if record_only {
        env.push(("ABUSE_MODE", "record-only"));
    }
    env.leak()
}

/// DynamoDB requests per send: worst and mean.
struct Cost(Vec<usize>);

impl Cost {
    fn worst(&self) -> usize {
        self.0.iter().copied().max().unwrap_or(0)
    }

    fn mean(&self) -> f64 {
        self.0.iter().sum::<usize>() as f64 / self.0.len().max(1) as f64
    }
}

impl std::fmt::Display for Cost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} sends, DynamoDB requests worst {} mean {:.2}",
            self.0.len(),
            self.worst(),
            self.mean()
        )
    }
}

fn assert_refused_for(answer: &Answer, wait: u64) {
    assert_eq!(
        (answer.status, answer.code()),
        (429, "RATE_LIMIT"),
        "{}",
        answer.body
    );
    assert_eq!(answer.body["retryAfterSeconds"].as_u64(), Some(wait));
    assert_eq!(
        answer.header("retry-after"),
        Some(wait.to_string().as_str())
    );
}

/// Sends one after another from one warm container, then each from a cold one.
async fn sequential(
    stack: &Stack,
    env: &[(&str, &str)],
    n: usize,
) -> (Vec<Answer>, Cost, Vec<Answer>, Cost) {
    let (warm, trips) = stack.otp_send_counted(env).await;
    let mut warm_answers = Vec::new();
    let mut warm_cost = Vec::new();
    for _ in 0..n {
        warm_answers.push(call(&warm, send_request(&random_phone())).await);
        warm_cost.push(trips.take());
    }
    let mut cold_answers = Vec::new();
    let mut cold_cost = Vec::new();
    for _ in 0..n {
        let (cold, trips) = stack.otp_send_counted(env).await;
        cold_answers.push(call(&cold, send_request(&random_phone())).await);
        cold_cost.push(trips.take());
    }
    (warm_answers, Cost(warm_cost), cold_answers, Cost(cold_cost))
}

/// `n` sends at once, each from a container of its own (`containers` of them, each
/// serving sends one after another).
async fn concurrent(stack: &Stack, env: &[(&str, &str)], n: usize) -> (Vec<Answer>, Cost) {
    let mut senders: Vec<(Arc<OtpSend>, RoundTrips)> = Vec::new();
    for _ in 0..n {
        let (send, trips) = stack.otp_send_counted(env).await;
        senders.push((Arc::new(send), trips));
    }
    let mut tasks = tokio::task::JoinSet::new();
    for (send, trips) in senders {
        tasks.spawn(async move {
            let answer = call(send.as_ref(), send_request(&random_phone())).await;
            (answer, trips.take())
        });
    }
    let mut answers = Vec::new();
    let mut cost = Vec::new();
    while let Some(done) = tasks.join_next().await {
        let (answer, trips) = done.unwrap();
        answers.push(answer);
        cost.push(trips);
    }
    (answers, Cost(cost))
}

fn at_secs_ago(stack: &Stack, secs: u64) -> UnixMillis {
    UnixMillis::from_secs(stack.clock_secs() - secs)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_spent_budget_is_a_429_with_the_wait_in_at_most_three_requests() {
    let _serial = SERIAL.lock().await;
    for limit in SIZES {
        let stack = Stack::new().await;
        let env = limit_env(limit, false);
        // A warm container that has seen free slots before the budget was spent.
        let (warm, _) = stack.otp_send_counted(env).await;
        assert_eq!(call(&warm, send_request(&random_phone())).await.status, 200);
        // Every slot taken 10 minutes ago: the first frees in 50 minutes.
        fill_global_budget(&stack.store(), limit, at_secs_ago(&stack, 600), 0)
            .await
            .unwrap();
        let answer = call(&warm, send_request(&random_phone())).await;
        assert_refused_for(&answer, 3000);
        let (warm_answers, warm_cost, cold_answers, cold_cost) = sequential(&stack, env, 20).await;
        for answer in warm_answers.iter().chain(&cold_answers) {
            assert_refused_for(answer, 3000);
        }
        println!("global {limit}/h spent, one warm container: {warm_cost}");
        println!("global {limit}/h spent, cold containers: {cold_cost}");
        assert!(warm_cost.worst() <= 3 && cold_cost.worst() <= 3);
        let (answers, cost) = concurrent(&stack, env, 40).await;
        for answer in &answers {
            assert_refused_for(answer, 3000);
        }
        println!("global {limit}/h spent, 40 concurrent cold sends: {cost}");
        assert!(cost.worst() <= 3);
        // The wait is the oldest send's: 42 s left of its hour.
        fill_global_budget(&stack.store(), limit, at_secs_ago(&stack, 3600 - 42), 0)
            .await
            .unwrap();
        assert_refused_for(&call(&warm, send_request(&random_phone())).await, 42);
        stack.clock.advance_secs(42);
        let answer = call(&warm, send_request(&random_phone())).await;
        assert_eq!(answer.status, 200, "{}", answer.body);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn at_the_edge_of_the_budget_never_more_than_the_limit_and_at_most_a_tenth_early() {
    let _serial = SERIAL.lock().await;
    for limit in SIZES {
        let stack = Stack::new().await;
        let env = limit_env(limit, false);
        let free = 30;
        fill_global_budget(&stack.store(), limit, at_secs_ago(&stack, 600), free)
            .await
            .unwrap();
        let (answers, cost) = concurrent(&stack, env, 100).await;
        let sent = answers.iter().filter(|a| a.status == 200).count();
        let refused: Vec<&Answer> = answers.iter().filter(|a| a.status == 429).collect();
        assert_eq!(sent + refused.len(), 100, "only 200 and 429");
        let refused_cost: Vec<usize> = answers
            .iter()
            .zip(&cost.0)
            .filter(|(a, _)| a.status == 429)
            .map(|(_, c)| *c)
            .collect();
        let refused_cost = Cost(refused_cost);
        println!(
            "global {limit}/h with {free} slots left, 100 concurrent sends: {sent} sent; all: {cost}; refused: {refused_cost}"
        );
        assert!(sent <= free as usize, "{sent} sent");
        assert!(
            sent + (limit / 10) as usize >= free as usize,
            "{sent} sent of {free} free: refused too early"
        );
        for answer in refused {
            let wait = answer.body["retryAfterSeconds"].as_u64().unwrap();
            assert!((1..=3600).contains(&wait), "{}", answer.body);
        }
        // What a tenth-early refusal left is still there for later sends; no more.
        let (answers, cost) = concurrent(&stack, env, 20).await;
        let later = answers.iter().filter(|a| a.status == 200).count();
        assert!(
            sent + later <= free as usize,
            "{sent} + {later} sent of {free}"
        );
        let waits: Vec<u64> = answers
            .iter()
            .filter(|a| a.status != 200)
            .map(|a| {
                assert_eq!(a.status, 429, "{}", a.body);
                a.body["retryAfterSeconds"].as_u64().unwrap()
            })
            .collect();
        println!(
            "global {limit}/h after the edge, 20 concurrent sends: {later} sent; {cost}, waits {waits:?}"
        );
        assert!(cost.worst() <= 3);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn record_only_lets_sends_through_a_spent_budget_and_spends_nothing_more() {
    let _serial = SERIAL.lock().await;
    for limit in SIZES {
        let stack = Stack::new().await;
        let env = limit_env(limit, true);
        fill_global_budget(&stack.store(), limit, at_secs_ago(&stack, 600), 0)
            .await
            .unwrap();
        let phones: Vec<String> = (0..5).map(|_| random_phone()).collect();
        let (warm, trips) = stack.otp_send_counted(env).await;
        let mut cost = Vec::new();
        for phone in &phones {
            let answer = call(&warm, send_request(phone)).await;
            assert_eq!(answer.status, 200, "{}", answer.body);
            assert_eq!(stack.sms_to(phone).await.len(), 1);
            cost.push(trips.take());
        }
        let (answers, concurrent_cost) = concurrent(&stack, env, 20).await;
        assert!(answers.iter().all(|a| a.status == 200));
        println!(
            "global {limit}/h spent, record-only: warm {}, 20 concurrent cold {concurrent_cost}",
            Cost(cost)
        );
        // Enforced, the budget is as full as it was: nothing was claimed past it.
        let enforce = limit_env(limit, false);
        let (send, _) = stack.otp_send_counted(enforce).await;
        assert_refused_for(&call(&send, send_request(&random_phone())).await, 3000);
    }
}
