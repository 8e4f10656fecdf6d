//! The fuzz corpus as a regression test, on stable: every file under `fuzz/corpus/<target>/`
//! (and `fuzz/regressions/<target>/`, crash inputs kept after their fix) through the same
//! entry points the `cargo fuzz` targets call (`foodsave_auth::http::probe`). A panic or
//! a breach of an invariant fails the test and names the file; a missing or empty corpus
//! fails it too, so it can never pass by finding nothing.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use foodsave_auth::http::probe::Target;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

fn files_in(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

/// Every input of `files` through `target`: the failures, each with its file.
fn replay(target: Target, files: &[PathBuf]) -> Vec<String> {
    let mut failures = Vec::new();
    for file in files {
        let data = std::fs::read(file).unwrap();
        match catch_unwind(AssertUnwindSafe(|| target.run(&data))) {
            Ok(Ok(())) => {}
            Ok(Err(breach)) => failures.push(format!("{}: {breach}", file.display())),
            Err(_) => failures.push(format!("{}: panicked", file.display())),
        }
    }
    failures
}

#[test]
fn every_target_has_a_committed_corpus() {
    for target in Target::ALL {
        let dir = fuzz_dir().join("corpus").join(target.name());
        assert!(
            !files_in(&dir).is_empty(),
            "{} is missing or empty: the replay would prove nothing",
            dir.display()
        );
    }
}

#[test]
fn the_fuzz_corpus_replays_without_a_panic_or_a_breach() {
    let mut failures = Vec::new();
    let mut replayed = 0;
    for target in Target::ALL {
        for kind in ["corpus", "regressions"] {
            let files = files_in(&fuzz_dir().join(kind).join(target.name()));
            replayed += files.len();
            failures.extend(replay(target, &files));
        }
    }
    assert!(replayed > 0, "no corpus under {}", fuzz_dir().display());
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The sample events are the event target's seeds (`local/fuzz.sh` copies them in);
/// they are replayed from `events/` itself, so an edited event is covered at once.
#[test]
fn every_sample_event_passes_the_event_edge() {
    let events = files_in(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../events"));
    assert!(!events.is_empty(), "no events/");
    // key-rotation's events come from Secrets Manager and event-relay's from its
    // schedule, not a gateway.
    let gateway = events.iter().filter(|e| {
        let name = e.file_name().unwrap().to_string_lossy().into_owned();
        !name.starts_with("key-rotation") && !name.starts_with("event-relay")
    });
    for event in gateway {
        let text = std::fs::read_to_string(event).unwrap();
        // A seed that does not even deserialize would fuzz nothing past serde.
        assert!(
            foodsave_auth::http::event::request_from_json(&text).is_ok(),
            "{} is not an event lambda_http reads",
            event.display()
        );
    }
    let failures = replay(Target::EventJson, &events);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn every_target_is_named_as_its_corpus_directory() {
    for target in Target::ALL {
        assert_eq!(Target::from_name(target.name()), Some(target));
    }
    assert_eq!(Target::from_name("nothing"), None);
}
