//! Russian phone numbers as every seed API expects them: `+7XXXXXXXXXX`.

/// Normalises a Russian phone number written in any common way
/// (`8 (912) 345-67-89`, `+7 912 3456789`, `79123456789`, `9123456789`) to
/// `+7XXXXXXXXXX`. Returns `None` when the text is not a Russian number.
pub fn normalize(text: &str) -> Option<String> {
    let digits: String = text.chars().filter(|c| c.is_ascii_digit()).collect();
    // Reject text that has letters in it: it is not a phone number.
    if text.chars().any(|c| c.is_alphabetic()) {
        return None;
    }
    let national = match digits.len() {
        10 => digits.as_str(),
        11 if digits.starts_with('7') || digits.starts_with('8') => &digits[1..],
        _ => return None,
    };
    // Russian numbers start with 3, 4, 8 or 9 after the country code.
    if !matches!(national.as_bytes()[0], b'3' | b'4' | b'8' | b'9') {
        return None;
    }
    Some(format!("+7{national}"))
}

#[cfg(test)]
mod tests {
    use super::normalize;

    #[test]
    fn common_spellings() {
        for s in [
            "8 (912) 345-67-89",
            "+7 912 345 67 89",
            "79123456789",
            "9123456789",
            "+7(912)3456789",
        ] {
            assert_eq!(normalize(s).as_deref(), Some("+79123456789"), "{s}");
        }
    }

    #[test]
    fn rejects_non_numbers() {
        for s in [
            "",
            "12345",
            "+1 212 555 0100",
            "call me",
            "+7 012 345 67 89",
            "8912345678901",
        ] {
            assert_eq!(normalize(s), None, "{s}");
        }
    }
}
