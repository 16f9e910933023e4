//! Process memory: how the Continuum binaries ask glibc's allocator to hold less.
//!
//! glibc's malloc gives threads that contend for the heap their own arena, up to eight per core,
//! and each arena keeps freed memory for reuse. The binaries run many threads (tokio's workers,
//! librdkafka's broker threads, the MariaDB connections), so RSS grows with the number of
//! arenas rather than with what is in use. In `make bench` (100k row changes end to end, three
//! runs each way), two arenas took `consumer run` from 122-133 MiB peak RSS to 107-111 MiB,
//! the producer from 49-50 MiB to 44-49 MiB, with no loss of throughput. mimalloc, tried the
//! same way, held more (144 MiB and 61 MiB).

/// The number of glibc malloc arenas the binaries use unless `MALLOC_ARENA_MAX` is set.
pub const MALLOC_ARENAS: i32 = 2;

/// Limits glibc's malloc to [`MALLOC_ARENAS`] arenas, unless the operator set
/// `MALLOC_ARENA_MAX` (glibc reads that itself). Call it first in `main`, before threads start.
/// Does nothing on other C libraries.
pub fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only changes a tunable of the allocator; it is called before the
        // process starts other threads.
        let ok = unsafe { libc::mallopt(libc::M_ARENA_MAX, MALLOC_ARENAS) };
        if ok != 1 {
            eprintln!(
                "warning: mallopt(M_ARENA_MAX, {MALLOC_ARENAS}) failed; memory use may be higher"
            );
        }
    }
}
