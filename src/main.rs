fn main() -> std::process::ExitCode {
    tune_malloc();
    liveconf::cli::main()
}

/// One malloc arena for every thread (glibc).
///
/// glibc gives each thread that allocates concurrently an arena of its own
/// (up to 8 per core), and never hands memory freed in one arena to another:
/// the snapshot decoded on a runtime thread and the render on a blocking
/// thread each grew their own heap, and each arena keeps its own free pages.
/// A second arena also grows one page at a time (an `mprotect` per page)
/// where the main one grows by `M_TOP_PAD`. liveconf allocates from one
/// thread at a time, mostly, so one arena costs no contention worth having
/// and keeps RSS down (see ARCHITECTURE.md, "Memory").
fn tune_malloc() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters; it is called before
    // any other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}
