//! The power-loss file system's model, over a real mount: what a cut keeps and what it forgets. Root only
//! (each test says so and passes otherwise; tests/run runs as root).
#![allow(clippy::unwrap_used)]

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::Path;

use logtank_powerfs::{CutMode, PowerFs};

fn mounted(mode: CutMode) -> Option<(tempfile::TempDir, PowerFs)> {
    if let Err(why) = PowerFs::available() {
        eprintln!("SKIPPED: {why}");
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let fs = PowerFs::mount(&dir.path().join("backing"), &dir.path().join("mnt"), mode).unwrap();
    Some((dir, fs))
}

fn sync_dir(path: &Path) {
    File::open(path).unwrap().sync_all().unwrap();
}

/// Cuts, unmounts and mounts again: what the next boot sees.
fn power_cycle(fs: PowerFs) -> PowerFs {
    fs.cut();
    fs.remount().unwrap()
}

#[test]
fn a_synced_file_in_a_synced_directory_survives_and_its_unsynced_tail_does_not() {
    let Some((_dir, fs)) = mounted(CutMode::Forget) else {
        return;
    };
    let path = fs.path().join("log");
    let mut f = File::create(&path).unwrap();
    f.write_all(b"durable").unwrap();
    f.sync_data().unwrap();
    sync_dir(fs.path());
    f.write_all(b" and then lost").unwrap();
    // Visible until the cut: reads see the backing file.
    assert_eq!(fs::read(&path).unwrap(), b"durable and then lost");
    drop(f);
    let fs = power_cycle(fs);
    assert_eq!(fs::read(fs.path().join("log")).unwrap(), b"durable");
}

#[test]
fn a_synced_file_whose_directory_was_never_synced_is_gone() {
    let Some((_dir, fs)) = mounted(CutMode::Forget) else {
        return;
    };
    let mut f = File::create(fs.path().join("new")).unwrap();
    f.write_all(b"data").unwrap();
    f.sync_all().unwrap();
    drop(f);
    let fs = power_cycle(fs);
    assert!(!fs.path().join("new").exists());
}

#[test]
fn an_entry_synced_before_its_data_comes_back_empty() {
    let Some((_dir, fs)) = mounted(CutMode::Forget) else {
        return;
    };
    let mut f = File::create(fs.path().join("empty")).unwrap();
    sync_dir(fs.path());
    f.write_all(b"never synced").unwrap();
    drop(f);
    let fs = power_cycle(fs);
    assert_eq!(fs::read(fs.path().join("empty")).unwrap(), b"");
}

#[test]
fn overwrites_and_truncations_are_taken_back() {
    let Some((_dir, fs)) = mounted(CutMode::Forget) else {
        return;
    };
    let path = fs.path().join("data");
    let original: Vec<u8> = (0..20_000u32).map(|i| (i % 251) as u8).collect();
    let f = OpenOptions::new()
        .create_new(true)
        .write(true)
        .open(&path)
        .unwrap();
    f.write_all_at(&original, 0).unwrap();
    f.sync_all().unwrap();
    sync_dir(fs.path());
    f.write_all_at(&[0xFF; 6000], 3000).unwrap();
    f.set_len(9000).unwrap();
    f.write_all_at(b"tail", 15_000).unwrap();
    drop(f);
    let fs = power_cycle(fs);
    assert_eq!(fs::read(fs.path().join("data")).unwrap(), original);
}

#[test]
fn unlinks_and_renames_are_taken_back_until_their_directories_are_synced() {
    let Some((_dir, fs)) = mounted(CutMode::Forget) else {
        return;
    };
    let root = fs.path().to_path_buf();
    fs::create_dir(root.join("a")).unwrap();
    fs::create_dir(root.join("b")).unwrap();
    for (name, body) in [("a/old", "old"), ("a/gone", "gone"), ("b/target", "target")] {
        let mut f = File::create(root.join(name)).unwrap();
        f.write_all(body.as_bytes()).unwrap();
        f.sync_all().unwrap();
    }
    for d in ["a", "b", ""] {
        sync_dir(&root.join(d));
    }
    fs::remove_file(root.join("a/gone")).unwrap();
    // Across directories, replacing: durable only once both are synced; b alone is not enough.
    fs::rename(root.join("a/old"), root.join("b/target")).unwrap();
    sync_dir(&root.join("b"));
    assert!(!root.join("a/gone").exists());
    let fs = power_cycle(fs);
    let root = fs.path();
    assert_eq!(fs::read_to_string(root.join("a/gone")).unwrap(), "gone");
    assert_eq!(fs::read_to_string(root.join("a/old")).unwrap(), "old");
    assert_eq!(fs::read_to_string(root.join("b/target")).unwrap(), "target");
}

#[test]
fn a_durable_rename_and_unlink_stay() {
    let Some((_dir, fs)) = mounted(CutMode::Forget) else {
        return;
    };
    let root = fs.path().to_path_buf();
    let mut f = File::create(root.join("snapshot.tmp")).unwrap();
    f.write_all(b"state").unwrap();
    f.sync_all().unwrap();
    drop(f);
    File::create(root.join("stale")).unwrap();
    sync_dir(&root);
    fs::rename(root.join("snapshot.tmp"), root.join("snapshot")).unwrap();
    fs::remove_file(root.join("stale")).unwrap();
    sync_dir(&root);
    let fs = power_cycle(fs);
    let mut names: Vec<_> = fs::read_dir(fs.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["snapshot"]);
    assert_eq!(fs::read(fs.path().join("snapshot")).unwrap(), b"state");
}

#[test]
fn a_new_directory_and_everything_in_it_go_unless_its_parent_was_synced() {
    let Some((_dir, fs)) = mounted(CutMode::Forget) else {
        return;
    };
    let root = fs.path().to_path_buf();
    fs::create_dir_all(root.join("x/y")).unwrap();
    let mut f = File::create(root.join("x/y/f")).unwrap();
    f.write_all(b"1").unwrap();
    f.sync_all().unwrap();
    sync_dir(&root.join("x/y"));
    sync_dir(&root.join("x"));
    let fs = power_cycle(fs);
    assert!(!fs.path().join("x").exists());
}

#[test]
fn torn_mode_keeps_a_sector_aligned_prefix_of_the_last_files_unsynced_end() {
    let Some((_dir, fs)) = mounted(CutMode::Tear) else {
        return;
    };
    let path = fs.path().join("journal");
    let mut f = File::create(&path).unwrap();
    f.write_all(&[1u8; 1000]).unwrap();
    f.sync_all().unwrap();
    sync_dir(fs.path());
    let unsynced: Vec<u8> = (0..40_000u32).map(|i| (i % 253) as u8).collect();
    f.write_all(&unsynced).unwrap();
    drop(f);
    let report = fs.cut();
    let (_, kept, len) = report.torn.clone().unwrap();
    assert_eq!(len, 41_000);
    assert!(kept == len || kept % 512 == 0, "{report:?}");
    let fs = fs.remount().unwrap();
    let after = fs::read(fs.path().join("journal")).unwrap();
    assert_eq!(after.len() as u64, kept.max(1000));
    assert_eq!(&after[..1000], &[1u8; 1000][..]);
    assert_eq!(&after[1000..], &unsynced[..after.len() - 1000]);
}

#[test]
fn after_a_cut_every_request_fails_and_statfs_is_the_backing_disks() {
    let Some((_dir, fs)) = mounted(CutMode::Forget) else {
        return;
    };
    let mine = nix::sys::statvfs::statvfs(fs.path()).unwrap();
    let backing = nix::sys::statvfs::statvfs(fs.backing()).unwrap();
    assert_eq!(mine.blocks(), backing.blocks());
    let f = File::create(fs.path().join("f")).unwrap();
    fs.cut();
    assert_eq!(f.write_at(b"x", 0).unwrap_err().raw_os_error(), Some(libc::EIO));
    assert_eq!(f.sync_all().unwrap_err().raw_os_error(), Some(libc::EIO));
}

// Proves a failed fsync loses what it should have covered, as Linux does: the call fails once, a later
// fsync succeeds, and a new open reads the durable contents, not the lost writes (a process that re-syncs
// and trusts its page cache is caught).
#[test]
fn a_failed_fsync_loses_the_writes_it_should_have_covered() {
    use logtank_powerfs::{Fault, FaultOp};
    let Some((_dir, fs)) = mounted(CutMode::Forget) else {
        return;
    };
    let path = fs.path().join("log");
    let mut f = File::create(&path).unwrap();
    sync_dir(fs.path());
    f.write_all(b"durable").unwrap();
    f.sync_data().unwrap();
    f.write_all(b" lost").unwrap();
    fs.inject(
        Fault::new(FaultOp::Fsync, libc::EIO)
            .on_paths_containing("log")
            .times(1),
    );
    assert_eq!(f.sync_data().unwrap_err().raw_os_error(), Some(libc::EIO));
    assert_eq!(fs.faults_hit(), 1);
    f.sync_data().unwrap();
    drop(f);
    assert_eq!(fs::read(&path).unwrap(), b"durable");
    let fs = power_cycle(fs);
    assert_eq!(fs::read(fs.path().join("log")).unwrap(), b"durable");
}

// Proves injected ENOSPC on creation and EIO on write fail only matching paths and only as often as asked,
// and that nothing reaches the file system for a refused operation.
#[test]
fn injected_create_and_write_faults_hit_only_their_paths() {
    use logtank_powerfs::{Fault, FaultOp};
    let Some((_dir, fs)) = mounted(CutMode::Forget) else {
        return;
    };
    fs::create_dir(fs.path().join("full")).unwrap();
    fs.inject(Fault::new(FaultOp::Create, libc::ENOSPC).on_paths_containing("full/"));
    let err = File::create(fs.path().join("full/segment")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::ENOSPC));
    assert_eq!(
        fs::create_dir(fs.path().join("full/d"))
            .unwrap_err()
            .raw_os_error(),
        Some(libc::ENOSPC)
    );
    assert!(!fs.backing().join("full/segment").exists());
    let mut other = File::create(fs.path().join("other")).unwrap();
    fs.inject(
        Fault::new(FaultOp::Write, libc::EIO)
            .on_paths_containing("other")
            .times(1),
    );
    assert_eq!(other.write_all(b"x").unwrap_err().raw_os_error(), Some(libc::EIO));
    other.write_all(b"y").unwrap();
    assert_eq!(fs::read(fs.path().join("other")).unwrap(), b"y");
    assert_eq!(fs.faults_hit(), 3);
    fs.clear_faults();
    File::create(fs.path().join("full/segment")).unwrap();
}
