//! The `steeple` binary; everything lives in the library.

fn main() -> std::process::ExitCode {
    steeple::cli::main()
}
