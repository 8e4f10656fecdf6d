//! `+7` followed by exactly ten ASCII digits (CONTRACT §1), the only phones FoodSave serves.

use std::fmt;

/// A phone number in E.164 form that passed the contract's check. Holding one proves it.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct PhoneNumber(String);

/// Why a string is not a phone number; the text is safe to show the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalidPhone;

impl PhoneNumber {
    pub fn parse(raw: &str) -> Result<Self, InvalidPhone> {
        let digits = raw.strip_prefix("+7").ok_or(InvalidPhone)?;
        if digits.len() == 10 && digits.bytes().all(|b| b.is_ascii_digit()) {
            Ok(Self(raw.to_owned()))
        } else {
            Err(InvalidPhone)
        }
    }

    /// The full E.164 number: for SNS, the HMAC and the `phone_number` claim only.
    pub fn e164(&self) -> &str {
        &self.0
    }

    pub fn has_prefix_in(&self, prefixes: &[String]) -> bool {
        prefixes.iter().any(|p| self.0.starts_with(p.as_str()))
    }

    /// For logs: `+770******67`. Six of the ten national digits are hidden, so one masked
    /// number stands for a million phones: a log line alone does not identify its phone,
    /// while the country, the first digits of the operator code and the last two digits
    /// still help an operator match a support case to its lines (docs/operations.md).
    pub fn masked(&self) -> String {
        let head: String = self.0.chars().take(Self::SHOWN_HEAD).collect();
        let tail: String = self
            .0
            .chars()
            .skip(self.0.len().saturating_sub(Self::SHOWN_TAIL))
            .collect();
        format!("{head}******{tail}")
    }

    /// `+`, the country code and two digits: shown by [`Self::masked`].
    const SHOWN_HEAD: usize = 4;
    /// The last digits shown by [`Self::masked`].
    const SHOWN_TAIL: usize = 2;
}

impl fmt::Debug for PhoneNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PhoneNumber({})", self.masked())
    }
}

impl fmt::Display for PhoneNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.masked())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn accepts_plus_seven_and_ten_ascii_digits() {
        assert_eq!(
            PhoneNumber::parse("+77001234567").unwrap().e164(),
            "+77001234567"
        );
    }

    #[test]
    fn rejects_everything_else() {
        for bad in [
            "",
            "77001234567",
            "+7700123456",
            "+770012345678",
            "+7 7001234567",
            "+7700123456a",
            "+77001234567\n",
            " +77001234567",
            "+87001234567",
            "+7７００１２３４５６７",
            "+7٧٠٠١٢٣٤٥٦٧",
            "++7001234567",
        ] {
            assert_eq!(PhoneNumber::parse(bad), Err(InvalidPhone), "{bad:?}");
        }
    }

    #[test]
    fn display_and_debug_hide_six_of_the_ten_national_digits() {
        let p = PhoneNumber::parse("+77001234567").unwrap();
        assert_eq!(p.to_string(), "+770******67");
        assert_eq!(format!("{p:?}"), "PhoneNumber(+770******67)");
        // Six digits hidden: only 4 of the 10 national digits remain.
        let shown = p.to_string().chars().filter(char::is_ascii_digit).count();
        assert_eq!(shown, 1 + 4);
    }

    #[test]
    fn prefixes_narrow_the_allowed_phones() {
        let p = PhoneNumber::parse("+77001234567").unwrap();
        assert!(p.has_prefix_in(&["+7".into()]));
        assert!(p.has_prefix_in(&["+76".into(), "+77".into()]));
        assert!(!p.has_prefix_in(&["+76".into()]));
    }
}
