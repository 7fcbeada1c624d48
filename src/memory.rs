//! Giving memory back once the daemon is up (see ARCHITECTURE.md, "Memory").
//!
//! After the initial sync an idle daemon's own memory is small (its mirror,
//! a few buffers); most of its resident set is code: the pages of the
//! executable and of the shared libraries (libc, libm, libgcc_s, the
//! loader) that starting touched (argument parsing, settings, template
//! parsing, the first snapshot), each mapped with its neighbours (a fault
//! maps the kernel's whole fault-around window, 64 KiB, or the whole large
//! folio when the page cache holds the file in larger ones). They are page
//! cache, shared and reclaimable, but they count in the process's RSS,
//! which is what operators read. [`after_initial_sync`] unmaps them and
//! hands free heap pages back: the code that runs again is mapped back on
//! its first use, from the page cache (a minor fault, no I/O). The same is
//! done again whenever the daemon has been quiet for [`IDLE_RELEASE`] after
//! some work ([`idle_tick`]), so a change does not leave its pages behind.
//!
//! What is dropped, and why it cannot change what the process reads: only
//! pages of a loaded object's (the executable's, a library's) segments
//! that are never written (`PT_LOAD` without `PF_W`, outside
//! `PT_GNU_RELRO`; the vDSO, which has no file behind it, excluded; an
//! object with text relocations excluded), and only where the kernel says
//! the mapping is private, not writable, backed by a file, holds no private
//! copy of a page (`Anonymous: 0` in /proc/self/smaps: nothing was ever
//! written there, not by the loader, not by a debugger's breakpoint) and is
//! not locked. Such a page is the page cache's page: dropping it and
//! faulting it back gives the same bytes. The loader's list is walked with
//! its lock held (`dl_iterate_phdr`), and the pages are dropped inside the
//! walk, so an object being unloaded or loaded meanwhile is never touched.
//! Anything unexpected (no /proc, a line not understood) drops nothing.

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

/// Trims the heap and unmaps the loaded objects' never-written pages.
/// Cheap (reading /proc/self/smaps, a few dozen system calls: about a
/// millisecond); safe at any time: what is dropped reads back unchanged
/// (see the module's documentation).
pub fn after_initial_sync() {
    let _ = release();
}

/// What a release dropped (bytes advised away; pages that were not
/// resident count too).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Released {
    /// Loaded objects some of whose pages were dropped, by name (the
    /// executable's is empty).
    pub objects: Vec<(String, usize)>,
}

/// [`after_initial_sync`], saying what it dropped.
pub fn release() -> Released {
    #[cfg(target_os = "linux")]
    {
        let vmas = match std::fs::read_to_string("/proc/self/smaps") {
            Ok(s) => parse_smaps(&s),
            Err(_) => Vec::new(),
        };
        trim_heap();
        Released {
            objects: linux::release_objects(&vmas),
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        trim_heap();
        Released::default()
    }
}

fn trim_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free memory to the kernel.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// One mapping of /proc/self/smaps, as far as a release needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Vma {
    start: usize,
    end: usize,
    /// `r`, `w`, `x`, `p`/`s`.
    perms: [u8; 4],
    inode: u64,
    /// `Anonymous:` in kB (private copies), if the kernel said.
    anonymous_kb: Option<u64>,
    /// `VmFlags:` holds `lo` (mlocked).
    locked: bool,
}

impl Vma {
    /// Pages that are the page cache's own: private, never written, from a
    /// file, not locked.
    fn clean_file(&self) -> bool {
        self.perms[0] == b'r'
            && self.perms[1] == b'-'
            && self.perms[3] == b'p'
            && self.inode != 0
            && self.anonymous_kb == Some(0)
            && !self.locked
    }
}

/// The mappings of a /proc/PID/smaps text. A header line not understood
/// ends the list there (what follows is not trusted).
fn parse_smaps(text: &str) -> Vec<Vma> {
    let mut out: Vec<Vma> = Vec::new();
    for line in text.lines() {
        let mut f = line.split_ascii_whitespace();
        let Some(first) = f.next() else { continue };
        if let Some(field) = first.strip_suffix(':') {
            let Some(last) = out.last_mut() else {
                return Vec::new();
            };
            match field {
                "Anonymous" => {
                    last.anonymous_kb = f.next().and_then(|v| v.parse().ok());
                }
                "VmFlags" => last.locked = f.any(|flag| flag == "lo"),
                _ => {}
            }
            continue;
        }
        let header = (|| {
            let (a, b) = first.split_once('-')?;
            let start = usize::from_str_radix(a, 16).ok()?;
            let end = usize::from_str_radix(b, 16).ok()?;
            let perms: [u8; 4] = f.next()?.as_bytes().try_into().ok()?;
            let _offset = f.next()?;
            let _dev = f.next()?;
            let inode = f.next()?.parse().ok()?;
            (start < end).then_some(Vma {
                start,
                end,
                perms,
                inode,
                anonymous_kb: None,
                locked: false,
            })
        })();
        match header {
            Some(v) => out.push(v),
            None => break,
        }
    }
    out
}

/// The parts of `[start, end)` that lie in a clean file mapping, in whole
/// pages.
fn clean_parts(start: usize, end: usize, vmas: &[Vma], page: usize) -> Vec<(usize, usize)> {
    let start = start.div_ceil(page) * page;
    let end = end / page * page;
    vmas.iter()
        .filter(|v| v.clean_file())
        .filter_map(|v| {
            let (a, b) = (start.max(v.start), end.min(v.end));
            (a < b).then_some((a, b))
        })
        .collect()
}

#[cfg(target_os = "linux")]
mod linux {
    use super::{Vma, clean_parts};
    use std::ffi::c_void;

    #[cfg(target_pointer_width = "64")]
    type Phdr = libc::Elf64_Phdr;
    #[cfg(target_pointer_width = "32")]
    type Phdr = libc::Elf32_Phdr;

    const DT_NULL: isize = 0;
    const DT_TEXTREL: isize = 22;
    const DT_FLAGS: isize = 30;
    const DF_TEXTREL: usize = 0x4;

    /// `ElfN_Dyn`: a pointer-sized signed tag and a pointer-sized value.
    #[repr(C)]
    struct Dyn {
        tag: isize,
        val: usize,
    }

    fn page_size() -> Option<usize> {
        // SAFETY: sysconf has no preconditions.
        match unsafe { libc::sysconf(libc::_SC_PAGESIZE) } {
            n if n > 0 => Some(n as usize),
            _ => None,
        }
    }

    struct Walk<'a> {
        vmas: &'a [Vma],
        page: usize,
        vdso: usize,
        out: Vec<(String, usize)>,
    }

    /// `madvise(MADV_DONTNEED)` over every loaded object's never-written
    /// segments, in the clean file mappings of `vmas`; by object, the bytes
    /// dropped.
    pub(super) fn release_objects(vmas: &[Vma]) -> Vec<(String, usize)> {
        let Some(page) = page_size() else {
            return Vec::new();
        };
        if !vmas.iter().any(Vma::clean_file) {
            return Vec::new();
        }
        let mut walk = Walk {
            vmas,
            page,
            // SAFETY: getauxval has no preconditions (0 when absent).
            vdso: unsafe { libc::getauxval(libc::AT_SYSINFO_EHDR) } as usize,
            out: Vec::new(),
        };
        // SAFETY: `object` only reads what the loader hands it and writes
        // to `walk`, which outlives the call.
        unsafe {
            libc::dl_iterate_phdr(Some(object), &mut walk as *mut Walk as *mut c_void);
        }
        walk.out
    }

    /// One loaded object (called by `dl_iterate_phdr` with the loader's
    /// list locked: the object stays mapped for the duration of the call).
    unsafe extern "C" fn object(
        info: *mut libc::dl_phdr_info,
        _size: libc::size_t,
        data: *mut c_void,
    ) -> libc::c_int {
        // SAFETY: the loader passes a valid `info` for the duration of the
        // call; `data` is the `Walk` passed to dl_iterate_phdr above.
        let (info, walk) = unsafe { (&*info, &mut *(data as *mut Walk)) };
        if info.dlpi_phdr.is_null() || info.dlpi_phnum == 0 {
            return 0;
        }
        // SAFETY: dlpi_phdr points to dlpi_phnum program headers.
        let phdrs = unsafe { std::slice::from_raw_parts(info.dlpi_phdr, info.dlpi_phnum as usize) };
        let bias = info.dlpi_addr as usize;
        let range = |p: &Phdr| {
            let start = bias.wrapping_add(p.p_vaddr as usize);
            (start, start.wrapping_add(p.p_memsz as usize))
        };
        // The vDSO: no file behind it.
        if walk.vdso != 0
            && phdrs
                .iter()
                .filter(|p| p.p_type == libc::PT_LOAD)
                .map(range)
                .any(|(a, b)| a <= walk.vdso && walk.vdso < b)
        {
            return 0;
        }
        // Text relocations: the loader writes (and may be writing) into
        // segments that are read-only otherwise.
        for p in phdrs.iter().filter(|p| p.p_type == libc::PT_DYNAMIC) {
            let mut d = bias.wrapping_add(p.p_vaddr as usize) as *const Dyn;
            // SAFETY: PT_DYNAMIC is the loaded object's dynamic section,
            // an array of ElfN_Dyn ended by DT_NULL, which the loader itself
            // has read.
            unsafe {
                while (*d).tag != DT_NULL {
                    if (*d).tag == DT_TEXTREL
                        || ((*d).tag == DT_FLAGS && (*d).val & DF_TEXTREL != 0)
                    {
                        return 0;
                    }
                    d = d.add(1);
                }
            }
        }
        let relro: Vec<(usize, usize)> = phdrs
            .iter()
            .filter(|p| p.p_type == libc::PT_GNU_RELRO)
            .map(range)
            .collect();
        let mut dropped = 0;
        for p in phdrs {
            if p.p_type != libc::PT_LOAD || p.p_flags & libc::PF_W != 0 {
                continue;
            }
            let start = bias.wrapping_add(p.p_vaddr as usize);
            // The file's bytes only (a zero-filled tail is anonymous).
            let end = start.wrapping_add(p.p_filesz as usize);
            if end <= start || relro.iter().any(|&(a, b)| start < b && a < end) {
                continue;
            }
            for (a, b) in clean_parts(start, end, walk.vmas, walk.page) {
                // SAFETY: [a, b) is part of a loaded object's segment that
                // nothing writes, in a mapping the kernel reported private,
                // read-only, file-backed and without private copies:
                // dropping its pages loses nothing, they are read back from
                // the page cache when next used.
                if unsafe { libc::madvise(a as *mut c_void, b - a, libc::MADV_DONTNEED) } == 0 {
                    dropped += b - a;
                }
            }
        }
        if dropped > 0 {
            let name = if info.dlpi_name.is_null() {
                String::new()
            } else {
                // SAFETY: a non-null dlpi_name is a C string owned by the
                // loader for the duration of the call.
                unsafe { std::ffi::CStr::from_ptr(info.dlpi_name) }
                    .to_string_lossy()
                    .into_owned()
            };
            walk.out.push((name, dropped));
        }
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMAPS: &str = "\
55a777574000-55a77798e000 r--p 00000000 fe:00 1234                       /usr/bin/liveconf
Size:               4200 kB
Rss:                1024 kB
Anonymous:             0 kB
VmFlags: rd mr mw me sd
55a77798e000-55a7783e6000 r-xp 0041a000 fe:00 1234                       /usr/bin/liveconf
Anonymous:             4 kB
VmFlags: rd ex mr mw me sd
55a7783e6000-55a778472000 r--p 00e71000 fe:00 1234                       /usr/bin/liveconf
Anonymous:           560 kB
VmFlags: rd mr mw me ac sd
55a778472000-55a778478000 rw-p 00efa000 fe:00 1234                       /usr/bin/liveconf
Anonymous:            24 kB
7fdb0f5a1000-7fdb0f6f7000 r-xp 00026000 fe:00 99                         /usr/lib/x86_64-linux-gnu/libc.so.6
Anonymous:             0 kB
VmFlags: rd ex mr mw me sd lo
7fdb0f6f7000-7fdb0f74a000 r--s 0017c000 fe:00 99                         /usr/lib/x86_64-linux-gnu/libc.so.6
Anonymous:             0 kB
7fdb0f74a000-7fdb0f74e000 r--p 001cf000 fe:00 99                         /usr/lib/with space/libx.so
Anonymous:             0 kB
7fdb0f86e000-7fdb0f870000 r-xp 00000000 00:00 0                          [vdso]
Anonymous:             0 kB
7ffc0f86e000-7ffc0f890000 rw-p 00000000 00:00 0                          [stack]
Anonymous:           116 kB
";

    #[test]
    fn only_private_unwritten_unlocked_file_mappings_are_clean() {
        let v = parse_smaps(SMAPS);
        assert_eq!(v.len(), 9);
        let clean: Vec<usize> = v
            .iter()
            .filter(|m| m.clean_file())
            .map(|m| m.start)
            .collect();
        // The executable's first segment and the library with a space in
        // its path: not the text with a private copy (a breakpoint, text
        // relocations), the RELRO, the writable data, the mlocked text,
        // the shared mapping, the vDSO, the stack.
        assert_eq!(clean, vec![0x55a777574000, 0x7fdb0f74a000]);
    }

    #[test]
    fn a_mapping_without_its_anonymous_line_or_a_garbled_header_is_not_trusted() {
        let v = parse_smaps("1000-3000 r--p 00000000 fe:00 7 /lib/a.so\nRss: 8 kB\n");
        assert_eq!(v.len(), 1);
        assert!(!v[0].clean_file());
        let v = parse_smaps(
            "1000-3000 r--p 00000000 fe:00 7 /lib/a.so\nAnonymous: 0 kB\nzzzz-3000 r--p 0 fe:00 7 /lib/b.so\nAnonymous: 0 kB\n",
        );
        assert_eq!(v.len(), 1);
        assert!(v[0].clean_file());
        assert!(parse_smaps("Anonymous: 0 kB\n").is_empty());
        assert!(
            parse_smaps("3000-1000 r--p 00000000 fe:00 7 /lib/a.so\nAnonymous: 0 kB\n").is_empty()
        );
    }

    #[test]
    fn only_whole_pages_inside_clean_mappings_are_dropped() {
        let v = parse_smaps(SMAPS);
        // A segment straddling the executable's clean first mapping and
        // its text (which holds a private copy): the clean part only, in
        // whole pages.
        let parts = clean_parts(0x55a777574010, 0x55a777990010, &v, 4096);
        assert_eq!(parts, vec![(0x55a777575000, 0x55a77798e000)]);
        assert!(clean_parts(0x7fdb0f86e000, 0x7fdb0f870000, &v, 4096).is_empty());
        assert!(clean_parts(0x55a777574010, 0x55a777574ff0, &v, 4096).is_empty());
    }

    /// Code of every loaded object still runs after its pages were
    /// dropped (a page dropped that held something written, such as a
    /// relocated pointer, would crash this test).
    #[test]
    fn code_still_runs_after_release() {
        let r = release();
        // This test's executable and, linked dynamically, libc.
        #[cfg(target_os = "linux")]
        {
            assert!(
                r.objects.iter().any(|(n, b)| n.is_empty() && *b > 0),
                "{r:?}"
            );
            #[cfg(target_env = "gnu")]
            assert!(
                r.objects
                    .iter()
                    .any(|(n, b)| n.contains("libc.so") && *b > 0),
                "{r:?}"
            );
            assert!(!r.objects.iter().any(|(n, _)| n.contains("vdso")), "{r:?}");
        }
        // The executable, libc (allocation, formatting, files, threads),
        // libm, the unwinder (libgcc_s) and the executable's unwind tables.
        let v: Vec<u64> = (1..=10).collect();
        assert_eq!(v.iter().sum::<u64>(), 55);
        assert_eq!(
            format!("{:?}", std::path::Path::new("/a/b").parent()),
            "Some(\"/a\")"
        );
        let x = std::hint::black_box(2.0f64);
        assert!((x.powf(0.5) * x.sin().asin() - 2f64.sqrt() * 2f64.sin().asin()).abs() < 1e-12);
        assert!(std::fs::read_to_string("/proc/self/status").is_ok_and(|s| s.contains("VmRSS")));
        let t = std::thread::spawn(|| (1..=20u64).product::<u64>());
        assert_eq!(t.join().ok(), Some(2_432_902_008_176_640_000));
        let caught = std::panic::catch_unwind(|| {
            if std::hint::black_box(true) {
                panic!("unwinding after a release");
            }
        });
        assert!(caught.is_err());
        let d: Box<dyn std::fmt::Display> = Box::new(42u8);
        assert_eq!(d.to_string(), "42");
        // Twice in a row: nothing accumulates, nothing breaks.
        let again = release();
        assert!(again.objects.iter().any(|(n, _)| n.is_empty()));
    }
}
