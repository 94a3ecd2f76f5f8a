//! IO scheduling priority of the calling thread (`ioprio_set(2)` / `ioprio_get(2)`).
//!
//! The journal's fsyncs must not queue behind bulk reads and compaction, so logtank gives its threads IO
//! classes that the mq-deadline and bfq schedulers honour. glibc has no wrapper for these syscalls, hence the
//! raw `syscall(2)`; this module is the runtime's only `unsafe` code.
//!
//! Which thread gets which class:
//!
//! - **Main thread and everything it spawns:** [`crate::daemon::run`] applies `[io]` to the main thread
//!   *before* building the tokio runtime. Threads inherit the class at creation, so every tokio worker and
//!   blocking-pool thread gets it; threads created earlier do not (tested on kernel 6.18).
//! - **A dedicated thread with its own class** (the writer's journal thread at best-effort 0, a compaction
//!   thread at idle): the thread calls [`set_current_thread`] itself, first thing after it is spawned.
//!
//! Without `CAP_SYS_NICE` the realtime class fails with `EPERM`; idle and best-effort at any level work
//! unprivileged. [`apply_config`] then logs a warning and the thread keeps the class it inherited: systemd's
//! `IOSchedulingClass=realtime` in the unit sets the class before privileges are dropped and is the
//! preferred way to get realtime.
#![allow(unsafe_code)]

use std::io;

use serde::{Deserialize, Serialize};

use crate::config::IoConfig;

/// `IOPRIO_WHO_PROCESS` from `linux/ioprio.h`; with id 0 it means the calling thread. The libc crate does
/// not define the IOPRIO_* constants.
const IOPRIO_WHO_PROCESS: libc::c_int = 1;
const IOPRIO_CLASS_SHIFT: u32 = 13;
/// The low bits of an ioprio value hold the level.
const IOPRIO_LEVEL_MASK: libc::c_int = (1 << IOPRIO_CLASS_SHIFT) - 1;
const IOPRIO_CLASS_NONE: libc::c_int = 0;
const IOPRIO_CLASS_RT: libc::c_int = 1;
const IOPRIO_CLASS_BE: libc::c_int = 2;
const IOPRIO_CLASS_IDLE: libc::c_int = 3;

/// Highest level number (lowest priority) within the realtime and best-effort classes.
pub const IOPRIO_LEVEL_MAX: u8 = 7;

/// An IO scheduling class. In config files: `none`, `realtime`, `best-effort`, `idle`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum IoClass {
    /// In `[io]`: leave the inherited class alone. Passed to [`set_current_thread`]: reset the thread to the
    /// kernel default (a best-effort level derived from the nice value).
    #[default]
    None,
    Realtime,
    BestEffort,
    Idle,
}

impl IoClass {
    /// The name used in config files.
    pub fn name(self) -> &'static str {
        match self {
            IoClass::None => "none",
            IoClass::Realtime => "realtime",
            IoClass::BestEffort => "best-effort",
            IoClass::Idle => "idle",
        }
    }

    fn raw(self) -> libc::c_int {
        match self {
            IoClass::None => IOPRIO_CLASS_NONE,
            IoClass::Realtime => IOPRIO_CLASS_RT,
            IoClass::BestEffort => IOPRIO_CLASS_BE,
            IoClass::Idle => IOPRIO_CLASS_IDLE,
        }
    }
}

/// A class and a level (0 highest … 7 lowest; the kernel ignores the level of `idle`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IoPriority {
    pub class: IoClass,
    pub level: u8,
}

impl IoPriority {
    pub fn new(class: IoClass, level: u8) -> Self {
        IoPriority { class, level }
    }

    fn encode(self) -> io::Result<libc::c_int> {
        if self.level > IOPRIO_LEVEL_MAX {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "IO priority level {} is out of range 0..={IOPRIO_LEVEL_MAX}",
                    self.level
                ),
            ));
        }
        Ok((self.class.raw() << IOPRIO_CLASS_SHIFT) | libc::c_int::from(self.level))
    }

    fn decode(raw: libc::c_int) -> io::Result<Self> {
        let class = match raw >> IOPRIO_CLASS_SHIFT {
            IOPRIO_CLASS_NONE => IoClass::None,
            IOPRIO_CLASS_RT => IoClass::Realtime,
            IOPRIO_CLASS_BE => IoClass::BestEffort,
            IOPRIO_CLASS_IDLE => IoClass::Idle,
            other => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("kernel reported unknown IO class {other} (ioprio {raw:#x})"),
                ))
            }
        };
        // Levels above 7 are not defined; clamp instead of failing so a newer kernel cannot break us.
        let level = u8::try_from(raw & IOPRIO_LEVEL_MASK)
            .unwrap_or(IOPRIO_LEVEL_MAX)
            .min(IOPRIO_LEVEL_MAX);
        Ok(IoPriority { class, level })
    }
}

/// Sets the IO priority of the calling thread (not the whole process).
pub fn set_current_thread(priority: IoPriority) -> io::Result<()> {
    let value = priority.encode()?;
    // SAFETY: ioprio_set takes three integers and touches no memory of ours; `who = 0` with
    // IOPRIO_WHO_PROCESS names the calling thread. Arguments are passed as C ints, matching the kernel ABI.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_ioprio_set,
            IOPRIO_WHO_PROCESS,
            0 as libc::c_int,
            value as libc::c_int,
        )
    };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Reads the IO priority of the calling thread.
pub fn get_current_thread() -> io::Result<IoPriority> {
    // SAFETY: ioprio_get takes two integers, touches no memory of ours and returns the priority or -1.
    let ret = unsafe { libc::syscall(libc::SYS_ioprio_get, IOPRIO_WHO_PROCESS, 0 as libc::c_int) };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    let raw = libc::c_int::try_from(ret)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, format!("ioprio_get returned {ret}")))?;
    IoPriority::decode(raw)
}

/// Applies `[io]` to the calling thread, logging the outcome; `thread` names it in the log.
///
/// Class `none` changes nothing. A failure is a warning, not an error: the daemon works at any IO class,
/// only less politely, and systemd's `IOSchedulingClass=` may already have set what we wanted.
pub fn apply_config(config: &IoConfig, thread: &str) {
    if config.class == IoClass::None {
        return;
    }
    let wanted = IoPriority::new(config.class, config.level);
    match set_current_thread(wanted) {
        Ok(()) => log::info!("IO class of the {thread} set to {} level {}", config.class.name(), config.level),
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => log::warn!(
            "cannot set IO class of the {thread} to {} (needs CAP_SYS_NICE): {e}; keeping the inherited class \
             (IOSchedulingClass= in the unit can grant it)",
            config.class.name()
        ),
        Err(e) => log::warn!("cannot set IO class of the {thread} to {}: {e}", config.class.name()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Proves idle and best-effort levels can be set unprivileged on this thread and read back unchanged.
    #[test]
    fn set_and_read_back_idle_and_best_effort() {
        // Run in a fresh thread so the test harness thread keeps its class.
        std::thread::spawn(|| {
            set_current_thread(IoPriority::new(IoClass::Idle, 0)).unwrap();
            assert_eq!(get_current_thread().unwrap().class, IoClass::Idle);
            for level in [0, 3, 7] {
                let p = IoPriority::new(IoClass::BestEffort, level);
                set_current_thread(p).unwrap();
                assert_eq!(get_current_thread().unwrap(), p);
            }
        })
        .join()
        .unwrap();
    }

    // Proves a class set on one thread is inherited by threads it spawns afterwards, which is why the
    // runtime sets the main thread's class before building tokio.
    #[test]
    fn spawned_threads_inherit_the_class() {
        std::thread::spawn(|| {
            set_current_thread(IoPriority::new(IoClass::BestEffort, 6)).unwrap();
            let child = std::thread::spawn(|| get_current_thread().unwrap())
                .join()
                .unwrap();
            assert_eq!(child, IoPriority::new(IoClass::BestEffort, 6));
        })
        .join()
        .unwrap();
    }

    // Proves an out-of-range level is refused before reaching the kernel.
    #[test]
    fn level_above_seven_is_rejected() {
        let err = set_current_thread(IoPriority::new(IoClass::BestEffort, 8)).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }

    // Proves config names round-trip through serde as kebab-case.
    #[test]
    fn class_names_in_config() {
        #[derive(Deserialize)]
        struct W {
            class: IoClass,
        }
        for class in [
            IoClass::None,
            IoClass::Realtime,
            IoClass::BestEffort,
            IoClass::Idle,
        ] {
            let w: W = toml::from_str(&format!("class = '{}'", class.name())).unwrap();
            assert_eq!(w.class, class);
        }
    }
}
