//! Names of per-index segment files: `<from:020>-<to:020>.<kind>_<records>`.
//!
//! Zero-padded numbers make lexicographic order the order of `from`, so `ls` shows history in order, and
//! the kind suffix keeps the rsync include patterns operators know from IndexTank (`*.sorted_*`, …) valid.

use std::fmt;

/// What a per-index segment holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SegmentKind {
    /// Records of one raw segment for one index, in arrival order.
    Unsorted,
    /// Consecutive unsorted segments compacted per docid (merge rules) and sorted by docid.
    Sorted,
    /// The whole index up to `to`: the previous snapshot merged with sorted segments; bare deletes dropped.
    Optimized,
}

impl SegmentKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SegmentKind::Unsorted => "unsorted",
            SegmentKind::Sorted => "sorted",
            SegmentKind::Optimized => "optimized",
        }
    }
}

/// A parsed segment name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SegmentName {
    /// First raw sequence number covered.
    pub from: u64,
    /// One past the last raw sequence number covered.
    pub to: u64,
    pub kind: SegmentKind,
    pub records: u64,
}

impl fmt::Display for SegmentName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:020}-{:020}.{}_{}",
            self.from,
            self.to,
            self.kind.as_str(),
            self.records
        )
    }
}

impl SegmentName {
    /// Parses a file name; `None` for anything else (temporary files, markers).
    pub fn parse(name: &str) -> Option<SegmentName> {
        let (range, rest) = name.split_once('.')?;
        let (from, to) = range.split_once('-')?;
        if from.len() != 20 || to.len() != 20 {
            return None;
        }
        let (kind, records) = rest.split_once('_')?;
        let kind = match kind {
            "unsorted" => SegmentKind::Unsorted,
            "sorted" => SegmentKind::Sorted,
            "optimized" => SegmentKind::Optimized,
            _ => return None,
        };
        let parsed = SegmentName {
            from: from.parse().ok()?,
            to: to.parse().ok()?,
            kind,
            records: records.parse().ok()?,
        };
        (parsed.from <= parsed.to && parsed.to_string() == name).then_some(parsed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_reject_others() {
        let name = SegmentName {
            from: 17,
            to: 90,
            kind: SegmentKind::Sorted,
            records: 1234,
        };
        assert_eq!(
            name.to_string(),
            "00000000000000000017-00000000000000000090.sorted_1234"
        );
        assert_eq!(SegmentName::parse(&name.to_string()), Some(name));
        for bad in [
            "last_read",
            ".tmp-00000000000000000017-00000000000000000090.sorted_1",
            "00000000000000000017-00000000000000000090.raw",
            "17-90.sorted_3",
            "00000000000000000090-00000000000000000017.sorted_3",
        ] {
            assert_eq!(SegmentName::parse(bad), None, "{bad}");
        }
    }
}
