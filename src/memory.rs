//! Giving memory back once the daemon is up (see ARCHITECTURE.md, "Memory").
//!
//! After the initial sync an idle daemon's own memory is small (its mirror,
//! a few buffers); most of its resident set is the executable itself: the
//! pages of code and read-only data that starting touched (argument
//! parsing, settings, template parsing, the first snapshot), each mapped
//! with its neighbours (the kernel maps up to 64 KiB around a fault). They
//! are page cache, shared and reclaimable, but they count in the process's
//! RSS, which is what operators read. [`after_initial_sync`] unmaps them and
//! hands free heap pages back: the code that runs again is mapped back on
//! its first use, from the page cache (a minor fault, no I/O). The same is
//! done again whenever the daemon has been quiet for [`IDLE_RELEASE`] after
//! some work ([`idle_tick`]), so a change does not leave its pages behind.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long the daemon stays quiet (no batch) after some work before the
/// pages that work mapped are released again ([`idle_tick`]).
pub const IDLE_RELEASE: Duration = Duration::from_secs(30);

/// When the last batch ended, if one did since the last release.
static WORKED: Mutex<Option<Instant>> = Mutex::new(None);

/// A batch ended: its code pages may be released once the daemon is quiet.
pub fn worked() {
    if let Ok(mut w) = WORKED.lock() {
        *w = Some(Instant::now());
    }
}

/// Periodic (the daemon's heartbeat): once [`IDLE_RELEASE`] has passed
/// since the last batch, release what it mapped. The next change maps back
/// the code it runs (some hundreds of minor faults: a fraction of a
/// millisecond, once per quiet spell); changes closer together than
/// [`IDLE_RELEASE`] never pay it.
pub fn idle_tick() {
    let due = match WORKED.lock() {
        Ok(mut w) if w.is_some_and(|t| t.elapsed() >= IDLE_RELEASE) => {
            *w = None;
            true
        }
        _ => false,
    };
    if due {
        after_initial_sync();
    }
}

/// Unmaps the executable's read-only segments and trims the heap. Cheap
/// (a few system calls); safe at any time: read-only file pages that are
/// needed again are faulted back in unchanged.
pub fn after_initial_sync() {
    release_executable_pages();
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free memory to the kernel.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// `madvise(MADV_DONTNEED)` over every loaded segment of the executable
/// that is never written: code and read-only data, not the relocated
/// (RELRO) or writable ones, whose private copies would be lost.
#[cfg(target_os = "linux")]
fn release_executable_pages() {
    use std::ffi::c_void;

    unsafe extern "C" fn segments(
        info: *mut libc::dl_phdr_info,
        _size: libc::size_t,
        out: *mut c_void,
    ) -> libc::c_int {
        // SAFETY: the loader passes a valid `info` for the duration of the
        // call; `out` is the Vec passed to dl_iterate_phdr below.
        let (info, out) = unsafe { (&*info, &mut *(out as *mut Vec<(usize, usize)>)) };
        if info.dlpi_phdr.is_null() {
            return 1;
        }
        // SAFETY: dlpi_phdr points to dlpi_phnum program headers.
        let phdrs = unsafe { std::slice::from_raw_parts(info.dlpi_phdr, info.dlpi_phnum as usize) };
        let relro = phdrs
            .iter()
            .find(|p| p.p_type == libc::PT_GNU_RELRO)
            .map(|p| (p.p_vaddr as usize, (p.p_vaddr + p.p_memsz) as usize));
        for p in phdrs {
            let start = p.p_vaddr as usize;
            let end = start + p.p_memsz as usize;
            let overlaps_relro = relro.is_some_and(|(a, b)| start < b && a < end);
            if p.p_type == libc::PT_LOAD && p.p_flags & libc::PF_W == 0 && !overlaps_relro {
                out.push((
                    info.dlpi_addr as usize + start,
                    info.dlpi_addr as usize + end,
                ));
            }
        }
        // The first object is the executable: stop there.
        1
    }

    let mut ranges: Vec<(usize, usize)> = Vec::new();
    // SAFETY: `segments` only reads what the loader hands it and writes to
    // `ranges`, which outlives the call.
    unsafe {
        libc::dl_iterate_phdr(Some(segments), &mut ranges as *mut _ as *mut c_void);
    }
    // SAFETY: sysconf has no preconditions.
    let page = match unsafe { libc::sysconf(libc::_SC_PAGESIZE) } {
        n if n > 0 => n as usize,
        _ => return,
    };
    for (start, end) in ranges {
        // Whole pages inside the segment only.
        let start = start.div_ceil(page) * page;
        let end = end / page * page;
        if end > start {
            // SAFETY: [start, end) lies within a read-only, file-backed
            // mapping of the executable that nothing writes: dropping its
            // pages loses nothing, they are read back from the file (the
            // page cache) when next used.
            unsafe {
                libc::madvise(start as *mut c_void, end - start, libc::MADV_DONTNEED);
            }
        }
    }
}

#[cfg(not(target_os = "linux"))]
fn release_executable_pages() {}

#[cfg(test)]
mod tests {
    /// The executable's code still runs after its pages were dropped.
    #[test]
    fn code_still_runs_after_release() {
        super::after_initial_sync();
        let v: Vec<u64> = (1..=10).collect();
        assert_eq!(v.iter().sum::<u64>(), 55);
        assert_eq!(
            format!("{:?}", std::path::Path::new("/a/b").parent()),
            "Some(\"/a\")"
        );
    }
}
