//! `foodsave_auth::http::probe::Target::EventTemplate` under libFuzzer: a panic, or a breach of the
//! request edge's invariants, is a crash.
#![no_main]

use foodsave_auth::http::probe::Target;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(breach) = Target::EventTemplate.run(data) {
        panic!("event_template: {breach}");
    }
});
