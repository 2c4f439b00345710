//! The `steeple` binary; everything lives in the library.

/// Every heap block is zeroed when freed (and when moved by a reallocation), so the
/// transient copies a secret leaves on its way out — decoded rows, encoded SDS responses,
/// HTTP/2 buffers, a grown `Vec` — do not outlive their use. Secret types zeroize
/// themselves too; this covers what they cannot reach.
#[global_allocator]
static ALLOCATOR: zeroizing_alloc::ZeroAlloc<std::alloc::System> =
    zeroizing_alloc::ZeroAlloc(std::alloc::System);

fn main() -> std::process::ExitCode {
    steeple::cli::main()
}
