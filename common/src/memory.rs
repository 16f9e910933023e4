//! Process memory: how the Continuum binaries ask their allocators to hold less.
//!
//! glibc's malloc gives threads that contend for the heap their own arena, up to eight per core,
//! and each arena keeps freed memory for reuse. The binaries run many threads (tokio's workers,
//! librdkafka's broker threads, the MariaDB connections), so RSS grows with the number of
//! arenas rather than with what is in use. In `make bench` (100k row changes end to end, three
//! runs each way), two arenas took `consumer run` from 122-133 MiB peak RSS to 107-111 MiB,
//! the producer from 49-50 MiB to 44-49 MiB, with no loss of throughput. mimalloc, tried the
//! same way, held more (144 MiB and 61 MiB).
//!
//! Two more holders, measured with `continuum-consumer apply --until-caught-up` over the 1M-row
//! bench topic (peak RSS, same topic, same machine; wall time varies by ±10% between identical
//! runs and did not move beyond that):
//! - glibc raises its mmap threshold each time a large block is freed (up to 32 MiB), after
//!   which apply's multi-MiB statement buffers come from the arenas and stay there, fragmented.
//!   A fixed threshold of [`MMAP_THRESHOLD`] keeps large buffers in their own mappings, returned
//!   on free: 129-137 MiB -> 106 MiB alone.
//! - mysql_async keeps up to 128 freed packet buffers of up to 4 MiB each for reuse
//!   (`MYSQL_ASYNC_BUFFER_POOL_CAP`). Apply has one statement chunk in flight while it builds
//!   the next, so it needs two at a time. 8 buffers: 129 -> 113 MiB alone.
//!
//! Both together: 129-137 -> 93-99 MiB. In `consumer run` (the 1M end-to-end drain of `make
//! bench`, 2026-12-06 evening), 8 pooled buffers peaked at 120-139 MiB in four runs, three of
//! them above the 128 MiB goal; [`MYSQL_BUFFER_POOL`] = 2 peaked at 101 and 119 MiB in two
//! runs, at the same drain rate (11 770 and 12 656 rows/s, against 11 764 and 13 213 with 8 in
//! the runs alternated with them). The prefetch queue of the Kafka consumer was tried too
//! (4 MiB instead of 8): 101 MiB, but apply took 1.7 times as long, so it stays.
//!
//! Each default yields to the operator's own setting of the same environment variable.

/// The number of glibc malloc arenas the binaries use unless `MALLOC_ARENA_MAX` is set.
pub const MALLOC_ARENAS: i32 = 2;

/// glibc's fixed mmap threshold: blocks at least this large get their own mapping.
pub const MMAP_THRESHOLD: i32 = 1 << 20;

/// How many freed packet buffers mysql_async keeps for reuse.
pub const MYSQL_BUFFER_POOL: &str = "2";

/// Sets the allocator's tunables above, each unless the operator set its environment variable
/// (`MALLOC_ARENA_MAX`, `MALLOC_MMAP_THRESHOLD_`, `MYSQL_ASYNC_BUFFER_POOL_CAP`). Call it first
/// in `main`, before threads start. The glibc parts do nothing on other C libraries.
pub fn hold_less() {
    if std::env::var_os("MYSQL_ASYNC_BUFFER_POOL_CAP").is_none() {
        // mysql_async reads it when it makes its buffer pool, at the first connection.
        // set_var is sound here: no other thread runs yet.
        std::env::set_var("MYSQL_ASYNC_BUFFER_POOL_CAP", MYSQL_BUFFER_POOL);
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let tunables = [
            ("MALLOC_ARENA_MAX", libc::M_ARENA_MAX, MALLOC_ARENAS),
            (
                "MALLOC_MMAP_THRESHOLD_",
                libc::M_MMAP_THRESHOLD,
                MMAP_THRESHOLD,
            ),
        ];
        for (var, param, value) in tunables {
            if std::env::var_os(var).is_some() {
                continue;
            }
            // SAFETY: mallopt only changes a tunable of the allocator; it is called before the
            // process starts other threads.
            if unsafe { libc::mallopt(param, value) } != 1 {
                eprintln!("warning: mallopt({var} = {value}) failed; memory use may be higher");
            }
        }
    }
}
