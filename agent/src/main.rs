//! The `steeple` binary; everything lives in the library.

/// Every heap block is zeroed when freed (and when moved by a reallocation), so the
/// transient copies a secret leaves on its way out — decoded rows, encoded SDS responses,
/// HTTP/2 buffers, a grown `Vec` — do not outlive their use. Secret types zeroize
/// themselves too; this covers what they cannot reach.
///
/// Underneath is jemalloc, not glibc malloc: glibc keeps what a burst freed in its
/// per-thread arenas (an SDS flood left ~15 MiB resident for good), while jemalloc's
/// background thread hands freed pages back within seconds. Built with `retain:false`
/// (`.cargo/config.toml`) it unmaps them, which also works under `mlockall`, where
/// `madvise` is refused.
#[global_allocator]
static ALLOCATOR: zeroizing_alloc::ZeroAlloc<tikv_jemallocator::Jemalloc> =
    zeroizing_alloc::ZeroAlloc(tikv_jemallocator::Jemalloc);

fn main() -> std::process::ExitCode {
    steeple::cli::main()
}
