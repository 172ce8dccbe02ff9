fn main() -> std::process::ExitCode {
    // Password hashes take argon2_memory_kib (19 MiB by default) each, on blocking threads.
    // glibc raises its mmap threshold after the first such block is freed and then keeps
    // later ones in per-thread arenas, so memory would grow with every thread that ever
    // hashed. A fixed threshold keeps large blocks in mmap: returned to the system on free.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only adjusts allocator tuning; called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
    }
    brand_idp::cli::main()
}
