//! IndexTank's record merge rules, and the document-state model they must agree with.
//!
//! A record is one or more modifications of one document. Applied in arrival order (the model, [`apply`]):
//! a delete removes the document and, if the record also carries content, re-adds it with that content; any
//! other record that carries content creates the document if needed, overwrites `fields` when it carries
//! them, and merges `variables` and `categories` key by key (a record that carries nothing changes nothing).
//!
//! - [`merge_into`] compacts two consecutive records of a docid into one that applies the same way (used
//!   when unsorted segments are sorted): `apply(apply(s, a), b) == apply(s, merge(a, b))` for every state `s`.
//!   A delete is kept as a record, so a sorted segment can be replayed over any earlier state.
//! - [`fold_optimized`] folds a docid's records into the document itself (used by the optimizer): the
//!   snapshot is replayed from an empty index, so a bare delete drops the document and a delete with content
//!   becomes a plain add.
//!
//! Replaying an overlapping window of records again is harmless under these rules (last writer wins per key,
//! a delete resets): the reader relies on that when a segment it was reading was compacted away.

use std::collections::BTreeMap;

use logtank_thrift::LogRecord;

/// Merges `src` (later) into `tgt` (earlier) of the same docid.
pub fn merge_into(tgt: &mut LogRecord, src: LogRecord) {
    tgt.id = None;
    if src.timestamp_ms.is_some() {
        tgt.timestamp_ms = src.timestamp_ms;
    }
    if src.deleted {
        // Delete, then re-add whatever the delete carries.
        tgt.deleted = true;
        tgt.fields = src.fields;
        tgt.variables = src.variables;
        tgt.categories = src.categories;
        return;
    }
    // `deleted` stays as it was: "delete, then these adds".
    if src.fields.is_some() {
        tgt.fields = src.fields;
    }
    if let Some(variables) = src.variables {
        tgt.variables.get_or_insert_with(BTreeMap::new).extend(variables);
    }
    if let Some(categories) = src.categories {
        tgt.categories
            .get_or_insert_with(BTreeMap::new)
            .extend(categories);
    }
}

/// Folds a later record into the current document of a snapshot (`None`: no document).
pub fn fold_optimized(state: Option<LogRecord>, src: LogRecord) -> Option<LogRecord> {
    if src.deleted {
        if src.is_bare_delete() {
            return None;
        }
        let mut doc = src;
        doc.deleted = false;
        doc.id = None;
        return Some(doc);
    }
    let mut doc = state.unwrap_or_else(|| LogRecord {
        docid: src.docid.clone(),
        ..LogRecord::default()
    });
    merge_into(&mut doc, src);
    Some(doc)
}

/// A document as an index engine holds it after replay.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Doc {
    pub fields: Option<BTreeMap<String, String>>,
    pub variables: BTreeMap<i32, f64>,
    pub categories: BTreeMap<String, String>,
}

/// The state of one index: docid → document.
pub type Docs = BTreeMap<String, Doc>;

/// Applies one record to `docs` the way an index engine replays it (see the module documentation).
/// Records without a docid are ignored (the writer never accepts them).
pub fn apply(docs: &mut Docs, record: &LogRecord) {
    let Some(docid) = &record.docid else { return };
    let carries_content =
        record.fields.is_some() || record.variables.is_some() || record.categories.is_some();
    if record.deleted {
        docs.remove(docid);
    }
    if !carries_content {
        return;
    }
    let doc = docs.entry(docid.clone()).or_default();
    if let Some(fields) = &record.fields {
        doc.fields = Some(fields.clone());
    }
    if let Some(variables) = &record.variables {
        doc.variables.extend(variables.iter().map(|(k, v)| (*k, *v)));
    }
    if let Some(categories) = &record.categories {
        doc.categories
            .extend(categories.iter().map(|(k, v)| (k.clone(), v.clone())));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn op() -> impl Strategy<Value = LogRecord> {
        let map = || proptest::option::of(proptest::collection::btree_map("[ab]", "[xy]", 0..3));
        (
            any::<bool>(),
            map(),
            proptest::option::of(proptest::collection::btree_map(0i32..3, 0.0f64..2.0, 0..3)),
            map(),
        )
            .prop_map(|(deleted, fields, variables, categories)| LogRecord {
                docid: Some("d".into()),
                deleted,
                fields,
                variables,
                categories,
                ..LogRecord::default()
            })
    }

    fn state() -> impl Strategy<Value = Docs> {
        proptest::collection::vec(op(), 0..4).prop_map(|ops| {
            let mut docs = Docs::new();
            for op in &ops {
                apply(&mut docs, op);
            }
            docs
        })
    }

    proptest! {
        /// Sorting may compact any run of records: the compacted record applies like the run, over any state.
        #[test]
        fn merge_into_applies_like_the_sequence(start in state(), ops in proptest::collection::vec(op(), 1..6)) {
            let mut expected = start.clone();
            for op in &ops {
                apply(&mut expected, op);
            }
            let mut merged = ops[0].clone();
            for op in &ops[1..] {
                merge_into(&mut merged, op.clone());
            }
            let mut got = start;
            apply(&mut got, &merged);
            prop_assert_eq!(got, expected);
        }

        /// A snapshot document replayed into an empty index gives the state of the whole history.
        #[test]
        fn fold_optimized_equals_replay_from_empty(ops in proptest::collection::vec(op(), 1..8)) {
            let mut expected = Docs::new();
            let mut doc = None;
            for op in &ops {
                apply(&mut expected, op);
                doc = fold_optimized(doc, op.clone());
            }
            let mut got = Docs::new();
            if let Some(doc) = &doc {
                prop_assert!(!doc.deleted);
                apply(&mut got, doc);
            }
            prop_assert_eq!(got, expected);
        }

        /// Having replayed up to `seen`, replaying again from an earlier `restart` on gives the state of the
        /// whole history (the reader's overlap rule when it restarts a replaced segment).
        #[test]
        fn replaying_an_overlap_is_harmless(
            ops in proptest::collection::vec(op(), 1..8),
            seen in 0usize..8,
            back in 0usize..8,
        ) {
            let seen = seen.min(ops.len());
            let restart = seen.saturating_sub(back);
            let mut once = Docs::new();
            for op in &ops {
                apply(&mut once, op);
            }
            let mut twice = Docs::new();
            for op in ops[..seen].iter().chain(&ops[restart..]) {
                apply(&mut twice, op);
            }
            prop_assert_eq!(twice, once);
        }
    }
}
