//! The cleaner: deletes indexes queued by `delete_index`, superseded segments of indexes nobody read for
//! `read_guard`, leftovers of interrupted writes, and raw history older than `raw_history_retention`.

use std::fs;
use std::path::Path;
use std::time::SystemTime;

use crate::error::{IoContext, StorageError};
use crate::names::SegmentKind;
use crate::storage::{covered, list_names};
use crate::{raw, Storage};

pub(crate) fn clean(storage: &Storage) -> Result<usize, StorageError> {
    let mut removed = delete_queued_indexes(storage)?;
    for code in storage.list_indexes()? {
        removed += clean_index(storage, &code)?;
    }
    removed += expire_raw_history(storage)?;
    Ok(removed)
}

fn delete_queued_indexes(storage: &Storage) -> Result<usize, StorageError> {
    let codes: Vec<String> =
        std::mem::take(&mut *storage.deletions.lock().unwrap_or_else(|p| p.into_inner()));
    let layout = &storage.layout;
    let aside = layout.deleted_indexes();
    let mut removed = 0;
    for code in codes {
        let dir = layout.index(&code);
        if !dir.is_dir() {
            continue;
        }
        // One rename: a reader or a crash sees the whole index under its name or none of it. It is kept
        // aside (not removed) for deleted_index_retention.
        logtank_durable::create_dir_all_durably(&aside)?;
        let since = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        let kept = aside.join(format!("{code}.{since}"));
        logtank_durable::rename_durably(&dir, &kept)?;
        logtank_durable::fsync_dir(&layout.indexes())?;
        log::warn!(
            "cleaner: deleted index {code}: kept in {} for {} h (move it back to {} to undo)",
            kept.display(),
            storage.options.deleted_index_retention.as_secs() / 3600,
            dir.display()
        );
        removed += 1;
    }
    // Leftovers of a deletion a crash interrupted (the older scheme renamed to .deleted-<code> first).
    for entry in fs::read_dir(layout.indexes()).at(layout.indexes())? {
        let entry = entry.at(layout.indexes())?;
        if entry.file_name().to_string_lossy().starts_with(".deleted-") {
            fs::remove_dir_all(entry.path()).at(entry.path())?;
        }
    }
    removed += expire_deleted_indexes(storage)?;
    Ok(removed)
}

/// Removes indexes kept aside longer than `deleted_index_retention` (by the time in their name).
fn expire_deleted_indexes(storage: &Storage) -> Result<usize, StorageError> {
    let aside = storage.layout.deleted_indexes();
    let Ok(entries) = fs::read_dir(&aside) else {
        return Ok(0);
    };
    let now_ms = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let retention_ms = storage.options.deleted_index_retention.as_millis();
    let mut removed = 0;
    for entry in entries {
        let entry = entry.at(&aside)?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(since) = name.rsplit_once('.').and_then(|(_, ms)| ms.parse::<u128>().ok()) else {
            continue;
        };
        if now_ms.saturating_sub(since) >= retention_ms {
            fs::remove_dir_all(entry.path()).at(entry.path())?;
            log::info!("cleaner: removed deleted index {name} (past its retention)");
            removed += 1;
        }
    }
    if removed > 0 {
        logtank_durable::fsync_dir(&aside)?;
    }
    Ok(removed)
}

fn clean_index(storage: &Storage, code: &str) -> Result<usize, StorageError> {
    let layout = &storage.layout;
    let mut removed = 0;
    for dir in [layout.segments(code), layout.optimized(code)] {
        removed += remove_leftovers(&dir)?;
    }
    let last_read = fs::metadata(layout.last_read(code))
        .and_then(|m| m.modified())
        .ok();
    let guarded = last_read.is_some_and(|t| {
        SystemTime::now()
            .duration_since(t)
            .map_or(true, |age| age < storage.options.read_guard)
    });
    if guarded {
        return Ok(removed);
    }
    let segments = list_names(&layout.segments(code))?;
    let optimized = list_names(&layout.optimized(code))?;
    let Some(latest) = optimized.last().copied() else {
        return Ok(removed);
    };
    let mut doomed: Vec<_> = optimized[..optimized.len() - 1].to_vec();
    doomed.extend(
        segments
            .iter()
            .filter(|s| s.kind == SegmentKind::Sorted && s.to <= latest.to),
    );
    doomed.extend(covered(&segments));
    for name in &doomed {
        let path = layout.segment_path(code, name);
        match fs::remove_file(&path) {
            Ok(()) => removed += 1,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).at(&path),
        }
    }
    if !doomed.is_empty() {
        logtank_durable::fsync_dir(&layout.segments(code))?;
        logtank_durable::fsync_dir(&layout.optimized(code))?;
        log::info!(
            "cleaner: index {code}: removed {} segments superseded by {latest}",
            doomed.len()
        );
    }
    Ok(removed)
}

/// Temporary files and sort runs: the pipeline is one thread and not running now, so nothing writes them.
fn remove_leftovers(dir: &Path) -> Result<usize, StorageError> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e).at(dir),
    };
    let mut removed = 0;
    for entry in entries {
        let entry = entry.at(dir)?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with(".tmp-") || name.starts_with(".run-") {
            fs::remove_file(entry.path()).at(entry.path())?;
            removed += 1;
        }
    }
    Ok(removed)
}

pub(crate) fn expire_raw_history(storage: &Storage) -> Result<usize, StorageError> {
    let retention = storage.options.raw_history_retention;
    let mut removed = 0;
    for segment in raw::list(&storage.layout.raw_history(), true)? {
        let age = fs::metadata(&segment.path)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| SystemTime::now().duration_since(t).ok());
        if age.is_some_and(|age| age > retention) {
            fs::remove_file(&segment.path).at(&segment.path)?;
            log::info!(
                "cleaner: removed raw history {} (older than the retention)",
                segment.path.display()
            );
            removed += 1;
        }
    }
    if removed > 0 {
        logtank_durable::fsync_dir(&storage.layout.raw_history())?;
    }
    Ok(removed)
}
