//! The Rust half of `tests/compat/thrift-codec-check`: proves byte-level agreement with Apache Thrift's
//! own Python library. Reads a JSON file of cases written by the Python half (each: a kind, the value as
//! JSON, and the bytes Python's TBinaryProtocol made of it), and for every case
//! - decodes Python's bytes and checks the value is the one described,
//! - encodes the described value and checks the bytes are Python's (where both must be identical),
//! - adds `rust_hex` (our encoding) so the Python half can decode it and check the value in turn.
//!
//! Usage: `codec_check CASES.json > CASES_WITH_RUST.json`; mismatches go to stderr, exit status 1.

use std::collections::BTreeMap;
use std::process::ExitCode;

use logtank_thrift::*;
use serde_json::{json, Value};

type Res<T> = Result<T, String>;

fn main() -> ExitCode {
    let Some(path) = std::env::args().nth(1) else {
        eprintln!("usage: codec_check CASES.json");
        return ExitCode::from(2);
    };
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("codec_check: {path}: {e}");
            return ExitCode::from(2);
        }
    };
    let mut cases: Vec<Value> = match serde_json::from_str(&text) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("codec_check: {path}: {e}");
            return ExitCode::from(2);
        }
    };
    let mut failures = 0;
    for (i, case) in cases.iter_mut().enumerate() {
        match check(case) {
            Ok(rust_hex) => {
                case["rust_hex"] = json!(rust_hex);
            }
            Err(e) => {
                failures += 1;
                eprintln!("case {i} ({}): {e}", case["kind"]);
            }
        }
    }
    eprintln!("codec_check: {} cases, {failures} failures", cases.len());
    println!("{}", Value::Array(cases));
    if failures > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// Checks one case; returns our encoding of its value as hex.
fn check(case: &Value) -> Res<String> {
    let kind = case["kind"].as_str().ok_or("kind missing")?;
    let v = &case["value"];
    let py = unhex(case["py_hex"].as_str().ok_or("py_hex missing")?)?;
    let compare_bytes = case["compare_bytes"].as_bool().unwrap_or(true);
    let limits = Limits::default();
    let mut ours = Vec::new();
    macro_rules! strukt {
        ($from_json:ident, $decode:ident, $encode:ident) => {{
            let want = $from_json(v)?;
            let (got, n) = $decode(&py, &limits).map_err(|e| format!("decode: {e}"))?;
            if n != py.len() {
                return Err(format!("decode consumed {n} of {} bytes", py.len()));
            }
            if got != want {
                return Err(format!("decoded {got:?}, expected {want:?}"));
            }
            $encode(&mut ours, &want);
        }};
    }
    match kind {
        "record" => {
            strukt!(record, decode_record, encode_record);
            let want = record(v)?;
            if record_len(&py, &limits) != Ok(py.len()) {
                return Err("record_len disagrees".into());
            }
            if record_index_code(&py, &limits) != Ok(want.index_code.as_deref()) {
                return Err("record_index_code disagrees".into());
            }
        }
        "batch" => strukt!(batch, decode_batch, encode_batch),
        "token" => strukt!(token, decode_page_token, encode_page_token),
        "page" => strukt!(page, decode_page, encode_page),
        "segment_info" => strukt!(segment_info, decode_segment_info, encode_segment_info),
        "raw_log_info" => strukt!(raw_log_info, decode_raw_log_info, encode_raw_log_info),
        "index_log_info" => strukt!(index_log_info, decode_index_log_info, encode_index_log_info),
        "queue_score" => strukt!(queue_score, decode_queue_score, encode_queue_score),
        "call" => {
            let want = call(v)?;
            let seqid = int(&case["seqid"])? as i32;
            let (got, n) = decode_call(&py, &limits)
                .map_err(|e| format!("decode_call: {e}"))?
                .ok_or("decode_call: incomplete")?;
            if n != py.len() || got.seqid != seqid || got.name != want.method().name() {
                return Err(format!("decode_call: {got:?} of {n} bytes"));
            }
            if got.call != Ok(want.clone()) {
                return Err(format!("decoded {:?}, expected {want:?}", got.call));
            }
            encode_call(&mut ours, seqid, &want);
        }
        "reply" | "exception" => {
            let method = method(&case["method"])?;
            let seqid = int(&case["seqid"])? as i32;
            let want = if kind == "reply" {
                Ok(reply(method, v)?)
            } else {
                Err(ApplicationException {
                    kind: ExceptionKind::from_code(int(&v["kind"])? as i32),
                    message: str_(&v["message"])?,
                })
            };
            let (got, n) = decode_reply(&py, &limits, method).map_err(|e| format!("decode_reply: {e}"))?;
            if n != py.len() || got.seqid != seqid || got.name != method.name() {
                return Err(format!("decode_reply: {got:?} of {n} bytes"));
            }
            if got.result != want {
                return Err(format!("decoded {:?}, expected {want:?}", got.result));
            }
            match &want {
                Ok(r) => encode_reply(&mut ours, method, seqid, r),
                Err(e) => encode_exception(&mut ours, method.name(), seqid, e.kind, &e.message),
            }
            if let Ok(Reply::Page(p)) = &want {
                // The server's path: records copied as bytes, not re-encoded.
                let mut records = Vec::new();
                for r in &p.batch.records {
                    encode_record(&mut records, r);
                }
                let mut raw = Vec::new();
                encode_read_page_reply(
                    &mut raw,
                    seqid,
                    p.batch.records.len(),
                    &records,
                    p.next_page_token.as_ref(),
                );
                // The server's reply puts the token first (pipelined reads): the same page, other order.
                let page_of = |bytes: &[u8]| {
                    decode_read_page_reply(bytes, &limits)
                        .map(|(r, n)| (r.result.map_err(|e| e.message), n))
                        .map_err(|e| e.to_string())
                };
                if page_of(&raw)? != page_of(&ours)? {
                    return Err("encode_read_page_reply does not decode as encode_page_reply".into());
                }
                let (rp, _) = decode_read_page_reply_raw(&py, &limits).map_err(|e| e.to_string())?;
                let rp = rp.result.map_err(|e| e.to_string())?;
                if rp.records != records || rp.record_count != p.batch.records.len() {
                    return Err("decode_read_page_reply_raw disagrees".into());
                }
            }
        }
        // A record written by a newer schema (extra fields of every type) or with known ids of the
        // wrong type: decoding must skip what it does not know. Our bytes differ by design.
        "record_foreign" => {
            let want = record(v)?;
            let (got, n) = decode_record(&py, &limits).map_err(|e| format!("decode: {e}"))?;
            if n != py.len() || got != want {
                return Err(format!("decoded {got:?} of {n} bytes, expected {want:?}"));
            }
            if record_len(&py, &limits) != Ok(py.len()) {
                return Err("record_len disagrees".into());
            }
            encode_record(&mut ours, &want);
        }
        other => return Err(format!("unknown case kind {other}")),
    }
    if compare_bytes && ours != py {
        return Err(format!(
            "our bytes differ:\n  ours   {}\n  python {}",
            hex(&ours),
            hex(&py)
        ));
    }
    Ok(hex(&ours))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Res<Vec<u8>> {
    if s.len() & 1 == 1 {
        return Err("odd hex length".into());
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).map_err(|e| e.to_string()))
        .collect()
}

fn int(v: &Value) -> Res<i64> {
    v.as_i64().ok_or_else(|| format!("not an integer: {v}"))
}

fn float(v: &Value) -> Res<f64> {
    v.as_f64().ok_or_else(|| format!("not a number: {v}"))
}

fn str_(v: &Value) -> Res<String> {
    v.as_str()
        .map(str::to_string)
        .ok_or_else(|| format!("not a string: {v}"))
}

fn boolean(v: &Value) -> Res<bool> {
    v.as_bool().ok_or_else(|| format!("not a bool: {v}"))
}

fn opt<T>(v: &Value, f: impl FnOnce(&Value) -> Res<T>) -> Res<Option<T>> {
    if v.is_null() {
        Ok(None)
    } else {
        f(v).map(Some)
    }
}

fn list<T>(v: &Value, f: impl Fn(&Value) -> Res<T>) -> Res<Vec<T>> {
    v.as_array()
        .ok_or_else(|| format!("not a list: {v}"))?
        .iter()
        .map(f)
        .collect()
}

fn string_map(v: &Value) -> Res<BTreeMap<String, String>> {
    let o = v.as_object().ok_or_else(|| format!("not an object: {v}"))?;
    o.iter().map(|(k, v)| Ok((k.clone(), str_(v)?))).collect()
}

fn record(v: &Value) -> Res<LogRecord> {
    Ok(LogRecord {
        id: opt(&v["id"], int)?,
        timestamp_ms: opt(&v["timestamp_ms"], int)?,
        index_code: opt(&v["index_code"], str_)?,
        docid: opt(&v["docid"], str_)?,
        deleted: boolean(&v["deleted"])?,
        fields: opt(&v["fields"], string_map)?,
        variables: opt(&v["variables"], |v| {
            list(v, |kv| Ok((int(&kv[0])? as i32, float(&kv[1])?))).map(|l| l.into_iter().collect())
        })?,
        categories: opt(&v["categories"], string_map)?,
    })
}

fn batch(v: &Value) -> Res<LogBatch> {
    Ok(LogBatch {
        records: list(&v["records"], record)?,
    })
}

fn page_type(v: &Value) -> Res<PageType> {
    PageType::from_i32(int(v)? as i32).ok_or_else(|| format!("bad page type {v}"))
}

fn token(v: &Value) -> Res<LogPageToken> {
    Ok(LogPageToken {
        page_type: opt(&v["type"], page_type)?,
        timestamp: opt(&v["timestamp"], int)?,
        file_position: opt(&v["file_position"], int)?,
        next_type: opt(&v["next_type"], page_type)?,
        next_timestamp: opt(&v["next_timestamp"], int)?,
    })
}

fn page(v: &Value) -> Res<LogPage> {
    Ok(LogPage {
        batch: batch(&v["batch"])?,
        next_page_token: opt(&v["next_page_token"], token)?,
    })
}

fn segment_info(v: &Value) -> Res<SegmentInfo> {
    Ok(SegmentInfo {
        timestamp: int(&v["timestamp"])?,
        end_timestamp: opt(&v["end_timestamp"], int)?,
        valid_length: opt(&v["valid_length"], int)?,
        actual_length: opt(&v["actual_length"], int)?,
        record_count: int(&v["record_count"])? as i32,
        sorted: boolean(&v["sorted"])?,
    })
}

fn raw_log_info(v: &Value) -> Res<RawLogInfo> {
    Ok(RawLogInfo {
        undealt_segments: list(&v["undealt_segments"], segment_info)?,
        dealer_next_timestamp: int(&v["dealer_next_timestamp"])?,
    })
}

fn index_log_info(v: &Value) -> Res<IndexLogInfo> {
    Ok(IndexLogInfo {
        optimized_segments: list(&v["optimized_segments"], segment_info)?,
        sorted_segments: list(&v["sorted_segments"], segment_info)?,
        unsorted_segments: list(&v["unsorted_segments"], segment_info)?,
        optimized_record_count: int(&v["optimized_record_count"])?,
        unoptimized_record_count: int(&v["unoptimized_record_count"])?,
        unoptimized_segments: int(&v["unoptimized_segments"])? as i32,
        last_optimization_timestamp: int(&v["last_optimization_timestamp"])?,
    })
}

fn queue_score(v: &Value) -> Res<QueueScore> {
    Ok(QueueScore {
        priority: int(&v["priority"])? as i32,
        score: float(&v["score"])?,
    })
}

fn method(v: &Value) -> Res<Method> {
    Method::from_name(v.as_str().unwrap_or("")).ok_or_else(|| format!("unknown method {v}"))
}

fn call(v: &Value) -> Res<Call> {
    let a = &v["args"];
    Ok(match method(&v["method"])? {
        Method::SendBatch => Call::SendBatch(batch(&a["batch"])?),
        Method::ReadPage => Call::ReadPage {
            index_code: str_(&a["index_code"])?,
            token: token(&a["token"])?,
        },
        Method::GetIndexLogInfo => Call::GetIndexLogInfo {
            index_code: str_(&a["index_code"])?,
        },
        Method::GetRawLogInfo => Call::GetRawLogInfo,
        Method::EnqueueForOptimization => Call::EnqueueForOptimization {
            index_code: str_(&a["index_code"])?,
            priority: int(&a["priority"])? as i32,
            score: float(&a["score"])?,
        },
        Method::DeleteIndex => Call::DeleteIndex {
            index_code: str_(&a["index_code"])?,
        },
        Method::GetOptimizationQueue => Call::GetOptimizationQueue,
        Method::ListExistingIndexes => Call::ListExistingIndexes,
    })
}

fn reply(method: Method, v: &Value) -> Res<Reply> {
    let s = &v["success"];
    Ok(match method {
        m if m.is_void() => Reply::Void,
        Method::ReadPage => Reply::Page(page(s)?),
        Method::GetIndexLogInfo => Reply::IndexLogInfo(index_log_info(s)?),
        Method::GetRawLogInfo => Reply::RawLogInfo(raw_log_info(s)?),
        Method::GetOptimizationQueue => {
            let o = s.as_object().ok_or("queue is not an object")?;
            Reply::OptimizationQueue(
                o.iter()
                    .map(|(k, v)| Ok((k.clone(), queue_score(v)?)))
                    .collect::<Res<_>>()?,
            )
        }
        _ => Reply::Indexes(list(s, str_)?),
    })
}
