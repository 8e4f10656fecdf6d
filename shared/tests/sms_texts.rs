//! The SMS texts `template.yaml` ships (CONTRACT §5): each default, as the template
//! composes it (its first line, the app's domain-bound line last), is one segment with a
//! 6-digit code in it and at most 140 bytes (Android's SMS Retriever), and the functions'
//! init accepts it; a text over one segment fails init naming its variable unless
//! `SMS_ALLOW_MULTIPART=true`. Each row of the table README.md and docs/deploy.md show
//! is checked to be in them as this test computes it (`-- --nocapture` prints it).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::collections::HashMap;

use foodsave_auth::config::OtpConfig;
use foodsave_auth::domain::sms::{Encoding, shape};
use serde_yaml::Value as Yaml;

fn template() -> (String, Yaml) {
    let text = std::fs::read_to_string(foodsave_auth::devstack::template_path()).unwrap();
    let yaml = serde_yaml::from_str(&text).unwrap();
    (text, yaml)
}

fn default_of(template: &Yaml, parameter: &str) -> String {
    template["Parameters"][parameter]["Default"]
        .as_str()
        .unwrap_or_else(|| panic!("{parameter} has no string default"))
        .to_owned()
}

fn env(pairs: &[(&str, String)]) -> impl Fn(&str) -> Option<String> + use<> {
    let map: HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect();
    move |k: &str| map.get(k).cloned()
}

#[test]
fn every_default_sms_text_is_one_segment_and_starts_the_functions() {
    let (source, template) = template();
    // The template's composition, as written in it: the first line, then the domain line.
    let suffix = "\\n\\n@${SmsAppDomain} #{code}";
    assert!(
        source.contains(suffix),
        "template.yaml composes the texts differently"
    );
    let domain = default_of(&template, "SmsAppDomain");
    let root = foodsave_auth::devstack::template_path()
        .parent()
        .unwrap()
        .to_owned();
    let docs: Vec<(&str, String)> = ["README.md", "docs/deploy.md"]
        .into_iter()
        .map(|doc| (doc, std::fs::read_to_string(root.join(doc)).unwrap()))
        .collect();
    println!("| language | text (code 123456) | encoding | segments | bytes |");
    println!("|---|---|---|---|---|");
    for (language, parameter, variable) in [
        ("kk", "SmsMessageKk", "SMS_MESSAGE_KK"),
        ("ru", "SmsMessageRu", "SMS_MESSAGE_RU"),
        ("en", "SmsMessageEn", "SMS_MESSAGE_EN"),
    ] {
        let first = default_of(&template, parameter);
        let composed = format!("{first}\n\n@{domain} #{{code}}");
        let sent = composed.replace("{code}", "123456");
        let s = shape(&sent);
        assert_eq!(s.segments, 1, "{parameter}: {sent:?} is {s:?}");
        assert!(s.bytes <= 140, "{parameter}: {s:?}");
        let expected = if language == "en" {
            Encoding::Gsm7
        } else {
            Encoding::Ucs2
        };
        assert_eq!(s.encoding, expected, "{parameter}");
        // The line iOS and WebOTP read is the last one.
        assert_eq!(
            sent.lines().last(),
            Some(format!("@{domain} #123456").as_str())
        );
        // The functions start with it, and send it for its language.
        let otp = OtpConfig::load(&env(&[(variable, composed.clone())])).unwrap();
        assert_eq!(
            otp.sms_message
                .for_accept_language(Some(language))
                .render("123456"),
            sent
        );
        // With the Android hash the text must still fit: room for 11 more and a newline.
        let with_hash = format!("{first}\nAbCdEfGhIjK\n\n@{domain} #123456");
        assert_eq!(shape(&with_hash).segments, 1, "{parameter} with a hash");
        let row = format!(
            "| {language} | `{}` | {} | {} | {} ({} {}) |",
            sent.replace('\n', "⏎"),
            s.encoding.as_str(),
            s.segments,
            s.bytes,
            s.units,
            if s.encoding == Encoding::Gsm7 {
                "septets"
            } else {
                "UTF-16 units"
            },
        );
        println!("{row}");
        for (doc, text) in &docs {
            assert!(text.contains(&row), "{doc} does not show the row\n{row}");
        }
    }
}

#[test]
fn a_text_over_one_segment_fails_init_naming_its_variable_unless_multipart_is_allowed() {
    let long = format!(
        "Код для входа в FoodSave: {{code}}. {}",
        "Никому не сообщайте его."
    );
    let long = format!("{long}\n\n@foodsave.kz #{{code}}");
    assert_eq!(shape(&long.replace("{code}", "123456")).segments, 2);
    for variable in [
        "SMS_MESSAGE",
        "SMS_MESSAGE_KK",
        "SMS_MESSAGE_RU",
        "SMS_MESSAGE_EN",
    ] {
        let err = OtpConfig::load(&env(&[(variable, long.clone())]))
            .err()
            .unwrap_or_else(|| panic!("{variable}: a two-segment text was accepted"));
        let message = err.to_string();
        assert!(message.contains(variable), "{message}");
        assert!(message.contains("SMS_ALLOW_MULTIPART"), "{message}");
        assert!(message.contains("2 SMS segments"), "{message}");
        OtpConfig::load(&env(&[
            (variable, long.clone()),
            ("SMS_ALLOW_MULTIPART", "true".into()),
        ]))
        .unwrap();
    }
    // GSM-7: 160 septets with the code is one segment, 161 two.
    let fits = format!("{}{{code}}", "a".repeat(154));
    OtpConfig::load(&env(&[("SMS_MESSAGE", fits)])).unwrap();
    let over = format!("{}{{code}}", "a".repeat(155));
    assert!(OtpConfig::load(&env(&[("SMS_MESSAGE", over)])).is_err());
    let err = OtpConfig::load(&env(&[("SMS_ALLOW_MULTIPART", "yes".into())]))
        .err()
        .unwrap();
    assert!(err.to_string().contains("SMS_ALLOW_MULTIPART"), "{err}");
}
