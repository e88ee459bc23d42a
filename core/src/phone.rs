//! Russian phone numbers as every seed API expects them: `+7XXXXXXXXXX`.

/// Normalises a Russian phone number written in any common way
/// (`8 (912) 345-67-89`, `+7 912 3456789`, `79123456789`, `9123456789`) to
/// `+7XXXXXXXXXX`. Returns `None` when the text is not a Russian number.
pub fn normalize(text: &str) -> Option<String> {
    normalized(text).map(|b| b.iter().map(|&c| char::from(c)).collect())
}

/// Like [`normalize`], the number as the 12 ASCII bytes of `+7XXXXXXXXXX`
/// (no allocation, for the Lua function that calls it per record).
pub fn normalized(text: &str) -> Option<[u8; 12]> {
    // Reject text that has letters in it: it is not a phone number.
    let letters = if text.is_ascii() {
        text.bytes().any(|b| b.is_ascii_alphabetic())
    } else {
        text.chars().any(char::is_alphabetic)
    };
    if letters {
        return None;
    }
    let mut digits = [0u8; 11];
    let mut n = 0;
    for b in text.bytes().filter(u8::is_ascii_digit) {
        if n == digits.len() {
            return None;
        }
        digits[n] = b;
        n += 1;
    }
    let national = match n {
        10 => &digits[..10],
        11 if matches!(digits[0], b'7' | b'8') => &digits[1..],
        _ => return None,
    };
    // Russian numbers start with 3, 4, 8 or 9 after the country code.
    if !matches!(national[0], b'3' | b'4' | b'8' | b'9') {
        return None;
    }
    let mut out = *b"+7XXXXXXXXXX";
    out[2..].copy_from_slice(national);
    Some(out)
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
