//! Records as JSON lines, the one text form every storage command reads and writes:
//!
//! ```text
//! {"index_code": "demo", "docid": "d1", "deleted": false, "fields": {"text": "hello"}, "variables": {"0": 1.5}, "categories": {"color": "red"}}
//! ```
//!
//! `docid` is required; `index_code` may come from a default (`logtank send --index`); `deleted` defaults to
//! false; `fields`, `variables` (keys are i32 written as strings, values numbers) and `categories` are
//! optional, and absent differs from empty (an absent map leaves the document's map as it is). Output also
//! carries `timestamp_ms`, the writer's clock when it logged the record; on input it is accepted and ignored,
//! because the writer stamps every record itself (so `logtank read` output can be sent again). Any other key
//! is refused, naming the keys allowed: a misspelt `categorie` must not silently drop a document's data.
//!
//! Parsing is per line with the line number in every error, and checks what the writer would refuse
//! (`logtank_thrift::check_record_for_write`), so a bad file fails before anything of it is sent.

use std::collections::BTreeMap;

use logtank_thrift::LogRecord;
use serde::{Deserialize, Serialize};

/// One record as a JSON object. Field order is the output's.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonRecord {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    index_code: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    docid: Option<String>,
    #[serde(default)]
    deleted: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    fields: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    variables: Option<BTreeMap<i32, f64>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    categories: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    timestamp_ms: Option<i64>,
}

/// Why a line is not a record; its `Display` starts with the line number.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {reason}")]
pub struct LineError {
    pub line: u64,
    pub reason: String,
}

/// Parses one line (numbered from 1) into a record ready for `send_batch`. `default_index` fills a missing
/// `index_code`. A blank line is `Ok(None)`.
pub fn parse_line(
    text: &str,
    line: u64,
    default_index: Option<&str>,
) -> Result<Option<LogRecord>, LineError> {
    let fail = |reason: String| LineError { line, reason };
    if text.trim().is_empty() {
        return Ok(None);
    }
    // serde would also read a struct from an array of its fields, which no one means here.
    if !text.trim_start().starts_with('{') {
        return Err(fail(
            "not a JSON object (one record per line: {\"index_code\": …, \"docid\": …})".into(),
        ));
    }
    let json: JsonRecord = serde_json::from_str(text).map_err(|e| fail(json_reason(&e)))?;
    let record = LogRecord {
        id: None,
        // The writer stamps every record; a timestamp read from an earlier `logtank read` is dropped.
        timestamp_ms: None,
        index_code: json.index_code.or_else(|| default_index.map(str::to_owned)),
        docid: json.docid,
        deleted: json.deleted,
        fields: json.fields,
        variables: json.variables,
        categories: json.categories,
    };
    if record.index_code.is_none() {
        return Err(fail(
            "no \"index_code\" (give one per record, or a default with --index)".into(),
        ));
    }
    if record.docid.is_none() {
        return Err(fail("no \"docid\": every record names its document".into()));
    }
    logtank_thrift::check_record_for_write(&record).map_err(fail)?;
    Ok(Some(record))
}

/// serde_json's message, with its position said as a column of this line (every line is parsed alone, so
/// serde_json's "line 1" would mislead).
fn json_reason(e: &serde_json::Error) -> String {
    let text = e.to_string();
    let suffix = format!(" at line {} column {}", e.line(), e.column());
    let message = text.strip_suffix(&suffix).unwrap_or(&text);
    if e.column() > 0 {
        format!("{message} (column {})", e.column())
    } else {
        message.to_string()
    }
}

/// The JSON line of a record read from `index_code` (records in per-index segments do not carry their
/// index code; the line always names it, so `tail` of several indexes stays unambiguous).
pub fn to_json_line(record: &LogRecord, index_code: &str) -> String {
    let json = JsonRecord {
        index_code: Some(index_code.to_owned()),
        docid: record.docid.clone(),
        deleted: record.deleted,
        fields: record.fields.clone(),
        variables: record.variables.clone(),
        categories: record.categories.clone(),
        timestamp_ms: record.timestamp_ms,
    };
    // Serialising maps of strings and numbers cannot fail (a non-finite variable becomes null).
    serde_json::to_string(&json).unwrap_or_else(|e| format!("{{\"error\": {:?}}}", e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    // Proves a full line becomes the record it describes, variables' string keys as i32.
    #[test]
    fn full_line() {
        let r = parse_line(
            r#"{"index_code": "demo", "docid": "d1", "deleted": false, "fields": {"text": "hi"}, "variables": {"0": 1.5, "3": 2}, "categories": {"c": "red"}}"#,
            1,
            None,
        )
        .unwrap()
        .unwrap();
        assert_eq!(r.index_code.as_deref(), Some("demo"));
        assert_eq!(r.docid.as_deref(), Some("d1"));
        assert!(!r.deleted);
        assert_eq!(r.fields.unwrap()["text"], "hi");
        assert_eq!(r.variables.unwrap(), BTreeMap::from([(0, 1.5), (3, 2.0)]));
        assert_eq!(r.categories.unwrap()["c"], "red");
    }

    // Proves the default index fills only a missing index_code, and a blank line is skipped.
    #[test]
    fn default_index_and_blank() {
        let r = parse_line(r#"{"docid": "d"}"#, 1, Some("dflt")).unwrap().unwrap();
        assert_eq!(r.index_code.as_deref(), Some("dflt"));
        assert!(r.fields.is_none() && r.variables.is_none() && r.categories.is_none());
        let r = parse_line(r#"{"docid": "d", "index_code": "own"}"#, 1, Some("dflt"))
            .unwrap()
            .unwrap();
        assert_eq!(r.index_code.as_deref(), Some("own"));
        assert_eq!(parse_line("   ", 4, None), Ok(None));
    }

    // Proves every kind of bad line is refused with its line number and a reason a person can act on.
    #[test]
    fn errors_name_line_and_reason() {
        let cases = [
            (r#"{"docid": "d""#, "EOF while parsing"),
            (r#"{"docid": 5, "index_code": "a"}"#, "invalid type: integer `5`"),
            (
                r#"{"docid": "d", "index_code": "a", "categorie": {}}"#,
                "unknown field `categorie`",
            ),
            (
                r#"{"docid": "d", "index_code": "a", "variables": {"x": 1}}"#,
                "invalid",
            ),
            (r#"{"docid": "d"}"#, "no \"index_code\""),
            (r#"{"index_code": "a"}"#, "no \"docid\""),
            (r#"{"docid": "d", "index_code": "../etc"}"#, "invalid index_code"),
            (r#"[1, 2]"#, "not a JSON object"),
            ("docid: d", "not a JSON object"),
        ];
        for (line, expected) in cases {
            let e = parse_line(line, 17, None).unwrap_err();
            assert_eq!(e.line, 17);
            let text = e.to_string();
            assert!(text.starts_with("line 17: "), "{text}");
            assert!(text.contains(expected), "{line}: {text}");
            assert!(!text.contains("line 1 column"), "{text}");
        }
    }

    // Proves output parses back to the same record (what `read | send` relies on), timestamp dropped.
    #[test]
    fn output_round_trips() {
        let record = LogRecord {
            timestamp_ms: Some(1234),
            docid: Some("d\"1".into()),
            deleted: true,
            variables: Some(BTreeMap::from([(-2, 0.25)])),
            ..LogRecord::default()
        };
        let line = to_json_line(&record, "idx");
        assert!(line.contains("\"timestamp_ms\":1234"), "{line}");
        let back = parse_line(&line, 1, None).unwrap().unwrap();
        assert_eq!(
            back,
            LogRecord {
                timestamp_ms: None,
                index_code: Some("idx".into()),
                ..record
            }
        );
    }
}
