//! The benchmark's documents: realistic search-index records (a docid, a title, a body of text, a URL, an
//! author, two variables, two categories) sized to an exact encoded length, and the same content as the
//! field/value pairs of a Redis stream entry. Pure: no IO, deterministic for a seed.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use logtank_thrift::{encode_record, LogRecord};

/// Words the text is drawn from: plain English, so the bytes look like what an index stores.
const WORDS: [&str; 64] = [
    "search",
    "index",
    "document",
    "storage",
    "durable",
    "write",
    "read",
    "page",
    "token",
    "engine",
    "recovery",
    "segment",
    "journal",
    "batch",
    "record",
    "field",
    "value",
    "variable",
    "category",
    "query",
    "result",
    "score",
    "ranking",
    "boost",
    "snippet",
    "title",
    "author",
    "published",
    "review",
    "product",
    "price",
    "color",
    "shipping",
    "available",
    "customer",
    "order",
    "the",
    "a",
    "of",
    "and",
    "with",
    "from",
    "into",
    "over",
    "under",
    "between",
    "every",
    "never",
    "always",
    "quickly",
    "slowly",
    "server",
    "client",
    "network",
    "machine",
    "memory",
    "disk",
    "cache",
    "fsync",
    "group",
    "commit",
    "latency",
    "throughput",
    "benchmark",
];
/// Docids are this many decimal digits after their prefix, so every record of a run has the same size.
pub const DOCID_DIGITS: usize = 12;
/// The smallest record size: the record's other fields alone take up to about 300 bytes.
pub const RECORD_BYTES_MIN: usize = 512;
/// The timestamp the writer stamps is this many bytes of the stored record (field header + i64).
pub const TIMESTAMP_FIELD_BYTES: usize = 3 + 8;

/// xorshift64*: enough randomness for text and variables, reproducible from a seed, no dependency.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }

    fn words(&mut self, count: usize) -> String {
        let mut s = String::new();
        for i in 0..count {
            if i > 0 {
                s.push(' ');
            }
            s.push_str(WORDS[self.below(WORDS.len())]);
        }
        s
    }
}

/// Writes `<prefix><n, zero-padded to DOCID_DIGITS>` into `docid` (reusing its allocation).
pub fn set_docid(docid: &mut String, prefix: &str, n: u64) {
    docid.clear();
    docid.push_str(prefix);
    let _ = write!(docid, "{n:0width$}", width = DOCID_DIGITS);
}

/// A record of `index_code` whose stored encoding — with the `timestamp_ms` the writer sets — is exactly
/// `record_bytes` long (at least [`RECORD_BYTES_MIN`]). The body text fills what the other fields leave.
/// `timestamp_ms` is left unset, as a client sends it; the docid is `<docid_prefix>000000000000`.
pub fn make_record(rng: &mut Rng, index_code: &str, docid_prefix: &str, record_bytes: usize) -> LogRecord {
    let mut docid = String::new();
    set_docid(&mut docid, docid_prefix, 0);
    let mut fields = BTreeMap::new();
    let title_words = 6 + rng.below(4);
    fields.insert("title".to_string(), rng.words(title_words));
    fields.insert(
        "url".to_string(),
        format!(
            "https://shop.example/{}/{}",
            WORDS[rng.below(64)],
            rng.next_u64() % 1_000_000
        ),
    );
    fields.insert("author".to_string(), rng.words(2));
    fields.insert("text".to_string(), String::new());
    let mut variables = BTreeMap::new();
    variables.insert(0, (rng.next_u64() % 10_000) as f64 / 100.0);
    variables.insert(1, (rng.next_u64() % 1_000) as f64);
    let mut categories = BTreeMap::new();
    categories.insert(
        "lang".to_string(),
        ["en", "es", "fr", "de"][rng.below(4)].to_string(),
    );
    categories.insert(
        "type".to_string(),
        ["article", "product", "review", "page"][rng.below(4)].to_string(),
    );
    let mut record = LogRecord {
        index_code: Some(index_code.to_string()),
        docid: Some(docid),
        fields: Some(fields),
        variables: Some(variables),
        categories: Some(categories),
        ..LogRecord::default()
    };
    let base = stored_len(&record);
    let want = record_bytes.max(RECORD_BYTES_MIN);
    let mut text = rng.words(want / 5 + 8);
    text.truncate(want.saturating_sub(base));
    if let Some(f) = record.fields.as_mut() {
        f.insert("text".to_string(), text);
    }
    record
}

/// The record's length as the writer stores it: its encoding with `timestamp_ms` set.
pub fn stored_len(record: &LogRecord) -> usize {
    let mut out = Vec::new();
    encode_record(&mut out, record);
    out.len()
        + if record.timestamp_ms.is_none() {
            TIMESTAMP_FIELD_BYTES
        } else {
            0
        }
}

/// The same content as a Redis stream entry's field/value pairs: `index_code`, `docid`, every field by name,
/// variables as `v<n>`, categories as `c:<name>`.
pub fn stream_fields(record: &LogRecord) -> Vec<(String, String)> {
    let mut out = Vec::new();
    if let Some(code) = &record.index_code {
        out.push(("index_code".to_string(), code.clone()));
    }
    if let Some(docid) = &record.docid {
        out.push(("docid".to_string(), docid.clone()));
    }
    for (k, v) in record.fields.iter().flatten() {
        out.push((k.clone(), v.clone()));
    }
    for (k, v) in record.variables.iter().flatten() {
        out.push((format!("v{k}"), v.to_string()));
    }
    for (k, v) in record.categories.iter().flatten() {
        out.push((format!("c:{k}"), v.clone()));
    }
    out
}

/// Bytes of an entry's field names and values (what a Redis stream entry holds, without its own overhead).
pub fn stream_entry_bytes(fields: &[(String, String)]) -> usize {
    fields.iter().map(|(k, v)| k.len() + v.len()).sum()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn records_have_the_asked_stored_size() {
        // Whatever the random words, the stored encoding (timestamp included) is exactly the size asked.
        let mut rng = Rng::new(7);
        for want in [RECORD_BYTES_MIN, 1000, 1024, 4096] {
            for _ in 0..50 {
                let mut r = make_record(&mut rng, "bench", "d", want);
                assert_eq!(stored_len(&r), want);
                r.timestamp_ms = Some(1_700_000_000_000);
                let mut out = Vec::new();
                encode_record(&mut out, &r);
                assert_eq!(out.len(), want);
            }
        }
    }

    #[test]
    fn docids_keep_the_size() {
        // A docid rewritten in place keeps its width, so the record keeps its size.
        let mut rng = Rng::new(1);
        let mut r = make_record(&mut rng, "bench", "t03-", 1024);
        set_docid(r.docid.as_mut().unwrap(), "t03-", 123_456);
        assert_eq!(r.docid.as_deref(), Some("t03-000000123456"));
        assert_eq!(stored_len(&r), 1024);
    }

    #[test]
    fn stream_fields_carry_the_content() {
        // The Redis entry has every value of the record, about as many bytes as its encoding.
        let mut rng = Rng::new(3);
        let r = make_record(&mut rng, "bench", "d", 1024);
        let f = stream_fields(&r);
        assert_eq!(f.len(), 2 + 4 + 2 + 2);
        let bytes = stream_entry_bytes(&f);
        assert!((900..=1024).contains(&bytes), "{bytes}");
    }
}
