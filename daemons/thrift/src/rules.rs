//! What the protocol's values must satisfy beyond their wire shape. An index code becomes a directory
//! name on the storage side, so it is checked here, once, before it touches the filesystem.

use crate::types::LogRecord;

/// Longest index code. IndexTank's codes are a few characters; 128 keeps a directory name (plus the
/// segment names under it) far below `NAME_MAX` and `PATH_MAX`.
pub const INDEX_CODE_BYTES_MAX: usize = 128;

/// An index code is 1..=128 bytes of `[A-Za-z0-9._-]` and does not start with `.` (which excludes `.`,
/// `..` and hidden names). No `/`, no NUL, nothing a shell or a path join could misread.
pub fn validate_index_code(code: &str) -> Result<(), String> {
    if code.is_empty() {
        return Err("invalid index_code \"\": it must not be empty".to_string());
    }
    if code.len() > INDEX_CODE_BYTES_MAX {
        return Err(format!(
            "invalid index_code {:?}: {} bytes, at most {INDEX_CODE_BYTES_MAX} are allowed",
            truncate(code, 40),
            code.len()
        ));
    }
    let allowed = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-');
    if code.starts_with('.') || !code.bytes().all(allowed) {
        return Err(format!(
            "invalid index_code {code:?}: only A-Z a-z 0-9 . _ - are allowed, and it must not start with '.'"
        ));
    }
    Ok(())
}

/// What the writer requires of a record before it logs it (IndexTank's preconditions, with reasons):
/// no legacy `id`, a valid `index_code`, a `docid`. The writer stamps `timestamp_ms` itself.
pub fn check_record_for_write(r: &LogRecord) -> Result<(), String> {
    if let Some(id) = r.id {
        return Err(format!(
            "record carries the legacy field id ({id}): it is not accepted, leave it unset"
        ));
    }
    match &r.index_code {
        None => return Err("record has no index_code".to_string()),
        Some(code) => validate_index_code(code)?,
    }
    if r.docid.is_none() {
        return Err("record has no docid".to_string());
    }
    Ok(())
}

fn truncate(s: &str, max_chars: usize) -> String {
    let mut t: String = s.chars().take(max_chars).collect();
    if t.len() < s.len() {
        t.push('…');
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Index codes that could escape or hide in the storage tree are refused; ordinary ones pass.
    #[test]
    fn index_codes() {
        for ok in ["a", "dxkw0", "my-index_1.v2", &"x".repeat(128)] {
            assert_eq!(validate_index_code(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            ".",
            "..",
            "../x",
            ".hidden",
            "a/b",
            "a b",
            "é",
            "a\0",
            &"x".repeat(129),
        ] {
            assert!(validate_index_code(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            validate_index_code("../x").unwrap_err(),
            "invalid index_code \"../x\": only A-Z a-z 0-9 . _ - are allowed, and it must not start with '.'"
        );
    }

    /// The writer's preconditions name what is wrong.
    #[test]
    fn record_for_write() {
        let mut r = LogRecord {
            index_code: Some("idx".into()),
            docid: Some("d".into()),
            ..LogRecord::default()
        };
        assert_eq!(check_record_for_write(&r), Ok(()));
        r.id = Some(3);
        assert!(check_record_for_write(&r)
            .unwrap_err()
            .contains("legacy field id"));
        r.id = None;
        r.docid = None;
        assert_eq!(check_record_for_write(&r).unwrap_err(), "record has no docid");
    }
}
