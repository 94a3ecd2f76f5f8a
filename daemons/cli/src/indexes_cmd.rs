//! `logtank indexes …`: IndexTank's LogManager (logtank-indexes, port 16000) from the shell: list the
//! indexes, show one index's or the raw log's segments, the optimization queue, queue an optimization,
//! delete an index. `--json` prints what the server returned as JSON, for scripts.
//!
//! Segment "timestamps" are raw-log sequence numbers (a segment covers `from..to`), not times: logtank
//! names segments by sequence so a clock jump cannot reorder history. `last_optimization_timestamp` is a
//! time (ms since the epoch).

use std::process::ExitCode;
use std::time::{Duration, UNIX_EPOCH};

use anyhow::{anyhow, Result};
use clap::{Args, Subcommand};
use logtank_thrift::{ClientError, IndexLogInfo, QueueScore, RawLogInfo, SegmentInfo};
use serde_json::{json, Value};

use crate::endpoint::{self, MANAGER_DEFAULT};

#[derive(Args, Debug, Clone)]
pub struct IndexesArgs {
    /// The log manager (logtank-indexes' LogManager port).
    #[arg(long, env = "LOGTANK_MANAGER", default_value = MANAGER_DEFAULT, value_name = "HOST:PORT", global = true)]
    pub manager: String,
    /// Print the server's answer as JSON.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: IndexesCommand,
}

#[derive(Subcommand, Debug, Clone)]
pub enum IndexesCommand {
    /// The indexes this host holds per-index segments of, one per line (list_existing_indexes). An index
    /// whose records are all still in the undealt raw log is not listed yet, but `logtank read` serves it.
    List,
    /// One index's segments and record counts (get_index_log_info).
    Info { code: String },
    /// The raw log's undealt segments and the dealer's position (get_raw_log_info).
    Raw,
    /// The optimization queue, most urgent first (get_optimization_queue).
    Queue,
    /// Queue an index for optimization (enqueue_for_optimization); the master's pipeline runs it.
    Optimize {
        code: String,
        /// Lower is more urgent; the pipeline's own discovery queues at 10.
        #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
        priority: i32,
        /// Orders indexes of equal priority, higher first.
        #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
        score: f64,
    },
    /// Delete an index and its history (delete_index); the master's cleaner removes it.
    Delete { code: String },
}

pub fn run(args: IndexesArgs) -> Result<ExitCode> {
    let mut client = endpoint::connect("manager", &args.manager)?;
    let fail = |call: &str, e: ClientError| match e {
        ClientError::Application { message, .. } => {
            anyhow!("the manager at {} refused {call}: {message}", args.manager)
        }
        e => anyhow!("{call} on the manager at {}: {e}", args.manager),
    };
    let check = |code: &str| logtank_thrift::validate_index_code(code).map_err(|e| anyhow!("{e}"));
    match &args.command {
        IndexesCommand::List => {
            let codes = client
                .list_existing_indexes()
                .map_err(|e| fail("list_existing_indexes", e))?;
            if args.json {
                println!("{}", json!(codes));
            } else {
                for code in codes {
                    println!("{code}");
                }
            }
        }
        IndexesCommand::Info { code } => {
            check(code)?;
            let info = client
                .get_index_log_info(code)
                .map_err(|e| fail("get_index_log_info", e))?;
            if args.json {
                println!("{}", index_info_json(&info));
            } else {
                print!("{}", index_info_text(code, &info));
            }
        }
        IndexesCommand::Raw => {
            let info = client
                .get_raw_log_info()
                .map_err(|e| fail("get_raw_log_info", e))?;
            if args.json {
                println!("{}", raw_info_json(&info));
            } else {
                print!("{}", raw_info_text(&info));
            }
        }
        IndexesCommand::Queue => {
            let queue = client
                .get_optimization_queue()
                .map_err(|e| fail("get_optimization_queue", e))?;
            let mut entries: Vec<(String, QueueScore)> = queue.into_iter().collect();
            // Most urgent first: lower priority value, then higher score.
            entries.sort_by(|a, b| {
                (a.1.priority, -a.1.score)
                    .partial_cmp(&(b.1.priority, -b.1.score))
                    .unwrap_or(std::cmp::Ordering::Equal)
            });
            if args.json {
                let v: Vec<Value> = entries
                    .iter()
                    .map(|(c, q)| json!({"index_code": c, "priority": q.priority, "score": q.score}))
                    .collect();
                println!("{}", Value::Array(v));
            } else if entries.is_empty() {
                println!("the optimization queue is empty");
            } else {
                println!("{:<32} {:>8} {:>10}", "index", "priority", "score");
                for (code, q) in entries {
                    println!("{code:<32} {:>8} {:>10.2}", q.priority, q.score);
                }
            }
        }
        IndexesCommand::Optimize {
            code,
            priority,
            score,
        } => {
            check(code)?;
            client
                .enqueue_for_optimization(code, *priority, *score)
                .map_err(|e| fail("enqueue_for_optimization", e))?;
            println!("queued {code} for optimization (priority {priority}, score {score})");
        }
        IndexesCommand::Delete { code } => {
            check(code)?;
            client.delete_index(code).map_err(|e| fail("delete_index", e))?;
            println!("queued {code} for deletion");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn segment_json(s: &SegmentInfo) -> Value {
    json!({
        "timestamp": s.timestamp,
        "end_timestamp": s.end_timestamp,
        "valid_length": s.valid_length,
        "actual_length": s.actual_length,
        "record_count": s.record_count,
        "sorted": s.sorted,
    })
}

fn index_info_json(info: &IndexLogInfo) -> Value {
    let list = |v: &[SegmentInfo]| Value::Array(v.iter().map(segment_json).collect());
    json!({
        "optimized_segments": list(&info.optimized_segments),
        "sorted_segments": list(&info.sorted_segments),
        "unsorted_segments": list(&info.unsorted_segments),
        "optimized_record_count": info.optimized_record_count,
        "unoptimized_record_count": info.unoptimized_record_count,
        "unoptimized_segments": info.unoptimized_segments,
        "last_optimization_timestamp": info.last_optimization_timestamp,
    })
}

fn raw_info_json(info: &RawLogInfo) -> Value {
    json!({
        "undealt_segments": Value::Array(info.undealt_segments.iter().map(segment_json).collect()),
        "dealer_next_timestamp": info.dealer_next_timestamp,
    })
}

/// "1.2 MB", or "-" when the server did not say.
fn size(bytes: Option<i64>) -> String {
    match bytes {
        Some(b) if b >= 1_000_000 => format!("{:.1} MB", b as f64 / 1e6),
        Some(b) if b >= 1_000 => format!("{:.1} kB", b as f64 / 1e3),
        Some(b) => format!("{b} B"),
        None => "-".into(),
    }
}

fn segment_rows(out: &mut String, kind: &str, segments: &[SegmentInfo]) {
    for s in segments {
        let range = match s.end_timestamp {
            Some(end) => format!("{}-{end}", s.timestamp),
            None => format!("{}-", s.timestamp),
        };
        out.push_str(&format!(
            "  {kind:<10} {range:<24} {:>10} {:>10}\n",
            s.record_count,
            size(s.actual_length)
        ));
    }
}

pub fn index_info_text(code: &str, info: &IndexLogInfo) -> String {
    let when = match info.last_optimization_timestamp {
        0 => "never optimized".to_string(),
        ms => {
            let t = UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64);
            format!("last optimized {}", humantime::format_rfc3339_seconds(t))
        }
    };
    let mut out = format!(
        "index {code}: {} optimized records, {} unoptimized records in {} unoptimized segments; {when}\n",
        info.optimized_record_count, info.unoptimized_record_count, info.unoptimized_segments
    );
    let segments = info.optimized_segments.len() + info.sorted_segments.len() + info.unsorted_segments.len();
    if segments == 0 {
        out.push_str("  no per-index segments yet (its records are in the raw log, not dealt yet)\n");
        return out;
    }
    out.push_str(&format!(
        "  {:<10} {:<24} {:>10} {:>10}\n",
        "kind", "raw sequences", "records", "size"
    ));
    segment_rows(&mut out, "optimized", &info.optimized_segments);
    segment_rows(&mut out, "sorted", &info.sorted_segments);
    segment_rows(&mut out, "unsorted", &info.unsorted_segments);
    out
}

pub fn raw_info_text(info: &RawLogInfo) -> String {
    let mut out = format!(
        "raw log: dealt up to sequence {}; {} undealt segments (the newest is the writer's, dealt once it rolls)\n",
        info.dealer_next_timestamp,
        info.undealt_segments.len()
    );
    for s in &info.undealt_segments {
        out.push_str(&format!(
            "  segment from sequence {:<12} {:>10}\n",
            s.timestamp,
            size(s.actual_length)
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    // Proves the index info names every count and lists every segment with its kind and range.
    #[test]
    fn index_info_pretty() {
        let seg = |from, to, records, sorted| SegmentInfo {
            timestamp: from,
            end_timestamp: Some(to),
            actual_length: Some(2_500_000),
            record_count: records,
            sorted,
            ..SegmentInfo::default()
        };
        let info = IndexLogInfo {
            optimized_segments: vec![seg(0, 10, 500, true)],
            sorted_segments: vec![seg(10, 20, 40, true)],
            unsorted_segments: vec![seg(20, 21, 7, false)],
            optimized_record_count: 500,
            unoptimized_record_count: 47,
            unoptimized_segments: 2,
            last_optimization_timestamp: 0,
        };
        let text = index_info_text("demo", &info);
        assert!(
            text.starts_with("index demo: 500 optimized records, 47 unoptimized records in 2"),
            "{text}"
        );
        assert!(text.contains("never optimized"), "{text}");
        for row in [
            "optimized  0-10",
            "sorted     10-20",
            "unsorted   20-21",
            "2.5 MB",
        ] {
            assert!(text.contains(row), "{row} missing:\n{text}");
        }
    }
}
