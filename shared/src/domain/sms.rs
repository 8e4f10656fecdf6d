//! How an SMS text travels: its encoding, how many segments it is billed as, and its
//! size (3GPP TS 23.038, TS 23.040). A text all in the GSM 7-bit default alphabet (and
//! its extension table, whose characters take two septets) goes as GSM-7, 160 septets in
//! one segment or 153 in each part of a longer one; any other character makes the whole
//! text UCS-2, 70 UTF-16 units in one segment or 67 in each part. One segment is also
//! Android's SMS Retriever limit: 140 bytes (160 septets, or 70 units of 2 bytes).

/// The GSM 7-bit default alphabet (TS 23.038 §6.2.1), one septet each.
const GSM7_BASIC: &str = "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?\
¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà";

/// Its extension table (§6.2.1.1): an escape and the character, two septets each.
const GSM7_EXTENSION: &str = "\u{0C}^{}\\[~]|€";

/// How a text is encoded on the air.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Gsm7,
    Ucs2,
}

impl Encoding {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Gsm7 => "GSM-7",
            Self::Ucs2 => "UCS-2",
        }
    }
}

/// A text as the network carries it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    pub encoding: Encoding,
    /// Septets (GSM-7) or UTF-16 units (UCS-2).
    pub units: usize,
    /// Segments billed: 1 up to 160 septets / 70 units, else 153 / 67 a part.
    pub segments: usize,
    /// Bytes of user data: septets packed 8 to 7 bytes, or 2 bytes a unit.
    pub bytes: usize,
}

/// The shape of `text`.
pub fn shape(text: &str) -> Shape {
    let septets = text.chars().try_fold(0usize, |n, c| {
        if GSM7_BASIC.contains(c) {
            Some(n + 1)
        } else if GSM7_EXTENSION.contains(c) {
            Some(n + 2)
        } else {
            None
        }
    });
    match septets {
        Some(units) => Shape {
            encoding: Encoding::Gsm7,
            units,
            segments: segments(units, 160, 153),
            bytes: (units * 7).div_ceil(8),
        },
        None => {
            let units = text.encode_utf16().count();
            Shape {
                encoding: Encoding::Ucs2,
                units,
                segments: segments(units, 70, 67),
                bytes: units * 2,
            }
        }
    }
}

fn segments(units: usize, single: usize, part: usize) -> usize {
    if units <= single {
        1
    } else {
        units.div_ceil(part)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gsm7_texts_count_septets_and_extension_characters_twice() {
        let text = "FoodSave code: 123456\n\n@foodsave.kz #123456";
        assert_eq!(
            shape(text),
            Shape {
                encoding: Encoding::Gsm7,
                units: 43,
                segments: 1,
                bytes: 38
            }
        );
        assert_eq!(shape("{€}").units, 6);
        assert_eq!(shape(&"a".repeat(160)).segments, 1);
        assert_eq!(shape(&"a".repeat(160)).bytes, 140);
        assert_eq!(shape(&"a".repeat(161)).segments, 2);
        assert_eq!(shape(&"a".repeat(306)).segments, 2);
        assert_eq!(shape(&"a".repeat(307)).segments, 3);
    }

    #[test]
    fn one_character_outside_gsm7_makes_the_whole_text_ucs2() {
        let text = "Код: 123456";
        let s = shape(text);
        assert_eq!(
            (s.encoding, s.units, s.segments, s.bytes),
            (Encoding::Ucs2, 11, 1, 22)
        );
        assert_eq!(shape(&"ж".repeat(70)).segments, 1);
        assert_eq!(shape(&"ж".repeat(70)).bytes, 140);
        assert_eq!(shape(&"ж".repeat(71)).segments, 2);
        assert_eq!(shape(&"ж".repeat(135)).segments, 3);
        // Outside the BMP: two UTF-16 units.
        assert_eq!(shape("🙂").units, 2);
        // Kazakh letters are not in GSM-7.
        assert_eq!(shape("қ").encoding, Encoding::Ucs2);
    }
}
